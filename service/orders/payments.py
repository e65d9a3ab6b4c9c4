"""The payment step of order placement, behind a small interface.

`InProcessGateway` approves every payment. A gateway that calls a payments service over
HTTP implements the same `authorize` and is chosen in the app factory.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from flask import current_app


@dataclass(frozen=True)
class PaymentResult:
    approved: bool
    reference: str | None = None
    reason: str | None = None


class PaymentGateway(Protocol):
    def authorize(self, *, order_id: int, amount: Decimal) -> PaymentResult: ...


class InProcessGateway:
    """Approves at once; for the embedded default and tests."""

    def authorize(self, *, order_id: int, amount: Decimal) -> PaymentResult:
        return PaymentResult(approved=True, reference=f"inproc-{uuid.uuid4().hex[:16]}")


def current_gateway() -> PaymentGateway:
    gateway: PaymentGateway = current_app.extensions["glassbox.payments"]
    return gateway
