"""Orders: placing (stock reserved atomically, then payment), listing and cancelling."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import selectinload

from service.catalog.models import Product
from service.catalog.service import forget_products
from service.database import CENT
from service.errors import Conflict, NotFound, OutOfStock, ValidationFailed
from service.extensions import db
from service.orders.models import Order, OrderItem, OrderStatus
from service.orders.payments import current_gateway
from service.pagination import Page, SortKey, keyset_page, scope_of

OrderData = dict[str, Any]


def order_data(order: Order) -> OrderData:
    return {
        "id": order.id,
        "customer_email": order.customer_email,
        "status": order.status,
        "total": order.total,
        "payment_reference": order.payment_reference,
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


def place_order(*, customer_email: str, items: Iterable[Mapping[str, int]]) -> OrderData:
    """Reserve stock and record the order in one transaction, then take payment.

    Each line is a conditional `UPDATE … SET stock = stock - q WHERE stock >= q`: the
    database decides, so two concurrent orders can never sell the same last unit.
    Products are locked in id order so concurrent orders cannot deadlock.
    """
    quantities = _merge_quantities(items)
    lines: list[OrderItem] = []
    try:
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
        order = Order(
            customer_email=customer_email, status=OrderStatus.PENDING, total=total, items=lines
        )
        db.session.add(order)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    forget_products(quantities)

    payment = current_gateway().authorize(order_id=order.id, amount=order.total)
    if payment.approved:
        order.status = OrderStatus.PAID
        order.payment_reference = payment.reference
        db.session.commit()
    else:
        _cancel(order)
    return order_data(order)


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


def get_order(*, order_id: int) -> OrderData:
    order = db.session.scalar(
        select(Order).options(selectinload(Order.items)).where(Order.id == order_id)
    )
    if order is None:
        raise NotFound(f"Order {order_id} does not exist.")
    return order_data(order)


def list_orders(
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    customer_email: str | None = None,
) -> Page[OrderData]:
    """Newest first."""
    statement = select(Order).options(selectinload(Order.items))
    if status is not None:
        statement = statement.where(Order.status == status)
    if customer_email is not None:
        statement = statement.where(Order.customer_email == customer_email)
    page = keyset_page(
        statement,
        sort=SortKey(Order.id, Order.id, descending=True),
        limit=limit,
        cursor=cursor,
        scope=scope_of("orders", {"status": status, "customer_email": customer_email}),
        execute=lambda s: list(db.session.scalars(s)),
        key_of=lambda o: (o.id, o.id),
    )
    return Page([order_data(o) for o in page.items], page.next_cursor)


def cancel_order(*, order_id: int) -> OrderData:
    """Cancel once and put the stock back; cancelling again is a conflict."""
    order = db.session.scalar(
        select(Order).options(selectinload(Order.items)).where(Order.id == order_id)
    )
    if order is None:
        raise NotFound(f"Order {order_id} does not exist.")
    if order.status == OrderStatus.CANCELLED:
        raise Conflict(f"Order {order_id} is already cancelled.")
    _cancel(order)
    return order_data(order)


def _cancel(order: Order) -> None:
    try:
        # Conditional on the old status: of two concurrent cancels exactly one restores stock.
        result = db.session.execute(
            update(Order)
            .where(Order.id == order.id, Order.status != OrderStatus.CANCELLED)
            .values(status=OrderStatus.CANCELLED)
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], result).rowcount != 1:
            raise Conflict(f"Order {order.id} is already cancelled.")
        for item in order.items:
            db.session.execute(
                update(Product)
                .where(Product.id == item.product_id)
                .values(stock=Product.stock + item.quantity)
                .execution_options(synchronize_session=False)
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    db.session.refresh(order)
    forget_products(item.product_id for item in order.items)
