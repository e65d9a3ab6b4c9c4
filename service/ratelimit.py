"""Flask-Limiter with glassbox's promises (README, Rate limiting)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import flask_limiter
from flask import Flask, Response, current_app, g, request
from flask_limiter import HeaderNames, RequestLimit
from flask_limiter._compat import request_context
from flask_limiter._limits import RuntimeLimit
from flask_limiter.util import get_qualified_name
from limits import WindowStats
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.http import http_date

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
    * When one plain limit applies to an endpoint (as-deployed: RATELIMIT_DEFAULT alone),
      a request it admits is one check against the worker's lease (`_admit_quickly`);
      everything else, and every refusal, goes through Flask-Limiter's own evaluation.
    """

    _NO_LIMIT = object()  # the endpoint has no limit to count (exempt, or none configured)

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
        # Per endpoint (it names its blueprint): (version of the registered limits, limit).
        self._single_limits: dict[str, tuple[tuple[int, ...], Any]] = {}
        self._take_over_hooks(app)

    def _check_request_limit(
        self, callable_name: str | None = None, in_middleware: bool = True
    ) -> None:
        if callable_name is None and in_middleware and self._admit_quickly():
            return
        super()._check_request_limit(callable_name, in_middleware)

    def _admit_quickly(self) -> bool:
        """Admit the request with one check of the worker's lease, when that is all it takes.

        Flask-Limiter's evaluation (resolving limits, meta limits, exemption scopes,
        `RequestLimit` objects and window statistics for the headers) cost about as much
        as a cached read's own work. This takes the common case only: a fixed window in
        leased storage, no meta limits, one limit for the endpoint without exempt_when,
        deduct_when, methods or a callable cost. False leaves the request to the full
        evaluation: any other case, a storage error (handled there as configured), and a
        refusal (a refused request takes nothing from the window, so evaluating it again
        refuses it again, and calls on_breach).
        """
        storage = self._storage
        if (
            self._storage_dead
            or self._meta_limits
            or not isinstance(storage, LeasedRedisStorage)
            or type(self._limiter) is not FixedWindowRateLimiter
        ):
            return False
        endpoint = self._request_identifier()  # type: ignore[misc]
        limit = self._single_limit(endpoint)
        if limit is None:
            return False
        if limit is self._NO_LIMIT or any(fn() for fn in self._request_filters):
            return True
        item = limit.limit.limit
        try:
            client = limit.limit.key_func()
            if not client:
                return False
            count, resets_at = storage.spend(limit.key(client), limit.expiry, item.amount)
        except Exception:
            return False  # the full evaluation applies RATELIMIT_SWALLOW_ERRORS
        if count > item.amount:
            return False
        request.environ[_ADMITTED] = Admitted(limit.limit, limit.args(client), count, resets_at)
        return True

    @property
    def current_limit(self) -> RequestLimit | None:
        admitted: Admitted | None = request.environ.get(_ADMITTED)
        if admitted is None:
            return super().current_limit
        return admitted.request_limit(self)

    @property
    def current_limits(self) -> list[RequestLimit]:
        admitted: Admitted | None = request.environ.get(_ADMITTED)
        if admitted is None:
            return super().current_limits
        return [admitted.request_limit(self)]

    def _inject_headers(self, response: Response) -> Response:
        """Flask-Limiter's header hook, the same headers written directly after a quick admit."""
        admitted: Admitted | None = request.environ.get(_ADMITTED)
        headers = response.headers
        if admitted is None or not self._headers_enabled or "Retry-After" in headers:
            return self._library_inject_headers(response)
        names = self._header_mapping
        amount = admitted.limit.limit.amount
        reset_at = int(admitted.resets_at + 1)
        headers.add(names[HeaderNames.LIMIT], str(amount))
        headers.add(names[HeaderNames.REMAINING], str(max(0, amount - admitted.count)))
        headers.add(names[HeaderNames.RESET], str(reset_at))
        headers.add(
            names[HeaderNames.RETRY_AFTER],
            http_date(reset_at)
            if self._retry_after == "http-date"
            else str(int(reset_at - time.time())),
        )
        return response

    def _release_context(self, error: BaseException | None = None) -> None:
        """Flask-Limiter's teardown, skipped when the request never made its context."""
        if hasattr(request_context(), "_limiter_request_context"):
            self._library_release_context(error)

    def _take_over_hooks(self, app: Flask) -> None:
        """Put `_inject_headers` and `_release_context` where Flask-Limiter registered its
        own hooks (same places, so the same order)."""
        library: Any = flask_limiter.Limiter  # its hooks are private (name-mangled)
        inject = library._Limiter__inject_headers
        release = library._Limiter__release_context
        self._library_inject_headers = partial(inject, self)
        self._library_release_context = partial(release, self)
        after: list[Any] = app.after_request_funcs.setdefault(None, [])
        for index, hook in enumerate(after):
            if getattr(hook, "func", None) is inject and getattr(hook, "args", ()) == (self,):
                after[index] = self._inject_headers
        teardown: list[Any] = app.teardown_request_funcs.setdefault(None, [])
        for index, hook in enumerate(teardown):
            if (
                getattr(hook, "__func__", None) is release
                and getattr(hook, "__self__", None) is self
            ):
                teardown[index] = self._release_context

    def _single_limit(self, endpoint: str) -> Any:
        """The one plain limit that applies to the endpoint, _NO_LIMIT, or None (other cases).

        Remembered per endpoint while no limit is callable, like the resolved limits, and
        forgotten when a limit, hint or exemption is added.
        """
        manager = self.limit_manager
        version = (
            len(manager._decorated_limits),
            len(manager._endpoint_hints),
            len(self._marked_for_limiting),
        )
        found = self._single_limits.get(endpoint)
        if found is not None and found[0] == version:
            return found[1]
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        limit = self._find_single_limit(app, endpoint)
        if self._limits_are_static():
            self._single_limits[endpoint] = (version, limit)
        return limit

    def _find_single_limit(self, app: Flask, endpoint: str) -> Any:
        if not endpoint or endpoint.split(".")[-1] == "static":
            return None  # Flask-Limiter exempts these; its own path says so
        view = app.view_functions.get(endpoint)
        name = get_qualified_name(view) if view else ""
        if name in self._marked_for_limiting or self.limit_manager.has_hints(endpoint):
            return None  # checked again inside the view
        defaults, decorated = self.limit_manager.resolve_limits(
            app, endpoint, request.blueprint, name, True, False
        )
        limits = [*defaults, *decorated]
        if not limits:
            return self._NO_LIMIT
        if len(limits) > 1:
            return None
        (limit,) = limits
        plain = isinstance(limit, RuntimeLimit) and not (
            limit.exempt_when
            or limit.deduct_when
            or limit.methods
            or limit.meta_limits
            or limit.per_method
            or limit.cost != 1
            or callable(limit.scope)
        )
        return (
            QuickLimit(limit, self._key_prefix, limit.scope_for(endpoint, None)) if plain else None
        )

    def _limits_are_static(self) -> bool:
        manager = self.limit_manager
        groups = [*manager._application_limits, *manager._default_limits]
        groups += [g for limits in manager._decorated_limits.values() for g in limits]
        groups += [g for limits in manager._blueprint_limits.values() for g in limits]
        return not any(callable(group.limit_provider) for group in groups)

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

        def remembered(app: Flask, *args: Any) -> Any:
            key = (id(app), *args, len(manager._decorated_limits), len(manager._endpoint_hints))
            found = resolved.get(key)
            if found is None:
                found = resolve(app, *args)
                if self._limits_are_static():
                    resolved[key] = found
            return found

        manager.resolve_limits = remembered  # type: ignore[method-assign,assignment]


