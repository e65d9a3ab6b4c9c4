"""`make bench`: throughput and latency of glassbox's variants, measured side by side in one run.

    python -m profiling.bench [--seconds N] [--rounds N] [--variants a,b,...] [--out DIR]

Each variant is an environment (plus, for the two baselines, a different WSGI app) served
by gunicorn with service/gunicorn_conf.py, WEB_CONCURRENCY sync workers and rate limiting
off, against a PostgreSQL database holding BENCH_PRODUCTS products (seeded once) and Redis.
wrk drives one variant at a time; the variants alternate (A B C … then … C B A) for
several rounds, and every ratio is computed within a round, then the median over rounds
is reported: on a shared 2-core machine absolute numbers drift by ±10-15%, ratios of
neighbours much less (PITFALLS, "Benchmarking on this machine").

Writes bench-<time>.json and bench-<time>.png under profiling/results/ (and bench-latest.*)
and prints a table and PASS/FAIL per target. Settings by environment: BENCH_SECONDS (per
run, default 10), BENCH_ROUNDS (3), BENCH_WARMUP (2), BENCH_CONNECTIONS (4),
BENCH_WORKERS (2), BENCH_VARIANTS (all), BENCH_DATABASE_URL, BENCH_REDIS_URL,
BENCH_PRODUCTS (200000). docs/measurement.md explains the variants and the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from profiling.servers import (
    ROOT,
    Server,
    clean_environment,
    start_gunicorn,
    stop,
    wait_until_ready,
)

RESULTS = ROOT / "profiling" / "results"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "bench.lua"
# Signs the deep-page cursor the harness builds and the servers check (same for all).
BENCH_SECRET = "glassbox-bench-secret-not-for-production-0123456789"  # noqa: S105
HOT_IDS = 100  # the cached variants read the first 100 products: all stay in Redis
DEEP_FRACTION = 0.995  # the deep page starts this far into the product list


@dataclass(frozen=True)
class Variant:
    """One server configuration and one request: an environment dict and a URL path."""

    name: str
    path: str  # may contain {id}: replaced by a random id for every request
    env: Mapping[str, str] = field(default_factory=dict)
    app: str | None = None  # gunicorn app; None = service/gunicorn_conf.py's wsgi_app
    ids: str = ""  # "hot" (1..HOT_IDS) or "all" (every product) when path has {id}
    description: str = ""

    @property
    def is_glassbox(self) -> bool:
        return self.app is None or self.app.endswith("glassbox_app()")


NO_CACHE = {"BENCH_CACHE_TYPE": "NullCache"}
OTEL_OFF = {"OTEL_SDK_DISABLED": "true"}
OTEL_ALL = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
UNCACHED_APP = "profiling.bench_apps:glassbox_app()"
PRODUCT = "/api/v1/products/{id}"
FIRST_PAGE = "/api/v1/products?limit=20"

VARIANTS: tuple[Variant, ...] = (
    Variant("bare_wsgi", "/", app="profiling.bench_apps:bare_wsgi", description="ceiling"),
    Variant("flask_hello", "/", app="profiling.bench_apps:hello_app()", description="Flask"),
    Variant("product_cached", PRODUCT, ids="hot", description="Redis hit, telemetry default"),
    Variant("product_cached_otel_off", PRODUCT, OTEL_OFF, ids="hot"),
    Variant("product_cached_otel_100", PRODUCT, OTEL_ALL, ids="hot"),
    Variant("product_uncached", PRODUCT, NO_CACHE, UNCACHED_APP, "all", "SQL, telemetry default"),
    Variant("product_uncached_otel_off", PRODUCT, {**NO_CACHE, **OTEL_OFF}, UNCACHED_APP, "all"),
    Variant("product_uncached_otel_100", PRODUCT, {**NO_CACHE, **OTEL_ALL}, UNCACHED_APP, "all"),
    Variant("list_first", FIRST_PAGE, NO_CACHE, UNCACHED_APP, description="first page, SQL"),
    Variant("list_first_otel_off", FIRST_PAGE, {**NO_CACHE, **OTEL_OFF}, UNCACHED_APP),
    Variant("list_first_otel_100", FIRST_PAGE, {**NO_CACHE, **OTEL_ALL}, UNCACHED_APP),
    # The path is completed with a cursor deep in the list once the database is ready.
    Variant("list_deep", FIRST_PAGE + "&cursor=", NO_CACHE, UNCACHED_APP, description="keyset"),
)


@dataclass(frozen=True)
class Target:
    name: str
    numerator: str
    denominator: str
    metric: str  # "rps" (throughput ratio) or "p50" (latency ratio)
    bound: float
    at_least: bool  # True: ratio >= bound passes; False: ratio <= bound passes
    issue: int


TARGETS: tuple[Target, ...] = (
    Target("deep page / first page, p50 latency", "list_deep", "list_first", "p50", 1.5, False, 5),
    Target(
        "cached read / bare WSGI, telemetry on", "product_cached", "bare_wsgi", "rps", 0.70, True, 5
    ),
    Target(
        "uncached read / bare WSGI, telemetry on",
        "product_uncached",
        "bare_wsgi",
        "rps",
        0.30,
        True,
        5,
    ),
    Target(
        "uncached read: telemetry default / off",
        "product_uncached",
        "product_uncached_otel_off",
        "rps",
        0.90,
        True,
        3,
    ),
    Target(
        "product list: telemetry default / off",
        "list_first",
        "list_first_otel_off",
        "rps",
        0.90,
        True,
        3,
    ),
    Target(
        "uncached read: 100% sampled / off",
        "product_uncached_otel_100",
        "product_uncached_otel_off",
        "rps",
        0.80,
        True,
        3,
    ),
    Target(
        "product list: 100% sampled / off",
        "list_first_otel_100",
        "list_first_otel_off",
        "rps",
        0.80,
        True,
        3,
    ),
)


@dataclass(frozen=True)
class Settings:
    seconds: float
    rounds: int
    warmup: float
    connections: int
    threads: int
    workers: int
    database_url: str
    redis_url: str
    products: int
    out: Path


def _settings(argv: list[str] | None) -> tuple[Settings, list[str]]:
    env = os.environ
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(env.get("BENCH_SECONDS", "10")))
    parser.add_argument("--rounds", type=int, default=int(env.get("BENCH_ROUNDS", "3")))
    parser.add_argument("--warmup", type=float, default=float(env.get("BENCH_WARMUP", "2")))
    parser.add_argument("--connections", type=int, default=int(env.get("BENCH_CONNECTIONS", "4")))
    parser.add_argument("--workers", type=int, default=int(env.get("BENCH_WORKERS", "2")))
    parser.add_argument(
        "--variants",
        default=env.get("BENCH_VARIANTS", ""),
        help="comma-separated names (default: all): " + ", ".join(v.name for v in VARIANTS),
    )
    parser.add_argument(
        "--database-url",
        default=env.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/glassbox_bench"
        ),
    )
    parser.add_argument(
        "--redis-url", default=env.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--products", type=int, default=int(env.get("BENCH_PRODUCTS", "200000")))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = set(names) - {v.name for v in VARIANTS}
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    settings = Settings(
        seconds=args.seconds,
        rounds=max(1, args.rounds),
        warmup=args.warmup,
        connections=max(1, args.connections),
        threads=1,  # one wrk thread drives tens of thousands of requests a second
        workers=args.workers,
        database_url=args.database_url,
        redis_url=args.redis_url,
        products=args.products,
        out=args.out,
    )
    return settings, names


# The database: created, migrated and seeded once, then reused


@dataclass(frozen=True)
class Catalog:
    min_id: int
    max_id: int
    count: int
    deep_cursor: str
    deep_first_id: int


def _flask(database_url: str, *args: str) -> None:
    env = clean_environment(
        {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "OTEL_SDK_DISABLED": "true"}
    )
    subprocess.run(  # noqa: S603 - the project's own CLI
        [sys.executable, "-m", "flask", "--app", "service", *args],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=1800,
    )


def _psycopg_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def prepare_database(database_url: str, products: int) -> Catalog:
    """Create the database if needed, migrate it, seed it up to `products` products."""
    import psycopg
    from psycopg import sql

    url = urllib.parse.urlsplit(_psycopg_url(database_url))
    name = url.path.lstrip("/")
    maintenance = url._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if exists.fetchone() is None:
            print(f"bench: creating database {name}")
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    _flask(database_url, "db", "upgrade")
    with psycopg.connect(_psycopg_url(database_url), connect_timeout=5) as connection:
        count = connection.execute("SELECT count(*) FROM products").fetchone()
        have = int(count[0]) if count else 0
    if have < products:
        print(f"bench: seeding {products - have} products (once; later runs reuse them)")
        _flask(database_url, "seed", "--products", str(products - have), "--orders", "0")
        with psycopg.connect(_psycopg_url(database_url), autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE products")
    with psycopg.connect(_psycopg_url(database_url), connect_timeout=5) as connection:
        row = connection.execute("SELECT min(id), max(id), count(*) FROM products").fetchone()
        assert row is not None
        min_id, max_id, count_now = (int(v) for v in row)
        depth = int(count_now * DEEP_FRACTION)
        # The last row of the page before the deep page, and the first row of the deep page.
        before = connection.execute(
            "SELECT created_at, id FROM products ORDER BY created_at, id OFFSET %s LIMIT 2",
            (depth - 1,),
        ).fetchall()
    if max_id - min_id + 1 != count_now:
        raise RuntimeError(
            f"products ids {min_id}..{max_id} have gaps ({count_now} rows): random ids would "
            "hit 404s; use a database only the bench writes to (BENCH_DATABASE_URL)"
        )
    return Catalog(min_id, max_id, count_now, _deep_cursor(*before[0]), int(before[1][1]))


def _deep_cursor(created_at: datetime, product_id: int) -> str:
    """The cursor the API would hand out after (created_at, id), built with its own code."""
    from flask import Flask

    from service.pagination import encode_cursor, scope_of

    app = Flask("bench")
    app.config["SECRET_KEY"] = BENCH_SECRET
    with app.app_context():
        # The default list's scope: list_products passes its filters, None ones dropped.
        return encode_cursor(
            scope_of("products", {"sort": "created_at"}), (created_at.astimezone(UTC), product_id)
        )


# An OTLP/HTTP sink, so that telemetry-on variants export for real


class _Sink(BaseHTTPRequestHandler):
    counts: dict[str, int]
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.lock:
            self.counts[self.path] = self.counts.get(self.path, 0) + 1
        # An empty protobuf message is a valid Export*ServiceResponse (full success).
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextlib.contextmanager
def otlp_sink() -> Iterator[tuple[str, dict[str, int]]]:
    counts: dict[str, int] = {}
    handler = type("Sink", (_Sink,), {"counts": counts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()


# Running wrk


@dataclass
class Run:
    variant: str
    round: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors and timeouts
    bad_status: int  # responses that were not 2xx or 3xx


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(
            "bench: wrk is not installed: `apt-get install wrk` (make bench does it as root)"
        )
    return found


def run_wrk(
    url: str, seconds: float, connections: int, threads: int, env: Mapping[str, str]
) -> dict[str, Any]:
    command = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    result = subprocess.run(  # noqa: S603 - wrk with our arguments
        command,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    for line in result.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            data: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
            return data
    raise RuntimeError(f"wrk printed no summary (exit {result.returncode}): {result.stderr}")


def _wrk_env(variant: Variant, catalog: Catalog | None) -> dict[str, str]:
    if "{id}" not in variant.path:
        return {}
    if catalog is None:
        low, high = 1, HOT_IDS
    elif variant.ids == "hot":
        low, high = catalog.min_id, catalog.min_id + HOT_IDS - 1
    else:
        low, high = catalog.min_id, catalog.max_id
    return {"WRK_PATH_TEMPLATE": variant.path, "WRK_ID_MIN": str(low), "WRK_ID_MAX": str(high)}


def measure(
    variant: Variant, server: Server, settings: Settings, catalog: Catalog | None, round_: int
) -> Run:
    # With {id}, bench.lua builds every request's path; wrk only needs the host.
    path = "/" if "{id}" in variant.path else variant.path
    data = run_wrk(
        server.url + path,
        settings.seconds,
        settings.connections,
        settings.threads,
        _wrk_env(variant, catalog),
    )
    seconds = data["duration_us"] / 1e6
    return Run(
        variant=variant.name,
        round=round_,
        rps=data["requests"] / seconds if seconds else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        errors=data["connect_errors"]
        + data["read_errors"]
        + data["write_errors"]
        + data["timeouts"],
        bad_status=data["status_errors"],
    )


def _check_answer(variant: Variant, server: Server, catalog: Catalog | None) -> None:
    """One request before measuring: a variant that answers 4xx/5xx would measure errors."""
    path = variant.path.replace("{id}", str(catalog.min_id if catalog else 1))
    with urllib.request.urlopen(server.url + path, timeout=10) as response:  # noqa: S310
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{variant.name}: {path} answered {response.status}")
    if variant.name == "list_deep" and catalog is not None:
        first = json.loads(body)["items"][0]["id"]
        if first != catalog.deep_first_id:
            raise RuntimeError(f"deep page starts at id {first}, not {catalog.deep_first_id}")


# Results


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(runs: list[Run], variants: list[Variant]) -> dict[str, dict[str, float]]:
    table = {}
    for variant in variants:
        mine = [r for r in runs if r.variant == variant.name]
        table[variant.name] = {
            "rps": _median([r.rps for r in mine]),
            "rps_min": min((r.rps for r in mine), default=float("nan")),
            "rps_max": max((r.rps for r in mine), default=float("nan")),
            "p50_ms": _median([r.p50_ms for r in mine]),
            "p99_ms": _median([r.p99_ms for r in mine]),
            "requests": sum(r.requests for r in mine),
            "errors": sum(r.errors for r in mine),
            "bad_status": sum(r.bad_status for r in mine),
        }
    return table


def paired_ratio(runs: list[Run], numerator: str, denominator: str, metric: str) -> float | None:
    """Median over rounds of numerator/denominator measured in the same round."""
    by_round: dict[int, dict[str, Run]] = {}
    for run in runs:
        by_round.setdefault(run.round, {})[run.variant] = run
    ratios = []
    for pair in by_round.values():
        if numerator in pair and denominator in pair:
            top, bottom = pair[numerator], pair[denominator]
            if metric == "rps" and bottom.rps > 0:
                ratios.append(top.rps / bottom.rps)
            elif metric == "p50" and bottom.p50_ms > 0:
                ratios.append(top.p50_ms / bottom.p50_ms)
    return statistics.median(ratios) if ratios else None


def evaluate(runs: list[Run]) -> list[dict[str, Any]]:
    verdicts = []
    for target in TARGETS:
        ratio = paired_ratio(runs, target.numerator, target.denominator, target.metric)
        if ratio is None:
            verdict = "SKIP"
        elif target.at_least:
            verdict = "PASS" if ratio >= target.bound else "FAIL"
        else:
            verdict = "PASS" if ratio <= target.bound else "FAIL"
        verdicts.append({**asdict(target), "ratio": ratio, "verdict": verdict})
    return verdicts


def format_report(
    table: dict[str, dict[str, float]], runs: list[Run], verdicts: list[dict[str, Any]]
) -> str:
    has_bare = any(r.variant == "bare_wsgi" for r in runs)
    lines = [
        f"{'variant':<27} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'/ bare':>7}  errors",
        "-" * 70,
    ]
    for name, row in table.items():
        ratio = paired_ratio(runs, name, "bare_wsgi", "rps") if has_bare else None
        problems = int(row["errors"] + row["bad_status"])
        lines.append(
            f"{name:<27} {row['rps']:>8.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{'' if ratio is None else f'{ratio:.2f}':>7}  {problems or ''}"
        )
    lines += ["", "targets (ratios measured within each round, median over rounds):"]
    for v in verdicts:
        shown = "   n/a" if v["ratio"] is None else f"{v['ratio']:6.2f}"
        sign = ">=" if v["at_least"] else "<="
        lines.append(f"  {v['verdict']:<4}  {shown} {sign} {v['bound']:.2f}  {v['name']}")
    return "\n".join(lines)


def draw_chart(table: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = list(table)
    rps = [table[n]["rps"] for n in names]
    low = [table[n]["rps"] - table[n]["rps_min"] for n in names]
    high = [table[n]["rps_max"] - table[n]["rps"] for n in names]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(13, 0.45 * len(names) + 2), sharey=True, layout="constrained"
    )
    positions = range(len(names))
    left.barh(positions, rps, xerr=[low, high], color="#4878a8", capsize=3)
    left.set_yticks(list(positions), names)
    left.invert_yaxis()
    left.set_xlabel("requests per second (median; bars: min-max over rounds)")
    right.barh([p - 0.2 for p in positions], [table[n]["p50_ms"] for n in names], 0.4, label="p50")
    right.barh([p + 0.2 for p in positions], [table[n]["p99_ms"] for n in names], 0.4, label="p99")
    right.set_xlabel("latency, ms (median over rounds)")
    right.legend(loc="best")
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# The run


def _base_env(settings: Settings, sink: str, multiproc: Path) -> dict[str, str]:
    return {
        "GLASSBOX_ENV": "development",
        "SECRET_KEY": BENCH_SECRET,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "RATELIMIT_ENABLED": "false",
        "LOG_LEVEL": "INFO",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }


def _check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(
            f"bench: Redis at {url} does not answer ({exc}): the cached "
            "variants would measure cache misses"
        ) from None
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    settings, names = _settings(argv)
    variants = [v for v in VARIANTS if not names or v.name in names]
    ensure_wrk()
    needs_app = any(v.is_glassbox for v in variants)
    catalog = None
    if needs_app:
        _check_redis(settings.redis_url)
        catalog = prepare_database(settings.database_url, settings.products)
        print(
            f"bench: {catalog.count} products (ids {catalog.min_id}..{catalog.max_id}); "
            f"deep page after row {int(catalog.count * DEEP_FRACTION)}"
        )
        variants = [
            Variant(v.name, v.path + catalog.deep_cursor, v.env, v.app, v.ids, v.description)
            if v.name == "list_deep"
            else v
            for v in variants
        ]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    settings.out.mkdir(parents=True, exist_ok=True)
    work = settings.out / f"bench-{stamp}"
    runs: list[Run] = []
    started = time.monotonic()
    with otlp_sink() as (sink_url, sink_counts), contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        # Started together (start-up is the slow part), then checked one by one.
        for variant in variants:
            env = dict(variant.env)
            if variant.is_glassbox:
                env = {**_base_env(settings, sink_url, work / "prom" / variant.name), **env}
            server = start_gunicorn(
                env,
                app=variant.app,
                workers=settings.workers,
                log_path=work / "logs" / f"{variant.name}.log",
            )
            stack.callback(stop, server)
            servers[variant.name] = server
        for variant in variants:
            ready = "/health/live" if variant.is_glassbox else "/"
            wait_until_ready(servers[variant.name], ready, timeout=120)
            _check_answer(variant, servers[variant.name], catalog)
        print(f"bench: {len(servers)} servers up; warming up, then {settings.rounds} rounds")
        for variant in variants:  # warm caches, pools and the interpreter
            run_wrk(
                servers[variant.name].url + ("/" if "{id}" in variant.path else variant.path),
                settings.warmup,
                settings.connections,
                settings.threads,
                _wrk_env(variant, catalog),
            )
        for round_ in range(settings.rounds):
            order = variants if round_ % 2 == 0 else list(reversed(variants))
            for variant in order:
                run = measure(variant, servers[variant.name], settings, catalog, round_)
                runs.append(run)
                print(
                    f"bench: round {round_ + 1}/{settings.rounds} {variant.name:<27} "
                    f"{run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms",
                    flush=True,
                )
        exports = dict(sink_counts)

    table = summarise(runs, variants)
    verdicts = evaluate(runs)
    report = format_report(table, runs, verdicts)
    telemetry_note = (
        f"OTLP exports received by the bench's sink: {exports}"
        if exports
        else "no OTLP export reached the sink: telemetry was not exporting, so the "
        "telemetry variants measured the same thing as their _otel_off twins"
    )
    print()
    print(report)
    print(telemetry_note)

    result = {
        "taken": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "variants": {
            v.name: {"path": v.path, "env": dict(v.env), "app": v.app, "ids": v.ids}
            for v in variants
        },
        "summary": table,
        "runs": [asdict(r) for r in runs],
        "targets": verdicts,
        "otlp_exports": exports,
    }
    json_path = settings.out / f"bench-{stamp}.json"
    png_path = settings.out / f"bench-{stamp}.png"
    json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    title = (
        f"glassbox bench {stamp}: gunicorn {settings.workers} sync workers, wrk "
        f"-c{settings.connections}, {settings.rounds} rounds of {settings.seconds:g} s"
    )
    draw_chart(table, png_path, title)
    for source, alias in ((json_path, "bench-latest.json"), (png_path, "bench-latest.png")):
        shutil.copyfile(source, settings.out / alias)
    print(f"bench: wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
