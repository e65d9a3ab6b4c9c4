"""HTTP of the payments service: authorize, void, refund, look up (docs/payments.md).

Every /api/ route needs `Authorization: Bearer <PAYMENTS_SHARED_SECRET>`.
"""

from __future__ import annotations

import hmac
import random
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from opentelemetry import baggage, trace

from service import faults
from service.payments.ledger import Authorization, Ledger, Status

DECLINE_ABOVE = Decimal("10000.00")
# A replay of an authorization still being decided waits this long for the decision.
REPLAY_WAIT_SECONDS = 10.0
PROBLEM_TYPE_BASE = "urn:glassbox:payments:"

tracer = trace.get_tracer("glassbox.payments")
blp = Blueprint("payments", __name__, url_prefix="/api/v1/authorizations")


def ledger() -> Ledger:
    found: Ledger = current_app.extensions["glassbox.payments.ledger"]
    return found


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    response = jsonify(
        {
            "type": PROBLEM_TYPE_BASE + slug,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": request.path,
            **extra,
        }
    )
    response.status_code = status
    response.mimetype = "application/problem+json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def invalid(detail: str) -> Any:
    return problem(422, "Validation failed", detail, slug="validation-failed")


@blp.before_request
def require_shared_secret() -> Any:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    secret = str(current_app.config["PAYMENTS_SHARED_SECRET"])
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret.encode()):
        return None
    return problem(
        401,
        "Unauthorized",
        "Send 'Authorization: Bearer <PAYMENTS_SHARED_SECRET>'.",
        slug="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="glassbox-payments"'},
    )


# What the ledger's BIGINT columns hold: the largest order id, and amount in cents.
LARGEST_ID = 2**63 - 1
LARGEST_AMOUNT = Decimal(LARGEST_ID) / 100


def _request_fields() -> tuple[int, Decimal, str] | Any:
    """(order_id, amount, currency) of the JSON body, or a 422 problem."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        return invalid("The JSON body is nested too deeply.")
    if not isinstance(body, dict) or type(body.get("order_id")) is not int:
        return invalid("order_id (integer) and amount are required.")
    if not 1 <= body["order_id"] <= LARGEST_ID:
        return invalid(f"order_id must be from 1 to {LARGEST_ID}.")
    try:
        amount = Decimal(str(body.get("amount")))
        # Compared before quantize: 1E+30 has more digits than the decimal context keeps.
        if not amount.is_finite() or not 0 <= amount <= LARGEST_AMOUNT:
            raise InvalidOperation
        exact = amount == amount.quantize(Decimal("0.01"))
    except InvalidOperation:
        exact = False
    if not exact:
        return invalid(
            f"amount must be a decimal string of cents from 0 to {LARGEST_AMOUNT}.",
        )
    currency = body.get("currency", "EUR")
    # ASCII only: "ßab".upper() is "SSAB", and ISO 4217 codes are three Latin letters.
    if not (
        isinstance(currency, str)
        and len(currency) == 3
        and currency.isascii()
        and currency.isalpha()
    ):
        return invalid("currency must be a three-letter code.")
    return body["order_id"], amount, currency.upper()


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key", "").strip()
    return key if 0 < len(key) <= 255 else None


@dataclass(frozen=True)
class KeyedWrite:
    """A write's Idempotency-Key and the fields an authorization is matched on."""

    key: str
    order_id: int
    amount: Decimal
    currency: str

    @property
    def fields(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "amount": self.amount, "currency": self.currency}


def _keyed_request() -> KeyedWrite | Any:
    """The write this request asks for, or the 422 problem refusing it."""
    fields = _request_fields()
    if not isinstance(fields, tuple):
        return fields
    key = _idempotency_key()
    if key is None:
        return invalid("An Idempotency-Key header (1-255) is required.")
    return KeyedWrite(key, *fields)


def answer(authorization: Authorization) -> Any:
    """The one answer an authorization gives, first time and on every replay."""
    if authorization.status == Status.APPROVED:
        return jsonify(authorization.as_json()), 201
    if authorization.status == Status.DECLINED:
        return problem(
            402,
            "Payment declined",
            "The amount is over the limit.",
            slug="declined",
            authorization=authorization.as_json(),
        )
    if authorization.status == Status.PROCESSING:
        return problem(
            409,
            "Authorization in progress",
            "Another request with this Idempotency-Key is being decided; retry shortly.",
            slug="in-progress",
            headers={"Retry-After": "1"},
            authorization=authorization.as_json(),
        )
    return problem(
        409,
        f"Authorization {authorization.status}",
        f"The authorization under this Idempotency-Key was {authorization.status}.",
        slug=f"authorization-{authorization.status}",
        authorization=authorization.as_json(),
    )


