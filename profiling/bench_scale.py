"""`make bench-report`: the sales report and search at a real shop's size, goal by goal.

    python -m profiling.bench_scale [--database-url URL] [--orders N] [--products N]
                                    [--reports N] [--searches N] [--out DIR]

Creates and migrates its PostgreSQL database (BENCH_SCALE_DATABASE_URL), seeds it up to
`--products` products and `--orders` orders with `flask seed` (timed: the seeding goal),
creates an API key with the `operator` scope (revoked at the end: the report needs that
scope), then starts the API under gunicorn (one worker, 127.0.0.1, a free port) twice:

- uncached (REQUEST_BUDGET=25, the most it accepts): a 30-day report (the default length),
  by day, product and category in turn, `--reports` times, each ending a day earlier than
  the one before, so that no two ask the same and each is computed (the seeded orders span
  60 days: every window is full); its p99 over all and per grouping, and the worker's RSS
  before the first and after the last; then `--searches` selective searches (`q=` a random
  6-digit number);
- cached (the in-process cache, the same budget): one report to fill it, then
  `--cached-reports` more (p99).

It prints the issue's goals with the figure measured and PASS or FAIL, and writes
bench-scale.json to `--out`. Timings are client-side (request sent to body read), one
request at a time. Seeding is measured only when this run seeded: data already present
is reused, and the seeding goal then says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from profiling.harness import database
from profiling.harness.flask_cli import cli_env, run_flask
from profiling.harness.gunicorn import gunicorn
from profiling.harness.processes import ROOT, resident_bytes
from service.config import database_url as parse_database_url

RESULTS = ROOT / "profiling" / "results"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/glassbox_scale"
GROUPINGS = ("day", "product", "category")
WINDOWS = 30  # distinct 30-day windows inside the seeded 60 days


@dataclass(frozen=True)
class Goal:
    name: str
    target: float
    unit: str
    measured: float | None  # None: not measured in this run
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "n/a"
        return "PASS" if self.measured <= self.target and not self.note else "FAIL"


def p99(samples: Sequence[float]) -> float:
    """The 99th percentile, interpolated (statistics' inclusive method)."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def _counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(parse_database_url(url))
    try:
        with engine.connect() as connection:
            products = connection.scalar(sa.text("SELECT count(*) FROM products")) or 0
            orders = connection.scalar(sa.text("SELECT count(*) FROM orders")) or 0
    finally:
        engine.dispose()
    return int(products), int(orders)


def prepare(url: str, products: int, orders: int) -> float | None:
    """Create, migrate, seed what is missing; the seconds seeding the orders took, if seeded."""
    database.create_if_missing(url, "bench-report")
    database.migrate(url)
    have_products, have_orders = _counts(url)
    if have_products < products:
        print(f"bench-report: seeding {products - have_products} products", flush=True)
        run_flask(
            "seed", "--products", str(products - have_products), "--orders", "0",
            env=cli_env(url), show_output=True, timeout=3600,
        )  # fmt: skip
    if have_orders >= orders:
        return None
    print(f"bench-report: seeding {orders - have_orders} orders", flush=True)
    started = time.monotonic()
    run_flask(
        "seed", "--products", "0", "--orders", str(orders - have_orders),
        env=cli_env(url), show_output=True, timeout=3600,
    )  # fmt: skip
    seconds = time.monotonic() - started
    # Only a full seed of the goal's size measures the goal.
    return seconds * orders / (orders - have_orders) if have_orders == 0 else None


@contextlib.contextmanager
def operator_key(url: str) -> Iterator[str]:
    """A key of its own with the `operator` scope (the report needs it), revoked afterwards."""
    name = f"bench-report-{secrets.token_hex(4)}"
    token = run_flask(
        "api-keys", "create", name, "--scope", "operator", env=cli_env(url)
    ).strip()  # fmt: skip
    try:
        yield token
    finally:
        run_flask("api-keys", "revoke", name, env=cli_env(url))


def uncached_report(n: int) -> str:
    """The n-th uncached report: groupings in turn, each window a day before the last
    (30 of them fit the seeded 60 days), so no request is answered from the cache."""
    end = datetime.now(UTC).date() - timedelta(days=n % WINDOWS)
    start = end - timedelta(days=30)  # the API's default range
    return f"/api/v1/reports/sales?group_by={GROUPINGS[n % len(GROUPINGS)]}&from={start}&to={end}"


def timed(session: requests.Session, url: str, failures: list[str]) -> float:
    """Seconds to the whole answer; a non-200 answer is counted in `failures` (and timed)."""
    started = time.perf_counter()
    response = session.get(url, timeout=120)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        failures.append(f"{response.status_code} after {elapsed:.1f} s: {url.split('?')[-1]}")
    return elapsed


def _failed(failures: list[str]) -> str:
    return f"{len(failures)} failed ({'; '.join(failures[:3])})" if failures else ""


def _server_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "RATELIMIT_ENABLED": "false",
        "OTEL_SDK_DISABLED": "true",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def measure(settings: argparse.Namespace, out: Path) -> dict[str, Any]:
    url = settings.database_url
    seed_seconds = prepare(url, settings.products, settings.orders)
    rng = random.Random(29)  # noqa: S311 - search terms, not secrets
    with operator_key(url) as token:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        return _measure(settings, out, session, rng, seed_seconds)


def _measure(
    settings: argparse.Namespace,
    out: Path,
    session: requests.Session,
    rng: random.Random,
    seed_seconds: float | None,
) -> dict[str, Any]:
    url = settings.database_url
    report = "/api/v1/reports/sales?group_by={}"
    # The largest request budget the API accepts, so that the figure is the report's own
    # time even where it overruns the default 5 s (which would answer 503 instead).
    uncached_env = _server_env(url, REQUEST_BUDGET="25")
    with gunicorn(uncached_env, workers=1, log_path=out / "bench-scale-uncached.log") as api:
        (worker,) = api.worker_pids()
        rss_before = resident_bytes(worker)
        uncached_failures: list[str] = []
        uncached = [
            timed(session, api.url(uncached_report(n)), uncached_failures)
            for n in range(settings.reports)
        ]
        rss_after = resident_bytes(worker)
        search_failures: list[str] = []
        searches = [
            timed(
                session,
                api.url(f"/api/v1/products?q={rng.randrange(10**5, 10**6)}"),
                search_failures,
            )
            for _ in range(settings.searches)
        ]
    cached_env = _server_env(url, REQUEST_BUDGET="25")  # its first report fills the cache
    with gunicorn(cached_env, workers=1, log_path=out / "bench-scale-cached.log") as api:
        cached_failures: list[str] = []
        timed(session, api.url(report.format("day")), cached_failures)  # fills the cache
        cached = [
            timed(session, api.url(report.format("day")), cached_failures)
            for _ in range(settings.cached_reports)
        ]
    products, orders = _counts(url)
    by_grouping = {g: uncached[n :: len(GROUPINGS)] for n, g in enumerate(GROUPINGS)}
    goals = [
        Goal("report, 30 days, p99 uncached", 0.5, "s", p99(uncached), _failed(uncached_failures)),
        *(
            Goal(f"  of which by {grouping}", 0.5, "s", p99(times) if times else None)
            for grouping, times in by_grouping.items()
        ),
        Goal("report, 30 days, p99 cached", 0.010, "s", p99(cached), _failed(cached_failures)),
        Goal("worker RSS growth during the reports", 10, "MB", (rss_after - rss_before) / 2**20),
        Goal("search, a selective term, p99", 0.020, "s", p99(searches), _failed(search_failures)),
        Goal(
            f"seeding {settings.orders:,} orders",
            180,
            "s",
            seed_seconds,
            "" if seed_seconds is not None else "data reused: not measured in this run",
        ),
    ]
    return {
        "products": products,
        "orders": orders,
        "reports": settings.reports,
        "cached_reports": settings.cached_reports,
        "searches": settings.searches,
        "uncached_s": uncached,
        "cached_median_s": statistics.median(cached),
        "search_median_s": statistics.median(searches),
        "goals": [{**asdict(goal), "verdict": goal.verdict} for goal in goals],
    }


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s" and value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.1f} {unit}" if unit == "MB" else f"{value:.2f} {unit}"


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['products']:,} products, {result['orders']:,} orders; "
        f"{result['reports']} uncached and {result['cached_reports']} cached reports, "
        f"{result['searches']} searches",
        f"{'goal':<40} {'target':>10} {'measured':>10}  verdict",
    ]
    for goal in result["goals"]:
        lines.append(
            f"{goal['name']:<40} {'≤ ' + _format(goal['target'], goal['unit']):>10} "
            f"{_format(goal['measured'], goal['unit']):>10}  {goal['verdict']} {goal['note']}"
        )
    return "\n".join(line.rstrip() for line in lines)


def _parser() -> argparse.ArgumentParser:
    env: Callable[[str, str], str] = lambda name, default: os.environ.get(name) or default  # noqa: E731
    parser = argparse.ArgumentParser(prog="make bench-report", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--database-url", default=env("BENCH_SCALE_DATABASE_URL", DEFAULT_DATABASE_URL))
    add("--orders", type=int, default=int(env("BENCH_SCALE_ORDERS", "1000000")))
    add("--products", type=int, default=int(env("BENCH_SCALE_PRODUCTS", "1000000")))
    add("--reports", type=int, default=WINDOWS, help="uncached report requests (at most 30)")
    add("--cached-reports", type=int, default=200, help="cached report requests")
    add("--searches", type=int, default=200, help="search requests")
    add("--out", type=Path, default=RESULTS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    settings = parser.parse_args(argv)
    if not 1 <= settings.reports <= WINDOWS:
        parser.error(f"--reports: 1 to {WINDOWS} (distinct 30-day windows of the seeded data)")
    settings.out.mkdir(parents=True, exist_ok=True)
    result = measure(settings, settings.out)
    print(table(result), flush=True)
    (settings.out / "bench-scale.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
