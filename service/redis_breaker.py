"""A circuit breaker inside redis-py's connections, for the cache and the limiter alike.

A Redis that accepts connections and never answers would cost every request one socket
timeout per Redis call. After one timeout or connection error, the breaker of that
address opens: every call to it fails at once with `RedisCircuitOpen` (a
`redis.ConnectionError`, which the cache already treats as a miss and Flask-Limiter, with
`RATELIMIT_SWALLOW_ERRORS`, as "let the request through") for `REDIS_BREAKER_SECONDS`.
The first call after that is the trial: an answer closes the breaker, a failure opens it
again. State is per process (each gunicorn worker pays at most one timeout per period).

Our own rather than pybreaker: the breaker must sit in redis-py's connection (the cache
and Flask-Limiter each build their own client) and fail with redis' own error type.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

from service.logs import EveryInterval

log = logging.getLogger("service.redis")

_OUTAGE = (redis.ConnectionError, redis.TimeoutError)


class RedisCircuitOpen(redis.ConnectionError):
    """Redis failed recently: the call was not attempted."""


class Breaker:
    """Open for `open_seconds` after a failure; the first call after that is a trial."""

    def __init__(self, address: str, open_seconds: float) -> None:
        self.address = address
        self.open_seconds = open_seconds
        self._open_until = 0.0
        self._failed = False  # the last call failed (open, or waiting for the trial)
        self._log_interval = EveryInterval()
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def before_call(self) -> None:
        if time.monotonic() < self._open_until:
            raise RedisCircuitOpen(f"Redis at {self.address} failed recently; not called")

    def failed(self, error: Exception) -> None:
        with self._lock:
            now = time.monotonic()
            opened = now >= self._open_until
            self._open_until = now + self.open_seconds
            self._failed = True
            should_log = self._log_interval.due()
        if opened:
            from service.metrics import metrics

            metrics.redis_breaker_opened(self.address)
        if should_log:
            log.warning(
                "Redis at %s did not answer (%s: %s); not calling it for %.0f s at a time",
                self.address,
                type(error).__name__,
                error,
                self.open_seconds,
            )

    def succeeded(self) -> None:
        if self._failed:
            with self._lock:
                self._failed = False
                self._open_until = 0.0
            log.info("Redis at %s answers again", self.address)


_breakers: dict[str, Breaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(address: str, open_seconds: float) -> Breaker:
    with _breakers_lock:
        breaker = _breakers.get(address)
        if breaker is None:
            breaker = _breakers[address] = Breaker(address, open_seconds)
        return breaker


def open_breakers() -> list[str]:
    """Addresses whose breaker is open in this process (for readiness)."""
    return [address for address, breaker in _breakers.items() if breaker.is_open]


class _BreakerMixin:
    """Guards connect, send and read of a redis-py connection with its address's breaker."""

    breaker_seconds: float = 10.0

    def __init__(self, *args: Any, breaker_seconds: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.breaker = breaker_for(self._breaker_address(), breaker_seconds)

    def _breaker_address(self) -> str:
        path = getattr(self, "path", None)
        return str(path) if path else f"{getattr(self, 'host', '')}:{getattr(self, 'port', '')}"

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if getattr(self, "_sock", None) is not None:
            return
        self.breaker.before_call()
        try:
            super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except _OUTAGE as error:
            self.breaker.failed(error)
            raise

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        self.breaker.before_call()
        try:
            super().send_packed_command(*args, **kwargs)  # type: ignore[misc]
        except RedisCircuitOpen:
            raise
        except _OUTAGE as error:
            self.breaker.failed(error)
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super().read_response(*args, **kwargs)  # type: ignore[misc]
        except _OUTAGE as error:
            self.breaker.failed(error)
            raise
        self.breaker.succeeded()
        return response


class BreakerConnection(_BreakerMixin, Connection):
    pass


class BreakerSSLConnection(_BreakerMixin, SSLConnection):
    pass


class BreakerUnixConnection(_BreakerMixin, UnixDomainSocketConnection):
    pass


def client_options(url: str, timeout: float, breaker_seconds: float) -> dict[str, Any]:
    """redis-py options for `url`: short timeouts, no retries, the breaker's connection class.

    redis-py 6+ retries a timed-out command 3 times with backoff by default: on a hung Redis
    that made one call cost 4 timeouts plus up to 10 s of sleeps.
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if url.startswith("rediss://"):
        connection_class: type[_BreakerMixin] = BreakerSSLConnection
    elif url.startswith("unix://"):
        connection_class = BreakerUnixConnection
    else:
        connection_class = BreakerConnection
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "connection_class": connection_class,
        "breaker_seconds": breaker_seconds,
    }
