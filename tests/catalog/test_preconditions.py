"""Writes carry the resource's address and version: Location on 201, ETag on writes, and
If-Match honoured on PATCH and DELETE (RFC 9110 §13.1.1): a stale tag writes nothing."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.factories import Factories

STALE = '"0000000000000000000000000000000000000000"'


@pytest.fixture(params=["products", "categories"])
def resource(request: pytest.FixtureRequest, make: Factories) -> tuple[str, str, dict]:
    """(collection path, one resource's path, a change to it)."""
    if request.param == "products":
        return "/api/v1/products", f"/api/v1/products/{make.product().id}", {"name": "Renamed"}
    return "/api/v1/categories", f"/api/v1/categories/{make.category().id}", {"name": "Renamed"}


def test_a_201_names_the_new_resource_in_location_and_carries_its_etag(
    client: FlaskClient, auth_headers: dict, make: Factories
) -> None:
    category = client.post("/api/v1/categories", json={"name": "Tea"}, headers=auth_headers)
    assert category.status_code == 201
    assert category.headers["Location"] == f"/api/v1/categories/{category.json['id']}"
    product = client.post(
        "/api/v1/products",
        json={
            "sku": "TEA-1",
            "name": "Tea",
            "price": "3.00",
            "stock": 2,
            "category_id": category.json["id"],
        },
        headers=auth_headers,
    )
    assert product.status_code == 201
    assert product.headers["Location"] == f"/api/v1/products/{product.json['id']}"
    for created in (category, product):
        read = client.get(created.headers["Location"])
        assert read.status_code == 200
        assert read.headers["ETag"] == created.headers["ETag"]


def test_a_placed_order_names_itself_in_location(
    client: FlaskClient, auth_headers: dict, make: Factories
) -> None:
    product = make.product(stock=5)
    response = client.post(
        "/api/v1/orders",
        json={
            "customer_email": "a@example.com",
            "items": [{"product_id": product.id, "quantity": 1}],
        },
        headers=auth_headers,
    )
    assert response.status_code == 201, response.json
    assert response.headers["Location"] == f"/api/v1/orders/{response.json['id']}"
    assert client.get(response.headers["Location"], headers=auth_headers).status_code == 200


def test_patch_answers_the_new_etag_that_a_get_then_gives(
    client: FlaskClient, auth_headers: dict, resource: tuple[str, str, dict]
) -> None:
    _, path, change = resource
    before = client.get(path).headers["ETag"]
    patched = client.patch(path, json=change, headers={**auth_headers, "If-Match": before})
    assert patched.status_code == 200, patched.json
    assert patched.headers["ETag"] != before
    assert client.get(path).headers["ETag"] == patched.headers["ETag"]


def test_a_stale_if_match_is_refused_and_nothing_is_written(
    client: FlaskClient, auth_headers: dict, resource: tuple[str, str, dict]
) -> None:
    _, path, change = resource
    original = client.get(path)
    patched = client.patch(path, json=change, headers={**auth_headers, "If-Match": STALE})
    assert patched.status_code == 412
    assert patched.content_type == "application/problem+json"
    problem = patched.json
    assert problem["type"] == "urn:glassbox:problem:precondition-failed"
    assert path.rsplit("/", 1)[1] in problem["detail"]
    assert problem["detail"].startswith(("Product", "Category"))
    assert client.get(path).json == original.json

    deleted = client.delete(path, headers={**auth_headers, "If-Match": STALE})
    assert deleted.status_code == 412
    assert client.get(path).status_code == 200


def test_the_etag_of_an_earlier_version_is_stale_after_a_change(
    client: FlaskClient, auth_headers: dict, resource: tuple[str, str, dict]
) -> None:
    """Two clients read the same version; the second one's write loses nothing of the first."""
    _, path, change = resource
    read = client.get(path).headers["ETag"]
    first = client.patch(path, json=change, headers={**auth_headers, "If-Match": read})
    assert first.status_code == 200
    second = client.patch(
        path, json={"description": "lost update"}, headers={**auth_headers, "If-Match": read}
    )
    assert second.status_code == 412
    assert client.get(path).json["description"] != "lost update"


def test_delete_with_the_current_etag_or_a_star_deletes(
    client: FlaskClient, auth_headers: dict, make: Factories
) -> None:
    current = f"/api/v1/products/{make.product().id}"
    etag = client.get(current).headers["ETag"]
    assert client.delete(current, headers={**auth_headers, "If-Match": etag}).status_code == 204
    assert client.get(current).status_code == 404
    starred = f"/api/v1/categories/{make.category().id}"
    assert client.delete(starred, headers={**auth_headers, "If-Match": "*"}).status_code == 204


def test_writes_without_if_match_still_go_ahead(
    client: FlaskClient, auth_headers: dict, resource: tuple[str, str, dict]
) -> None:
    """If-Match is honoured, not required (README, Conditional writes): no 428."""
    _, path, change = resource
    assert client.patch(path, json=change, headers=auth_headers).status_code == 200
    assert client.delete(path, headers=auth_headers).status_code == 204
