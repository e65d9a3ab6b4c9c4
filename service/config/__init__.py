"""Settings read from the environment once, in the application factory.

Every variable is listed in the README's configuration table and in `.env.example`;
`tests/test_config.py` keeps the three in step. Names follow the libraries' own keys
where one exists (RATELIMIT_*, CACHE_*, MAX_CONTENT_LENGTH).

Own parser rather than environs: it reports every invalid variable at once and enforces the
production secret rules; environs would replace only the small `_int`/`_float`/`_choice`
parsers (read once at start, no per-request cost either way).

Layout: `parsers` (one value each), `variables` (the tables), `otel` (the SDK's variables),
`budget` (REQUEST_BUDGET's split); the loaders below put them together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from service.config.budget import (
    ANSWER_RESERVE,
    CLIENT_GRACE,
    PAYMENTS_BACKOFF_SECONDS,
    request_budget,
)
from service.config.otel import (
    OTEL_EXPORTERS,
    OTEL_SIGNALS,
    OTLP_PROTOCOLS,
    OtelProcess,
    SignalExport,
    otel_exports,
    otel_process,
)
from service.config.parsers import ENVIRONMENTS, ConfigError, database_url
from service.config.variables import (
    DEFAULT_DEV_API_KEY,
    DEFAULT_PAYMENTS_SHARED_SECRET,
    DEFAULT_SECRET_KEY,
    OTEL_VARIABLES,
    PAYMENTS_SERVICE_VARIABLES,
    PROFILING_VARIABLES,
    SERVER_VARIABLES,
    VARIABLES,
    Variable,
    all_variable_names,
)

__all__ = [
    "ANSWER_RESERVE",
    "CLIENT_GRACE",
    "DEFAULT_DEV_API_KEY",
    "DEFAULT_PAYMENTS_SHARED_SECRET",
    "DEFAULT_SECRET_KEY",
    "ENVIRONMENTS",
    "OTEL_EXPORTERS",
    "OTEL_SIGNALS",
    "OTEL_VARIABLES",
    "OTLP_PROTOCOLS",
    "PAYMENTS_BACKOFF_SECONDS",
    "PAYMENTS_SERVICE_VARIABLES",
    "PROFILING_VARIABLES",
    "SERVER_VARIABLES",
    "VARIABLES",
    "ConfigError",
    "OtelProcess",
    "SignalExport",
    "Variable",
    "all_variable_names",
    "check_faults",
    "check_payments_secret",
    "database_url",
    "load_config",
    "load_payments_config",
    "load_profiling_config",
    "otel_exports",
    "otel_process",
    "prometheus_multiproc_dir",
    "request_budget",
]


def check_payments_secret(secret: str) -> None:
    """Production refuses the development shared secret of the payments service, or a short one."""
    if secret == DEFAULT_PAYMENTS_SHARED_SECRET or len(secret) < 32:
        raise ConfigError(
            "invalid configuration: PAYMENTS_SHARED_SECRET must be set to a random value of "
            "at least 32 characters when GLASSBOX_ENV=production"
        )


# The fault knobs of each service: in production, any of them above 0 is a fault source.
_FAULT_KNOBS = ("PAYMENTS_LATENCY_MS", "PAYMENTS_FAILURE_RATE", "REPORTS_SQL_DELAY_MS")


def check_faults(values: Mapping[str, Any]) -> None:
    """Production refuses fault flags or knobs unless FAULTS_ALLOWED_IN_PRODUCTION is true."""
    if values["GLASSBOX_ENV"] != "production" or values["FAULTS_ALLOWED_IN_PRODUCTION"]:
        return
    sources = [k for k in _FAULT_KNOBS if values.get(k)]
    if values["FAULT_FLAGS_FILE"]:
        sources.insert(0, "FAULT_FLAGS_FILE")
    if sources:
        raise ConfigError(
            f"invalid configuration: {', '.join(sources)} injects faults; production refuses "
            "them unless FAULTS_ALLOWED_IN_PRODUCTION=true"
        )


def _project_path(path: str) -> str:
    """Resolve a relative SQLite path against the working directory and create its folder."""
    file = Path(path)
    if not file.is_absolute():
        file = Path.cwd() / file
    file.parent.mkdir(parents=True, exist_ok=True)
    return str(file)


def _parse(
    variables: tuple[Variable, ...], environ: Mapping[str, str], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Each variable's value (overrides first, then the environment), or every problem at once.

    The overrides named here are taken out of `overrides`; the rest pass through.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for variable in variables:
        raw = overrides.pop(variable.name, environ.get(variable.name, variable.default))
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            raw = variable.default
        try:
            values[variable.name] = variable.parse(raw)
        except (TypeError, ValueError) as exc:
            problems.append(f"{variable.name}={raw!r}: {exc}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return values


# Read by both services: the environment, the secret they share, logging and telemetry.
_SHARED_WITH_PAYMENTS = {
    "GLASSBOX_ENV",
    "FAULT_FLAGS_FILE",
    "FAULTS_ALLOWED_IN_PRODUCTION",
    "PAYMENTS_SHARED_SECRET",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "TELEMETRY_INSTRUMENTATION",
}


def load_profiling_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """PYROSCOPE_* settings (service/profiles.py), and the service name it profiles as."""
    environ = os.environ if environ is None else environ
    values = _parse(PROFILING_VARIABLES, environ, {})
    values["OTEL_SERVICE_NAME"] = environ.get("OTEL_SERVICE_NAME", "").strip()
    return values


def load_payments_config(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The payments service's config (service/payments), read like the API's."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    variables = PAYMENTS_SERVICE_VARIABLES + tuple(
        v for v in VARIABLES if v.name in _SHARED_WITH_PAYMENTS
    )
    values = _parse(variables, environ, overrides)
    if values["GLASSBOX_ENV"] == "production":
        check_payments_secret(values["PAYMENTS_SHARED_SECRET"])
    check_faults(values)
    values.update(overrides)
    return values


def load_config(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the Flask config from the environment and explicit overrides.

    Overrides win over the environment; keys that are not glassbox variables
    (``TESTING``, any Flask or extension key) pass through unchanged.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    values = _parse(VARIABLES, environ, overrides)

    weak_secret = values["SECRET_KEY"] == DEFAULT_SECRET_KEY or len(values["SECRET_KEY"]) < 32
    if values["GLASSBOX_ENV"] == "production" and weak_secret:
        raise ConfigError(
            "invalid configuration: SECRET_KEY must be set to a random value of at "
            "least 32 characters when GLASSBOX_ENV=production"
        )
    if values["GLASSBOX_ENV"] == "production" and values["PAYMENTS_URL"]:
        check_payments_secret(values["PAYMENTS_SHARED_SECRET"])
    check_faults(values)

    budget = request_budget(values)
    url: URL = values.pop("DATABASE_URL")
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        url = url.set(database=_project_path(url.database))
    redis_url = values["REDIS_URL"]
    limiter_storage = values["RATELIMIT_STORAGE_URI"] or redis_url or "memory://"
    config: dict[str, Any] = {
        **values,
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "SQLALCHEMY_DATABASE_URI": url.render_as_string(hide_password=False),
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(url, values, budget),
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "REQUEST_BUDGET_PARTS": budget,
        "DATABASE_STATEMENT_TIMEOUT": budget["database_statement"],
        "PAYMENTS_BUDGET": budget["payments_total"],
        "CACHE_TYPE": "RedisCache" if redis_url else "SimpleCache",
        "CACHE_REDIS_URL": redis_url or None,
        # The version changes with the shape of cached values (2: final response bytes), so
        # that the old and new workers of a rolling deploy never read each other's values.
        "CACHE_KEY_PREFIX": "glassbox:cache:2:",
        # Short timeouts, no retries and a circuit breaker (service/redis_breaker.py): a hung
        # Redis costs a worker one REDIS_TIMEOUT, then nothing for REDIS_BREAKER_SECONDS.
        "CACHE_OPTIONS": _redis_options(redis_url, values) if redis_url else None,
        "RATELIMIT_STORAGE_URI": limiter_storage,
        "RATELIMIT_STORAGE_OPTIONS": _redis_options(limiter_storage, values)
        if limiter_storage.startswith(("redis://", "rediss://", "unix://"))
        else {},
        "RATELIMIT_KEY_PREFIX": "glassbox",
        "RATELIMIT_HEADERS_ENABLED": True,
        # IETF draft names (RateLimit-*) rather than the legacy X-RateLimit-*.
        "RATELIMIT_HEADER_LIMIT": "RateLimit-Limit",
        "RATELIMIT_HEADER_REMAINING": "RateLimit-Remaining",
        "RATELIMIT_HEADER_RESET": "RateLimit-Reset",
        # Fail open: a Redis outage must not take the API down (README, "Rate limiting").
        "RATELIMIT_SWALLOW_ERRORS": True,
        "TESTING": values["GLASSBOX_ENV"] == "test",
        # The SDK reads it for the resource; the log lines carry the same name.
        "OTEL_SERVICE_NAME": environ.get("OTEL_SERVICE_NAME", "").strip(),
    }
    config.update(overrides)
    return config


def prometheus_multiproc_dir(environ: Mapping[str, str] | None = None) -> str:
    """Where gunicorn's workers share /metrics samples ("" when one process serves)."""
    environ = os.environ if environ is None else environ
    return environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def _redis_options(url: str, values: Mapping[str, Any]) -> dict[str, Any]:
    from service.redis_breaker import client_options

    return client_options(url, values["REDIS_TIMEOUT"], values["REDIS_BREAKER_SECONDS"])