class QuickLimit:
    """An endpoint's one plain limit, with its storage key built but for the client's part."""

    def __init__(self, limit: RuntimeLimit, prefix: str, scope: str) -> None:
        self.limit = limit
        self.prefix = prefix
        self.scope = scope
        self.expiry = limit.limit.get_expiry()
        # limits' key_for: namespace/identifiers.../amount/multiples/granularity.
        self._head = f"{limit.limit.namespace}/{prefix}/" if prefix else f"{limit.limit.namespace}/"
        self._tail = "/" + limit.limit.key_for(scope).split("/", 1)[1]

    def key(self, client: str) -> str:
        return self._head + client + self._tail

    def args(self, client: str) -> list[str]:
        return [self.prefix, client, self.scope] if self.prefix else [client, self.scope]


_ADMITTED = "glassbox.ratelimit.admitted"  # per request, in the WSGI environ


@dataclass
class Admitted:
    """A request `_admit_quickly` let through: what the headers and current_limit show."""

    limit: RuntimeLimit
    args: list[str]
    count: int  # the shared count after this request, as far as this process knows
    resets_at: float  # epoch seconds

    def request_limit(self, limiter: flask_limiter.Limiter) -> RequestLimit:
        found = RequestLimit(limiter, self.limit.limit, self.args, False, self.limit.shared)
        # Flask-Limiter's own window statistics, known here without asking the storage.
        found._window = WindowStats(self.resets_at, max(0, self.limit.limit.amount - self.count))
        return found


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
    # The shared count had reached the limit: nothing more is admitted in this window by
    # any process (the count only grows until the window ends), so no need to ask again.
    exhausted: bool = False


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
    * once a lease comes back empty, the process refuses that key without Redis until the
      window's TTL (whole seconds, so never later than Redis) runs out: a client over its
      limit costs one round trip per window and process. A `clear` of the key in another
      process is not seen by this one until then;
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
        count, resets_at = self.spend(key, expiry, limit)
        self._remember(key, count, resets_at)
        return count

    def spend(self, key: str, expiry: int, limit: int) -> tuple[int, float]:
        """One request against `limit` in `key`'s window: the shared count after it (over
        the limit: refused, nothing taken) and when the window ends (epoch seconds)."""
        with self._lock:
            now = time.time()
            lease = self._leases.get(key)
            if lease is None or now >= lease.resets_at or (lease.left == 0 and not lease.exhausted):
                lease = self._take_lease(key, expiry, limit, now)
            if lease.left == 0:  # nothing left in the window
                count = limit + 1
            else:
                lease.left -= 1
                lease.count += 1
                count = lease.count
        return count, lease.resets_at

    def _take_lease(self, key: str, expiry: int, limit: int, now: float) -> Lease:
        batch, used, ttl = self._lease_script(
            [self.prefixed_key(key)], [expiry, limit, self.LARGEST_BATCH, self.FAN_OUT]
        )
        lease = Lease(int(batch), int(used) - int(batch), now + max(int(ttl), 0), int(batch) == 0)
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
