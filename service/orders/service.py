"""Orders: placing (stock reserved atomically, then payment), listing and cancelling.

States: pending → paid | payment_failed | cancelled, and paid → cancelled. Money is never
held for an order that is not paid: cancelling a pending order first voids its payment at
the gateway (by the order's Idempotency-Key, which also stops an authorization still in
flight), cancelling a paid order first refunds it; only then does the stock go back.
Every order belongs to the API key that placed it (`owner`; None means an operator key).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, NamedTuple, cast

from flask import current_app
from opentelemetry import trace
from sqlalchemy import ColumnElement, CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from service.catalog.models import Product
from service.catalog.service import forget_products
from service.database import CENT, utcnow
from service.errors import (
    AppError,
    Conflict,
    DependencyUnavailable,
    NotFound,
    OutOfStock,
    ValidationFailed,
)
from service.extensions import db
from service.fields import MAX_AMOUNT
from service.metrics import metrics
from service.orders.models import IdempotencyKey, Order, OrderItem, OrderStatus
from service.orders.payment_gateway import GatewayUnavailable, current_gateway
from service.pagination import KeysetQuery, Page, SortKey, keyset_page, scope_of
from service.reports import rollups
from service.reports.service import forget_sales

tracer = trace.get_tracer("glassbox")

OrderData = dict[str, Any]


class PlacedOrder(NamedTuple):
    order: OrderData
    replayed: bool  # an idempotent retry answered with the first request's order


PENDING, PAID = OrderStatus.PENDING, OrderStatus.PAID


class PaymentUnavailable(
    DependencyUnavailable, slug="payment-unavailable", title="Payment service unavailable"
):
    pass


class PaymentDeclined(AppError, status=402, slug="payment-declined", title="Payment declined"):
    pass


class OrderCancelled(Conflict, slug="order-cancelled", title="Order cancelled"):
    pass


class IdempotencyKeyReused(
    ValidationFailed, slug="idempotency-key-reused", title="Idempotency key reused"
):
    pass


def order_data(order: Order) -> OrderData:
    return {
        "id": order.id,
        "customer_email": order.customer_email,
        "status": order.status,
        "total": order.total,
        "payment_reference": order.payment_reference,
        "cancellation_reason": order.cancellation_reason,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "items": [
            {
                "product_id": item.product_id,
                "quantity": item.quantity,
                "unit_price": item.unit_price,
                "line_total": item.line_total,
            }
            for item in order.items
        ],
    }


def _merge_quantities(items: Iterable[Mapping[str, int]]) -> dict[int, int]:
    quantities: dict[int, int] = defaultdict(int)
    for item in items:
        quantities[item["product_id"]] += item["quantity"]
    return dict(quantities)


def _request_hash(customer_email: str, quantities: Mapping[int, int]) -> str:
    canonical = json.dumps([customer_email, sorted(quantities.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def place_order(
    *,
    customer_email: str,
    items: Iterable[Mapping[str, int]],
    idempotency_key: str | None = None,
    api_key_id: int | None = None,
) -> PlacedOrder:
    """Reserve stock and record the order in one transaction, then take payment.

    Each line is a conditional `UPDATE … SET stock = stock - q WHERE stock >= q`: the
    database decides, so two concurrent orders can never sell the same last unit.
    Products are updated in id order so concurrent orders cannot deadlock.

    With an idempotency key, a retry returns the first order instead of placing another,
    and resumes its payment if that had not reached a decision.
    """
    quantities = _merge_quantities(items)
    with tracer.start_as_current_span("orders.place") as span:
        span.set_attribute("order.items_count", len(quantities))
        span.set_attribute("order.units", sum(quantities.values()))
        keyed = idempotency_key is not None and api_key_id is not None
        request_hash = _request_hash(customer_email, quantities)
        if keyed:
            existing = _replay(cast(int, api_key_id), cast(str, idempotency_key), request_hash)
            if existing is not None:
                span.set_attribute("order.idempotent_replay", True)
                return PlacedOrder(_finish(existing, span, keyed=True), replayed=True)
        order = _reserve(customer_email, quantities, request_hash, idempotency_key, api_key_id)
        replayed = order is None
        if order is None:  # a concurrent request with the same key won the race
            order = _replay(cast(int, api_key_id), cast(str, idempotency_key), request_hash)
            assert order is not None
            span.set_attribute("order.idempotent_replay", True)
        return PlacedOrder(_finish(order, span, keyed=keyed), replayed=replayed)


def _replay(api_key_id: int, key: str, request_hash: str) -> Order | None:
    record = db.session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.api_key_id == api_key_id, IdempotencyKey.key == key
        )
    )
    if record is None:
        return None
    ttl = timedelta(seconds=current_app.config["IDEMPOTENCY_TTL"])
    if record.created_at + ttl < utcnow():
        db.session.delete(record)
        db.session.commit()
        return None
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused(
            {"Idempotency-Key": ["This key was used with a different request body."]},
            detail="The Idempotency-Key was already used with a different request body.",
        )
    order = db.session.get(Order, record.order_id) if record.order_id is not None else None
    if order is None:
        raise Conflict("A request with this Idempotency-Key is still being processed.")
    return order


def _reserve(
    customer_email: str,
    quantities: Mapping[int, int],
    request_hash: str,
    idempotency_key: str | None,
    api_key_id: int | None,
) -> Order | None:
    """Create the pending order and decrement stock; None if the key was taken meanwhile."""
    lines: list[OrderItem] = []
    try:
        record = None
        if idempotency_key is not None and api_key_id is not None:
            # Inserted first: a concurrent request with the same key waits on the unique
            # index until this transaction ends, then replays this order.
            record = IdempotencyKey(
                api_key_id=api_key_id, key=idempotency_key, request_hash=request_hash
            )
            db.session.add(record)
            db.session.flush()
        for product_id in sorted(quantities):
            quantity = quantities[product_id]
            unit_price = db.session.execute(
                update(Product)
                .where(Product.id == product_id, Product.stock >= quantity)
                .values(stock=Product.stock - quantity)
                .returning(Product.price)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if unit_price is None:
                _refuse_line(product_id, quantity)
            lines.append(OrderItem(product_id=product_id, quantity=quantity, unit_price=unit_price))
        total = sum((line.unit_price * line.quantity for line in lines), Decimal(0)).quantize(CENT)
        if total > MAX_AMOUNT:  # NUMERIC(12, 2); prices from before the cap could get here
            raise ValidationFailed(
                {"items": [f"The order total {total} exceeds {MAX_AMOUNT}."]},
                detail="The order total is larger than an order can hold.",
            )
        order = Order(
            customer_email=customer_email,
            status=OrderStatus.PENDING,
            total=total,
            items=lines,
            api_key_id=api_key_id,
            payment_key=f"order-{uuid.uuid4().hex}",
        )
        db.session.add(order)
        db.session.flush()
        if record is not None:
            record.order_id = order.id
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        if idempotency_key is None:
            raise
        return None
    except BaseException:
        db.session.rollback()
        raise
    forget_products(quantities)
    return order


def payment_key(order: Order) -> str:
    """The order's Idempotency-Key at the payments service."""
    return order.payment_key or f"order-{order.id}"


