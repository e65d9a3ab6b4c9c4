"""The per-worker cache tier (service/local_cache.py) against a real Redis.

Redis pushes invalidations asynchronously to the tracking connection, so each test that
waits for one polls with a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from flask import Flask

from profiling.harness.processes import wait_until
from service.caching import local_tier
from service.local_cache import MISSING, LocalTier
from service.redis_breaker import breaker_for, client_options, open_breakers
from tests.conftest import build_app
from tests.factories import Factories

PREFIX = "glassbox:tier-test:"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def writer(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def make_tier(url: str, **overrides: Any) -> LocalTier:
    settings: dict[str, Any] = {"prefix": PREFIX, "max_entries": 100, "ttl": 60.0, **overrides}
    # The breaker's connection class and timeouts, as the app configures them.
    options = client_options(url, timeout=0.25, breaker_seconds=10)
    return LocalTier(url=url, options=options, **settings)


def keep(tier: LocalTier, key: str, value: Any) -> None:
    """Look `key` up (a miss), then store `value` as a read-through would."""
    found, epoch = tier.get(key)
    assert found is MISSING
    assert epoch is not None, "the tier is bypassed"
    tier.put(key, value, epoch)


def held(tier: LocalTier, key: str) -> Any:
    return tier.get(key)[0]


def test_a_change_to_a_key_by_another_client_drops_it(redis_url: str, writer: redis.Redis) -> None:
    writer.set(PREFIX + "product:2", "other")  # before the tier listens
    tier = make_tier(redis_url)
    keep(tier, "product:1", "old")
    keep(tier, "product:2", "other")
    assert held(tier, "product:1") == "old"

    writer.set(PREFIX + "product:1", "new")
    wait_until(lambda: held(tier, "product:1") is MISSING, timeout=5, what="invalidation")
    assert held(tier, "product:2") == "other"

    writer.delete(PREFIX + "product:2")
    wait_until(lambda: held(tier, "product:2") is MISSING, timeout=5, what="delete pushed")


def test_a_change_in_another_database_of_the_same_redis_drops_the_key_too(
    redis_url: str,
) -> None:
    # Redis tracks key names across its databases (README: one Redis per deployment).
    parts = urlsplit(redis_url)
    other_db = (int(parts.path.lstrip("/") or 0) + 1) % 16
    other = redis.Redis.from_url(parts._replace(path=f"/{other_db}").geturl())
    tier = make_tier(redis_url)
    keep(tier, "product:1", "ours")
    try:
        other.set(PREFIX + "product:1", "theirs")
        wait_until(lambda: held(tier, "product:1") is MISSING, timeout=5, what="invalidation")
    finally:
        other.delete(PREFIX + "product:1")
        other.close()


def test_keys_outside_the_prefix_do_not_invalidate(redis_url: str, writer: redis.Redis) -> None:
    tier = make_tier(redis_url)
    keep(tier, "product:1", "kept")
    keep(tier, "marker", "m")
    writer.set("elsewhere:product:1", "x")
    writer.set(PREFIX + "marker", "x")  # pushed after the first SET, on the same stream
    wait_until(lambda: held(tier, "marker") is MISSING, timeout=5, what="marker pushed")
    assert held(tier, "product:1") == "kept"


def test_a_flush_empties_the_tier(redis_url: str, writer: redis.Redis) -> None:
    tier = make_tier(redis_url)
    for n in range(5):
        keep(tier, f"product:{n}", n)
    assert len(tier) == 5
    writer.flushdb()  # pushed with no key names: "everything"
    wait_until(lambda: held(tier, "product:0") is MISSING, timeout=5, what="flush pushed")
    assert len(tier) == 0


def _tracking_client_id(client: redis.Redis, tier: LocalTier) -> str:
    assert tier.connected
    name = tier.client_name
    clients: list[dict[str, str]] = client.client_list()  # type: ignore[assignment]
    for entry in clients:
        if entry.get("name") == name:
            assert "t" in entry["flags"], entry  # a tracking client
            return entry["id"]
    raise AssertionError(f"no client named {name}")


def test_without_its_tracking_connection_the_tier_is_emptied_and_bypassed(
    redis_url: str, writer: redis.Redis
) -> None:
    tier = make_tier(redis_url)
    keep(tier, "product:1", "old")
    writer.client_kill_filter(_id=_tracking_client_id(writer, tier))
    # Changed while nobody listens: this push is lost.
    writer.set(PREFIX + "product:1", "new")

    value, epoch = tier.get("product:1")
    assert value is MISSING
    assert epoch is None, "a tier without invalidations must not be used"
    assert len(tier) == 0
    assert not tier.connected
    # Losing this one connection is not a Redis outage: the cache and limiter keep calling it.
    address = urlsplit(redis_url)
    assert f"{address.hostname}:{address.port}" not in open_breakers()

    # It comes back by itself (after RECONNECT_SECONDS), empty.
    wait_until(lambda: tier.get("product:1")[1] is not None, timeout=10, what="reconnect")
    assert held(tier, "product:1") is MISSING
    assert tier.connected


def test_an_open_redis_breaker_turns_the_tier_off(redis_url: str) -> None:
    """The breaker opens when Redis hangs (no FIN reaches the tracking connection)."""
    tier = make_tier(redis_url, check_seconds=0)
    keep(tier, "product:1", "old")
    address = urlsplit(redis_url)
    breaker = breaker_for(f"{address.hostname}:{address.port}", 10)
    breaker.failed(redis.TimeoutError("a test opened the breaker"))
    try:
        assert tier.get("product:1") == (MISSING, None)
        assert len(tier) == 0
    finally:
        breaker.succeeded()


def test_a_value_read_before_the_tracking_connection_was_lost_is_not_kept(
    redis_url: str, writer: redis.Redis
) -> None:
    tier = make_tier(redis_url)
    _, epoch = tier.get("product:1")  # the lookup before a Redis GET ...
    writer.client_kill_filter(_id=_tracking_client_id(writer, tier))
    assert tier.get("product:2")[1] is None  # ... the loss noticed by another request ...
    wait_until(lambda: tier.get("product:2")[1] is not None, timeout=10, what="reconnect")
    tier.put("product:1", "read before the loss", epoch)  # ... then the GET's answer
    assert held(tier, "product:1") is MISSING


def test_the_least_recently_used_entry_goes_first(redis_url: str) -> None:
    tier = make_tier(redis_url, max_entries=3)
    for key in ("a", "b", "c"):
        keep(tier, key, key.upper())
    assert held(tier, "a") == "A"  # now b is the oldest
    keep(tier, "d", "D")
    assert len(tier) == 3
    assert held(tier, "b") is MISSING
    assert [held(tier, key) for key in ("a", "c", "d")] == ["A", "C", "D"]


def test_entries_live_for_the_cache_timeout(redis_url: str) -> None:
    clock = Clock()
    tier = make_tier(redis_url, ttl=60.0, clock=clock)
    keep(tier, "a", "A")
    clock.now += 59.9
    assert held(tier, "a") == "A"
    clock.now += 0.2
    assert held(tier, "a") is MISSING


def test_a_timeout_of_zero_keeps_entries_until_invalidated(redis_url: str) -> None:
    clock = Clock()
    tier = make_tier(redis_url, ttl=0, clock=clock)
    keep(tier, "a", "A")
    clock.now += 10**6
    assert held(tier, "a") == "A"


def test_an_unreachable_redis_means_no_tier(unused_redis_url: str) -> None:
    tier = make_tier(unused_redis_url)
    value, epoch = tier.get("a")
    assert value is MISSING
    assert epoch is None
    tier.put("a", "A", epoch)
    assert len(tier) == 0


@pytest.fixture
def unused_redis_url() -> str:
    from profiling.harness.processes import free_port

    return f"redis://127.0.0.1:{free_port()}/0"


# Wiring: which apps get a tier, and what it holds after a read.


def test_only_a_redis_cache_gets_a_tier(sqlite_url: str, redis_url: str) -> None:
    cases = {
        "redis": (build_app(sqlite_url, redis_url), True),
        "redis, CACHE_LOCAL_ENTRIES=0": (
            build_app(sqlite_url, redis_url, CACHE_LOCAL_ENTRIES=0),
            False,
        ),
        "in-process (SimpleCache)": (build_app(sqlite_url), False),
        "NullCache": (
            build_app(sqlite_url, redis_url, CACHE_TYPE="NullCache", CACHE_NO_NULL_WARNING=True),
            False,
        ),
    }
    for name, (app, expected) in cases.items():
        with app.app_context():
            assert (local_tier() is not None) == expected, name


def test_a_read_answered_by_redis_is_then_answered_locally(pg_app: Flask) -> None:
    product = Factories(pg_app).product()
    client = pg_app.test_client()
    path = f"/api/v1/products/{product.id}"
    first = client.get(path)  # miss: loaded and stored in Redis
    with pg_app.app_context():
        tier = local_tier()
        assert tier is not None
        wait_until(
            lambda: (
                client.get(path).status_code == 200
                and held(tier, f"product:{product.id}") is not MISSING
            ),
            timeout=5,
            what="the product held locally",
        )
        representation = held(tier, f"product:{product.id}")
    assert representation.body == first.data
    assert representation.etag == first.headers["ETag"].strip('"')
    again = client.get(path)
    assert again.data == first.data
    assert again.headers["ETag"] == first.headers["ETag"]
