"""The value parsers of the settings: each raises ValueError with what it expected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ENVIRONMENTS = ("development", "test", "production")


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