def _reused(authorization: Authorization) -> Any:
    return problem(
        422,
        "Idempotency key reused",
        "This Idempotency-Key was used for another order, amount or currency.",
        slug="idempotency-key-reused",
        reference=authorization.reference,
    )


def _await_decision(key: str) -> Authorization:
    deadline = time.monotonic() + REPLAY_WAIT_SECONDS
    while True:
        found = ledger().by_key(key)
        assert found is not None
        if found.status != Status.PROCESSING or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@blp.post("")
def authorize() -> Any:
    write = _keyed_request()
    if not isinstance(write, KeyedWrite):
        return write
    key, amount = write.key, write.amount
    span = trace.get_current_span()
    span.set_attribute("payment.order_id", write.order_id)
    order_from_baggage = baggage.get_baggage("glassbox.order_id")
    if order_from_baggage is not None:
        span.set_attribute("glassbox.order_id", str(order_from_baggage))

    authorization, created = ledger().begin(key=key, **write.fields)
    if not created:
        span.set_attribute("payment.idempotent_replay", True)
        if not authorization.same_request(**write.fields):
            return _reused(authorization)
        return answer(_await_decision(key))

    with tracer.start_as_current_span("payments.risk_check") as check:
        latency = faults.value(faults.PAYMENTS_LATENCY_MS) / 1000
        if latency:
            time.sleep(latency)  # an injected fault: a slow dependency
        check.set_attribute("payment.amount", float(amount))
    if random.random() < faults.value(faults.PAYMENTS_FAILURE_RATE):  # noqa: S311
        ledger().forget(key)
        return problem(
            503,
            "Service unavailable",
            "Injected failure (the paymentsFailureRate fault or PAYMENTS_FAILURE_RATE): retry "
            "with the same Idempotency-Key.",
            slug="injected-failure",
        )
    decision = Status.DECLINED if amount > DECLINE_ABOVE else Status.APPROVED
    return answer(ledger().decide(key, decision))


@blp.post("/void")
def void_by_key() -> Any:
    """Void whatever was, is being or will be authorized under this Idempotency-Key."""
    write = _keyed_request()
    if not isinstance(write, KeyedWrite):
        return write
    authorization = ledger().void_key(key=write.key, **write.fields)
    if not authorization.same_request(**write.fields):
        return _reused(authorization)
    return _released(authorization, Status.VOIDED)


@blp.get("")
def by_order() -> Any:
    given = request.args.getlist("order_id")
    order_id = given[0] if len(given) == 1 and set(request.args) == {"order_id"} else ""
    if not (order_id.isascii() and order_id.isdigit() and int(order_id) <= LARGEST_ID):
        return invalid("Query by one ?order_id=<integer up to 2^63-1> only.")
    return {"items": [a.as_json() for a in ledger().by_order(int(order_id))]}


@blp.get("/<reference>")
def by_reference(reference: str) -> Any:
    found = ledger().by_reference(reference)
    if found is None:
        return problem(404, "Not found", f"No authorization {reference}.", slug="not-found")
    return found.as_json()


@blp.post("/<reference>/void")
def void(reference: str) -> Any:
    return _released(ledger().void(reference), Status.VOIDED, reference)


@blp.post("/<reference>/refund")
def refund(reference: str) -> Any:
    return _released(ledger().refund(reference), Status.REFUNDED, reference)


def _released(found: Authorization | None, wanted: Status, reference: str = "") -> Any:
    """200 when the authorization is (now or already) `wanted`, or holds nothing (declined)."""
    if found is None:
        return problem(404, "Not found", f"No authorization {reference}.", slug="not-found")
    if found.status == wanted or (wanted == Status.VOIDED and found.status == Status.DECLINED):
        return found.as_json()
    return problem(
        409,
        "Conflict",
        f"Authorization {found.reference} is {found.status}; it cannot be {wanted}.",
        slug="invalid-transition",
        authorization=found.as_json(),
    )