def _finish(order: Order, span: Any, *, keyed: bool) -> OrderData:
    """Take payment for a pending order; other states are answered as they stand.

    `keyed`: the request carried an Idempotency-Key, so retrying it resumes the payment.
    """
    span.set_attribute("order.id", order.id)
    span.set_attribute("order.total", float(order.total))
    if order.status == OrderStatus.PENDING:
        payment = current_gateway().authorize(
            order_id=order.id, amount=order.total, key=payment_key(order)
        )
        if payment.approved:
            # Conditional: a cancel that voided this payment meanwhile keeps the order.
            changed = db.session.execute(
                update(Order)
                .where(Order.id == order.id, Order.status == OrderStatus.PENDING)
                .values(status=OrderStatus.PAID, payment_reference=payment.reference)
                .execution_options(synchronize_session=False)
            )
            paid_now = cast(CursorResult[Any], changed).rowcount == 1
            if paid_now:  # the report's rows commit with the payment, or neither does
                rollups.record(Order.id == order.id)
            db.session.commit()
            db.session.refresh(order)
            if paid_now:
                forget_sales()
                metrics.order_placed(OrderStatus.PAID, float(order.total))
        elif payment.voided:
            db.session.refresh(order)
            raise _cancelled(order)
        elif payment.unavailable:
            span.set_attribute("order.status", order.status)
            if keyed:
                advice = "Retry with the same Idempotency-Key to complete it."
            else:  # a retry without a key would place a second order
                advice = (
                    f"It stays pending until cancelled (POST /api/v1/orders/{order.id}/cancel) "
                    "or expired; send an Idempotency-Key to make a placement safe to retry."
                )
            raise PaymentUnavailable(
                f"Order {order.id} is reserved but the payment service did not answer "
                f"({payment.reason}). {advice}",
                order_id=order.id,
                order_status=order.status,
            )
        elif _release_stock(
            order, reason="payment_declined", to=OrderStatus.PAYMENT_FAILED, since=[PENDING]
        ):
            metrics.order_placed(OrderStatus.PAYMENT_FAILED, 0.0)
    span.set_attribute("order.status", order.status)
    if order.status == OrderStatus.CANCELLED:
        raise _cancelled(order)
    if order.status == OrderStatus.PAYMENT_FAILED:
        raise PaymentDeclined(
            f"The payment for order {order.id} was declined; the order is not placed "
            "and its stock is released.",
            order_id=order.id,
            order_status=order.status,
        )
    return order_data(order)


