"""Settings read from the environment once, in the application factory.

Every variable is listed in the README's configuration table and in `.env.example`;
`tests/test_config.py` keeps the three in step. Names follow the libraries' own keys
where one exists (RATELIMIT_*, CACHE_*, MAX_CONTENT_LENGTH).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ENVIRONMENTS = ("development", "test", "production")
DEFAULT_SECRET_KEY = "glassbox-development-secret-do-not-use-in-production"  # noqa: S105
DEFAULT_DEV_API_KEY = "gbx_dev_key_for_local_use_only"


class ConfigError(ValueError):
    """A setting has a value the service cannot start with."""


def _text(value: Any) -> str:
    return str(value).strip()


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int(minimum: int, maximum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = int(str(value).strip())
        if not minimum <= number <= maximum:
            raise ValueError(f"expected a whole number from {minimum} to {maximum}")
        return number

    return parse


def _float(minimum: float, maximum: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        number = float(str(value).strip())
        if not minimum <= number <= maximum:
            raise ValueError(f"expected a number from {minimum} to {maximum}")
        return number

    return parse


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text

    return parse


def _environment(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ENVIRONMENTS:
        raise ValueError(f"expected one of {', '.join(ENVIRONMENTS)}")
    return text


def _log_level(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return text


def _redis_url(value: Any) -> str:
    text = str(value).strip()
    if text and not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis:// or rediss:// URL, or empty for in-process")
    return text


def _http_url(value: Any) -> str:
    text = str(value).strip().rstrip("/")
    if text and not text.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL, or empty")
    return text


def _origins(value: Any) -> tuple[str, ...]:
    origins = tuple(part.strip().rstrip("/") for part in str(value).split(",") if part.strip())
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest or "*" in rest:
            raise ValueError(
                f"{origin!r} is not an origin: expected e.g. https://shop.example.com "
                "(scheme, host and optional port; no path, no wildcard)"
            )
    return origins


def database_url(value: Any) -> URL:
    """Parse DATABASE_URL; PostgreSQL URLs use the psycopg 3 driver."""
    text = str(value).strip()
    if text.startswith("postgres://"):  # the scheme Heroku-style providers hand out
        text = "postgresql://" + text[len("postgres://") :]
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError(
            "expected a URL such as postgresql://user:password@host:5432/dbname "
            "or sqlite:///path/to/file.db"
        ) from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return url
    raise ValueError(f"unsupported database {backend!r}: use postgresql or sqlite")


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
        "DATABASE_POOL_TIMEOUT",
        "5",
        _float(0.1, 120),
        "seconds to wait for a free pooled connection before answering 503",
    ),
    Variable(
        "DATABASE_CONNECT_TIMEOUT",
        "3",
        _int(1, 120),
        "seconds to wait for the database to accept a connection",
    ),
    Variable(
        "REDIS_URL",
        "",
        _redis_url,
        "Redis for the cache and the rate limiter; empty means in-process",
    ),
    Variable(
        "CACHE_DEFAULT_TIMEOUT",
        "60",
        _int(0, 86400),
        "seconds a cached product or category read lives",
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
    Variable("LOG_LEVEL", "INFO", _log_level, "level of the JSON logs on stdout"),
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
        "2.0",
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
)

# Read by service/profiles.py in the API and the payments service (README "Observability").
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


def _project_path(path: str) -> str:
    """Resolve a relative SQLite path against the working directory and create its folder."""
    file = Path(path)
    if not file.is_absolute():
        file = Path.cwd() / file
    file.parent.mkdir(parents=True, exist_ok=True)
    return str(file)


def load_config(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the Flask config from the environment and explicit overrides.

    Overrides win over the environment; keys that are not glassbox variables
    (``TESTING``, any Flask or extension key) pass through unchanged.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    values: dict[str, Any] = {}
    problems: list[str] = []
    for variable in VARIABLES:
        raw = overrides.pop(variable.name, environ.get(variable.name, variable.default))
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            raw = variable.default
        try:
            values[variable.name] = variable.parse(raw)
        except (TypeError, ValueError) as exc:
            problems.append(f"{variable.name}={raw!r}: {exc}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))

    weak_secret = values["SECRET_KEY"] == DEFAULT_SECRET_KEY or len(values["SECRET_KEY"]) < 32
    if values["GLASSBOX_ENV"] == "production" and weak_secret:
        raise ConfigError(
            "invalid configuration: SECRET_KEY must be set to a random value of at "
            "least 32 characters when GLASSBOX_ENV=production"
        )

    url: URL = values.pop("DATABASE_URL")
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        url = url.set(database=_project_path(url.database))
    redis_url = values["REDIS_URL"]
    config: dict[str, Any] = {
        **values,
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "SQLALCHEMY_DATABASE_URI": url.render_as_string(hide_password=False),
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(url, values),
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "CACHE_TYPE": "RedisCache" if redis_url else "SimpleCache",
        "CACHE_REDIS_URL": redis_url or None,
        "CACHE_KEY_PREFIX": "glassbox:cache:",
        # Short socket timeouts: a hung Redis must cost a request milliseconds, not seconds.
        "CACHE_OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
        if redis_url
        else None,
        "RATELIMIT_STORAGE_URI": values["RATELIMIT_STORAGE_URI"] or redis_url or "memory://",
        "RATELIMIT_STORAGE_OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
        if (values["RATELIMIT_STORAGE_URI"] or redis_url)
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
    }
    config.update(overrides)
    return config


def _engine_options(url: URL, values: Mapping[str, Any]) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": 15}}
    return {
        "pool_size": values["DATABASE_POOL_SIZE"],
        "max_overflow": values["DATABASE_POOL_SIZE"],
        "pool_timeout": values["DATABASE_POOL_TIMEOUT"],
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "connect_args": {
            "connect_timeout": values["DATABASE_CONNECT_TIMEOUT"],
            # No server-side prepared statements: PgBouncer in transaction pooling
            # mode hands each transaction to any server connection.
            "prepare_threshold": None,
            "application_name": "glassbox",
        },
    }
