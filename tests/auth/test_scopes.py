"""API key scopes: customer (its own orders) and operator (catalog, report, every order)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade

from service.auth import service as auth
from service.auth.models import ApiKey, Scope
from service.errors import InvalidRequest
from service.extensions import db
from tests.conftest import bearer_headers, build_app
from tests.factories import Factories

PROBLEM_JSON = "application/problem+json"


def assert_missing_scope(response: Any, scope: str) -> None:
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.content_type == PROBLEM_JSON
    assert response.json["type"] == "urn:glassbox:problem:insufficient-scope"
    assert response.json["required_scopes"] == [scope]
    assert repr(scope) in response.json["detail"]
    assert f'scope="{scope}"' in response.headers["WWW-Authenticate"]


def test_a_customer_key_cannot_reprice_or_restock_the_shop(
    client: FlaskClient, make: Factories, customer_headers: dict[str, str]
) -> None:
    product = make.product(price=Decimal("500.00"), stock=5)
    path = f"/api/v1/products/{product.id}"
    for change in ({"price": "0.01"}, {"stock": 100_000}):
        assert_missing_scope(client.patch(path, json=change, headers=customer_headers), "operator")
    assert_missing_scope(client.delete(path, headers=customer_headers), "operator")
    unchanged = client.get(path).json
    assert (unchanged["price"], unchanged["stock"]) == ("500.00", 5)
    category = {"name": "Bargains"}
    assert_missing_scope(
        client.post("/api/v1/categories", json=category, headers=customer_headers), "operator"
    )
    assert_missing_scope(client.get("/api/v1/reports/sales", headers=customer_headers), "operator")


def test_an_operator_key_writes_the_catalog_and_reads_the_report(
    client: FlaskClient, make: Factories, admin_headers: dict[str, str]
) -> None:
    product = make.product(price=Decimal("500.00"))
    path = f"/api/v1/products/{product.id}"
    assert client.patch(path, json={"price": "450.00"}, headers=admin_headers).status_code == 200
    assert client.get(path).json["price"] == "450.00"
    assert client.get("/api/v1/reports/sales", headers=admin_headers).status_code == 200
    assert client.get("/api/v1/reports/sales").status_code == 401


def test_placing_an_order_needs_the_customer_scope(
    client: FlaskClient, make: Factories, admin_headers: dict[str, str]
) -> None:
    product = make.product(stock=3)
    body = {
        "customer_email": "ops@example.com",
        "items": [{"product_id": product.id, "quantity": 1}],
    }
    assert_missing_scope(
        client.post("/api/v1/orders", json=body, headers=admin_headers), "customer"
    )
    assert client.get(f"/api/v1/products/{product.id}").json["stock"] == 3


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    return [
        (path, method, operation["x-required-scopes"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and operation.get("security")  # public: `security: []`
    ]


def test_every_secured_operation_enforces_the_scopes_it_documents(
    app: Flask, client: FlaskClient
) -> None:
    spec = client.get("/openapi.json").json
    operations = _operations(spec)
    assert len(operations) == 11
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert all(f"`{scope}`" in scheme["description"] for scope in Scope)
    keys = {scope: bearer_headers(app, f"only-{scope}", scope) for scope in Scope}
    for path, method, required in operations:
        assert required, (path, method)
        assert set(required) <= set(Scope), (path, method)
        # 403 is documented where a valid key can lack the scope.
        can_lack = set(required) != set(Scope)
        assert ("403" in spec["paths"][path][method]["responses"]) == can_lack, (path, method)
        concrete = path.replace("{product_id}", "1").replace("{category_id}", "1")
        concrete = concrete.replace("{order_id}", "1")
        for scope, headers in keys.items():
            response = client.open(concrete, method=method.upper(), headers=headers, json={})
            if scope in required:
                assert response.status_code != 403, (path, method, scope)
            else:
                assert response.status_code == 403, (path, method, scope)
                assert response.json["required_scopes"] == required


def test_cli_creates_keys_with_the_scopes_given(app: Flask) -> None:
    runner = app.test_cli_runner()
    both = ["--scope", "operator", "--scope", "customer"]
    assert runner.invoke(args=["api-keys", "create", "till", *both]).exit_code == 0
    assert (
        runner.invoke(args=["api-keys", "create", "shopper", "--scope", "customer"]).exit_code == 0
    )
    missing = runner.invoke(args=["api-keys", "create", "nothing"])
    assert missing.exit_code != 0
    assert "--scope" in missing.output
    unknown = runner.invoke(args=["api-keys", "create", "root", "--scope", "admin"])
    assert unknown.exit_code != 0
    with app.app_context():
        stored = dict(db.session.execute(sa.select(ApiKey.name, ApiKey.scopes)).all())
    assert stored == {"till": "customer operator", "shopper": "customer"}


def test_the_development_key_has_every_scope(sqlite_url: str) -> None:
    dev = build_app(sqlite_url, GLASSBOX_ENV="development")
    try:
        assert dev.test_cli_runner().invoke(args=["api-keys", "ensure-dev"]).exit_code == 0
        with dev.app_context():
            key = db.session.scalar(sa.select(ApiKey).where(ApiKey.name == "dev"))
            assert key.scope_set == set(Scope)
    finally:
        from tests.conftest import _clean

        _clean(dev)


def test_the_migration_keeps_only_what_was_safe(tmp_path: Path) -> None:
    """Admin and development keys keep everything; every other key becomes a customer key."""
    app = build_app(f"sqlite:///{tmp_path / 'scopes.db'}")
    with app.app_context():
        upgrade(revision="0003")
        db.session.execute(
            sa.text(
                "INSERT INTO api_keys (name, token_hash, created_at, is_admin, is_development) "
                "VALUES ('ops', 'a', CURRENT_TIMESTAMP, true, false), "
                "('dev', 'b', CURRENT_TIMESTAMP, false, true), "
                "('shop-app', 'c', CURRENT_TIMESTAMP, false, false)"
            )
        )
        db.session.commit()
        upgrade()
        scopes = dict(db.session.execute(sa.text("SELECT name, scopes FROM api_keys")).all())
        db.engine.dispose()
    assert scopes == {
        "ops": "customer operator",
        "dev": "customer operator",
        "shop-app": "customer",
    }


@pytest.mark.parametrize("scopes", [[], ["root"]])
def test_a_key_needs_known_scopes(app: Flask, scopes: list[str]) -> None:
    with app.app_context(), pytest.raises(InvalidRequest):
        auth.create_key(name="odd", scopes=scopes)