def _cancelled(order: Order) -> OrderCancelled:
    """The one answer (409) of a placement whose order is cancelled, or being cancelled (its
    payment voided mid-flight), whichever the cancel has reached; a replay of one too."""
    return OrderCancelled(
        f"Order {order.id} is cancelled ({order.cancellation_reason}): nothing is charged "
        "and its stock is released."
        if order.status == OrderStatus.CANCELLED
        else f"Order {order.id} is being cancelled: its payment was voided; nothing is charged.",
        order_id=order.id,
        order_status=order.status,
        cancellation_reason=order.cancellation_reason,
    )


def _refuse_line(product_id: int, quantity: int) -> None:
    product = db.session.get(Product, product_id)
    if product is None:
        raise ValidationFailed(
            {"items": [f"Product {product_id} does not exist."]},
            detail=f"Product {product_id} does not exist.",
        )
    raise OutOfStock(
        f"Product {product_id} ({product.name}) has {product.stock} in stock; "
        f"{quantity} requested.",
        product_id=product_id,
        requested=quantity,
        available=product.stock,
    )


def _owned_order(order_id: int, owner: int | None) -> Order:
    """The order if `owner` may see it (None: any); someone else's is as absent as a missing one."""
    statement = select(Order).options(selectinload(Order.items)).where(Order.id == order_id)
    if owner is not None:
        statement = statement.where(Order.api_key_id == owner)
    order = db.session.scalar(statement)
    if order is None:
        raise NotFound(f"Order {order_id} does not exist.")
    return order


def get_order(*, order_id: int, owner: int | None) -> OrderData:
    return order_data(_owned_order(order_id, owner))


def list_orders(
    *,
    owner: int | None,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    customer_email: str | None = None,
) -> Page[OrderData]:
    """Newest first; only `owner`'s orders unless owner is None (an operator key)."""
    statement = select(Order).options(selectinload(Order.items))
    if owner is not None:
        statement = statement.where(Order.api_key_id == owner)
    if status is not None:
        statement = statement.where(Order.status == status)
    if customer_email is not None:
        statement = statement.where(Order.customer_email == customer_email)
    page = keyset_page(
        KeysetQuery(statement, SortKey(Order.id, Order.id, descending=True)),
        limit=limit,
        cursor=cursor,
        scope=scope_of(
            "orders", {"owner": owner, "status": status, "customer_email": customer_email}
        ),
        execute=lambda s, p: list(db.session.scalars(s, p)),
        key_of=lambda o: (o.id, o.id),
    )
    return Page([order_data(o) for o in page.items], page.next_cursor)


def cancel_order(*, order_id: int, owner: int | None) -> OrderData:
    """Release the money (void a pending payment, refund a paid one), then the stock.

    Cancelling again, or cancelling an order whose payment failed, is a conflict. The
    request is recorded (committed) before the void or refund is sent: when the payments
    service does not answer, the order stays as it was (503), the void or refund may still
    land, and the next `expire-pending` run (or another cancel) finishes the cancel.
    """
    with tracer.start_as_current_span("orders.cancel") as span:
        span.set_attribute("order.id", order_id)
        order = _owned_order(order_id, owner)
        if not _request_cancel(order, since=[PENDING, PAID]) or not _release(
            order, reason="customer", since=[PENDING, PAID]
        ):
            raise Conflict(f"Order {order_id} is already {order.status}.")
        metrics.order_cancelled()
        span.set_attribute("order.items_count", len(order.items))
        return order_data(order)


def _request_cancel(order: Order, *, since: list[OrderStatus]) -> bool:
    """Record that the order is to be cancelled, in a transaction of its own, before any money
    moves: a void or refund whose answer is lost still reaches the gateway, and this record is
    what lets `finish_requested_cancels` complete the cancel. False if the order had left `since`.
    """
    try:
        requested = db.session.execute(
            update(Order)
            .where(Order.id == order.id, Order.status.in_([str(s) for s in since]))
            .values(cancel_requested_at=func.coalesce(Order.cancel_requested_at, utcnow()))
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    if cast(CursorResult[Any], requested).rowcount != 1:
        db.session.refresh(order)
        return False
    return True


def finish_requested_cancels() -> int:
    """Finish every cancel that was requested but not completed (its void or refund went
    unanswered), through the same claim as a cancel; how many were finished.

    Releasing again is safe: void and refund are idempotent at the gateway, and one it refuses
    because the payment is already voided or refunded counts as released.
    """
    requested = Order.cancel_requested_at.is_not(None), Order.status.in_([PENDING, PAID])
    return _release_each(requested, reason="customer", since=[PENDING, PAID])


def expire_pending(*, older_than: timedelta) -> int:
    """Cancel orders whose payment never reached a decision, and forget old idempotency keys.

    Each order is claimed before its money is touched (`_release`): one a retry paid or a
    cancel took meanwhile is left alone; one whose void fails stays pending for the next run.
    """
    stale = Order.status == OrderStatus.PENDING, Order.created_at < utcnow() - older_than
    expired = _release_each(stale, reason="payment_expired", since=[PENDING])
    ttl = timedelta(seconds=current_app.config["IDEMPOTENCY_TTL"])
    db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - ttl))
    db.session.commit()
    return expired


