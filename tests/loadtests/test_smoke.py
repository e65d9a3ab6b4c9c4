"""The smoke load shape against the app under gunicorn (2 sync workers) on PostgreSQL + Redis.

What CI proves with it: every shopper journey of the locustfile works against the real
server (bodies validated, orders placed with an API key), and `make load`'s exit code
comes from loadtests/thresholds.toml.
"""

from __future__ import annotations

import csv
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from flask import Flask

from profiling.harness.gunicorn import gunicorn
from profiling.harness.processes import ROOT, clean_environment
from service.auth import service as auth
from service.seed import seed_orders, seed_products
from tests.telemetry.otlp import Receiver, attributes, serve_receiver, wait_for

# Requests a 12 s smoke run is all but certain to make (hundreds of weighted tasks;
# the rarest asserted, an order check, is expected more than ten times).
# Cancellations are rarer (a shopper cancels one of their own paid orders), so not listed.
EXPECTED_NAMES = {
    "/api/v1/products",
    "/api/v1/products (next page)",
    "/api/v1/products/{id}",
    "/api/v1/products?q=",
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/api/v1/reports/sales",
    "Aggregated",
}


def run_locust(url: str, token: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "loadtests/locustfile.py",
        "--headless",
        "--host",
        url,
        "--csv",
        str(out / "smoke"),
        "--html",
        str(out / "smoke.html"),
        "--only-summary",
        "--exit-code-on-error",
        "1",
        # A hard stop in case a shape never ends; the smoke shape lasts 12 s.
        "--run-time",
        "60s",
        *extra,
    ]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=clean_environment({"GLASSBOX_API_KEY": token, "LOAD_SHAPE": "smoke"}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def server_env(postgres_url: str, redis_url: str) -> dict[str, str]:
    """The server's settings: the test's PostgreSQL and Redis, no rate limit."""
    return {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "RATELIMIT_ENABLED": "false",
        "GLASSBOX_ENV": "development",
    }


def test_smoke_shape_passes_against_gunicorn_on_postgres(
    pg_app: Flask, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    with pg_app.app_context():
        rng = random.Random(5)
        seed_products(300, rng=rng)
        seed_orders(100, rng=rng)
        token = auth.create_key(name="load-smoke", scopes=auth.DEVELOPMENT_SCOPES)
    env = server_env(postgres_url, redis_url)
    with gunicorn(env, workers=2, log_path=tmp_path / "gunicorn.log") as server:
        result = run_locust(server.base_url, token, tmp_path)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "thresholds met (shape smoke)" in result.stderr
    with (tmp_path / "smoke_stats.csv").open(newline="") as file:
        rows = {row["Name"]: row for row in csv.DictReader(file)}
    assert set(rows) >= EXPECTED_NAMES, sorted(rows)
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["/api/v1/orders"]["Request Count"]) > 0
    assert (tmp_path / "smoke.html").stat().st_size > 0


def test_failures_fail_the_run_name_their_trace_and_every_span_is_synthetic(
    pg_app: Flask, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A wrong API key makes every order a 401: the failure ratio passes its limit, and each
    failure names its trace. The server exports to a receiver here: every request of the
    run started its own trace (traceparent) and is marked synthetic (baggage), on the
    server span and on the request metrics."""
    with pg_app.app_context():
        seed_products(50, rng=random.Random(6))
    receiver, otlp = serve_receiver()
    env = {
        **server_env(postgres_url, redis_url),
        "OTEL_SDK_DISABLED": "false",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_always_off",  # only what Locust samples
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_LOGS_EXPORTER": "none",
    }
    try:
        with gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log") as server:
            result = run_locust(
                server.base_url, "gbx_not_a_real_key", tmp_path, "--shape-seconds", "4"
            )
            with (tmp_path / "smoke_failures.csv").open(newline="") as file:
                failures = [row["Error"] for row in csv.DictReader(file)]
            failed_traces = {m for e in failures for m in re.findall(r"\(trace (\w+)\)", e)}
            assert failed_traces, failures
            wait_for(
                lambda: failed_traces <= {s.trace_id for s in receiver.spans()},
                what="the failed requests' spans",
            )
            wait_for(lambda: synthetic_points(receiver), what="request metrics marked synthetic")
    finally:
        otlp.shutdown()
        otlp.server_close()

    assert result.returncode == 1, result.stderr[-3000:]
    assert "threshold exceeded: failure ratio" in result.stderr
    assert all(re.search(r"status 401 .*\(trace [0-9a-f]{32}\)", e) for e in failures), failures
    servers = [s for s in receiver.spans() if s.kind == SERVER_KIND]
    assert len(servers) > 10
    # Sampled only because Locust's traceparent said so: each request a trace of its own.
    assert len({s.trace_id for s in servers}) == len(servers)
    assert all(s.attributes.get("user_agent.synthetic.type") == "test" for s in servers)
    assert {
        s.attributes["http.response.status_code"] for s in servers if s.trace_id in failed_traces
    } == {401}
    assert {p["synthetic"] for p in synthetic_points(receiver)} == {"true"}


SERVER_KIND = 2  # opentelemetry.proto's SPAN_KIND_SERVER


def synthetic_points(receiver: Receiver) -> list[dict[str, Any]]:
    """Attributes of every request-duration point received (none from health probes)."""
    return [
        attributes(point.attributes)
        for _resource, metric in receiver.metrics()
        if metric.name == "http.server.request.duration"
        for point in metric.histogram.data_points
    ]
