from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.database import Base, MoneyColumn, UTCDateTime, utcnow


class OrderStatus(StrEnum):
    """pending → paid | payment_failed | cancelled; paid → cancelled (refunded first)."""

    PENDING = "pending"
    PAID = "paid"
    PAYMENT_FAILED = "payment_failed"
    CANCELLED = "cancelled"


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'paid', 'payment_failed', 'cancelled')", name="status_known"
        ),
        CheckConstraint("total >= 0", name="total_not_negative"),
        Index("ix_orders_customer_email_id", "customer_email", "id"),
        Index("ix_orders_status_id", "status", "id"),
        Index("ix_orders_created_at", "created_at"),
        Index("ix_orders_api_key_id_id", "api_key_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_email: Mapped[str] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.PENDING)
    # The API key that placed the order: only it (or an operator key) may see or cancel it.
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), default=None
    )
    # The order's Idempotency-Key at the payments service: unique beyond this database.
    payment_key: Mapped[str | None] = mapped_column(String(64), default=None)
    total: Mapped[Decimal] = mapped_column(MoneyColumn())
    payment_reference: Mapped[str | None] = mapped_column(String(64), default=None)
    # Why a cancelled order was cancelled: customer, payment_declined, payment_expired.
    cancellation_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    # Set (and committed) before a cancel sends its void or refund; an order still pending or
    # paid with it set has a cancel to finish (`orders expire-pending` does).
    cancel_requested_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="OrderItem.id"
    )


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        Index("ix_order_items_order_id", "order_id"),
        Index("ix_order_items_product_id", "product_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"))
    quantity: Mapped[int]
    # Captured when the order is placed: later price changes do not rewrite history.
    unit_price: Mapped[Decimal] = mapped_column(MoneyColumn())

    order: Mapped[Order] = relationship(back_populates="items")

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


class IdempotencyKey(Base):
    """An `Idempotency-Key` a client sent with POST /orders, and the order it created."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("api_key_id", "key", name="uq_idempotency_keys_api_key_id_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the canonical request body: the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
