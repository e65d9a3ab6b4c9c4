"""A per-worker tier in front of the Redis cache, kept true by Redis's invalidation pushes.

Each worker process keeps up to CACHE_LOCAL_ENTRIES values (least recently used evicted
first, each for CACHE_DEFAULT_TIMEOUT seconds) and one RESP3 connection of its own with
`CLIENT TRACKING ON BCAST PREFIX <cache key prefix>`: Redis pushes the name of every key
under the prefix that changes (SET, DEL, expiry; no names on FLUSHDB, meaning all), whoever
changed it. Pending pushes are read, without blocking, before every lookup, so a write that
has returned is seen by the next read on any worker. Without a live tracking connection the
tier is empty and bypassed (a missed push must never serve stale data): the connection is
checked with a PING at most every CHECK_SECONDS (a hung Redis closes nothing; the worker's
open Redis breaker refuses the PING at once); reconnection is tried at most every
RECONNECT_SECONDS.

Not redis-py's client-side cache: redis-py 7.4 refuses Redis servers older than 7.4 (the
project runs and tests on 7.0) and deep-copies every hit.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from redis.connection import AbstractConnection, Connection, parse_url

from service.logs import EveryInterval

log = logging.getLogger("service.cache")

RECONNECT_SECONDS = 2.0
CHECK_SECONDS = 1.0  # how often a lookup first PINGs Redis on the tracking connection
MISSING: Any = object()


class LocalTier:
    """Values by cache key (without the prefix), valid while the tracking connection lives.

    `get` returns the value and an epoch; `put` stores only under the same epoch, so a
    value read from Redis before the tracking connection was lost and re-made (pushes
    missed in between) is not kept.
    """

    def __init__(
        self,
        *,
        url: str,
        prefix: str,
        max_entries: int,
        ttl: float,
        options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        warn: Callable[[str, Exception], None] | None = None,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.max_entries = max_entries
        self.ttl = ttl  # 0: as long as Redis keeps it (Flask-Caching's "never expire")
        self.options = dict(options or {})
        self._clock = clock
        self._warn = warn or _log_warning
        self.check_seconds = check_seconds
        self._next_check = 0.0
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._connection: AbstractConnection | None = None
        self._epoch = 0
        self._reconnect = EveryInterval(RECONNECT_SECONDS)
        self._lock = threading.Lock()
        self._serial = next(_serials)
        _tiers.add(self)

    def get(self, key: str) -> tuple[Any, int | None]:
        """(value or MISSING, epoch); the epoch is None when the tier is bypassed."""
        with self._lock:
            if not self._drain():
                return MISSING, None
            entry = self._entries.get(key)
            if entry is None:
                return MISSING, self._epoch
            expires, value = entry
            if expires and expires <= self._clock():
                del self._entries[key]
                return MISSING, self._epoch
            self._entries.move_to_end(key)
            return value, self._epoch

    def put(self, key: str, value: Any, epoch: int | None) -> None:
        with self._lock:
            if epoch is None or epoch != self._epoch or self._connection is None:
                return
            expires = self._clock() + self.ttl if self.ttl else 0.0
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    @property
    def client_name(self) -> str:
        """The tracking connection's name in CLIENT LIST: this process's and this tier's."""
        return f"glassbox-cache-tracking-{os.getpid()}-{self._serial}"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def _drain(self) -> bool:
        """Apply every pending push; False (and nothing kept) if tracking is not live."""
        connection = self._connection
        if connection is None:
            if not self._reconnect.due():
                return False
            connection = self._connect()
            if connection is None:
                return False
        try:
            now = time.monotonic()
            if now >= self._next_check:
                # A Redis that hangs sends no FIN: without this, a worker serving only local
                # hits would not notice, and would miss the invalidations of writes made
                # meanwhile. redis-py reads the pushes queued before the PONG on the way.
                self._next_check = now + self.check_seconds
                connection.send_command("PING")  # refused at once while the breaker is open
                AbstractConnection.read_response(connection)
            while connection.can_read(timeout=0):
                # redis-py's own read, not the breaker's (service/redis_breaker.py): losing
                # this one connection (a CLIENT KILL) must not stop the cache and the
                # limiter from calling Redis. Connecting does go through the breaker.
                AbstractConnection.read_response(connection, push_request=True)
        except Exception as exc:  # a broken connection: every push since may be lost
            self._lost(exc)
            return False
        return True

    def _connect(self) -> AbstractConnection | None:
        kwargs: dict[str, Any] = {**parse_url(self.url), **self.options, "protocol": 3}
        # Named, so that CLIENT LIST shows whose it is (and a test can find it).
        kwargs["client_name"] = self.client_name
        connection_class = kwargs.pop("connection_class", Connection)
        try:
            connection = connection_class(**kwargs)
            connection.connect()
            connection.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.prefix)
            reply = connection.read_response()
            if reply not in (b"OK", "OK"):
                raise RuntimeError(f"CLIENT TRACKING answered {reply!r}")
        except Exception as exc:
            self._lost(exc)
            return None
        connection._parser.set_invalidation_push_handler(self._invalidate)
        self._start_over()
        self._connection = connection
        return connection

    def _invalidate(self, push: list[Any]) -> None:
        keys = push[1]
        if keys is None:  # FLUSHDB / FLUSHALL
            self._entries.clear()
            return
        start = len(self.prefix)
        for raw in keys:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            self._entries.pop(name[start:], None)

    def _start_over(self) -> None:
        """Forget every value and every read in flight: pushes may have been missed."""
        self._entries.clear()
        self._epoch += 1

    def _lost(self, exc: Exception) -> None:
        connection, self._connection = self._connection, None
        self._start_over()
        if connection is not None:
            with contextlib.suppress(Exception):  # already gone
                connection.disconnect()
        self._warn("invalidation stream", exc)

    def _forked(self) -> None:
        # The parent's socket is not ours: forget it without closing it, start empty.
        self._connection = None
        self._start_over()
        self._reconnect = EveryInterval(RECONNECT_SECONDS)
        self._lock = threading.Lock()


_warnings = EveryInterval()


def _log_warning(operation: str, exc: Exception) -> None:
    if _warnings.due():
        log.warning("local cache tier off: %s lost (%s)", operation, exc)


_serials = itertools.count(1)
_tiers: weakref.WeakSet[LocalTier] = weakref.WeakSet()


def _after_fork() -> None:
    for tier in list(_tiers):
        tier._forked()


os.register_at_fork(after_in_child=_after_fork)
