"""Settings read from the environment once, in the application factory.

Every variable is listed in the README's configuration table and in `.env.example`;
`tests/test_config.py` keeps the three in step. Names follow the libraries' own keys
where one exists (RATELIMIT_*, CACHE_*, MAX_CONTENT_LENGTH).

Own parser rather than environs: it reports every invalid variable at once and enforces the
production secret rules; environs would replace only the small `_int`/`_float`/`_choice`
parsers (read once at start, no per-request cost either way).
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
DEFAULT_PAYMENTS_SHARED_SECRET = "glassbox-payments-development-secret"  # noqa: S105


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


def _number(cast: Callable[[str], Any], kind: str, minimum: Any, maximum: Any) -> Any:
    def parse(value: Any) -> Any:
        number = cast(str(value).strip())
        if not minimum <= number <= maximum:
            raise ValueError(f"expected {kind} from {minimum} to {maximum}")
        return number

    return parse


def _int(minimum: int, maximum: int) -> Callable[[Any], int]:
    parse: Callable[[Any], int] = _number(int, "a whole number", minimum, maximum)
    return parse


def _float(minimum: float, maximum: float) -> Callable[[Any], float]:
    parse: Callable[[Any], float] = _number(float, "a number", minimum, maximum)
    return parse


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text

    return parse


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_or_none(value: Any) -> Any:
        return None if str(value).strip() == "" else parse(value)

    return parse_or_none


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


OTEL_SIGNALS = ("TRACES", "METRICS", "LOGS")
OTEL_EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOLS = ("grpc", "http/protobuf")


@dataclass(frozen=True)
class SignalExport:
    """Where one signal goes: OTEL_<SIGNAL>_EXPORTER and its OTLP protocol."""

    exporters: tuple[str, ...]  # empty: exported nowhere
    protocol: str
    # glassbox's rule, not the SDK's: without an endpoint OTLP goes nowhere (the SDK would
    # try localhost), so a laptop run does not log export failures every few seconds.
    otlp_endpoint: bool = False


@dataclass(frozen=True)
class OtelProcess:
    """What the SDK's own variables decide about glassbox's defaults (service/telemetry)."""

    sdk_disabled: bool  # OTEL_SDK_DISABLED
    service_name_set: bool  # OTEL_SERVICE_NAME: else each service names itself
    environment_in_resource: bool  # OTEL_RESOURCE_ATTRIBUTES has deployment.environment.name
    sampler_set: bool  # OTEL_TRACES_SAMPLER: else parent-based 10%


def otel_process(environ: Mapping[str, str] | None = None) -> OtelProcess:
    environ = os.environ if environ is None else environ
    return OtelProcess(
        sdk_disabled=environ.get("OTEL_SDK_DISABLED", "").strip().lower()
        in ("1", "true", "yes", "on"),
        service_name_set=bool(environ.get("OTEL_SERVICE_NAME")),
        environment_in_resource="deployment.environment.name="
        in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""),
        sampler_set=bool(environ.get("OTEL_TRACES_SAMPLER")),
    )


def otel_exports(environ: Mapping[str, str] | None = None) -> dict[str, SignalExport]:
    """Validate the SDK's exporter variables as glassbox's own settings are validated.

    The SDK's documented values only: `otlp`, `console`, `none` (comma-separated lists
    allowed) and the protocols `grpc`, `http/protobuf`; anything else refuses the start
    with the variable's name instead of being silently ignored.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    general = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip().lower() or "http/protobuf"
    if general not in OTLP_PROTOCOLS:
        problems.append(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={general!r}: expected one of {', '.join(OTLP_PROTOCOLS)}"
        )
    exports: dict[str, SignalExport] = {}
    for signal in OTEL_SIGNALS:
        name = f"OTEL_{signal}_EXPORTER"
        # Logs are opt-in: the JSON lines on stdout already carry the trace ids.
        raw = environ.get(name, "").strip().lower() or ("none" if signal == "LOGS" else "otlp")
        chosen = tuple(part.strip() for part in raw.split(",") if part.strip())
        unknown = [part for part in chosen if part not in OTEL_EXPORTERS]
        if unknown or ("none" in chosen and len(chosen) > 1):
            problems.append(f"{name}={raw!r}: expected otlp, console, both (otlp,console) or none")
        protocol_name = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
        protocol = environ.get(protocol_name, "").strip().lower() or general
        if protocol not in OTLP_PROTOCOLS:
            problems.append(
                f"{protocol_name}={protocol!r}: expected one of {', '.join(OTLP_PROTOCOLS)}"
            )
        endpoint = bool(
            environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
            or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        exports[signal] = SignalExport(tuple(p for p in chosen if p != "none"), protocol, endpoint)
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return exports


def all_variable_names() -> frozenset[str]:
    """Every environment variable glassbox or its SDKs read: deployment files may set these."""
    return frozenset(
        [
            v.name
            for v in VARIABLES + SERVER_VARIABLES + PAYMENTS_SERVICE_VARIABLES + PROFILING_VARIABLES
        ]
        + list(OTEL_VARIABLES)
    )


def check_payments_secret(secret: str) -> None:
    """Production refuses the development shared secret of the payments service, or a short one."""
    if secret == DEFAULT_PAYMENTS_SHARED_SECRET or len(secret) < 32:
        raise ConfigError(
            "invalid configuration: PAYMENTS_SHARED_SECRET must be set to a random value of "
            "at least 32 characters when GLASSBOX_ENV=production"
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
        "CACHE_KEY_PREFIX": "glassbox:cache:",
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


# Seconds kept back from the budget to write the answer (the 503 itself, logging).
ANSWER_RESERVE = 0.25
# Added to the statement timeout for the client's own deadline, so that a live server's
# cancellation (a clean error on a usable connection) comes before the client gives up.
CLIENT_GRACE = 0.25
# payments.HttpPaymentGateway sleeps up to BACKOFF * 2**(attempt-1) before each retry.
PAYMENTS_BACKOFF_SECONDS = 0.1


def request_budget(values: Mapping[str, Any]) -> dict[str, float]:
    """Split REQUEST_BUDGET between the dependencies; refuse settings that do not fit.

    A hung dependency costs a request at most:
    - Redis: one REDIS_TIMEOUT for the limiter and one for the cache, then the breaker is
      open and further calls fail at once;
    - PostgreSQL: one client wait (statement timeout + grace; a pooled connection's
      pre-ping, or the statement) and one reconnection attempt (DATABASE_CONNECT_TIMEOUT,
      at least 2 s in psycopg), after which the request answers 503;
    - payments: PAYMENTS_TIMEOUT per attempt, 1 + PAYMENTS_RETRIES attempts, the backoff.
    """
    budget = float(values["REQUEST_BUDGET"])
    redis_part = 2 * float(values["REDIS_TIMEOUT"])
    connect = float(max(2, values["DATABASE_CONNECT_TIMEOUT"]))
    database_room = budget - redis_part - connect - ANSWER_RESERVE - CLIENT_GRACE
    statement = values["DATABASE_STATEMENT_TIMEOUT"]
    if statement is None:
        statement = round(database_room, 3)
    problems = []
    if statement < 0.1:
        problems.append(
            f"REQUEST_BUDGET={budget:g} leaves no time for SQL after DATABASE_CONNECT_TIMEOUT "
            f"({connect:g} s) and 2 x REDIS_TIMEOUT ({redis_part:g} s)"
        )
    elif statement > database_room + 1e-9:
        problems.append(
            f"DATABASE_STATEMENT_TIMEOUT={statement:g} does not fit REQUEST_BUDGET={budget:g}: "
            f"at most {database_room:.2f} after DATABASE_CONNECT_TIMEOUT and 2 x REDIS_TIMEOUT"
        )
    if float(values["DATABASE_POOL_TIMEOUT"]) > budget - redis_part - ANSWER_RESERVE:
        problems.append(
            f"DATABASE_POOL_TIMEOUT={values['DATABASE_POOL_TIMEOUT']:g} does not fit "
            f"REQUEST_BUDGET={budget:g}"
        )
    retries = int(values["PAYMENTS_RETRIES"])
    payments_worst = float(values["PAYMENTS_TIMEOUT"]) * (1 + retries) + (
        PAYMENTS_BACKOFF_SECONDS * (2**retries - 1)
    )
    # The order's own SQL (reserve, then record the payment) needs time beside the call.
    payments_total = budget - redis_part - ANSWER_RESERVE - 0.5
    if payments_worst > payments_total + 1e-9:
        problems.append(
            f"PAYMENTS_TIMEOUT={values['PAYMENTS_TIMEOUT']:g} x (1 + PAYMENTS_RETRIES={retries}) "
            f"plus backoff is {payments_worst:.2f} s: more than the {payments_total:.2f} s "
            f"REQUEST_BUDGET={budget:g} leaves for payments"
        )
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    statement_ms = int(statement * 1000)
    return {
        "budget": budget,
        "redis_call": float(values["REDIS_TIMEOUT"]),
        "database_connect": connect,
        "database_statement": statement,
        "database_wait": statement + CLIENT_GRACE,
        # A lock wait gets half a statement's time: the clearer error (lock_not_available)
        # arrives before the statement is cancelled.
        "database_lock_ms": max(1, statement_ms // 2),
        "database_statement_ms": statement_ms,
        # No transaction of a request is idle longer than the whole request may take; at
        # twice that the client is gone, and the server should end it and free its locks.
        "database_idle_in_transaction_ms": int(budget * 2 * 1000),
        "payments_worst": payments_worst,
        "payments_total": payments_total,
    }


def _redis_options(url: str, values: Mapping[str, Any]) -> dict[str, Any]:
    from service.redis_breaker import client_options

    return client_options(url, values["REDIS_TIMEOUT"], values["REDIS_BREAKER_SECONDS"])


def _engine_options(
    url: URL, values: Mapping[str, Any], budget: Mapping[str, float]
) -> dict[str, Any]:
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
            # A peer that vanished (host down, partition) is noticed on idle pooled
            # connections by keepalives, and on unacknowledged writes by tcp_user_timeout.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 3,
            "keepalives_count": 3,
            "tcp_user_timeout": int(budget["budget"] * 1000),
            # Read by service/database.py, not libpq (removed before connecting).
            "glassbox_timeouts": {
                "wait": budget["database_wait"],
                "breaker_seconds": values["DATABASE_BREAKER_SECONDS"],
                "statement_timeout": budget["database_statement_ms"],
                "lock_timeout": budget["database_lock_ms"],
                "idle_in_transaction_session_timeout": budget["database_idle_in_transaction_ms"],
            },
        },
    }
