"""The payment step of orders, behind a small interface: authorize, void, refund.

`InProcessGateway` approves at once (the embedded default when PAYMENTS_URL is empty).
`HttpPaymentGateway` calls the payments service (service/payments) over HTTP with the
shared secret, a timeout, bounded retries with jittered exponential backoff, and the
order's own Idempotency-Key, so a retry can never charge twice.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import requests
from flask import current_app
from opentelemetry import baggage, context, trace

from service.config import DEFAULT_PAYMENTS_SHARED_SECRET, PAYMENTS_BACKOFF_SECONDS
from service.metrics import metrics

tracer = trace.get_tracer("glassbox")


@dataclass(frozen=True)
class PaymentResult:
    approved: bool
    reference: str | None = None
    reason: str | None = None
    # True when no decision was reached (timeout, error): the order may be retried.
    unavailable: bool = False
    # True when the authorization was voided (the order is being cancelled) before approval.
    voided: bool = False


class GatewayUnavailable(Exception):
    """A void or refund did not reach a definite answer (timeout, 5xx, refused)."""


class PaymentGateway(Protocol):
    def authorize(self, *, order_id: int, amount: Decimal, key: str) -> PaymentResult: ...

    def void(self, *, order_id: int, amount: Decimal, key: str) -> None:
        """Void what was, is being or will be authorized under `key`."""

    def refund(self, *, reference: str) -> None:
        """Give back an approved payment."""


class InProcessGateway:
    """Approves at once and holds nothing; for the embedded default and tests."""

    def authorize(self, *, order_id: int, amount: Decimal, key: str) -> PaymentResult:
        started = time.perf_counter()
        result = PaymentResult(approved=True, reference=f"inproc-{uuid.uuid4().hex[:16]}")
        metrics.payment("approved", time.perf_counter() - started)
        return result

    def void(self, *, order_id: int, amount: Decimal, key: str) -> None:
        return None

    def refund(self, *, reference: str) -> None:
        return None


class HttpPaymentGateway:
    def __init__(
        self, base_url: str, *, timeout: float, retries: int, secret: str, budget: float
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/api/v1/authorizations"
        self.timeout = timeout
        self.retries = retries
        self.budget = budget  # seconds for one call, retries and backoff included
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {secret}"

    def authorize(self, *, order_id: int, amount: Decimal, key: str) -> PaymentResult:
        started = time.perf_counter()
        with tracer.start_as_current_span(
            "payments.authorize",
            attributes={"order.id": order_id, "payment.amount": float(amount)},
        ) as span:
            # Baggage travels with traceparent: the payments service tags its spans with it.
            token = context.attach(baggage.set_baggage("glassbox.order_id", str(order_id)))
            try:
                result = self._call_with_retries(order_id, amount, key, span)
            finally:
                context.detach(token)
            outcome = _outcome(result)
            span.set_attribute("payment.outcome", outcome)
        metrics.payment(outcome, time.perf_counter() - started)
        return result

    def _call_with_retries(
        self, order_id: int, amount: Decimal, key: str, span: Any
    ) -> PaymentResult:
        body = _body(order_id, amount)
        failure = "error"
        for attempt, timeout in enumerate(self._attempt_timeouts()):
            span.set_attribute("payment.attempts", attempt + 1)
            try:
                response = self.session.post(
                    self.url, json=body, headers={"Idempotency-Key": key}, timeout=timeout
                )
            except requests.Timeout:
                failure = "timeout"
                continue
            except requests.RequestException:
                failure = "error"
                continue
            if response.status_code in (200, 201):
                return PaymentResult(approved=True, reference=response.json().get("reference"))
            if response.status_code == 402:
                return PaymentResult(approved=False, reason="declined")
            if _problem_type(response).endswith(":authorization-voided"):
                return PaymentResult(approved=False, reason="voided", voided=True)
            if response.status_code < 500 and response.status_code not in (409, 429):
                # A 4xx other than 409 (in progress) and 429 will not change on retry.
                return PaymentResult(approved=False, reason="error", unavailable=True)
            failure = "error"
        return PaymentResult(approved=False, reason=failure, unavailable=True)

    def void(self, *, order_id: int, amount: Decimal, key: str) -> None:
        with tracer.start_as_current_span("payments.void", attributes={"order.id": order_id}):
            self._release(
                f"{self.url}/void", json=_body(order_id, amount), headers={"Idempotency-Key": key}
            )

    def refund(self, *, reference: str) -> None:
        with tracer.start_as_current_span("payments.refund"):
            self._release(f"{self.url}/{reference}/refund")

    def _release(self, url: str, **kwargs: Any) -> None:
        """POST an idempotent void or refund until it answers 200; GatewayUnavailable if not."""
        answer = "no answer"
        for timeout in self._attempt_timeouts():
            try:
                response = self.session.post(url, timeout=timeout, **kwargs)
            except requests.RequestException as exc:
                answer = type(exc).__name__
                continue
            if response.status_code == 200 or _holds_nothing(response):
                return
            answer = f"HTTP {response.status_code} {_problem_type(response)}".strip()
            if response.status_code < 500 and response.status_code != 429:
                break  # refused (e.g. already refunded or voided the other way): no retry
        raise GatewayUnavailable(answer)

    def _attempt_timeouts(self) -> Iterator[float]:
        """The timeout of each attempt: retries with jittered backoff while the budget lasts.

        An attempt gets PAYMENTS_TIMEOUT or what is left of the budget, whichever is less;
        no retry (nor its backoff) starts once too little is left for it to answer.
        """
        deadline = time.monotonic() + self.budget
        for attempt in range(self.retries + 1):
            if attempt:
                pause = _backoff_pause(attempt)
                if deadline - time.monotonic() - pause < _SHORTEST_ATTEMPT:
                    return
                time.sleep(pause)
            left = deadline - time.monotonic()
            if left < _SHORTEST_ATTEMPT:
                return
            yield min(self.timeout, left)


# Less time than this left in the budget: an attempt could not get an answer anyway.
_SHORTEST_ATTEMPT = 0.05


def _body(order_id: int, amount: Decimal) -> dict[str, Any]:
    return {"order_id": order_id, "amount": str(amount), "currency": "EUR"}


def _backoff_pause(attempt: int) -> float:
    # Full jitter: spread the retries of many callers over the backoff window.
    return random.uniform(0, PAYMENTS_BACKOFF_SECONDS * 2 ** (attempt - 1))  # noqa: S311


def _problem_type(response: requests.Response) -> str:
    if not response.headers.get("Content-Type", "").startswith("application/problem+json"):
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


def _holds_nothing(response: requests.Response) -> bool:
    """A 409 naming an authorization already voided, refunded or declined: the money is
    released either way (a refund of a voided payment is not an error that lasts forever)."""
    if response.status_code != 409 or not _problem_type(response):
        return False
    authorization = response.json().get("authorization")
    return isinstance(authorization, dict) and authorization.get("status") in _RELEASED


_RELEASED = ("voided", "refunded", "declined")


def _outcome(result: PaymentResult) -> str:
    if result.approved:
        return "approved"
    return result.reason if result.reason in ("timeout", "error", "voided") else "declined"


def gateway_for(config: Mapping[str, Any]) -> PaymentGateway:
    if config.get("PAYMENTS_URL"):
        return HttpPaymentGateway(
            config["PAYMENTS_URL"],
            timeout=float(config["PAYMENTS_TIMEOUT"]),
            retries=int(config["PAYMENTS_RETRIES"]),
            budget=float(config["PAYMENTS_BUDGET"]),
            secret=str(config.get("PAYMENTS_SHARED_SECRET") or DEFAULT_PAYMENTS_SHARED_SECRET),
        )
    return InProcessGateway()


def current_gateway() -> PaymentGateway:
    gateway: PaymentGateway = current_app.extensions["glassbox.payments"]
    return gateway