def _engine_options(
    url: URL, values: Mapping[str, Any], budget: Mapping[str, float]
) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": 15}}
    direct = values["DATABASE_POOLER"] == "none"
    return {
        "pool_size": values["DATABASE_POOL_SIZE"],
        "max_overflow": values["DATABASE_POOL_SIZE"],
        "pool_timeout": values["DATABASE_POOL_TIMEOUT"],
        # No pool_pre_ping (a round trip per checkout): service/database.py pings only a
        # connection that sat idle in the pool.
        "pool_recycle": 1800,
        "connect_args": {
            "connect_timeout": values["DATABASE_CONNECT_TIMEOUT"],
            # Directly: psycopg prepares a statement on its 5th run on a connection (its
            # default; one-off statements stay unprepared). Behind a transaction-mode
            # pooler, none: each transaction may run on another server connection.
            "prepare_threshold": 5 if direct else None,
            "application_name": "glassbox",
            # A peer that vanished (host down, partition) is noticed on idle pooled
            # connections by keepalives, and on unacknowledged writes by tcp_user_timeout.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 3,
            "keepalives_count": 3,
            "tcp_user_timeout": int(budget["budget"] * 1000),
            # Read by service/database.py, not libpq (removed before connecting).
            "glassbox_timeouts": {
                "pooler": values["DATABASE_POOLER"],
                "wait": budget["database_wait"],
                "breaker_seconds": values["DATABASE_BREAKER_SECONDS"],
                "statement_timeout": budget["database_statement_ms"],
                "lock_timeout": budget["database_lock_ms"],
                "idle_in_transaction_session_timeout": budget["database_idle_in_transaction_ms"],
            },
        },
    }
