from __future__ import annotations

import marshmallow as ma

from service.fields import Id, MoneyField, StrictSchema
from service.orders.models import OrderStatus
from service.pagination import ListArgsSchema

MAX_ITEMS = 50
MAX_QUANTITY = 100


class OrderItemInputSchema(StrictSchema):
    product_id = Id(strict=True, required=True)
    quantity = ma.fields.Integer(
        strict=True, required=True, validate=ma.validate.Range(min=1, max=MAX_QUANTITY)
    )


class OrderCreateSchema(StrictSchema):
    customer_email = ma.fields.Email(
        required=True,
        validate=ma.validate.Length(max=254),
        metadata={"example": "ada@example.com"},
    )
    items = ma.fields.List(
        ma.fields.Nested(OrderItemInputSchema),
        required=True,
        validate=ma.validate.Length(min=1, max=MAX_ITEMS),
    )


class OrderItemSchema(ma.Schema):
    product_id = ma.fields.Integer()
    quantity = ma.fields.Integer()
    unit_price = MoneyField()
    line_total = MoneyField()


class OrderSchema(ma.Schema):
    id = ma.fields.Integer()
    customer_email = ma.fields.String()
    status = ma.fields.String(validate=ma.validate.OneOf([s.value for s in OrderStatus]))
    total = MoneyField()
    payment_reference = ma.fields.String(allow_none=True)
    cancellation_reason = ma.fields.String(
        allow_none=True,
        metadata={"description": "customer, payment_declined or payment_expired"},
    )
    created_at = ma.fields.AwareDateTime()
    updated_at = ma.fields.AwareDateTime()
    items = ma.fields.List(ma.fields.Nested(OrderItemSchema))


class OrderPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(OrderSchema), required=True)
    next_cursor = ma.fields.String(allow_none=True, required=True)


class OrderListArgsSchema(ListArgsSchema):
    status = ma.fields.String(validate=ma.validate.OneOf([s.value for s in OrderStatus]))
    customer_email = ma.fields.Email(validate=ma.validate.Length(max=254))


class IdempotencyHeadersSchema(ma.Schema):
    idempotency_key = ma.fields.String(
        data_key="Idempotency-Key",
        load_default=None,
        validate=ma.validate.Length(min=1, max=255),
        metadata={
            "description": "Retrying with the same key and body returns the first order "
            "instead of placing another one"
        },
    )
