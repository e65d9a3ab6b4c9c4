from __future__ import annotations

import re

import pytest
from flask import Flask
from opentelemetry.util.http import parse_excluded_urls

from service.edge import unobserved_url_patterns
from service.metrics import metrics
from tests.conftest import build_app


def _limited_app(database: str, redis: str = "") -> Flask:
    return build_app(database, redis, RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="3 per minute")


def _exercise(app: Flask) -> None:
    client = app.test_client()
    statuses = [client.get("/api/v1/categories").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    ok = client.get("/api/v1/categories")
    assert ok.status_code == 429
    assert ok.content_type == "application/problem+json"
    assert int(ok.headers["Retry-After"]) > 0
    assert ok.headers["RateLimit-Limit"] == "3"
    assert ok.headers["RateLimit-Remaining"] == "0"
    assert 0 <= int(ok.headers["RateLimit-Reset"]) <= 61  # seconds, not an epoch
    # Probes and docs are exempt.
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_limit_in_process(sqlite_url: str) -> None:
    _exercise(_limited_app(sqlite_url))


def test_limit_in_redis(sqlite_url: str, redis_url: str) -> None:
    _exercise(_limited_app(sqlite_url, redis_url))


def test_limit_in_redis_is_shared_between_apps(sqlite_url: str, redis_url: str) -> None:
    # Two app instances stand for two worker processes: the window is shared.
    first, second = _limited_app(sqlite_url, redis_url), _limited_app(sqlite_url, redis_url)
    codes = [
        app.test_client().get("/api/v1/categories").status_code
        for app in (first, second, first, second, first)
    ]
    assert codes == [200, 200, 200, 429, 429]


def test_a_limited_request_costs_one_redis_round_trip(sqlite_url: str, redis_url: str) -> None:
    app = _limited_app(sqlite_url, redis_url)
    client = app.test_client()
    client.get("/api/v1/categories")  # the script is loaded on the first call (EVAL)
    storage = next(iter(app.extensions["limiter"])).limiter.storage
    commands: list[str] = []
    execute = storage.storage.execute_command

    def counted(*args: object, **options: object) -> object:
        commands.append(str(args[0]).upper())
        return execute(*args, **options)

    storage.storage.execute_command = counted
    second, third = client.get("/api/v1/categories"), client.get("/api/v1/categories")
    # The count and the reset in the headers come with the increment, not with GET and TTL.
    assert commands == ["EVALSHA", "EVALSHA"]
    assert [second.headers["RateLimit-Remaining"], third.headers["RateLimit-Remaining"]] == [
        "1",
        "0",
    ]
    assert 0 < int(third.headers["RateLimit-Reset"]) <= 61
    assert client.get("/api/v1/categories").status_code == 429
    assert commands == ["EVALSHA"] * 3


def test_successful_responses_carry_ratelimit_headers_but_no_retry_after(sqlite_url: str) -> None:
    response = _limited_app(sqlite_url).test_client().get("/api/v1/categories")
    assert response.headers["RateLimit-Remaining"] == "2"
    assert "Retry-After" not in response.headers


def test_keys_are_limited_separately_from_addresses(sqlite_url: str) -> None:
    from service.auth import service as auth

    app = _limited_app(sqlite_url)
    with app.app_context():
        token = auth.create_key(name="limits", scopes=auth.DEVELOPMENT_SCOPES)
    try:
        client = app.test_client()
        for _ in range(3):
            client.get("/api/v1/categories")
        assert client.get("/api/v1/categories").status_code == 429
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/categories", headers=headers).status_code == 200
        # A made-up token does not buy a fresh allowance.
        bogus = {"Authorization": "Bearer made-up"}
        assert client.get("/api/v1/categories", headers=bogus).status_code == 429
    finally:
        from tests.conftest import _clean

        _clean(app)


def test_limits_can_be_switched_off(sqlite_url: str) -> None:
    app = build_app(sqlite_url, RATELIMIT_ENABLED="false", RATELIMIT_DEFAULT="1 per minute")
    client = app.test_client()
    assert [client.get("/api/v1/categories").status_code for _ in range(3)] == [200] * 3


# Issue 10, finding 9: one allowance per client across every route, 401s and 404s included.


def test_one_allowance_across_all_routes(sqlite_url: str) -> None:
    client = _limited_app(sqlite_url).test_client()
    assert client.get("/api/v1/categories").status_code == 200
    assert client.get("/api/v1/products").status_code == 200
    assert client.get("/api/v1/reports/sales").status_code == 401
    for path in ("/api/v1/categories", "/api/v1/products", "/api/v1/orders"):
        refused = client.get(path)
        assert refused.status_code == 429, path
        assert refused.headers["RateLimit-Limit"] == "3"


def test_not_found_and_unauthorized_count_against_the_allowance(sqlite_url: str) -> None:
    client = _limited_app(sqlite_url).test_client()
    assert client.get("/api/v1/no-such-thing").status_code == 404  # matches no route
    assert client.get("/api/v1/products/999999").status_code == 404
    assert client.post("/api/v1/categories", json={"name": "x"}).status_code == 401
    for path in ("/api/v1/no-such-thing", "/api/v1/categories"):
        refused = client.get(path)
        assert refused.status_code == 429, path
        assert refused.content_type == "application/problem+json"
    assert client.open("/api/v1/categories", method="BREW").status_code == 429


# Issue 10, finding 6: a 503 says when the service expects to be back, not the limiter.


def test_a_503_keeps_the_services_own_retry_after() -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    app = build_app(
        unreachable,
        RATELIMIT_ENABLED=True,
        RATELIMIT_DEFAULT="100 per hour",
        DATABASE_CONNECT_TIMEOUT=1,
    )
    response = app.test_client().get("/api/v1/categories")
    assert response.status_code == 503
    assert response.headers.getlist("Retry-After") == ["5"]
    assert response.headers["RateLimit-Remaining"] == "99"  # the request still counted


# Issue 23, finding 8: only the exact probe, scrape, docs, spec and static endpoints are
# exempt; a path that merely starts like one is limited and observed like any other.
NEAR_MISSES = ("/metricsX/n", "/docsX/n", "/health/x/n", "/static/x/n", "/openapi.jsonX/n")
EXEMPT = (
    "/health/live",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/static/swagger-ui/swagger-ui.css",
)


def test_only_the_exact_exempt_endpoints_skip_the_limit_and_the_metrics(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    observed: list[str] = []
    monkeypatch.setattr(
        metrics, "http_request", lambda method, route, status, *_: observed.append(status)
    )
    client = _limited_app(sqlite_url).test_client()
    for path in EXEMPT:
        with client.get(path) as response:
            assert response.status_code == 200, path
    assert observed == []
    statuses = [client.get(path).status_code for path in NEAR_MISSES]
    assert statuses == [404, 404, 404, 429, 429]
    assert observed == statuses
    for path in EXEMPT:  # still answer once the client is over its limit
        with client.get(path) as response:
            assert response.status_code == 200, path


def test_the_contrib_flask_instrumentation_excludes_the_same_exact_paths() -> None:
    excluded = parse_excluded_urls(unobserved_url_patterns())
    assert all(excluded.url_disabled(f"http://127.0.0.1:8000{path}") for path in EXEMPT)
    assert excluded.url_disabled("https://shop.example/metrics?name[]=x")
    assert not any(excluded.url_disabled(f"http://127.0.0.1:8000{p}") for p in NEAR_MISSES)
    assert not excluded.url_disabled("http://127.0.0.1:8000/api/v1/products?next=/metrics")


def test_a_429_says_the_allowance_and_when_the_next_request_is_allowed(sqlite_url: str) -> None:
    client = _limited_app(sqlite_url).test_client()
    for _ in range(3):
        client.get("/api/v1/categories")
    limited = client.get("/api/v1/categories")
    problem = limited.json
    assert problem["type"] == "urn:glassbox:problem:rate-limited"
    assert problem["title"] == "Too many requests"
    detail = re.fullmatch(
        r"3 requests a minute per client address, next allowance in (\d+) s\. .+",
        problem["detail"],
    )
    assert detail, problem["detail"]
    # The same seconds as Retry-After (a second may tick between the two).
    assert abs(int(detail.group(1)) - int(limited.headers["Retry-After"])) <= 1


def test_on_breach_is_called_when_the_quick_path_refuses(sqlite_url: str, redis_url: str) -> None:
    # The common case (one application limit, leased storage) skips Flask-Limiter's
    # evaluation for requests it admits; a refusal still goes through it, so the limiter's
    # on_breach (rate_limited_problem) renders the 429.
    app = build_app(sqlite_url, redis_url, RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="2 per minute")
    client = app.test_client()
    answers = [client.get("/api/v1/categories") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[2].json["type"] == "urn:glassbox:problem:rate-limited"
    assert answers[2].json["detail"].startswith("2 requests a minute per client address")


def test_a_route_limit_beside_the_default_is_evaluated_by_flask_limiter(
    sqlite_url: str, redis_url: str
) -> None:
    app = build_app(
        sqlite_url, redis_url, RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="100 per minute"
    )
    limiter = next(iter(app.extensions["limiter"]))
    app.add_url_rule("/tight", "tight", limiter.limit("1 per minute")(lambda: {"ok": True}))
    client = app.test_client()
    assert client.get("/api/v1/categories").headers["RateLimit-Limit"] == "100"
    first, second = client.get("/tight"), client.get("/tight")
    assert [first.status_code, second.status_code] == [200, 429]
    assert first.headers["RateLimit-Limit"] == "1"
    # The default window counted every request that reached a route: 3 of 100.
    assert client.get("/api/v1/categories").headers["RateLimit-Remaining"] == "96"
