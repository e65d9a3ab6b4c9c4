"""The payment step of order placement, behind a small interface.

`InProcessGateway` approves at once (the embedded default when PAYMENTS_URL is empty).
`HttpPaymentGateway` calls the payments service (service/payments) over HTTP with a
timeout, bounded retries with jittered exponential backoff, and an Idempotency-Key per
order, so a retry can never charge twice.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import requests
from flask import current_app
from opentelemetry import baggage, context, trace

from service.metrics import metrics

tracer = trace.get_tracer("glassbox")

BACKOFF_SECONDS = 0.1


@dataclass(frozen=True)
class PaymentResult:
    approved: bool
    reference: str | None = None
    reason: str | None = None
    # True when no decision was reached (timeout, error): the order may be retried.
    unavailable: bool = False


class PaymentGateway(Protocol):
    def authorize(self, *, order_id: int, amount: Decimal) -> PaymentResult: ...


class InProcessGateway:
    """Approves at once; for the embedded default and tests."""

    def authorize(self, *, order_id: int, amount: Decimal) -> PaymentResult:
        started = time.perf_counter()
        result = PaymentResult(approved=True, reference=f"inproc-{uuid.uuid4().hex[:16]}")
        metrics.payment("approved", time.perf_counter() - started)
        return result


class HttpPaymentGateway:
    def __init__(self, base_url: str, *, timeout: float, retries: int) -> None:
        self.url = f"{base_url.rstrip('/')}/api/v1/authorizations"
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()

    def authorize(self, *, order_id: int, amount: Decimal) -> PaymentResult:
        started = time.perf_counter()
        with tracer.start_as_current_span(
            "payments.authorize",
            attributes={"order.id": order_id, "payment.amount": float(amount)},
        ) as span:
            # Baggage travels with traceparent: the payments service tags its spans with it.
            token = context.attach(baggage.set_baggage("glassbox.order_id", str(order_id)))
            try:
                result = self._call_with_retries(order_id, amount, span)
            finally:
                context.detach(token)
            outcome = _outcome(result)
            span.set_attribute("payment.outcome", outcome)
        metrics.payment(outcome, time.perf_counter() - started)
        return result

    def _call_with_retries(self, order_id: int, amount: Decimal, span: Any) -> PaymentResult:
        failure = "error"
        for attempt in range(self.retries + 1):
            if attempt:
                # Full jitter: spread the retries of many callers over the backoff window.
                time.sleep(random.uniform(0, BACKOFF_SECONDS * 2 ** (attempt - 1)))  # noqa: S311
            span.set_attribute("payment.attempts", attempt + 1)
            try:
                response = self.session.post(
                    self.url,
                    json={"order_id": order_id, "amount": str(amount), "currency": "EUR"},
                    headers={"Idempotency-Key": f"order-{order_id}"},
                    timeout=self.timeout,
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
            if response.status_code < 500 and response.status_code != 429:
                # A 4xx other than 429 will not change on retry.
                return PaymentResult(approved=False, reason="error", unavailable=True)
            failure = "error"
        return PaymentResult(approved=False, reason=failure, unavailable=True)


def _outcome(result: PaymentResult) -> str:
    if result.approved:
        return "approved"
    return result.reason if result.reason in ("timeout", "error") else "declined"


def gateway_for(config: Mapping[str, Any]) -> PaymentGateway:
    if config.get("PAYMENTS_URL"):
        return HttpPaymentGateway(
            config["PAYMENTS_URL"],
            timeout=float(config["PAYMENTS_TIMEOUT"]),
            retries=int(config["PAYMENTS_RETRIES"]),
        )
    return InProcessGateway()


def current_gateway() -> PaymentGateway:
    gateway: PaymentGateway = current_app.extensions["glassbox.payments"]
    return gateway
