"""Categories and products: the rules, the transactions and the caching of reads."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, exists, select
from sqlalchemy.exc import IntegrityError

from service.caching import bump_generation, cache_delete, cached, generation
from service.catalog.models import Category, Product
from service.database import read_rows
from service.errors import Conflict, NotFound, ValidationFailed
from service.extensions import db
from service.pagination import KeysetQuery, Page, SortKey, keyset_page, scope_of
from service.reports import rollups

CATALOG = "catalog"
# Names other domains show (a sales report's labels): bumped when a product or category
# is changed or deleted, not when stock moves.
NAMES = "catalog_names"

CategoryData = dict[str, Any]
ProductData = dict[str, Any]
# Reads return what the caller's `render` makes of the data, and cache that: a route passes
# one that gives the final response bytes (service/representations.py).
R = TypeVar("R")
# A write's precondition (the route's If-Match check), called with the row's current data
# inside the write's transaction, after the row is locked: it raises to refuse the write.
Precondition = Callable[[dict[str, Any]], None]

_CATEGORY_COLUMNS = ("id", "name", "description", "created_at", "updated_at")
_PRODUCT_COLUMNS = (
    "id",
    "sku",
    "name",
    "description",
    "price",
    "stock",
    "category_id",
    "created_at",
    "updated_at",
)
# Hot reads: Core statements of plain columns (rows, no identity map or instances), built once.
_CATEGORY_SELECT = select(*(getattr(Category, name) for name in _CATEGORY_COLUMNS))
_CATEGORY_BY_ID = _CATEGORY_SELECT.where(Category.id == bindparam("id"))
_PRODUCT_SELECT = select(*(getattr(Product, name) for name in _PRODUCT_COLUMNS))
_PRODUCT_BY_ID = _PRODUCT_SELECT.where(Product.id == bindparam("id"))
_PRODUCT_SORTS = {
    "name": Product.name,
    "price": Product.price,
    "created_at": Product.created_at,
}
_CATEGORY_PAGES = KeysetQuery(_CATEGORY_SELECT, SortKey(Category.id, Category.id))
# The product list's filters as bind parameters, so one statement serves every value.
_PRODUCT_FILTERS = {
    "category_id": Product.category_id == bindparam("category_id", type_=Product.category_id.type),
    "min_price": Product.price >= bindparam("min_price", type_=Product.price.type),
    "max_price": Product.price <= bindparam("max_price", type_=Product.price.type),
    "q": Product.name.ilike(bindparam("q", type_=Product.name.type), escape="\\"),
}


# One KeysetQuery per shape (filters given, sort): at most 2**4 * 6 of them.
@functools.cache
def _product_query(sort: str, filters: frozenset[str]) -> KeysetQuery:
    statement = _PRODUCT_SELECT
    for name in _PRODUCT_FILTERS:  # a fixed order: one statement per set of filters
        if name in filters:
            statement = statement.where(_PRODUCT_FILTERS[name])
    column = _PRODUCT_SORTS[sort.lstrip("-")]
    return KeysetQuery(statement, SortKey(column, Product.id, descending=sort.startswith("-")))


def _category_data(category: Category) -> CategoryData:
    return {name: getattr(category, name) for name in _CATEGORY_COLUMNS}


def _product_data(product: Product) -> ProductData:
    return {name: getattr(product, name) for name in _PRODUCT_COLUMNS}


# Categories


def list_categories(
    *, limit: int, cursor: str | None, render: Callable[[Page[CategoryData]], R]
) -> R:
    scope = scope_of("categories", {})

    def load() -> Page[CategoryData]:
        return keyset_page(
            _CATEGORY_PAGES,
            limit=limit,
            cursor=cursor,
            scope=scope,
            execute=read_rows,
            key_of=lambda c: (c["id"], c["id"]),
        )

    page, _ = cached(
        f"categories:{generation(CATALOG)}:{limit}:{cursor}",
        lambda: render(load()),
        name="category_list",
    )
    return page


def get_category(*, category_id: int, render: Callable[[CategoryData], R]) -> R:
    def load() -> CategoryData:
        rows = read_rows(_CATEGORY_BY_ID, {"id": category_id})
        if not rows:
            raise NotFound(f"Category {category_id} does not exist.")
        return rows[0]

    data, _ = cached(f"category:{category_id}", lambda: render(load()), name="category")
    return data


def create_category(*, name: str, description: str = "") -> CategoryData:
    category = Category(name=name, description=description)
    db.session.add(category)
    _commit_or_conflict(f"A category named {name!r} already exists.")
    _forget(categories=[category.id])
    return _category_data(category)


def update_category(
    *, category_id: int, precondition: Precondition | None = None, **changes: Any
) -> CategoryData:
    category = _locked(Category, category_id, _category_data, precondition)
    for name, value in changes.items():
        setattr(category, name, value)
    _commit_or_conflict(f"A category named {changes.get('name')!r} already exists.")
    _forget(categories=[category_id], renamed=True)
    return _category_data(category)


def delete_category(*, category_id: int, precondition: Precondition | None = None) -> None:
    _locked(Category, category_id, _category_data, precondition)
    if db.session.scalar(select(exists().where(Product.category_id == category_id))):
        raise Conflict(f"Category {category_id} still has products; move or delete them first.")
    _delete_or_conflict(
        delete(Category).where(Category.id == category_id),
        f"Category {category_id} still has products.",
    )
    _forget(categories=[category_id], renamed=True)


# Products


def list_products(
    *,
    limit: int,
    cursor: str | None,
    sort: str = "created_at",
    category_id: int | None = None,
    min_price: Decimal | None = None,
    max_price: Decimal | None = None,
    q: str | None = None,
    render: Callable[[Page[ProductData]], R],
) -> R:
    filters = {
        "sort": sort,
        "category_id": category_id,
        "min_price": min_price,
        "max_price": max_price,
        "q": q,
    }
    scope = scope_of("products", filters)

    def load() -> Page[ProductData]:
        params: dict[str, Any] = {}
        if category_id is not None:
            params["category_id"] = category_id
        if min_price is not None:
            params["min_price"] = min_price
        if max_price is not None:
            params["max_price"] = max_price
        if q:
            escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["q"] = f"%{escaped}%"
        query = _product_query(sort, frozenset(params))
        sort_key = query.sort.column.key
        return keyset_page(
            query,
            limit=limit,
            cursor=cursor,
            scope=scope,
            execute=read_rows,
            key_of=lambda p: (p[sort_key], p["id"]),
            params=params,
        )

    page, _ = cached(
        f"products:{generation(CATALOG)}:{scope}:{limit}:{cursor}",
        lambda: render(load()),
        name="product_list",
    )
    return page


def get_product(*, product_id: int, render: Callable[[ProductData], R]) -> R:
    def load() -> ProductData:
        rows = read_rows(_PRODUCT_BY_ID, {"id": product_id})
        if not rows:
            raise NotFound(f"Product {product_id} does not exist.")
        return rows[0]

    data, _ = cached(f"product:{product_id}", lambda: render(load()), name="product")
    return data


def create_product(
    *,
    sku: str,
    name: str,
    price: Decimal,
    stock: int,
    category_id: int,
    description: str = "",
) -> ProductData:
    _require_category(category_id)
    product = Product(
        sku=sku,
        name=name,
        description=description,
        price=price,
        stock=stock,
        category_id=category_id,
    )
    db.session.add(product)
    _commit_or_conflict(f"A product with SKU {sku!r} already exists.")
    _forget(products=[product.id])
    return _product_data(product)


def update_product(
    *, product_id: int, precondition: Precondition | None = None, **changes: Any
) -> ProductData:
    product = _locked(Product, product_id, _product_data, precondition)
    if "category_id" in changes:
        _require_category(changes["category_id"])
    moved = changes.get("category_id", product.category_id) != product.category_id
    for name, value in changes.items():
        setattr(product, name, value)
    # The sales report's category rows of its orders move with it, in the same transaction.
    _commit_or_conflict(
        f"A product with SKU {changes.get('sku')!r} already exists.",
        before=functools.partial(rollups.regroup, product_id) if moved else None,
    )
    _forget(products=[product_id], renamed=True)
    return _product_data(product)


def delete_product(*, product_id: int, precondition: Precondition | None = None) -> None:
    _locked(Product, product_id, _product_data, precondition)
    _delete_or_conflict(
        delete(Product).where(Product.id == product_id),
        f"Product {product_id} appears on orders and cannot be deleted.",
    )
    _forget(products=[product_id], renamed=True)


def forget_products(product_ids: Iterable[int]) -> None:
    """Drop cached reads of these products (their stock changed elsewhere, e.g. an order)."""
    _forget(products=product_ids)


def _forget(
    *, products: Iterable[int] = (), categories: Iterable[int] = (), renamed: bool = False
) -> None:
    keys = [f"product:{i}" for i in products] + [f"category:{i}" for i in categories]
    if keys:
        cache_delete(*keys)
    bump_generation(CATALOG)
    if renamed:
        bump_generation(NAMES)


M = TypeVar("M", Category, Product)


def _locked(
    model: type[M],
    row_id: int,
    data: Callable[[M], dict[str, Any]],
    precondition: Precondition | None,
) -> M:
    """The row to change, locked until the write commits (FOR UPDATE; SQLite writes one at a
    time anyway), once `precondition` accepts its current data: no write slips in between."""
    row = db.session.get(model, row_id, with_for_update=precondition is not None)
    if row is None:
        raise NotFound(f"{model.__name__} {row_id} does not exist.")
    if precondition is not None:
        precondition(data(row))
    return row


def _require_category(category_id: int) -> None:
    if db.session.get(Category, category_id) is None:
        raise ValidationFailed({"category_id": [f"Category {category_id} does not exist."]})


def _delete_or_conflict(statement: Any, message: str) -> None:
    """The foreign key refuses the DELETE itself (not the commit): map that to a 409."""
    try:
        db.session.execute(statement)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(message) from None


def _commit_or_conflict(message: str, *, before: Callable[[], None] | None = None) -> None:
    """Commit (after flushing and running `before`); a constraint's refusal is a 409."""
    try:
        if before is not None:
            db.session.flush()
            before()
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(message) from None
