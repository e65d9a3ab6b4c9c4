from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine.cursor import CursorResultMetaData

from service.catalog.models import Product
from service.extensions import db
from tests.factories import Factories


def new_product(category_id: int, **overrides: Any) -> dict[str, Any]:
    return {
        "sku": "NEW-1",
        "name": "New thing",
        "price": "12.50",
        "stock": 3,
        "category_id": category_id,
        **overrides,
    }


def walk(client: FlaskClient, url: str) -> list[dict[str, Any]]:
    """Follow next_cursor to the end and return every item."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        separator = "&" if "?" in url else "?"
        response = client.get(url + (f"{separator}cursor={cursor}" if cursor else ""))
        assert response.status_code == 200, response.json
        items += response.json["items"]
        cursor = response.json["next_cursor"]
        if cursor is None:
            assert "Link" not in response.headers
            return items
        assert 'rel="next"' in response.headers["Link"]
    raise AssertionError("pagination did not end")


def test_create_get_update_delete(client: FlaskClient, make: Factories, auth_headers: dict) -> None:
    category = make.category()
    created = client.post("/api/v1/products", json=new_product(category.id), headers=auth_headers)
    assert created.status_code == 201, created.json
    body = created.json
    assert body["price"] == "12.50"  # a string with two places, never a float
    assert body["stock"] == 3
    assert body["created_at"].endswith("+00:00")

    fetched = client.get(f"/api/v1/products/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json == body

    patched = client.patch(
        f"/api/v1/products/{body['id']}",
        json={"price": 9, "name": "Renamed"},
        headers=auth_headers,
    )
    assert patched.status_code == 200
    assert patched.json["price"] == "9.00"
    assert patched.json["name"] == "Renamed"
    assert client.get(f"/api/v1/products/{body['id']}").json["name"] == "Renamed"

    deleted = client.delete(f"/api/v1/products/{body['id']}", headers=auth_headers)
    assert deleted.status_code == 204
    missing = client.get(f"/api/v1/products/{body['id']}")
    assert missing.status_code == 404
    assert missing.content_type == "application/problem+json"


def test_duplicate_sku_is_a_conflict(
    client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    existing = make.product(sku="DUP-1")
    response = client.post(
        "/api/v1/products",
        json=new_product(existing.category_id, sku="DUP-1"),
        headers=auth_headers,
    )
    assert response.status_code == 409
    assert "DUP-1" in response.json["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", "1.234"),
        ("price", -1),
        ("price", "NaN"),
        ("price", True),
        ("price", "99999999999.00"),
        ("stock", -1),
        ("stock", 1.5),
        ("stock", "3"),
        ("stock", 2**63),
        ("category_id", 0),
        ("category_id", 2**31),
        ("sku", "has space"),
        ("name", ""),
        ("name", "bell\x07"),
        ("unknown", 1),
    ],
)
def test_invalid_fields_are_422(
    client: FlaskClient, make: Factories, auth_headers: dict, field: str, value: Any
) -> None:
    body = {**new_product(make.category().id), field: value}
    response = client.post("/api/v1/products", json=body, headers=auth_headers)
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert field in response.json["errors"]


def test_unknown_category_is_422(client: FlaskClient, auth_headers: dict) -> None:
    response = client.post("/api/v1/products", json=new_product(999_999), headers=auth_headers)
    assert response.status_code == 422
    assert "category_id" in response.json["errors"]


def test_price_is_exact(client: FlaskClient, make: Factories, app: Flask) -> None:
    product = make.product(price=Decimal("0.10"))
    assert client.get(f"/api/v1/products/{product.id}").json["price"] == "0.10"
    with app.app_context():
        assert db.session.get(Product, product.id).price == Decimal("0.10")


def test_filters(client: FlaskClient, make: Factories) -> None:
    coffee, tea = make.category(), make.category()
    make.product(name="Dark roast", price=Decimal("5.00"), category_id=coffee.id)
    make.product(name="Light ROAST", price=Decimal("15.00"), category_id=coffee.id)
    make.product(name="Green tea", price=Decimal("8.00"), category_id=tea.id)
    make.product(name="100% cocoa_nibs", price=Decimal("3.00"), category_id=tea.id)

    def names(query: str) -> list[str]:
        response = client.get(f"/api/v1/products?{query}")
        assert response.status_code == 200, response.json
        return sorted(item["name"] for item in response.json["items"])

    assert names(f"category_id={coffee.id}") == ["Dark roast", "Light ROAST"]
    assert names("min_price=6&max_price=15") == ["Green tea", "Light ROAST"]
    assert names("q=roast") == ["Dark roast", "Light ROAST"]
    # LIKE wildcards in the search are literal characters
    assert names("q=%25") == ["100% cocoa_nibs"]
    assert names("q=a_n") == ["100% cocoa_nibs"]
    assert names("q=x%25y") == []
    assert names(f"category_id={tea.id}&q=tea") == ["Green tea"]


@pytest.mark.parametrize(
    "query",
    [
        "min_price=10&max_price=5",
        "sort=stock",
        "limit=0",
        "limit=101",
        "category_id=-1",
        "category_id=99999999999999999999",
        "min_price=abc",
        "colour=red",
    ],
)
def test_bad_list_arguments_are_422(client: FlaskClient, query: str) -> None:
    response = client.get(f"/api/v1/products?{query}")
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("sort", ["name", "-name", "price", "-price", "created_at", "-created_at"])
def test_pagination_walk_returns_every_item_once_in_order(
    client: FlaskClient, make: Factories, sort: str
) -> None:
    category = make.category()
    # Repeated names and prices force the id tie-breaker to do its job.
    for n in range(23):
        make.product(
            name=f"Item {n % 5}", price=Decimal(n % 4) + Decimal("0.99"), category_id=category.id
        )
    items = walk(client, f"/api/v1/products?limit=4&sort={sort}")
    assert len(items) == 23
    assert len({item["id"] for item in items}) == 23
    key = sort.lstrip("-")

    def sort_value(item: dict[str, Any]) -> Any:
        return Decimal(item["price"]) if key == "price" else item[key]

    expected = sorted(items, key=lambda i: (sort_value(i), i["id"]), reverse=sort.startswith("-"))
    assert [i["id"] for i in items] == [i["id"] for i in expected]


def test_pagination_with_filter_and_inserts_between_pages(
    client: FlaskClient, make: Factories
) -> None:
    category = make.category()
    originals = [make.product(category_id=category.id, price=Decimal("20.00")) for _ in range(9)]
    first = client.get(f"/api/v1/products?limit=4&category_id={category.id}&sort=created_at")
    assert [i["id"] for i in first.json["items"]] == [p.id for p in originals[:4]]
    # Rows added after the first page appear once, at the end, and nothing repeats.
    added = [make.product(category_id=category.id, price=Decimal("20.00")) for _ in range(3)]
    make.product(price=Decimal("20.00"))  # another category: filtered out
    seen = list(first.json["items"])
    cursor = first.json["next_cursor"]
    while cursor:
        page = client.get(
            f"/api/v1/products?limit=4&category_id={category.id}&sort=created_at&cursor={cursor}"
        )
        assert page.status_code == 200
        seen += page.json["items"]
        cursor = page.json["next_cursor"]
    assert [i["id"] for i in seen] == [p.id for p in originals + added]


def test_link_header_keeps_filters(client: FlaskClient, make: Factories) -> None:
    category = make.category()
    for _ in range(3):
        make.product(category_id=category.id)
    response = client.get(f"/api/v1/products?limit=2&category_id={category.id}")
    link = response.headers["Link"]
    assert f"category_id={category.id}" in link
    assert "limit=2" in link
    assert f"cursor={response.json['next_cursor']}" in link


def test_link_header_is_the_request_url(client: FlaskClient, make: Factories) -> None:
    """Scheme, host and the root the app is mounted under, as the client asked."""
    category = make.category()
    for _ in range(3):
        make.product(category_id=category.id)
    for base_url in ["http://localhost", "https://shop.example:8443/store"]:
        response = client.get("/api/v1/products?limit=2&sort=name", base_url=base_url)
        cursor = response.json["next_cursor"]
        assert response.headers["Link"] == (
            f'<{base_url}/api/v1/products?limit=2&sort=name&cursor={cursor}>; rel="next"'
        )


def test_etag_and_if_none_match(client: FlaskClient, make: Factories, auth_headers: dict) -> None:
    product = make.product()
    first = client.get(f"/api/v1/products/{product.id}")
    etag = first.headers["ETag"]
    assert etag.startswith('"')  # strong
    cached = client.get(f"/api/v1/products/{product.id}", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.data == b""
    assert cached.headers["ETag"] == etag

    client.patch(f"/api/v1/products/{product.id}", json={"stock": 99}, headers=auth_headers)
    changed = client.get(f"/api/v1/products/{product.id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert changed.json["stock"] == 99


def test_cached_reads_are_invalidated_by_writes(
    client: FlaskClient, make: Factories, auth_headers: dict, app: Flask
) -> None:
    product = make.product(name="Before")
    assert client.get(f"/api/v1/products/{product.id}").json["name"] == "Before"
    listed = client.get(f"/api/v1/products?category_id={product.category_id}")
    assert [i["name"] for i in listed.json["items"]] == ["Before"]

    # A change behind the API's back is not seen: the read really is cached...
    with app.app_context():
        db.session.get(Product, product.id).name = "Sneaky"
        db.session.commit()
    assert client.get(f"/api/v1/products/{product.id}").json["name"] == "Before"

    # ...and a write through the API invalidates both the item and the lists.
    client.patch(f"/api/v1/products/{product.id}", json={"name": "After"}, headers=auth_headers)
    assert client.get(f"/api/v1/products/{product.id}").json["name"] == "After"
    listed = client.get(f"/api/v1/products?category_id={product.category_id}")
    assert [i["name"] for i in listed.json["items"]] == ["After"]


def test_new_product_appears_in_cached_list(
    client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    category = make.category()
    assert client.get(f"/api/v1/products?category_id={category.id}").json["items"] == []
    client.post("/api/v1/products", json=new_product(category.id), headers=auth_headers)
    assert len(client.get(f"/api/v1/products?category_id={category.id}").json["items"]) == 1


def test_product_on_an_order_cannot_be_deleted(
    client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    product = make.product()
    make.order(items=[(product, 1)])
    response = client.delete(f"/api/v1/products/{product.id}", headers=auth_headers)
    assert response.status_code == 409
    assert (
        response.json["detail"] == f"Product {product.id} appears on orders and cannot be deleted."
    )
    assert client.get(f"/api/v1/products/{product.id}").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/products/0", "/api/v1/products/99999999999"])
def test_out_of_range_ids_are_404(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


FILTERS = ["category_id", "min_price", "max_price", "q"]


@pytest.mark.parametrize("sort", ["-price", "name"])
def test_every_filter_combination_pages_with_cursors(
    client: FlaskClient, make: Factories, sort: str
) -> None:
    coffee, tea = make.category(), make.category()
    # Names that sort alike under any collation; repeated prices test the id tie-breaker.
    made = [
        make.product(name=name, price=Decimal(price), category_id=category.id)
        for name, price, category in [
            ("Dark roast", "5.00", coffee),
            ("Light ROAST", "15.00", coffee),
            ("Mild roast", "8.00", coffee),
            ("Nutty roast", "8.00", coffee),
            ("Green tea", "8.00", tea),
            ("Roasted tea", "12.00", tea),
            ("Smoky roast", "6.00", tea),
            ("Cocoa", "3.00", tea),
        ]
    ]
    values = {"category_id": coffee.id, "min_price": "6", "max_price": "12", "q": "roast"}
    tests = {
        "category_id": lambda p: p.category_id == coffee.id,
        "min_price": lambda p: p.price >= 6,
        "max_price": lambda p: p.price <= 12,
        "q": lambda p: "roast" in p.name.lower(),
    }
    key = sort.lstrip("-")
    for size in range(len(FILTERS) + 1):
        for combination in itertools.combinations(FILTERS, size):
            query = "&".join(f"{name}={values[name]}" for name in combination)
            items = walk(client, f"/api/v1/products?limit=2&sort={sort}&{query}")
            expected = sorted(
                (p for p in made if all(tests[name](p) for name in combination)),
                key=lambda p: (getattr(p, key), p.id),
                reverse=sort.startswith("-"),
            )
            assert [i["id"] for i in items] == [p.id for p in expected], combination


def test_a_list_shape_runs_one_statement_object(
    client: FlaskClient, make: Factories, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests of one shape (filters given, sort) execute the same statement object, so
    SQLAlchemy reuses its cache key and compiled result map instead of adapting them."""
    categories = [make.category(), make.category()]
    for category in categories:
        for _ in range(3):
            make.product(category_id=category.id)
    make.category()
    adapted = []
    original = CursorResultMetaData._adapt_to_context

    def counting(self: CursorResultMetaData, context: Any) -> Any:
        adapted.append(context.invoked_statement)
        return original(self, context)

    monkeypatch.setattr(CursorResultMetaData, "_adapt_to_context", counting)

    def get(query: str) -> dict[str, Any]:
        response = client.get(f"/api/v1/products?{query}")
        assert response.status_code == 200, response.json
        return dict(response.json)

    # The first request of each shape compiles its statement; the others (other values, so
    # not answered from the cache) reuse it.
    first = get(f"limit=1&min_price=1&category_id={categories[0].id}")
    get(f"limit=2&min_price=1&category_id={categories[0].id}&cursor={first['next_cursor']}")
    first = client.get("/api/v1/categories?limit=1").json
    client.get(f"/api/v1/categories?limit=1&cursor={first['next_cursor']}")
    adapted.clear()
    for category in categories:
        page = get(f"limit=2&min_price=2&category_id={category.id}")
        get(f"limit=1&min_price=2&category_id={category.id}&cursor={page['next_cursor']}")
    page = client.get("/api/v1/categories?limit=2").json
    assert client.get(f"/api/v1/categories?limit=1&cursor={page['next_cursor']}").status_code == 200
    assert adapted == []
