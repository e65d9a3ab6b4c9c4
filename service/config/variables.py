"""Every environment variable glassbox reads: name, default, parser and the README's words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.config.parsers import (
    _bool,
    _choice,
    _environment,
    _float,
    _http_url,
    _int,
    _log_level,
    _optional,
    _origins,
    _redis_url,
    _text,
    database_url,
)

DEFAULT_SECRET_KEY = "glassbox-development-secret-do-not-use-in-production"  # noqa: S105
DEFAULT_DEV_API_KEY = "gbx_dev_key_for_local_use_only"
DEFAULT_PAYMENTS_SHARED_SECRET = "glassbox-payments-development-secret"  # noqa: S105


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    parse: Callable[[Any], Any]
    help: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "GLASSBOX_ENV",
        "development",
        _environment,
        "development, test or production; production refuses default secrets",
    ),
    Variable(
        "SECRET_KEY",
        DEFAULT_SECRET_KEY,
        _text,
        "signs pagination cursors; must be set to a long random value in production",
    ),
    Variable(
        "DATABASE_URL",
        "sqlite:///var/glassbox.db",
        database_url,
        "SQLAlchemy URL of the database (postgresql://… or sqlite:///…)",
    ),
    Variable(
        "DATABASE_POOL_SIZE",
        "5",
        _int(1, 200),
        "connections kept open per worker process (PostgreSQL)",
    ),
    Variable(
        "REQUEST_BUDGET",
        "5.0",
        _float(1.0, 25.0),
        "seconds within which every request answers, even when a dependency hangs; "
        "the timeouts below must fit in it (gunicorn's worker timeout is 30 s)",
    ),
    Variable(
        "DATABASE_POOL_TIMEOUT",
        "2",
        _float(0.1, 120),
        "seconds to wait for a free pooled connection before answering 503",
    ),
    Variable(
        "DATABASE_CONNECT_TIMEOUT",
        "2",
        _int(1, 120),
        "seconds to wait for the database to accept a connection (psycopg waits at least 2)",
    ),
    Variable(
        "DATABASE_STATEMENT_TIMEOUT",
        "",
        _optional(_float(0.1, 120)),
        "seconds one SQL statement may run (PostgreSQL statement_timeout); empty: what the "
        "budget leaves, REQUEST_BUDGET - DATABASE_CONNECT_TIMEOUT - 2 x REDIS_TIMEOUT - 0.5",
    ),
    Variable(
        "DATABASE_BREAKER_SECONDS",
        "2",
        _float(0.1, 300.0),
        "after PostgreSQL timed out or refused in a request, seconds a worker answers 503 "
        "without calling it",
    ),
    Variable(
        "DATABASE_POOLER",
        "none",
        _choice("none", "transaction"),
        "none: PostgreSQL is reached directly (timeouts set once per connection, prepared "
        "statements, catalog reads in one round trip); transaction: through a "
        "transaction-mode pooler (PgBouncer, Supabase), timeouts per transaction, nothing "
        "prepared",
    ),
    Variable(
        "REDIS_URL",
        "",
        _redis_url,
        "Redis for the cache and the rate limiter; empty means in-process",
    ),
    Variable(
        "REDIS_TIMEOUT",
        "0.25",
        _float(0.01, 5.0),
        "seconds a Redis call (connect or read) of the cache or the limiter may take",
    ),
    Variable(
        "REDIS_BREAKER_SECONDS",
        "10",
        _float(1.0, 300.0),
        "after a Redis timeout or error, seconds the cache and the limiter skip that Redis",
    ),
    Variable(
        "CACHE_DEFAULT_TIMEOUT",
        "60",
        _int(0, 86400),
        "seconds a cached product or category read lives",
    ),
    Variable(
        "CACHE_LOCAL_ENTRIES",
        "10000",
        _int(0, 10_000_000),
        "cached reads each worker also keeps in memory, kept true by Redis invalidation "
        "pushes (only with REDIS_URL); 0: off",
    ),
    Variable("RATELIMIT_ENABLED", "true", _bool, "switch rate limiting on or off"),
    Variable(
        "RATELIMIT_DEFAULT",
        "600 per minute",
        _text,
        "limit per API key (or client address when anonymous), Flask-Limiter syntax",
    ),
    Variable(
        "RATELIMIT_STORAGE_URI",
        "",
        _text,
        "limiter storage; empty means REDIS_URL, or memory:// when that is empty",
    ),
    Variable(
        "MAX_CONTENT_LENGTH",
        "1048576",
        _int(1024, 64 * 1024 * 1024),
        "largest request body in bytes; larger bodies get 413",
    ),
    Variable(
        "CORS_ORIGINS",
        "",
        _origins,
        "browser origins allowed to call /api/ (comma-separated); empty: no CORS headers",
    ),
    Variable("LOG_LEVEL", "INFO", _log_level, "level of the logs on stdout"),
    Variable(
        "LOG_FORMAT",
        "auto",
        _choice("auto", "json", "console"),
        "json lines, or console (readable); auto: console on a development terminal, else json",
    ),
    Variable(
        "DEV_API_KEY",
        DEFAULT_DEV_API_KEY,
        _text,
        "token of the development API key that `make run` creates; refused in production",
    ),
    Variable(
        "HEALTH_CHECK_TIMEOUT",
        "1.0",
        _float(0.05, 30),
        "seconds each readiness check may take before it counts as down",
    ),
    Variable(
        "PAYMENTS_URL",
        "",
        _http_url,
        "base URL of the payments service; empty means in-process approval",
    ),
    Variable(
        "PAYMENTS_TIMEOUT",
        "1.0",
        _float(0.05, 60),
        "seconds one call to the payments service may take",
    ),
    Variable(
        "PAYMENTS_RETRIES",
        "2",
        _int(0, 10),
        "retries (with backoff) after a failed or timed-out payments call",
    ),
    Variable(
        "PAYMENTS_SHARED_SECRET",
        DEFAULT_PAYMENTS_SHARED_SECRET,
        _text,
        "bearer secret between the API and the payments service (both read it); "
        "production needs a random value of 32+ characters",
    ),
    Variable(
        "IDEMPOTENCY_TTL",
        "86400",
        _int(60, 30 * 86400),
        "seconds an Idempotency-Key of POST /orders is remembered",
    ),
    Variable(
        "REPORTS_SQL_DELAY_MS",
        "0",
        _int(0, 60_000),
        "experiments: each sales report first waits this long inside the database (pg_sleep)",
    ),
    Variable(
        "LAB_ROUTES",
        "false",
        _bool,
        "experiments: serve /lab/sales-in-python, the report computed in Python (make lab)",
    ),
    Variable(
        "FAULT_FLAGS_FILE",
        "",
        _text,
        "a flagd flags file of faults to rehearse incidents with, re-read while running "
        "(service/faults.py, docs/runbook.md); empty: no fault flags",
    ),
    Variable(
        "FAULTS_ALLOWED_IN_PRODUCTION",
        "false",
        _bool,
        "production refuses to start with a fault source (FAULT_FLAGS_FILE or a fault knob "
        "above 0) unless this is true",
    ),
    Variable(
        "TELEMETRY_INSTRUMENTATION",
        "lean",
        _choice("lean", "contrib"),
        "lean: glassbox's server and SQL spans; contrib: the stock Flask/SQLAlchemy instrumentors",
    ),
)

# Read by the Makefile and the gunicorn config, not by the application itself.
SERVER_VARIABLES: tuple[Variable, ...] = (
    Variable("HOST", "127.0.0.1", _text, "address `make run` and `make serve` bind to"),
    Variable("PORT", "8000", _int(1, 65535), "port of the API"),
    Variable("WEB_CONCURRENCY", "2", _int(1, 64), "gunicorn worker processes (`make serve`)"),
    Variable(
        "WEB_THREADS",
        "1",
        _int(1, 64),
        "request threads per gunicorn worker (1: sync worker); DATABASE_POOL_SIZE at least this",
    ),
    Variable("PAYMENTS_PORT", "8001", _int(1, 65535), "port of the payments service (make)"),
    Variable(
        "PROMETHEUS_MULTIPROC_DIR",
        "",
        _text,
        "writable folder where gunicorn workers share /metrics counters (set by make serve)",
    ),
)

# Read by the payments service (service/payments), not by the API.
PAYMENTS_SERVICE_VARIABLES: tuple[Variable, ...] = (
    Variable(
        "PAYMENTS_LATENCY_MS", "0", _int(0, 60_000), "payments service: added latency per call"
    ),
    Variable(
        "PAYMENTS_FAILURE_RATE",
        "0.0",
        _float(0.0, 1.0),
        "payments service: share of calls that fail with 503 (0 to 1)",
    ),
    Variable(
        "PAYMENTS_DATABASE_URL",
        "sqlite:///var/payments.db",
        database_url,
        "payments service: its own ledger database (sqlite:///… or postgresql://…), "
        "never glassbox's",
    ),
)

# Parsed by load_profiling_config for service/profiles.py, in the API and the payments
# service (README "Observability").
PROFILING_VARIABLES: tuple[Variable, ...] = (
    Variable(
        "PYROSCOPE_SERVER_ADDRESS",
        "",
        _http_url,
        "Pyroscope server for continuous profiling (http://pyroscope:4040); empty: off",
    ),
    Variable(
        "PYROSCOPE_SAMPLE_RATE",
        "100",
        _int(1, 1000),
        "stack samples per second of the continuous profiler",
    ),
)

# The OpenTelemetry SDK reads these itself (README "Observability").
OTEL_VARIABLES: tuple[str, ...] = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
)


def all_variable_names() -> frozenset[str]:
    """Every environment variable glassbox or its SDKs read: deployment files may set these."""
    return frozenset(
        [
            v.name
            for v in VARIABLES + SERVER_VARIABLES + PAYMENTS_SERVICE_VARIABLES + PROFILING_VARIABLES
        ]
        + list(OTEL_VARIABLES)
    )
