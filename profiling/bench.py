"""`make bench`: throughput and latency of glassbox's variants, measured side by side in one run.

    python -m profiling.bench [--seconds N] [--rounds N] [--variants a,b,group,...]
                              [--baseline-ref REF] [--out DIR]

Each variant is an environment (plus, for bare_wsgi, flask_hello and the uncached reads, a
different WSGI app) served by gunicorn with service/gunicorn_conf.py, WEB_CONCURRENCY
workers and rate limiting off, against a PostgreSQL database holding BENCH_PRODUCTS products
(seeded once) and Redis; a few run under another worker model (the old sync worker, 4
threads) or server (granian), the before_* variants serve glassbox at BENCH_BASELINE_REF
from a copy of that commit's files, and the peer (profiling/peer: FastAPI + asyncpg on
uvicorn, plain and under opentelemetry-instrument) reads the same rows. wrk drives one
variant at a time; the variants alternate (A B C … then … C B A) for several rounds, and
every ratio is computed within a round, then the median over rounds is reported: on a shared
2-core machine repeat runs of one variant differ by ±10-15% (the server, PostgreSQL and wrk
share the cores), ratios of neighbours much less. Every glassbox variant is shown as a share
of the peer's, each lever with / without, each goal read before / after; the resident memory
of every worker is read after the last round.

Writes bench-<time>.json, bench-<time>.png and bench-<time>-before-after.png under
profiling/results/ (and bench-latest*) and prints the tables and PASS/FAIL per target.
Settings by environment: BENCH_SECONDS (per run, default 10), BENCH_ROUNDS (3),
BENCH_WARMUP (2), BENCH_CONNECTIONS (4), BENCH_WORKERS (2), BENCH_VARIANTS (all; names or
groups), BENCH_DATABASE_URL, BENCH_REDIS_URL, BENCH_PRODUCTS (200000), BENCH_BASELINE_REF
(7db2de4). docs/measurement.md explains the variants and the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from profiling.bench_report import (
    Run,
    before_after_rows,
    evaluate,
    format_report,
    result_document,
    summarise,
    telemetry_note,
    write_results,
)
from profiling.bench_servers import BenchServer, GranianServer, PeerServer
from profiling.bench_variants import GROUPS, HOT_IDS, VARIANTS, Variant, expand
from profiling.harness import database
from profiling.harness.git_tree import commit_of, extracted_tree, tree_env
from profiling.harness.gunicorn import GunicornServer, measured_env
from profiling.harness.otlp import otlp_sink
from profiling.harness.processes import ROOT, resident_bytes
from profiling.harness.progress import Steps, steps
from profiling.harness.wrk import errors_of, run_wrk, wrk_binary, wrk_command

RESULTS = ROOT / "profiling" / "results"
# Signs the deep-page cursor the harness builds and the servers check (same for all).
BENCH_SECRET = "glassbox-bench-secret-not-for-production-0123456789"  # noqa: S105
DEEP_FRACTION = 0.995  # the deep page starts this far into the product list
# main before issue 12's redesign of the request path: the "before" of the before_* variants.
BASELINE_REF = "7db2de4"


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
    baseline_ref: str


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
        help="comma-separated names (default: all): "
        + ", ".join(v.name for v in VARIANTS)
        + "; or a group: "
        + ", ".join(GROUPS),
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
    parser.add_argument(
        "--baseline-ref",
        default=env.get("BENCH_BASELINE_REF", BASELINE_REF),
        help="the git commit the before_* variants serve (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    names = expand([n.strip() for n in args.variants.split(",") if n.strip()])
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
        baseline_ref=args.baseline_ref,
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


def prepare_database(database_url: str, products: int) -> Catalog:
    """Create the database if needed, migrate it, seed it up to `products` products."""
    url = database.create_if_missing(database_url, "bench")
    database.migrate(database_url)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            have = int(connection.scalar(sa.text("SELECT count(*) FROM products")) or 0)
        if have < products:
            database.seed(database_url, products=products - have, orders=0, prefix="bench")
            with engine.connect() as connection:
                connection.execute(sa.text("VACUUM ANALYZE products"))
        return _catalog(engine)
    finally:
        engine.dispose()


def _catalog(engine: sa.Engine) -> Catalog:
    with engine.connect() as connection:
        row = connection.execute(sa.text("SELECT min(id), max(id), count(*) FROM products")).one()
        min_id, max_id, count_now = (int(v) for v in row)
        depth = int(count_now * DEEP_FRACTION)
        # The last row of the page before the deep page, and the first row of the deep page.
        before = connection.execute(
            sa.text(
                "SELECT created_at, id FROM products ORDER BY created_at, id OFFSET :n LIMIT 2"
            ),
            {"n": depth - 1},
        ).all()
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


# Running wrk against one variant


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


def drive(
    variant: Variant,
    server: BenchServer,
    settings: Settings,
    catalog: Catalog | None,
    seconds: float,
    mean_delay_ms: float = 0.0,
) -> dict[str, int]:
    """wrk against one variant for `seconds` (each connection waiting `mean_delay_ms` on
    average before each request, when set); its summary."""
    # With {id}, bench.lua builds every request's path; wrk only needs the host.
    url = server.url("/" if "{id}" in variant.path else variant.path)
    command = wrk_command(
        url,
        script="bench.lua",
        seconds=seconds,
        connections=_connections(variant, settings),
        threads=settings.threads,
        timeout="10s",
    )
    env = _wrk_env(variant, catalog)
    if mean_delay_ms > 0:
        env["WRK_MEAN_DELAY_MS"] = f"{mean_delay_ms:.3f}"
    return run_wrk(command, env, seconds)


def _connections(variant: Variant, settings: Settings) -> int:
    """wrk's connections: one per worker when paced (bench_variants.HALF_RATE says why)."""
    return settings.workers if variant.pace > 0 else settings.connections


