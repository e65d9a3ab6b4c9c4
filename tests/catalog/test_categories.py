from __future__ import annotations

from flask.testing import FlaskClient

from tests.catalog.test_products import walk
from tests.factories import Factories


def test_crud(client: FlaskClient, auth_headers: dict) -> None:
    created = client.post(
        "/api/v1/categories", json={"name": "Coffee", "description": "Beans"}, headers=auth_headers
    )
    assert created.status_code == 201
    category_id = created.json["id"]
    assert client.get(f"/api/v1/categories/{category_id}").json["name"] == "Coffee"

    patched = client.patch(
        f"/api/v1/categories/{category_id}", json={"name": "Tea"}, headers=auth_headers
    )
    assert patched.status_code == 200
    assert client.get(f"/api/v1/categories/{category_id}").json["name"] == "Tea"

    assert (
        client.delete(f"/api/v1/categories/{category_id}", headers=auth_headers).status_code == 204
    )
    assert client.get(f"/api/v1/categories/{category_id}").status_code == 404


def test_duplicate_name_is_409(client: FlaskClient, make: Factories, auth_headers: dict) -> None:
    make.category(name="Taken")
    response = client.post("/api/v1/categories", json={"name": "Taken"}, headers=auth_headers)
    assert response.status_code == 409
    assert response.json["type"].endswith("conflict")


def test_category_with_products_cannot_be_deleted(
    client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    product = make.product()
    response = client.delete(f"/api/v1/categories/{product.category_id}", headers=auth_headers)
    assert response.status_code == 409
    assert client.get(f"/api/v1/categories/{product.category_id}").status_code == 200


def test_missing_category_is_404(client: FlaskClient, auth_headers: dict) -> None:
    assert client.get("/api/v1/categories/424242").status_code == 404
    response = client.patch("/api/v1/categories/424242", json={"name": "x"}, headers=auth_headers)
    assert response.status_code == 404
    assert client.delete("/api/v1/categories/424242", headers=auth_headers).status_code == 404


def test_list_walk(client: FlaskClient, make: Factories) -> None:
    ids = [make.category().id for _ in range(7)]
    assert [c["id"] for c in walk(client, "/api/v1/categories?limit=3")] == ids


def test_category_etag(client: FlaskClient, make: Factories) -> None:
    category = make.category()
    etag = client.get(f"/api/v1/categories/{category.id}").headers["ETag"]
    response = client.get(f"/api/v1/categories/{category.id}", headers={"If-None-Match": etag})
    assert response.status_code == 304
