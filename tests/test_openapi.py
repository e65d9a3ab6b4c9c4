from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
import pytest
from flask.testing import FlaskClient


def test_spec_documents_every_operation(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    expected = {
        ("/api/v1/categories", "get"),
        ("/api/v1/categories", "post"),
        ("/api/v1/categories/{category_id}", "get"),
        ("/api/v1/categories/{category_id}", "patch"),
        ("/api/v1/categories/{category_id}", "delete"),
        ("/api/v1/products", "get"),
        ("/api/v1/products", "post"),
        ("/api/v1/products/{product_id}", "get"),
        ("/api/v1/products/{product_id}", "patch"),
        ("/api/v1/products/{product_id}", "delete"),
        ("/api/v1/orders", "get"),
        ("/api/v1/orders", "post"),
        ("/api/v1/orders/{order_id}", "get"),
        ("/api/v1/orders/{order_id}/cancel", "post"),
        ("/api/v1/reports/sales", "get"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
    }
    documented = {
        (path, method)
        for path, ops in spec["paths"].items()
        for method in ops
        if method != "parameters"
    }
    assert expected <= documented
    for path, method in expected:
        operation = spec["paths"][path][method]
        assert operation.get("summary"), (path, method)
        if method in ("post", "patch", "delete"):
            assert operation["security"] == [{"bearerAuth": []}], (path, method)
            assert "401" in operation["responses"], (path, method)


def test_errors_are_documented_as_problem_json(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    default = spec["components"]["responses"]["DEFAULT_ERROR"]
    assert list(default["content"]) == ["application/problem+json"]


def test_swagger_ui_is_served_without_a_cdn(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, html
    for source in sources:
        assert source.startswith("/"), f"external asset {source}"
        with client.get(source) as asset:
            assert asset.status_code == 200, source
            assert len(asset.data) > 100
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in html  # no inline script: the CSP forbids it


OPERATION_IDS = {
    ("/api/v1/categories", "get"): "listCategories",
    ("/api/v1/categories", "post"): "createCategory",
    ("/api/v1/categories/{category_id}", "get"): "getCategory",
    ("/api/v1/categories/{category_id}", "patch"): "updateCategory",
    ("/api/v1/categories/{category_id}", "delete"): "deleteCategory",
    ("/api/v1/products", "get"): "listProducts",
    ("/api/v1/products", "post"): "createProduct",
    ("/api/v1/products/{product_id}", "get"): "getProduct",
    ("/api/v1/products/{product_id}", "patch"): "updateProduct",
    ("/api/v1/products/{product_id}", "delete"): "deleteProduct",
    ("/api/v1/orders", "get"): "listOrders",
    ("/api/v1/orders", "post"): "placeOrder",
    ("/api/v1/orders/{order_id}", "get"): "getOrder",
    ("/api/v1/orders/{order_id}/cancel", "post"): "cancelOrder",
    ("/api/v1/reports/sales", "get"): "getSalesReport",
    ("/health/live", "get"): "getLiveness",
    ("/health/ready", "get"): "getReadiness",
}


def test_every_operation_has_a_stable_camel_case_operation_id(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    found = {
        (path, method): operation.get("operationId")
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if method != "parameters"
    }
    # Generated clients name their functions after these: renaming one breaks users' code.
    assert found == OPERATION_IDS
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", name) for name in found.values())


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/products?limit=2&sort=name",
        "/api/v1/categories?limit=2",
        "/api/v1/reports/sales?group_by=day",
    ],
)
def test_parsing_arguments_builds_no_schema(
    client: FlaskClient, auth_headers: dict, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """Routes give webargs schema instances: given a class, it builds (and deep-copies the
    fields of) a new schema on every request."""
    # A response schema builds its nested schemas on its first dump.
    assert client.get(url, headers=auth_headers).status_code == 200
    built: list[str] = []
    original = ma.Schema.__init__

    def counting(self: ma.Schema, *args: Any, **kwargs: Any) -> None:
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ma.Schema, "__init__", counting)
    assert client.get(url, headers=auth_headers).status_code == 200
    assert built == []


def test_every_api_operation_states_its_security_429_and_trace(client: FlaskClient) -> None:
    """In-process, the shape of what tests/contract holds to the running service."""
    spec = client.get("/openapi.json").json
    assert "trace_id" in spec["components"]["schemas"]["Problem"]["properties"]
    assert "Reads are public" not in spec["info"]["description"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert "security" in operation, (path, method)
            if path.startswith("/api/"):
                assert "429" in operation["responses"], (path, method)
                assert "503" in operation["responses"], (path, method)
