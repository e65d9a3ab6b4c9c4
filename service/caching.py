"""Read-through caching that never fails a request: a cache outage means a cache miss.

Flask-Caching holds the data (Redis with REDIS_URL, in-process otherwise). Lists are
cached under a generation token that every catalog write replaces, so one write
invalidates every cached page at once without enumerating keys. With Redis, each worker
also keeps what it read in a local tier that Redis's invalidation pushes keep true
(service/local_cache.py); a local hit makes no Redis call and counts as a hit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app
from opentelemetry import trace

from service import faults
from service.extensions import cache
from service.local_cache import MISSING as _MISSING
from service.local_cache import LocalTier
from service.logs import EveryInterval
from service.metrics import metrics

T = TypeVar("T")

log = logging.getLogger("service.cache")

_warning_interval = EveryInterval()
_TIER = "glassbox.local_cache"
_FAILED = object()  # the cache did not answer: a miss, counted as an error


def _warn(operation: str, exc: Exception) -> None:
    """Log a cache failure at most once per interval, not once per request."""
    if _warning_interval.due():
        log.warning("cache unavailable, answering without it (%s: %s)", operation, exc)


def cache_get(key: str) -> Any:
    try:
        value = cache.get(key)
    except Exception as exc:
        _warn("get", exc)
        return _FAILED
    return _MISSING if value is None else value


def init_app(app: Flask) -> None:
    """Bind the cache, and give a Redis cache its per-worker tier (CACHE_LOCAL_ENTRIES > 0)."""
    cache.init_app(app)
    entries = app.config.get("CACHE_LOCAL_ENTRIES", 0)
    if app.config.get("CACHE_TYPE") == "RedisCache" and entries > 0:
        app.extensions[_TIER] = LocalTier(
            url=app.config["CACHE_REDIS_URL"],
            prefix=app.config.get("CACHE_KEY_PREFIX") or "",
            max_entries=entries,
            ttl=app.config.get("CACHE_DEFAULT_TIMEOUT", 300),
            options=app.config.get("CACHE_OPTIONS"),
            warn=_warn,  # one warning per interval for the whole cache
        )


def local_tier() -> LocalTier | None:
    """This app's per-worker tier, if it has one."""
    tier: LocalTier | None = current_app.extensions.get(_TIER)
    return tier


def _lookup(key: str) -> Any:
    """The local tier first, then Redis (a Redis hit is kept locally).

    A value this worker loads and SETs is not kept: Redis pushes that SET back to every
    tracking connection, this worker's included, so it would be dropped at once.
    """
    tier = local_tier()
    if tier is None:
        return cache_get(key)
    value, epoch = tier.get(key)
    if value is not _MISSING:
        return value
    value = cache_get(key)
    if value is not _MISSING and value is not _FAILED:
        tier.put(key, value, epoch)
    return value


def cache_set(key: str, value: Any) -> None:
    try:
        cache.set(key, value)
    except Exception as exc:
        _warn("set", exc)


def cache_delete(*keys: str) -> None:
    try:
        cache.delete_many(*keys)
    except Exception as exc:
        _warn("delete", exc)


def cached(key: str, load: Callable[[], T], *, name: str) -> tuple[T, bool]:
    """Return (value, hit): the cached value, or `load()` stored for next time.

    `name` labels the lookup in metrics (glassbox_cache_requests_total{cache_name}) and on
    the current span (`glassbox.cache.<name>`: hit or miss).
    """
    if faults.value(faults.CACHE_OFF):  # the cacheOff fault: every read goes to the database
        metrics.cache_lookup(name, "miss")
        return load(), False
    value = _lookup(key)
    hit = value is not _MISSING and value is not _FAILED
    result = "hit" if hit else ("error" if value is _FAILED else "miss")
    metrics.cache_lookup(name, result)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(f"glassbox.cache.{name}", result)
    if hit:
        return value, True
    value = load()
    cache_set(key, value)
    return value, False


def generation(name: str) -> str:
    """The current generation token of a family of cached lists."""
    token = _lookup(f"gen:{name}")
    if token is _MISSING or token is _FAILED:
        token = uuid.uuid4().hex
        try:
            cache.set(f"gen:{name}", token, timeout=0)
        except Exception as exc:
            _warn("set", exc)
    return str(token)


def bump_generation(name: str) -> None:
    """Invalidate every cached list of the family (a fresh token is never reused)."""
    try:
        cache.set(f"gen:{name}", uuid.uuid4().hex, timeout=0)
    except Exception as exc:
        _warn("set", exc)
