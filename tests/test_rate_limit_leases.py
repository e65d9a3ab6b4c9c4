"""The leased allowance (service/ratelimit.py, LeasedRedisStorage): its bound, with several
processes against one Redis, and what it saves, counted in Redis commands."""

from __future__ import annotations

import subprocess
import sys
import time

import redis
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from service.ratelimit import LEASED_PREFIX, LeasedRedisStorage
from tests.reliability.servers import PROJECT_ROOT

PROCESSES = 4
# Each process: build the storage, wait for the start signal in Redis (so that all of them
# hit at once), try `tries` hits of one limit, print how many were admitted.
HAMMER = """
import sys, time
import redis
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
import service.ratelimit  # registers the glassbox+redis:// storage
url, tries, limits = sys.argv[1], float(sys.argv[2]), [parse(text) for text in sys.argv[3:]]
limiter = FixedWindowRateLimiter(storage_from_string("glassbox+" + url))
signal, deadline = redis.Redis.from_url(url), time.monotonic() + 60
print("ready", flush=True)
while not signal.get("lease-test-start") and time.monotonic() < deadline:
    time.sleep(0.01)  # polling for the start signal
for item in limits:
    print(sum(limiter.hit(item, "lease-test") for _ in range(int(tries * item.amount))), end=" ")
"""


def _admitted_by_processes(redis_url: str, tries: float, limits: list[str]) -> list[list[int]]:
    """How many hits each process had admitted, per limit (each tries `tries` x the limit)."""
    command = [sys.executable, "-c", HAMMER, redis_url, str(tries), *limits]
    processes = [
        subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        redis.Redis.from_url(redis_url).set("lease-test-start", 1)
        answers = [process.communicate(timeout=120)[0].split() for process in processes]
    finally:
        for process in processes:
            process.kill()
    return [[int(answer[index]) for answer in answers] for index in range(len(limits))]


def test_never_more_than_the_limit_and_at_most_a_few_refused_early(redis_url: str) -> None:
    # Each process tries half the limit: twice the limit in all, at once (one start signal).
    limits = {"500 per minute": 500, "15 per minute": 15}
    admitted = _admitted_by_processes(redis_url, 0.5, list(limits))
    largest_loss = (PROCESSES - 1) * (LeasedRedisStorage.LARGEST_BATCH - 1)
    for (limit, amount), counts in zip(limits.items(), admitted, strict=True):
        print(f"{limit}: {PROCESSES} processes admitted {counts} (sum {sum(counts)})")
        # Leases of up to LARGEST_BATCH for 500; under 2 x FAN_OUT every lease is 1: exact.
        floor = amount if amount < 2 * LeasedRedisStorage.FAN_OUT else amount - largest_loss
        assert floor <= sum(counts) <= amount, limit
        assert sum(count > 0 for count in counts) >= 2  # they shared the window


def test_a_lease_serves_many_requests_with_one_redis_call(redis_url: str) -> None:
    storage = storage_from_string(LEASED_PREFIX + redis_url)
    assert isinstance(storage, LeasedRedisStorage)
    limiter = FixedWindowRateLimiter(storage)
    item = parse("1000 per minute")
    commands: list[str] = []
    execute = storage.storage.execute_command

    def counted(*args: object, **options: object) -> object:
        commands.append(str(args[0]).upper())
        return execute(*args, **options)

    storage.storage.execute_command = counted  # type: ignore[method-assign]
    assert all(limiter.hit(item, "one-client") for _ in range(40))
    # 1000 left / FAN_OUT is over LARGEST_BATCH (20): two leases serve the 40 requests.
    assert len(commands) == 2
    assert set(commands) <= {"EVAL", "EVALSHA"}
    stats = limiter.get_window_stats(item, "one-client")  # the headers' source
    assert stats.remaining == 1000 - 40
    assert 0 < stats.reset_time - time.time() <= 61
