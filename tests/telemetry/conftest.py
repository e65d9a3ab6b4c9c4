"""The whole traced path as users run it: the API and the payments service under gunicorn,
both exporting OTLP/HTTP to a receiver in this process that decodes the real payloads.

PostgreSQL (a database of its own) and Redis when TEST_DATABASE_URL / TEST_REDIS_URL are
set, a SQLite file otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from profiling.harness.flask_cli import run_flask
from tests.conftest import REQUIRE_SERVICES, TEST_DATABASE_URL, TEST_REDIS_URL
from tests.processes import Process, start_gunicorn
from tests.reliability.servers import server_env
from tests.telemetry.otlp import Receiver, serve_receiver


def _database(tmp: Path) -> tuple[str, Any]:
    """A fresh database for the stack, and how to drop it afterwards."""
    if not TEST_DATABASE_URL:
        if REQUIRE_SERVICES:
            pytest.fail("TEST_DATABASE_URL is required (GLASSBOX_REQUIRE_SERVICES=1)")
        return f"sqlite:///{tmp / 'telemetry.db'}", lambda: None
    base = sa.engine.make_url(TEST_DATABASE_URL).set(drivername="postgresql+psycopg")
    name = f"{base.database}_telemetry"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(sa.text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


@dataclass
class Stack:
    receiver: Receiver
    api: Process
    payments: Process
    token: str
    env: dict[str, str]

    def url(self, path: str) -> str:
        return self.api.base_url + path

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def place_order(self, product_id: int, quantity: int, email: str) -> requests.Response:
        return requests.post(
            self.url("/api/v1/orders"),
            json={
                "customer_email": email,
                "items": [{"product_id": product_id, "quantity": quantity}],
            },
            headers=self.headers(),
            timeout=30,
        )


def telemetry_env(receiver: Receiver, service: str, **extra: str) -> dict[str, str]:
    """Export everything to `receiver`, sampled, on short timers (overridable)."""
    settings = {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_LOGS_EXPORTER": "otlp",
    }
    return server_env(**{**settings, **extra})


def one_worker_env(database: str, **extra: str) -> dict[str, str]:
    """One gunicorn worker on `database`, the SDK on, every trace sampled, short timers
    (overridable); where it exports is the caller's."""
    settings = {
        "DATABASE_URL": database,
        "WEB_CONCURRENCY": "1",
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
    }
    return server_env(**{**settings, **extra})


@pytest.fixture(autouse=True)
def plain_requests() -> Iterator[None]:
    """The test's own HTTP calls must not carry trace context.

    Any `create_app` in this process instruments `requests` (for the payments call); the
    test client would then send an unsampled `traceparent`, and the servers, sampling by
    parent, would record nothing.
    """
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    instrumentor = RequestsInstrumentor()
    was_instrumented = instrumentor.is_instrumented_by_opentelemetry
    if was_instrumented:
        instrumentor.uninstrument()
    yield
    if was_instrumented:
        instrumentor.instrument()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("telemetry")
    receiver, server = serve_receiver()
    database, drop_database = _database(tmp)
    processes: list[Process] = []
    try:
        payments = start_gunicorn(
            "payments",
            telemetry_env(
                receiver,
                "glassbox-payments",
                WEB_CONCURRENCY="1",
                PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics-payments"),
            ),
            tmp / "payments.log",
            app="service.payments:create_app()",
        )
        processes.append(payments)
        env = telemetry_env(
            receiver,
            "glassbox-api",
            DATABASE_URL=database,
            REDIS_URL=TEST_REDIS_URL,
            PAYMENTS_URL=payments.base_url,
            PAYMENTS_RETRIES="0",
            PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics-api"),
        )
        quiet = {**env, "OTEL_SDK_DISABLED": "true"}
        quiet.pop("PROMETHEUS_MULTIPROC_DIR")
        run_flask("db", "upgrade", env=quiet, timeout=120)  # raises with its output on failure
        token = run_flask(
            "api-keys",
            "create",
            "telemetry",
            "--scope",
            "customer",
            "--scope",
            "operator",
            env=quiet,
            timeout=60,
        ).strip()
        api = start_gunicorn("api", env, tmp / "api.log")
        processes.append(api)
        yield Stack(receiver, api, payments, token, env)
    finally:
        for process in reversed(processes):
            process.stop()
        server.shutdown()
        server.server_close()
        drop_database()