def pacing_delay_ms(variant: Variant, settings: Settings, latest: dict[str, Run]) -> float:
    """The mean wait per connection that brings a paced variant to `pace` times the rate its
    server reached in its latest full-load run (0: not paced, or no such run yet).

    Each connection sends one request per (wait + answer); the answer takes about its
    service time, which the full-load p50 over-states by the queueing there (two requests
    per worker with the default 4 connections): half of it is taken.
    """
    full = latest.get(variant.serves)
    if variant.pace <= 0 or full is None or full.rps <= 0:
        return 0.0
    period_ms = _connections(variant, settings) * 1000 / (variant.pace * full.rps)
    return max(0.0, period_ms - full.p50_ms / 2)


def prime_cache(variant: Variant, server: BenchServer, catalog: Catalog | None) -> None:
    """Read every hot id once, so that a cached variant measures hits only.

    Entries live CACHE_DEFAULT_TIMEOUT (60 s), and before_product_cached keeps its own keys,
    which no other variant refreshes: without this, today's code served as its own "before"
    measured cached after / before 1.05-1.38 in four short runs on a loaded machine.
    """
    if variant.ids != "hot" or catalog is None:
        return
    for product_id in range(catalog.min_id, catalog.min_id + HOT_IDS):
        url = server.url(variant.path.replace("{id}", str(product_id)))
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our server
            response.read()


def measure(
    variant: Variant,
    server: BenchServer,
    settings: Settings,
    catalog: Catalog | None,
    round_: int,
    *,
    seconds: float,
    latest: dict[str, Run],
) -> Run:
    """One wrk run of `variant`, remembered in `latest` (the pacing of others reads it)."""
    prime_cache(variant, server, catalog)
    mean_delay_ms = pacing_delay_ms(variant, settings, latest)
    data = drive(variant, server, settings, catalog, seconds, mean_delay_ms)
    elapsed = data["duration_us"] / 1e6
    run = Run(
        variant=variant.name,
        round=round_,
        rps=data["requests"] / elapsed if elapsed else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        errors=errors_of(data),
        bad_status=data["status_errors"],
        mean_delay_ms=round(mean_delay_ms, 3),
    )
    latest[variant.name] = run
    return run


def _check_answer(variant: Variant, server: BenchServer, catalog: Catalog | None) -> None:
    """One request before measuring: a variant that answers 4xx/5xx would measure errors."""
    path = variant.path.replace("{id}", str(catalog.min_id if catalog else 1))
    with urllib.request.urlopen(server.url(path), timeout=10) as response:  # noqa: S310
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{variant.name}: {path} answered {response.status}")
    if variant.name == "list_deep" and catalog is not None:
        first = json.loads(body)["items"][0]["id"]
        if first != catalog.deep_first_id:
            raise RuntimeError(f"deep page starts at id {first}, not {catalog.deep_first_id}")


