"""The compiled dump gives what marshmallow's dump gives, for the read schemas and others."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import marshmallow as ma
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.catalog.schemas import (
    CategoryPageSchema,
    CategorySchema,
    ProductPageSchema,
    ProductSchema,
)
from service.dumping import compile_dump
from service.pagination import Page

texts = st.text(max_size=30)
moments = st.datetimes(min_value=dt.datetime(1970, 1, 2), timezones=st.sampled_from([dt.UTC, None]))
money = st.decimals(min_value=0, max_value=Decimal("999999.99"), places=2)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


categories = st.fixed_dictionaries(
    {"id": st.integers(1, 2**31), "name": texts},
    optional={
        "description": _maybe(texts),
        "created_at": _maybe(moments),
        "updated_at": _maybe(moments),
    },
)
products = st.fixed_dictionaries(
    {"id": st.integers(1, 2**31), "sku": texts, "price": _maybe(money)},
    optional={
        "name": _maybe(texts),
        "description": _maybe(texts),
        "stock": _maybe(st.integers(0, 10**9)),
        "category_id": _maybe(st.integers(1, 2**31)),
        "created_at": _maybe(moments),
        "updated_at": _maybe(moments),
        "unknown": texts,  # not a field: neither dump shows it
    },
)


@settings(max_examples=300)
@given(category=categories, product=products)
def test_one_resource_dumps_as_marshmallow_dumps_it(category: dict, product: dict) -> None:
    for schema, data in ((CategorySchema(), category), (ProductSchema(), product)):
        assert compile_dump(schema)(data) == schema.dump(data)


@settings(max_examples=100)
@given(
    items=st.lists(_maybe(products), max_size=25),
    cursor=_maybe(texts),
    category_items=st.lists(categories, max_size=5),
)
def test_a_page_dumps_as_marshmallow_dumps_it(
    items: list[dict], cursor: str | None, category_items: list[dict]
) -> None:
    assert compile_dump(ProductPageSchema())(Page(items, cursor)) == ProductPageSchema().dump(
        Page(items, cursor)
    )
    page = Page(category_items, cursor)
    assert compile_dump(CategoryPageSchema())(page) == CategoryPageSchema().dump(page)


class _Owner(ma.Schema):
    name = ma.fields.String()


class _Unusual(ma.Schema):
    """Fields the plan does not know, keys renamed, defaults, paths, methods, hooks."""

    renamed = ma.fields.String(data_key="otherName")
    moved = ma.fields.Integer(attribute="where.deep")
    counted = ma.fields.Integer(as_string=True)
    when = ma.fields.DateTime(format="%Y/%m/%d")
    stamp = ma.fields.DateTime(format="timestamp")
    amount = ma.fields.Decimal(as_string=True)
    flag = ma.fields.Boolean(dump_default=True)
    computed = ma.fields.Method("compute")
    owner = ma.fields.Nested(_Owner, only=("name",))
    owners = ma.fields.List(ma.fields.Nested(_Owner), dump_default=list)
    tags = ma.fields.List(ma.fields.String())
    extra = ma.fields.Dict()

    def compute(self, obj: dict) -> int:
        return len(obj)


class _Hooked(_Owner):
    @ma.post_dump
    def shout(self, data: dict, **kwargs: Any) -> dict:
        return {key: str(value).upper() for key, value in data.items()}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"renamed": "a", "where": {"deep": "7"}, "counted": 3, "amount": Decimal("1.50")},
        {
            "when": dt.datetime(2026, 12, 5, 1, 2, 3, tzinfo=dt.UTC),
            "stamp": dt.datetime(2026, 12, 5, tzinfo=dt.UTC),
            "flag": False,
            "owner": {"name": "x", "other": 1},
            "owners": [{"name": "y"}, None],
            "tags": ["a", b"b"],
            "extra": {"k": 1},
        },
        {"owner": None, "owners": None, "tags": None, "when": None, "renamed": b"bytes"},
    ],
)
def test_fields_the_plan_does_not_know_dump_as_marshmallow_dumps_them(data: dict) -> None:
    assert compile_dump(_Unusual())(data) == _Unusual().dump(data)
    assert compile_dump(_Hooked())({"name": "x"}) == {"name": "X"}
