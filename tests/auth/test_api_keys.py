from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from service.auth.models import ApiKey
from service.auth.service import hash_token
from service.extensions import db
from tests.conftest import build_app

WRITE = ("/api/v1/categories", {"name": "Secured"})


def test_missing_key_is_401_with_www_authenticate(client: FlaskClient) -> None:
    response = client.post(WRITE[0], json=WRITE[1])
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.content_type == "application/problem+json"


def test_unknown_and_malformed_keys_are_401(client: FlaskClient) -> None:
    for header in ("Bearer nope", "Basic dXNlcjpwYXNz", "Bearer ", "gbx_token"):
        response = client.post(WRITE[0], json=WRITE[1], headers={"Authorization": header})
        assert response.status_code == 401, header


def test_auth_is_checked_before_the_body(client: FlaskClient) -> None:
    response = client.post(WRITE[0], json={"bogus": True})
    assert response.status_code == 401


def test_reads_need_no_key(client: FlaskClient) -> None:
    assert client.get("/api/v1/categories").status_code == 200


def test_cli_create_prints_only_the_token_and_stores_its_hash(
    app: Flask, client: FlaskClient
) -> None:
    result = app.test_cli_runner().invoke(
        args=["api-keys", "create", "robot", "--scope", "operator"]
    )
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert token.startswith("gbx_")
    assert "\n" not in token
    assert len(token) > 40
    with app.app_context():
        key = db.session.scalar(select(ApiKey).where(ApiKey.name == "robot"))
        assert key.token_hash == hash_token(token)
        assert token not in key.token_hash
    ok = client.post(WRITE[0], json=WRITE[1], headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 201


def test_revoked_key_is_401(app: Flask, client: FlaskClient) -> None:
    runner = app.test_cli_runner()
    token = runner.invoke(args=["api-keys", "create", "temp", "--scope", "operator"]).stdout.strip()
    assert runner.invoke(args=["api-keys", "revoke", "temp"]).exit_code == 0
    response = client.post(WRITE[0], json=WRITE[1], headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "revoked" in response.json["detail"]


def test_cli_errors(app: Flask) -> None:
    runner = app.test_cli_runner()
    twice = ["api-keys", "create", "twice", "--scope", "customer"]
    assert runner.invoke(args=twice).exit_code == 0
    assert runner.invoke(args=twice).exit_code != 0
    assert runner.invoke(args=["api-keys", "revoke", "never-made"]).exit_code != 0


def test_dev_key_works_in_development_and_is_refused_in_production(sqlite_url: str) -> None:
    dev = build_app(sqlite_url, GLASSBOX_ENV="development")
    result = dev.test_cli_runner().invoke(args=["api-keys", "ensure-dev"])
    assert result.exit_code == 0
    token = dev.config["DEV_API_KEY"]
    headers = {"Authorization": f"Bearer {token}"}
    try:
        assert dev.test_client().post(WRITE[0], json=WRITE[1], headers=headers).status_code == 201
        prod = build_app(sqlite_url, GLASSBOX_ENV="production", SECRET_KEY="x" * 40)
        refused = prod.test_client().post(WRITE[0], json={"name": "Other"}, headers=headers)
        assert refused.status_code == 401
        assert "development" in refused.json["detail"]
        assert prod.test_cli_runner().invoke(args=["api-keys", "ensure-dev"]).exit_code != 0
    finally:
        from tests.conftest import _clean

        _clean(dev)


def test_production_refuses_the_stored_dev_key_whatever_dev_api_key_says(
    sqlite_url: str,
) -> None:
    dev = build_app(sqlite_url, GLASSBOX_ENV="development")
    assert dev.test_cli_runner().invoke(args=["api-keys", "ensure-dev"]).exit_code == 0
    headers = {"Authorization": f"Bearer {dev.config['DEV_API_KEY']}"}
    try:
        with dev.app_context():
            key = db.session.scalar(select(ApiKey).where(ApiKey.name == "dev"))
            assert key.is_development
        prod = build_app(
            sqlite_url,
            GLASSBOX_ENV="production",
            SECRET_KEY="x" * 40,
            DEV_API_KEY="another-value-entirely-0123456789",
        )
        refused = prod.test_client().post(WRITE[0], json={"name": "Sneaky"}, headers=headers)
        assert refused.status_code == 401
        assert "development" in refused.json["detail"]
    finally:
        from tests.conftest import _clean

        _clean(dev)