# The steps of a run


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


def prepare(settings: Settings, variants: list[Variant]) -> tuple[list[Variant], Catalog | None]:
    """Redis checked when a glassbox variant runs, the database ready when glassbox or the
    peer reads it; the deep cursor set."""
    if not any(v.is_glassbox or v.server == "peer" for v in variants):
        return variants, None
    if any(v.is_glassbox for v in variants):
        _check_redis(settings.redis_url)
    catalog = prepare_database(settings.database_url, settings.products)
    print(
        f"bench: {catalog.count} products (ids {catalog.min_id}..{catalog.max_id}); "
        f"deep page after row {int(catalog.count * DEEP_FRACTION)}"
    )
    deep = [
        dataclasses.replace(v, path=v.path + catalog.deep_cursor) if v.name == "list_deep" else v
        for v in variants
    ]
    return deep, catalog


def start_servers(
    stack: contextlib.ExitStack,
    variants: list[Variant],
    settings: Settings,
    sink_url: str,
    work: Path,
    catalog: Catalog | None,
    baseline: Path | None = None,
) -> dict[str, BenchServer]:
    """Every variant's server: the WSGI servers launched together (start-up is the slow part),
    the peers one after the other (each waits for its workers), then each checked.

    A variant that `serves` on another's server gets that server; a `before` variant runs in
    `baseline`, the baseline commit's files, with this virtualenv.
    """
    own = [v for v in variants if not v.serves]
    servers: dict[str, BenchServer] = {}
    wsgi: dict[str, GunicornServer] = {}
    started: list[BenchServer] = []
    stack.callback(stop_all, started)
    for variant in own:
        if variant.server == "peer":
            continue
        env = {name: value.replace("{sink}", sink_url) for name, value in variant.env.items()}
        if variant.is_glassbox:
            env = {**_base_env(settings, sink_url, work / "prom" / variant.name), **env}
        cwd = ROOT
        if variant.before:
            assert baseline is not None, f"{variant.name} needs the baseline's files"
            env, cwd = {**env, **tree_env(baseline)}, baseline
        kind = GranianServer if variant.server == "granian" else GunicornServer
        server = kind(
            measured_env(env, settings.workers),
            work / "logs" / f"{variant.name}.log",
            variant.app,
            cwd=cwd,
        )
        started.append(server)
        wsgi[variant.name] = server.launch()
    for variant in own:
        if variant.server == "peer":
            peer = PeerServer.start(
                settings.database_url,
                log_path=work / "logs" / f"{variant.name}.log",
                workers=settings.workers,
                # as many connections per worker as wrk has requests in flight (asyncpg's
                # pool keeps 4 at least): enough, and the machine's PostgreSQL is shared
                pool_size=max(4, settings.connections),
                otlp_endpoint=sink_url,
                sampling=variant.peer_sampling,
            )
            started.append(peer)
            servers[variant.name] = peer
    for variant in own:
        if variant.name in wsgi:
            ready = "/health/live" if variant.is_glassbox else "/"
            servers[variant.name] = wsgi[variant.name].wait_ready(ready, timeout=120)
    for variant in variants:
        if variant.serves:
            servers[variant.name] = servers[variant.serves]
        _check_answer(variant, servers[variant.name], catalog)
    return servers


def stop_all(servers: list[BenchServer]) -> None:
    """Stop every server at once: each graceful stop waits for its workers to flush their
    telemetry, one after the other that took about a minute for 27 servers."""
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        list(pool.map(lambda server: server.stop(), servers))


def worker_memory(
    variants: list[Variant], servers: dict[str, BenchServer]
) -> dict[str, list[float]]:
    """Resident MB of each worker of every server, read after the run (before stopping)."""
    return {
        v.name: [
            round(resident_bytes(pid) / 2**20, 1) for pid in sorted(servers[v.name].worker_pids())
        ]
        for v in variants
        if not v.serves
    }


