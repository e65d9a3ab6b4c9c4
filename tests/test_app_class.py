"""The per-request machinery of the app itself: Flask's `ensure_sync`, the empty query."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import Glassbox
from service.api import StrictParser
from tests.factories import Factories


def test_ensure_sync_answers_once_per_function_and_still_runs_coroutines(app: Flask) -> None:
    assert isinstance(app, Glassbox)

    def plain() -> str:
        return "plain"

    async def coroutine() -> str:
        await asyncio.sleep(0)
        return "awaited"

    assert app.ensure_sync(plain) is plain
    assert app.ensure_sync(plain) is plain
    try:
        wrapped = app.ensure_sync(coroutine)
    except RuntimeError:  # Flask's own answer when asgiref (flask[async]) is not installed
        pytest.skip("asgiref is not installed")
    assert wrapped() == "awaited"


def test_ensure_sync_remembers_functions_not_bound_methods(
    app: Flask, client: FlaskClient, make: Factories
) -> None:
    # A MethodView's handler is a new bound method on every request: keyed by those, the
    # cache would grow with every request.
    product = make.product()
    client.get(f"/api/v1/products/{product.id}")
    remembered = len(app._is_async)  # type: ignore[attr-defined]
    for _ in range(20):
        assert client.get(f"/api/v1/products/{product.id}").status_code == 200
    assert len(app._is_async) == remembered  # type: ignore[attr-defined]


def test_an_operation_without_query_parameters_parses_no_empty_query(
    client: FlaskClient, make: Factories, monkeypatch: pytest.MonkeyPatch
) -> None:
    product = make.product()
    locations: list[str] = []
    parse = StrictParser.parse

    def counting_parse(self: StrictParser, *args: Any, **kwargs: Any) -> Any:
        locations.append(kwargs.get("location", ""))
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(StrictParser, "parse", counting_parse)
    assert client.get(f"/api/v1/products/{product.id}").status_code == 200
    assert locations == []
    # With a query string the empty schema still refuses what it does not declare.
    response = client.get(f"/api/v1/products/{product.id}?x=1")
    assert response.status_code == 422
    assert "x" in response.json["errors"]
    assert locations == ["query"]


def test_no_session_cookie_is_read_or_written(
    app: Flask, client: FlaskClient, make: Factories, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask import session
    from flask.sessions import SecureCookieSessionInterface

    product = make.product()
    seen: list[bool] = []

    def signer(*_: Any) -> None:  # Flask's cookie session builds one for every request
        seen.append(True)

    monkeypatch.setattr(SecureCookieSessionInterface, "get_signing_serializer", signer)
    app.add_url_rule("/session-probe", "session_probe", lambda: str(session.get("user")))
    response = client.get(f"/api/v1/products/{product.id}", headers={"Cookie": "session=x"})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert client.get("/session-probe").get_data(as_text=True) == "None"
    assert seen == []
