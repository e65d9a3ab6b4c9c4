"""Flask-Limiter with glassbox's promises (README, Rate limiting)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
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
            config["RATELIMIT_STORAGE_URI"] = LEASED_PREFIX + uri
        super().init_app(app)
        # After the limiter's own hook, so it runs first (Flask runs them in reverse order).
        app.after_request(set_aside_retry_after)
        self._remember_resolved_limits()

    def _remember_resolved_limits(self) -> None:
        """Resolve which limits apply to an endpoint once, not on every request.

        Flask-Limiter resolves them per request (application, default, blueprint and
        decorated limits, exemptions), about half of its own per-request work. Without a
        callable limit the answer depends only on the arguments; a limit or decorator added
        later resets what was remembered.
        """
        manager = self.limit_manager
        resolve = manager.resolve_limits
        resolved: dict[tuple[Any, ...], Any] = {}

        def static() -> bool:
            groups = [*manager._application_limits, *manager._default_limits]
            groups += [g for limits in manager._decorated_limits.values() for g in limits]
            groups += [g for limits in manager._blueprint_limits.values() for g in limits]
            return not any(callable(group.limit_provider) for group in groups)

        def remembered(app: Flask, *args: Any) -> Any:
            key = (id(app), *args, len(manager._decorated_limits), len(manager._endpoint_hints))
            found = resolved.get(key)
            if found is None:
                found = resolve(app, *args)
                if static():
                    resolved[key] = found
            return found

        manager.resolve_limits = remembered  # type: ignore[method-assign,assignment]


_REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "unix")
LEASED_PREFIX = "glassbox+"
# Lease part of a window's allowance: add the batch to the shared count, unless that would
# pass the limit. KEYS[1]: the window's counter. ARGV: expiry, limit, largest batch,
# fan-out. The batch is what is left / fan-out, at most the largest, at least 1 while
# anything is left, 0 once nothing is. Answers {batch, count after it, seconds left}.
_LEASE = b"""
local limit = tonumber(ARGV[2])
local used = tonumber(redis.call("get", KEYS[1]) or "0")
local left = limit - used
local batch = math.min(tonumber(ARGV[3]), math.floor(left / tonumber(ARGV[4])))
if batch < 1 then batch = math.min(left, 1) end
if batch > 0 then
    used = redis.call("incrby", KEYS[1], batch)
    if used == batch then redis.call("expire", KEYS[1], ARGV[1]) end
end
return {batch, used, redis.call("ttl", KEYS[1])}
"""
# The increment of limits' own script (incr_expire.lua), answering the TTL with the count:
# for a cost other than 1, and for keys that name no limit.
_INCR_EXPIRE_TTL = b"""
local current = redis.call("incrby", KEYS[1], ARGV[2])
if tonumber(current) == tonumber(ARGV[2]) then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""


@dataclass
class Lease:
    """Part of one window's allowance, taken from the shared count for this process."""

    left: int  # requests this process may still admit from it
    count: int  # the shared count as far as this process knows (what the headers show)
    resets_at: float  # epoch seconds when the window (and the lease) ends


class LeasedRedisStorage(RedisStorage):
    """limits' Redis storage for the fixed window, leasing the allowance in batches.

    Flask-Limiter's fixed window makes one increment per request (a Redis round trip, plus
    a GET and a TTL for the headers): make bench measured the limiter at 0.52x a cached
    read. Here a process leases a batch of the window's allowance at once (one atomic
    script: the batch is added to the shared count only while the sum stays within the
    limit) and admits requests from it without Redis until it is spent. The batch is
    what is left / FAN_OUT, at most LARGEST_BATCH, and 1 once less than 2 x FAN_OUT is
    left. So:

    * never more than the limit is admitted per window, across workers and replicas
      (every admitted request spends a unit that the script added to the shared count);
    * a request is refused only once the shared count has reached the limit; units then
      still unspent in other processes' leases are lost for that window. With P processes
      that is at most (P - 1) x (LARGEST_BATCH - 1) requests refused early, and none when
      the limit is under 2 x FAN_OUT (every batch is 1 and is spent by the request that
      took it). A worker that exits with units unspent loses them the same way;
    * the RateLimit-* headers show the shared count as of this process's last lease plus
      what it admitted since, the reset the window's TTL then.

    A key with no limit in it, or a cost other than 1, is counted request by request as
    before. Storage errors reach Flask-Limiter as they did (RATELIMIT_SWALLOW_ERRORS lets
    the request through); a lease in hand is still spent while Redis is down.
    """

    STORAGE_SCHEME = [LEASED_PREFIX + scheme for scheme in _REDIS_SCHEMES]
    LARGEST_BATCH = 20
    FAN_OUT = 10
    MEMO_SECONDS = 1.0

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix(LEASED_PREFIX), **options)
        connection = self.get_connection()
        self._lease_script = connection.register_script(_LEASE)
        self._incr_expire_ttl = connection.register_script(_INCR_EXPIRE_TTL)
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()  # gunicorn's request threads share the leases
        self._memo = threading.local()  # the count and reset of this thread's last hit

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        limit = _limit_in(key)
        if amount != 1 or limit is None:
            count, ttl = self._incr_expire_ttl([self.prefixed_key(key)], [expiry, amount])
            self._remember(key, int(count), time.time() + max(int(ttl), 0))
            return int(count)
        with self._lock:
            now = time.time()
            lease = self._leases.get(key)
            if lease is None or lease.left == 0 or now >= lease.resets_at:
                lease = self._take_lease(key, expiry, limit, now)
            if lease.left == 0:  # nothing left in the window
                count = limit + 1
            else:
                lease.left -= 1
                lease.count += 1
                count = lease.count
        self._remember(key, count, lease.resets_at)
        return count

    def _take_lease(self, key: str, expiry: int, limit: int, now: float) -> Lease:
        batch, used, ttl = self._lease_script(
            [self.prefixed_key(key)], [expiry, limit, self.LARGEST_BATCH, self.FAN_OUT]
        )
        lease = Lease(int(batch), int(used) - int(batch), now + max(int(ttl), 0))
        if len(self._leases) > 1000:  # one per client and window: drop the ended ones
            self._leases = {k: v for k, v in self._leases.items() if v.resets_at > now}
        self._leases[key] = lease
        return lease

    def _remember(self, key: str, count: int, resets_at: float) -> None:
        self._memo.entry = (key, count, resets_at, time.monotonic())

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

    def clear(self, key: str) -> None:
        with self._lock:
            self._leases.pop(key, None)
        super().clear(key)

    def reset(self) -> int | None:
        with self._lock:
            self._leases.clear()
        return super().reset()


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


def _limit_in(key: str) -> int | None:
    """The limit's amount in a limits key (`.../<amount>/<multiples>/<granularity>`)."""
    parts = key.rsplit("/", 3)
    return int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None


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