def _release_each(
    where: tuple[ColumnElement[bool], ...], *, reason: str, since: list[OrderStatus]
) -> int:
    """`_release` each order matching `where`, in id order, one at a time; how many it released.
    One whose void or refund fails is left as it was, for the next run."""
    candidates = db.session.scalars(
        select(Order).options(selectinload(Order.items)).where(*where).order_by(Order.id)
    ).all()
    db.session.commit()
    released = 0
    for order in candidates:
        try:
            if _release(order, reason=reason, since=since):
                metrics.order_cancelled()
                released += 1
        except PaymentUnavailable:
            continue
    return released


def _release(order: Order, *, reason: str, since: list[OrderStatus]) -> bool:
    """Claim the order, release its money, cancel it and put its stock back; False if it was
    no longer in one of `since` (someone else's to release).

    The claim is a conditional UPDATE on the order's status as it is *now*; it holds the row
    until the cancel commits, so the money released is that of the status claimed (a void
    for pending, a refund for paid), and a placement that got an approval meanwhile waits at
    its own conditional UPDATE to `paid`, then finds the order cancelled (409). The row is
    held for one void or refund: at most PAYMENTS_BUDGET. When the gateway does not answer,
    the claim is rolled back and the order is as it was (PaymentUnavailable).
    """
    try:
        if not _claim(order, since, updated_at=utcnow()):
            return False
        db.session.refresh(order)  # the status claimed, not the one read before
        _release_money(order)
        db.session.execute(
            update(Order)
            .where(Order.id == order.id)
            .values(status=OrderStatus.CANCELLED, cancellation_reason=reason)
            .execution_options(synchronize_session=False)
        )
        if order.status == OrderStatus.PAID:  # no longer a sale, in the same transaction
            rollups.forget(order)
        _restore_stock(order)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    _forget_released(order, since=since)
    return True


def _claim(order: Order, since: list[OrderStatus], **values: Any) -> bool:
    """A conditional UPDATE of the order while its status is one of `since`, holding its row
    until the transaction ends; False (rolled back, the order re-read) if it had left."""
    claimed = db.session.execute(
        update(Order)
        .where(Order.id == order.id, Order.status.in_([str(s) for s in since]))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], claimed).rowcount == 1:
        return True
    db.session.rollback()
    db.session.refresh(order)
    return False


def _forget_released(order: Order, *, since: list[OrderStatus]) -> None:
    """After a release commits: the order as stored, and the cached reads it changed."""
    db.session.refresh(order)
    forget_products(item.product_id for item in order.items)
    if OrderStatus.PAID in since:  # it may have been paid: the sales reports change
        forget_sales()


def _release_money(order: Order) -> None:
    gateway = current_gateway()
    try:
        if order.status == OrderStatus.PAID and order.payment_reference:
            gateway.refund(reference=order.payment_reference)
        else:
            gateway.void(order_id=order.id, amount=order.total, key=payment_key(order))
    except GatewayUnavailable as exc:
        raise PaymentUnavailable(
            f"Order {order.id} is not cancelled yet: the payments service did not confirm "
            f"the release of its payment ({exc}), which may still happen. The cancel is "
            "recorded and will be finished by the shop's next expiry run; or cancel again "
            "shortly to finish it now.",
            order_id=order.id,
            order_status=order.status,
        ) from None


def _restore_stock(order: Order) -> None:
    for item in order.items:
        db.session.execute(
            update(Product)
            .where(Product.id == item.product_id)
            .values(stock=Product.stock + item.quantity)
            .execution_options(synchronize_session=False)
        )


def _release_stock(
    order: Order,
    *,
    reason: str,
    since: list[OrderStatus],
    to: OrderStatus = OrderStatus.CANCELLED,
) -> bool:
    """Move the order from one of `since` to `to` and put its stock back; False if it had left.

    Conditional on the old status: of two concurrent releases exactly one restores stock.
    """
    try:
        if not _claim(order, since, status=to, cancellation_reason=reason):
            return False
        _restore_stock(order)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    _forget_released(order, since=since)
    return True
