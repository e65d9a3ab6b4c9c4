"""Security: keys on every write, hashed keys, exact rate limits across workers, headers on
every response, CORS only when configured, no server version, /docs under its CSP.

The dev key in production is refused in tests/auth/test_api_keys.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from service.auth import service as auth
from service.extensions import db
from tests.conftest import build_app
from tests.factories import Factories
from tests.reliability.conftest import StartLimited, StartServer

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _write_operations(app: Flask) -> list[tuple[str, str]]:
    """Every write the app routes under /api/, with ids filled in."""
    operations = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<[^>]+>", "1", rule.rule)
        operations += [(method, path) for method in sorted(rule.methods & WRITE_METHODS)]
    return operations


def test_every_write_needs_a_valid_unrevoked_key(
    app: Flask, client: FlaskClient, make: Factories
) -> None:
    operations = _write_operations(app)
    assert len(operations) >= 8  # categories, products, orders, cancel: none forgotten
    with app.app_context():
        revoked = auth.create_key(name="revoked", scopes=auth.DEVELOPMENT_SCOPES)
        auth.revoke_key(name="revoked")
    refused = {
        "no header": {},
        "empty bearer": {"Authorization": "Bearer "},
        "other scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "made-up token": {"Authorization": "Bearer gbx_made_up"},
        "revoked key": {"Authorization": f"Bearer {revoked}"},
        "hash instead of token": {"Authorization": f"Bearer {auth.hash_token(revoked)}"},
    }
    for method, path in operations:
        for label, headers in refused.items():
            response = client.open(path, method=method, json={}, headers=headers)
            assert response.status_code == 401, (method, path, label)
            assert response.content_type == "application/problem+json"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.headers["Cache-Control"] == "no-store"


def test_keys_are_stored_as_sha256_hashes_and_compared_in_constant_time(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.app_context():
        token = auth.create_key(name="stored", scopes=auth.DEVELOPMENT_SCOPES)
        rows = db.session.execute(sa.text("SELECT * FROM api_keys")).mappings().all()
    stored = [row for row in rows if row["name"] == "stored"]
    assert len(stored) == 1
    assert stored[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(value) for row in rows for value in row.values())
    assert len(token) >= 40  # 32 random bytes, URL-safe base64, after the prefix

    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    with app.app_context():
        assert auth.authenticate(token=token).name == "stored"
    assert (stored[0]["token_hash"], auth.hash_token(token)) in compared


# Headers on every response


def _responses(app: Flask, client: FlaskClient, make: Factories, headers: dict) -> dict:
    product = make.product()
    etag = client.get(f"/api/v1/products/{product.id}").headers["ETag"]
    app.config["MAX_CONTENT_LENGTH"] = 2048
    return {
        "200 list": client.get("/api/v1/products"),
        "200 item": client.get(f"/api/v1/products/{product.id}"),
        "201": client.post("/api/v1/categories", json={"name": "H"}, headers=headers),
        "304 etag": client.get(f"/api/v1/products/{product.id}", headers={"If-None-Match": etag}),
        "204": client.delete(f"/api/v1/products/{product.id}", headers=headers),
        "400": client.get("/api/v1/products?cursor=x.y"),
        "401": client.post("/api/v1/categories", json={"name": "x"}),
        "404": client.get("/api/v1/nothing"),
        "405": client.put("/api/v1/products"),
        "413": client.post(
            "/api/v1/categories", data="x" * 4096, content_type="application/json", headers=headers
        ),
        "415": client.post("/api/v1/categories", data="x", content_type="text/plain"),
        "422": client.get("/api/v1/products?limit=0"),
        "health": client.get("/health/ready"),
        "spec": client.get("/openapi.json"),
        "docs": client.get("/docs"),
        "static": client.get("/static/swagger-ui/swagger-ui-bundle.js"),
    }


def test_security_headers_on_every_response(
    app: Flask, client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    responses = _responses(app, client, make, auth_headers)
    for response in responses.values():
        response.close()  # the static file is streamed from an open file
    for label, response in responses.items():
        assert response.headers["X-Content-Type-Options"] == "nosniff", label
        assert response.headers["Referrer-Policy"] == "no-referrer", label
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp, label
        assert "unsafe-eval" not in csp, label
        if response.status_code >= 400:
            assert response.headers["Cache-Control"] == "no-store", label
        assert "Server" not in response.headers, label  # the app adds none of its own
    statuses = {label: response.status_code for label, response in responses.items()}
    assert statuses["413"] == 413
    assert statuses["304 etag"] == 304
    docs_csp = responses["docs"].headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in docs_csp.split(";"))
    assert directives["script-src"] == "'self'"  # no inline script, no eval, no CDN
    assert directives["default-src"] == "'self'"
    api_csp = responses["200 list"].headers["Content-Security-Policy"]
    assert api_csp.startswith("default-src 'none'")


# CORS


ORIGIN = "https://shop.example.com"


def _preflight(client: FlaskClient, origin: str) -> Any:
    return client.options(
        "/api/v1/orders",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


def test_cors_is_off_unless_configured(client: FlaskClient) -> None:
    for response in (
        client.get("/api/v1/products", headers={"Origin": ORIGIN}),
        _preflight(client, ORIGIN),
        client.get("/api/v1/nothing", headers={"Origin": ORIGIN}),
    ):
        assert not [
            name for name, _ in response.headers.items() if name.startswith("Access-Control")
        ]


def test_cors_allows_exactly_the_configured_origins(sqlite_url: str) -> None:
    app = build_app(sqlite_url, CORS_ORIGINS=f"{ORIGIN}, https://admin.example.com:8443")
    client = app.test_client()
    allowed = client.get("/api/v1/products", headers={"Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in allowed.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    assert "Link" in allowed.headers["Access-Control-Expose-Headers"]
    # Errors carry the headers too, so a browser script can read the problem document.
    missing = client.get("/api/v1/nothing", headers={"Origin": ORIGIN})
    assert missing.headers["Access-Control-Allow-Origin"] == ORIGIN
    preflight = _preflight(client, "https://admin.example.com:8443")
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://admin.example.com:8443"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed_headers = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "idempotency-key"} <= {
        name.strip() for name in allowed_headers.split(",")
    }
    for other in ("https://evil.example.com", "http://shop.example.com", "null"):
        response = client.get("/api/v1/products", headers={"Origin": other})
        assert "Access-Control-Allow-Origin" not in response.headers, other
    # Only the API: probes and docs are not offered cross-origin.
    assert (
        "Access-Control-Allow-Origin"
        not in client.get("/health/live", headers={"Origin": ORIGIN}).headers
    )


def test_cors_origins_are_validated() -> None:
    from service.config import ConfigError, load_config

    for bad in ("*", "shop.example.com", "https://shop.example.com/path", "ftp://x"):
        with pytest.raises(ConfigError, match="CORS_ORIGINS"):
            load_config({"CORS_ORIGINS": bad})
    config = load_config({"CORS_ORIGINS": " https://a.example/ ,https://b.example:8443"})
    assert config["CORS_ORIGINS"] == ("https://a.example", "https://b.example:8443")


# Under gunicorn: the Server header, exact rate limits across workers


def test_gunicorn_does_not_reveal_its_version(
    gunicorn_server: StartServer, server_database: str
) -> None:
    server = gunicorn_server(DATABASE_URL=server_database)
    for path in ("/health/live", "/api/v1/products", "/api/v1/nothing", "/docs"):
        header = requests.get(server.url(path), timeout=10).headers.get("Server", "")
        assert not re.search(r"\d", header), header  # "gunicorn", never "gunicorn/27.0.1"


LIMIT = 10
REQUESTS = 40


def test_rate_limit_is_exact_across_two_workers(
    rate_limited_server: StartLimited, server_token: str
) -> None:
    server = rate_limited_server(f"{LIMIT} per minute")
    assert len(server.worker_pids()) == 2
    responses: list[requests.Response] = []
    lock = threading.Lock()

    def hammer(headers: dict[str, str], count: int) -> None:
        for _ in range(count):
            response = requests.get(server.url("/api/v1/categories"), headers=headers, timeout=15)
            with lock:
                responses.append(response)

    # 8 clients at once, from one address: the limit is per address across both workers.
    threads = [threading.Thread(target=hammer, args=({}, REQUESTS // 8)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    counts = Counter(response.status_code for response in responses)
    print(f"rate limit {LIMIT}/min, {REQUESTS} concurrent requests on 2 workers: {dict(counts)}")
    assert counts == {200: LIMIT, 429: REQUESTS - LIMIT}
    for response in responses:
        if response.status_code == 429:
            assert response.headers["Content-Type"] == "application/problem+json"
            assert int(response.headers["Retry-After"]) > 0
            assert response.headers["RateLimit-Remaining"] == "0"
    # A valid key has an allowance of its own; a made-up one shares the address's.
    keyed = {"Authorization": f"Bearer {server_token}"}
    assert requests.get(server.url("/api/v1/categories"), headers=keyed, timeout=15).ok
    made_up = {"Authorization": "Bearer gbx_made_up"}
    response = requests.get(server.url("/api/v1/categories"), headers=made_up, timeout=15)
    assert response.status_code == 429


# /docs in a real browser, with its CSP


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        # Guarded install, as for the other Debian tools the suite uses (CI runs as root).
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
            check=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("chromium")
    assert found is not None
    return found


def test_docs_render_the_operations_under_the_csp(
    gunicorn_server: StartServer, server_database: str, tmp_path: Path
) -> None:
    server = gunicorn_server(DATABASE_URL=server_database)
    spec = requests.get(server.url("/openapi.json"), timeout=10).json()
    methods = ("get", "post", "patch", "delete")
    operations = sum(1 for item in spec["paths"].values() for method in item if method in methods)
    profile = tempfile.mkdtemp(prefix="glassbox-chromium-")
    try:
        result = subprocess.run(
            [
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=15000",
                "--dump-dom",
                server.url("/docs"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    # Swagger UI ran (its script is external: the CSP allows 'self' only) and drew every
    # operation of the spec; the browser reported no CSP violation.
    blocks = re.findall(r'class="opblock opblock-(get|post|patch|delete)', result.stdout)
    assert len(blocks) == operations >= 17
    assert "Content Security Policy" not in result.stderr
    assert "Content-Security-Policy" in requests.get(server.url("/docs"), timeout=10).headers


def test_cors_lets_a_browser_send_if_match_and_read_the_contract_headers(sqlite_url: str) -> None:
    client = build_app(sqlite_url, CORS_ORIGINS=ORIGIN).test_client()
    preflight = client.options(
        "/api/v1/products/1",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
    )
    allowed = {h.strip() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert "if-match" in {h.lower() for h in allowed}
    exposed = client.get("/api/v1/products", headers={"Origin": ORIGIN}).headers[
        "Access-Control-Expose-Headers"
    ]
    assert {"Idempotent-Replayed", "X-Trace-Id", "ETag", "Location"} <= {
        h.strip() for h in exposed.split(",")
    }
