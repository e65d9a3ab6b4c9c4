"""Issue 10, finding 8: the edges of input that slipped through.

A price of `-0.0`, a name of spaces, digits of other scripts in ids and integer query
parameters, unknown query parameters on operations that take none, and repeated query
parameters. Runs on every backend (SQLite, and PostgreSQL + Redis when configured).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.factories import Factories
from tests.reliability.test_bad_input import assert_problem

# Three, in Arabic-Indic, fullwidth and Devanagari digits: int() reads each as 3.
ARABIC_THREE = "\u0663"
FULLWIDTH_THREE = "\uff13"
DEVANAGARI_THREE = "\u0969"
OTHER_DIGITS = [ARABIC_THREE, FULLWIDTH_THREE, DEVANAGARI_THREE, f"1{ARABIC_THREE}"]


def _new_product(client: FlaskClient, headers: dict[str, str], **fields: Any) -> Any:
    category = client.post("/api/v1/categories", json={"name": "Edges"}, headers=headers)
    assert category.status_code == 201, category.json
    body = {
        "sku": "EDGE-1",
        "name": "Edge",
        "price": "1.00",
        "stock": 1,
        "category_id": category.json["id"],
        **fields,
    }
    return client.post("/api/v1/products", json=body, headers=headers)


# -0.0


def test_negative_zero_price_becomes_zero(client: FlaskClient, auth_headers: dict) -> None:
    created = _new_product(client, auth_headers, price=-0.0)
    assert created.status_code == 201, created.json
    assert created.json["price"] == "0.00"
    product_id = created.json["id"]
    assert client.get(f"/api/v1/products/{product_id}").json["price"] == "0.00"
    changed = client.patch(
        f"/api/v1/products/{product_id}", json={"price": -0.0}, headers=auth_headers
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["price"] == "0.00"


def test_negative_zero_in_a_raw_body_becomes_zero(client: FlaskClient, auth_headers: dict) -> None:
    # The JSON text itself, not a Python float a client library might normalise.
    category = client.post("/api/v1/categories", json={"name": "Raw"}, headers=auth_headers)
    category_id = category.json["id"]
    fields = '"sku": "RAW-1", "name": "Raw", "price": -0.00, "stock": 1'
    body = f'{{{fields}, "category_id": {category_id}}}'
    created = client.post(
        "/api/v1/products", data=body, content_type="application/json", headers=auth_headers
    )
    assert created.status_code == 201, created.json
    assert created.json["price"] == "0.00"


# Blank names


BLANKS = [" ", "   ", "\u00a0", "\u3000", "\u2003 \u2009", "\ufeff"]


@pytest.mark.parametrize("name", BLANKS)
def test_blank_category_name_is_422(client: FlaskClient, auth_headers: dict, name: str) -> None:
    response = client.post("/api/v1/categories", json={"name": name}, headers=auth_headers)
    body = assert_problem(response, 422)
    assert "name" in body["errors"]
    assert client.get("/api/v1/categories").json["items"] == []


@pytest.mark.parametrize("name", BLANKS)
def test_blank_product_name_is_422(client: FlaskClient, auth_headers: dict, name: str) -> None:
    response = _new_product(client, auth_headers, name=name)
    body = assert_problem(response, 422)
    assert "name" in body["errors"]


def test_blank_name_in_a_change_is_422(
    client: FlaskClient, auth_headers: dict, make: Factories
) -> None:
    category = make.category(name="Kept")
    product = make.product(name="Kept too")
    for path, resource in (("categories", category), ("products", product)):
        response = client.patch(
            f"/api/v1/{path}/{resource.id}", json={"name": "  "}, headers=auth_headers
        )
        assert_problem(response, 422)
        assert client.get(f"/api/v1/{path}/{resource.id}").json["name"].startswith("Kept")


def test_names_with_inner_spaces_are_kept(client: FlaskClient, auth_headers: dict) -> None:
    response = client.post(
        "/api/v1/categories", json={"name": " Tea\u00a0& coffee "}, headers=auth_headers
    )
    assert response.status_code == 201
    assert response.json["name"] == " Tea\u00a0& coffee "


def test_the_spec_states_the_non_blank_rule(client: FlaskClient) -> None:
    import re

    schemas = client.get("/openapi.json").json["components"]["schemas"]
    pattern = schemas["Category"]["properties"]["name"]["pattern"]
    for blank in BLANKS:
        assert re.search(pattern, blank) is None, blank
    assert re.search(pattern, " Tea ") is not None


# ASCII digits only


@pytest.mark.parametrize("digits", OTHER_DIGITS)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/products/{}"),
        ("GET", "/api/v1/categories/{}"),
        ("PATCH", "/api/v1/products/{}"),
        ("DELETE", "/api/v1/categories/{}"),
        ("GET", "/api/v1/orders/{}"),
    ],
)
def test_ids_of_other_scripts_are_not_found(
    client: FlaskClient,
    auth_headers: dict,
    make: Factories,
    method: str,
    path: str,
    digits: str,
) -> None:
    for _ in range(3):  # ids 1..3 exist, so a lenient parser would find one
        make.product()
    response = client.open(path.format(digits), method=method, json={}, headers=auth_headers)
    assert_problem(response, 404)


OUT_OF_RANGE = ["-1", "0", "2147483648", "9223372036854775808", "1" + "0" * 40, "1e308", "NaN"]


@pytest.mark.parametrize("value", OUT_OF_RANGE + OTHER_DIGITS)
@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/products", "limit"),
        ("/api/v1/products", "category_id"),
        ("/api/v1/categories", "limit"),
        ("/api/v1/orders", "limit"),
    ],
)
def test_integer_query_parameters_take_ascii_digits_in_range_only(
    client: FlaskClient, auth_headers: dict, path: str, parameter: str, value: str
) -> None:
    """Out of range, not a whole number, or digits of another script: 422 naming the field."""
    response = client.get(path, query_string={parameter: value}, headers=auth_headers)
    assert parameter in assert_problem(response, 422)["errors"]


@pytest.mark.parametrize("value", [" 3", "3 ", "+3", "1_0", "3.0", "0x3"])
def test_integer_query_parameters_are_plain_digits(client: FlaskClient, value: str) -> None:
    response = client.get("/api/v1/categories", query_string={"limit": value})
    assert_problem(response, 422)


def test_ascii_integer_query_parameters_still_work(client: FlaskClient, make: Factories) -> None:
    make.category()
    make.category()
    response = client.get("/api/v1/categories", query_string={"limit": "1"})
    assert response.status_code == 200
    assert len(response.json["items"]) == 1


# Unknown and repeated query parameters, on every operation


def test_unknown_query_parameter_on_a_change_is_422_and_changes_nothing(
    client: FlaskClient, auth_headers: dict, make: Factories
) -> None:
    product = make.product(stock=7)
    response = client.patch(f"/api/v1/products/{product.id}?stock=0", json={}, headers=auth_headers)
    body = assert_problem(response, 422)
    assert "stock" in body["errors"]
    assert client.get(f"/api/v1/products/{product.id}").json["stock"] == 7


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/products/{product}", None),
        ("GET", "/api/v1/categories/{category}", None),
        ("POST", "/api/v1/categories", {"name": "Never"}),
        ("PATCH", "/api/v1/categories/{category}", {"name": "Never"}),
        ("DELETE", "/api/v1/products/{product}", None),
        ("GET", "/api/v1/reports/sales", None),
        ("GET", "/api/v1/orders", None),
    ],
)
def test_unknown_query_parameters_are_422_on_every_operation(
    client: FlaskClient,
    auth_headers: dict,
    make: Factories,
    method: str,
    path: str,
    body: dict | None,
) -> None:
    product = make.product(name="Untouched")
    url = path.format(product=product.id, category=product.category_id)
    kwargs: dict[str, Any] = {"headers": auth_headers}
    if body is not None:
        kwargs["json"] = body
    response = client.open(url + "?dry_run=1", method=method, **kwargs)
    errors = assert_problem(response, 422)["errors"]
    assert "dry_run" in errors
    # Nothing was written.
    assert client.get(f"/api/v1/products/{product.id}").json["name"] == "Untouched"
    names = [c["name"] for c in client.get("/api/v1/categories").json["items"]]
    assert "Never" not in names


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/products", "limit=1&limit=50"),
        ("/api/v1/products", "sort=name&sort=-price"),
        ("/api/v1/categories", "cursor=a&cursor=b"),
        ("/api/v1/reports/sales", "group_by=day&group_by=product"),
        ("/api/v1/reports/sales", "from=2026-01-01&from=2026-02-01"),
        ("/api/v1/orders", "limit=1&limit=2"),
    ],
)
def test_repeated_query_parameters_are_422(
    client: FlaskClient, auth_headers: dict, path: str, query: str
) -> None:
    response = client.get(f"{path}?{query}", headers=auth_headers)
    errors = assert_problem(response, 422)["errors"]
    name = query.split("=")[0]
    assert name in errors, errors


def test_a_repeated_parameter_on_an_operation_without_parameters_is_422(
    client: FlaskClient, make: Factories
) -> None:
    product = make.product()
    response = client.get(f"/api/v1/products/{product.id}?x=1&x=2")
    assert_problem(response, 422)


# Issue 23, finding 6: a field given twice in a JSON body (the last one used to win).


@pytest.mark.parametrize(
    ("method", "path", "body", "repeated"),
    [
        (
            "POST",
            "/api/v1/orders",
            '{"customer_email": "a@example.com", "customer_email": "b@example.com", '
            '"items": [{"product_id": {product}, "quantity": 1}]}',
            "customer_email",
        ),
        (
            "POST",
            "/api/v1/orders",
            '{"customer_email": "a@example.com", '
            '"items": [{"product_id": {product}, "quantity": 1, "quantity": 5}]}',
            "quantity",
        ),
        ("PATCH", "/api/v1/products/{product}", '{"price": "9.00", "price": "0.01"}', "price"),
    ],
)
def test_a_field_given_twice_in_a_json_body_is_422(
    client: FlaskClient,
    auth_headers: dict,
    make: Factories,
    method: str,
    path: str,
    body: str,
    repeated: str,
) -> None:
    product = make.product(stock=5)
    response = client.open(
        path.replace("{product}", str(product.id)),
        method=method,
        data=body.replace("{product}", str(product.id)),
        headers={**auth_headers, "Content-Type": "application/json"},
    )
    errors = assert_problem(response, 422)["errors"]
    assert repeated in errors, errors
    # Nothing was written.
    unchanged = client.get(f"/api/v1/products/{product.id}").json
    assert (unchanged["price"], unchanged["stock"]) == ("10.00", 5)
    assert client.get("/api/v1/orders", headers=auth_headers).json["items"] == []
