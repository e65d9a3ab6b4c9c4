"""Flask-Limiter with glassbox's promises (README, Rate limiting)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import flask_limiter
from flask import Flask, Response, g, request
from flask_limiter import RequestLimit
from limits.storage import RedisStorage

from service.auth.decorators import rate_limit_key
from service.edge import set_aside_retry_after, unobserved_path
from service.errors import RateLimited, problem_of
from service.logs import OncePerInterval


class Limiter(flask_limiter.Limiter):
    """Flask-Limiter with glassbox's promises (README, Rate limiting).

    * RATELIMIT_DEFAULT is one allowance per API key (or address) across every route.
      Flask-Limiter applies its default limits to each route separately; its application
      limit is the one shared by all routes, so the setting becomes that.
    * Requests that match no route (404, and 405) are counted too: Flask-Limiter exempts
      requests without an endpoint, so they are identified as "unmatched".
    * The limiter sets Retry-After on every response, to the later of the window's reset
      and any value already there (a 503's "5" became 55 s). Only a 429 is the limiter's;
      another status keeps the service's own value (service/edge.py puts it back).
    """

    def init_app(self, app: Flask) -> None:
        config = app.config
        config.setdefault("RATELIMIT_APPLICATION", config.pop("RATELIMIT_DEFAULT", None))
        uri = str(config.get("RATELIMIT_STORAGE_URI") or "")
        if urlsplit(uri).scheme in _REDIS_SCHEMES:
            config["RATELIMIT_STORAGE_URI"] = ONE_TRIP_PREFIX + uri
        super().init_app(app)
        # After the limiter's own hook, so it runs first (Flask runs them in reverse order).
        app.after_request(set_aside_retry_after)


_REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "unix")
ONE_TRIP_PREFIX = "glassbox+"
# The increment of limits' own script (incr_expire.lua), answering the TTL with the count.
_INCR_EXPIRE_TTL = b"""
local current = redis.call("incrby", KEYS[1], ARGV[2])
if tonumber(current) == tonumber(ARGV[2]) then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""


class OneTripRedisStorage(RedisStorage):
    """limits' Redis storage whose increment also answers the window's count and reset.

    Flask-Limiter writes the RateLimit-* headers from a GET and a TTL right after its
    increment: three Redis round trips per request, measured at 0.42x a cached read's
    throughput (make bench, product_cached_limited against product_cached). Here the
    increment's script returns both, and the GET and TTL that follow on the same thread for
    the same key read them: one round trip. Counting is unchanged (one atomic INCRBY per
    request, shared by every worker), so limits stay exact; the headers show the count as
    of this request's own increment. A read that does not follow an increment within
    MEMO_SECONDS goes to Redis as before.
    """

    STORAGE_SCHEME = [ONE_TRIP_PREFIX + scheme for scheme in _REDIS_SCHEMES]
    MEMO_SECONDS = 1.0

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix(ONE_TRIP_PREFIX), **options)
        self._incr_expire_ttl = self.get_connection().register_script(_INCR_EXPIRE_TTL)
        self._memo = threading.local()  # gunicorn's threaded worker: one per request thread

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        count, ttl = self._incr_expire_ttl([self.prefixed_key(key)], [expiry, amount])
        self._memo.entry = (key, int(count), max(int(ttl), 0) + time.time(), time.monotonic())
        return int(count)

    def _remembered(self, key: str) -> tuple[int, float] | None:
        entry = getattr(self._memo, "entry", None)
        if entry is None or entry[0] != key or time.monotonic() - entry[3] > self.MEMO_SECONDS:
            return None
        return entry[1], entry[2]

    def get(self, key: str) -> int:
        remembered = self._remembered(key)
        return remembered[0] if remembered is not None else super().get(key)

    def get_expiry(self, key: str) -> float:
        remembered = self._remembered(key)
        # Not forgotten once read: a 429's problem detail reads the reset before its headers do.
        return remembered[1] if remembered is not None else super().get_expiry(key)


def rate_limited_problem(breached: RequestLimit) -> Response:
    """The 429's problem: the allowance and when the next request is allowed (the same
    seconds as the limiter's Retry-After)."""
    item = breached.limit
    unit = item.GRANULARITY.name
    window = f"a {unit}" if item.multiples == 1 else f"{item.multiples} {unit}s"
    who = "API key" if g.get("api_key") is not None else "client address"
    wait = max(0, int(breached.reset_at - time.time()))
    return problem_of(
        RateLimited(
            f"{item.amount} requests {window} per {who}, next allowance in {wait} s. "
            "Wait the seconds Retry-After gives before sending again."
        )
    )


def _request_identifier() -> str:
    endpoint = request.endpoint or "unmatched"
    # Flask-Limiter exempts any endpoint named "static", whatever the path; only the files
    # that exist are exempt here (UNOBSERVED_PATHS), so `/static/no-such-file` is counted.
    if endpoint == "static" and not unobserved_path(request.path):
        return "static-path-not-served"
    return endpoint


def make_limiter() -> Limiter:
    """A limiter per app: Flask-Limiter keeps the first app's limits on a shared instance."""
    # With its storage down the limiter lets requests through (RATELIMIT_SWALLOW_ERRORS)
    # and logs a stack trace for each one; once per 30 s says the same, like the cache does.
    limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(f, OncePerInterval) for f in limiter_log.filters):
        limiter_log.addFilter(OncePerInterval())
    limiter = Limiter(
        key_func=rate_limit_key,
        request_identifier=_request_identifier,
        on_breach=rate_limited_problem,
    )
    # Probes, metrics, docs and the spec must answer even when a client is over its limit.
    limiter.request_filter(lambda: unobserved_path(request.path))
    return limiter
