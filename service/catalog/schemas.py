from __future__ import annotations

from typing import Any

import marshmallow as ma

from service.fields import MAX_PRICE, Id, MoneyField, StrictSchema, Text
from service.pagination import ListArgsSchema

PRODUCT_SORTS = ("name", "-name", "price", "-price", "created_at", "-created_at")


class CategorySchema(StrictSchema):
    id = ma.fields.Integer(dump_only=True)
    name = Text(min=1, max=120, blank=False, required=True, metadata={"example": "Coffee"})
    description = Text(max=2000, multiline=True, load_default="")
    created_at = ma.fields.AwareDateTime(dump_only=True)
    updated_at = ma.fields.AwareDateTime(dump_only=True)


class CategoryUpdateSchema(StrictSchema):
    name = Text(min=1, max=120, blank=False)
    description = Text(max=2000, multiline=True)


class CategoryPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(CategorySchema), required=True)
    next_cursor = ma.fields.String(allow_none=True, required=True)


class ProductSchema(StrictSchema):
    id = ma.fields.Integer(dump_only=True)
    sku = ma.fields.String(
        required=True,
        validate=[ma.validate.Length(min=1, max=64), ma.validate.Regexp(r"^[A-Za-z0-9._-]+$")],
        metadata={"example": "COF-0001", "description": "Letters, digits, '.', '_' or '-'"},
    )
    name = Text(
        min=1, max=200, blank=False, required=True, metadata={"example": "Espresso beans 1 kg"}
    )
    description = Text(max=5000, multiline=True, load_default="")
    price = MoneyField(required=True, maximum=MAX_PRICE)
    stock = ma.fields.Integer(
        strict=True, required=True, validate=ma.validate.Range(min=0, max=1_000_000_000)
    )
    category_id = Id(strict=True, required=True)
    created_at = ma.fields.AwareDateTime(dump_only=True)
    updated_at = ma.fields.AwareDateTime(dump_only=True)


class ProductUpdateSchema(StrictSchema):
    sku = ma.fields.String(
        validate=[ma.validate.Length(min=1, max=64), ma.validate.Regexp(r"^[A-Za-z0-9._-]+$")]
    )
    name = Text(min=1, max=200, blank=False)
    description = Text(max=5000, multiline=True)
    price = MoneyField(maximum=MAX_PRICE)
    stock = ma.fields.Integer(strict=True, validate=ma.validate.Range(min=0, max=1_000_000_000))
    category_id = Id(strict=True)


class ProductPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(ProductSchema), required=True)
    next_cursor = ma.fields.String(allow_none=True, required=True)


class ProductListArgsSchema(ListArgsSchema):
    category_id = Id()
    min_price = MoneyField()
    max_price = MoneyField()
    q = Text(min=1, max=100, metadata={"description": "Case-insensitive search in the name"})
    sort = ma.fields.String(
        load_default="created_at",
        validate=ma.validate.OneOf(PRODUCT_SORTS),
        metadata={"description": "Sort key; a leading '-' sorts descending"},
    )

    @ma.validates_schema
    def _price_range(self, data: dict[str, Any], **kwargs: Any) -> None:
        low, high = data.get("min_price"), data.get("max_price")
        if low is not None and high is not None and low > high:
            raise ma.ValidationError("min_price must not exceed max_price.", "min_price")