def run_rounds(
    variants: list[Variant],
    servers: dict[str, BenchServer],
    settings: Settings,
    catalog: Catalog | None,
    progress: Steps,
) -> list[Run]:
    """A warm-up of each variant, then the rounds, the order reversed every other round."""
    latest: dict[str, Run] = {}
    for variant in variants:  # warm caches, pools and the interpreter
        server = servers[variant.name]
        measure(variant, server, settings, catalog, -1, seconds=settings.warmup, latest=latest)
        progress.advance()
    runs: list[Run] = []
    for round_ in range(settings.rounds):
        order = variants if round_ % 2 == 0 else list(reversed(variants))
        for variant in order:
            server = servers[variant.name]
            run = measure(
                variant, server, settings, catalog, round_, seconds=settings.seconds, latest=latest
            )
            runs.append(run)
            progress.advance(
                f"round {round_ + 1}/{settings.rounds} {variant.name:<27} "
                f"{run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms"
            )
    return runs


def choose_baseline(ref: str, variants: list[Variant]) -> tuple[list[Variant], dict[str, Any]]:
    """The variants to run and the baseline commit (`commit` None: no before_* variant runs).

    Without the commit in this clone (a shallow one, a mistyped ref) the before_* variants are
    skipped, said so, and the rest runs.
    """
    baseline: dict[str, Any] = {"ref": ref, "commit": None, "skipped": ""}
    before = [v.name for v in variants if v.before]
    if not before:
        return variants, baseline
    commit = commit_of(ref)
    if commit is None:
        baseline["skipped"] = (
            f"the baseline ref {ref!r} is not a commit of this repository (a shallow clone? "
            "`git fetch --unshallow`, or set BENCH_BASELINE_REF): skipping " + ", ".join(before)
        )
        print(f"bench: {baseline['skipped']}", flush=True)
        return [v for v in variants if not v.before], baseline
    baseline["commit"] = commit
    print(f"bench: before_* variants serve {ref} ({commit[:10]}) from a copy of its files")
    return variants, baseline


def main(argv: list[str] | None = None) -> int:
    settings, names = _settings(argv)
    wrk_binary()  # before any work: without wrk, say how to install it and stop
    chosen = set(names) | {v.serves for v in VARIANTS if v.name in names and v.serves}
    variants, baseline = choose_baseline(
        settings.baseline_ref, [v for v in VARIANTS if not names or v.name in chosen]
    )
    if not variants:
        print("bench: no variant left to run", file=sys.stderr)
        return 1
    variants, catalog = prepare(settings, variants)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    settings.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with otlp_sink() as sink, contextlib.ExitStack() as stack:
        # Entered first, so removed last: after every server running from it has stopped.
        tree = (
            stack.enter_context(extracted_tree(baseline["commit"])) if baseline["commit"] else None
        )
        servers = start_servers(
            stack, variants, settings, sink.url, settings.out / f"bench-{stamp}", catalog, tree
        )
        total = len(variants) * (settings.rounds + 1)
        print(
            f"bench: {len(servers)} servers up in {time.monotonic() - started:.0f} s; "
            f"warming up, then {settings.rounds} rounds"
        )
        loaded = time.monotonic()
        with steps("bench", "warm-up and rounds", total) as progress:
            runs = run_rounds(variants, servers, settings, catalog, progress)
        load_s = len(variants) * (settings.warmup + settings.rounds * settings.seconds)
        took = time.monotonic() - loaded
        print(f"bench: warm-up and rounds took {took:.0f} s ({load_s:.0f} s of them under load)")
        memory = worker_memory(variants, servers)
        stopping = time.monotonic()
        exports = dict(sink.counts)
    print(f"bench: servers stopped in {time.monotonic() - stopping:.0f} s")

    table = summarise(runs, variants)
    verdicts = evaluate(runs, memory)
    before_after = before_after_rows(runs, table, variants)
    label = f"{baseline['ref']} ({(baseline['commit'] or '')[:10]})"
    print()
    print(
        format_report(
            table, runs, verdicts, variants, memory, before_after=before_after, baseline=label
        )
    )
    print(telemetry_note(exports))
    document = result_document(
        elapsed_s=time.monotonic() - started,
        settings=asdict(settings),
        variants=variants,
        runs=runs,
        table=table,
        verdicts=verdicts,
        exports=exports,
        memory=memory,
        before_after=before_after,
        baseline=baseline,
    )
    title = (
        f"glassbox bench {stamp}: {settings.workers} workers each (gunicorn, "
        "service/gunicorn_conf.py, unless named; "
        f"peer: uvicorn), wrk -c{settings.connections}, {settings.rounds} rounds of "
        f"{settings.seconds:g} s"
    )
    json_path, png_path = write_results(settings.out, stamp, document, title)
    print(f"bench: wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
