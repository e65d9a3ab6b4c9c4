"""`make lab`: what a sampling profiler sees versus what distributed tracing sees.

    python -m profiling.lab [--database-url URL] [--orders N] [--seconds S] [--out DIR]
                            [--experiments cpu,io] [--payments-latency-ms MS] [--sql-delay-ms MS]

Starts its own API (gunicorn, 2 workers), payments service and OTLP/HTTP receiver on
free 127.0.0.1 ports (within TEST_PORT_RANGE when set), seeds the database once
(LAB_DATABASE_URL, default the SQLite file var/lab.db; later runs reuse the data), then
runs two experiments under wrk load while py-spy records every API worker, on-CPU and with `--idle`:

1. cpu: the sales report grouped by product over every seeded order, computed in Python
   from every row — the lab-only route /lab/sales-in-python (LAB_ROUTES), since the API's
   own report is aggregated by the database and cached.
2. io: order placement with the payments service slowed (PAYMENTS_LATENCY_MS) and the lab's
   report over an empty day made slow in the database (REPORTS_SQL_DELAY_MS, pg_sleep).

It prints, per experiment, py-spy's top frames beside the top spans by self time from the
traces it received, and writes profiling/results/lab-report.md with the flame graphs.
docs/measurement.md ("The lab") explains what to look for.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from profiling import collapsed, pyspy
from profiling.harness import database
from profiling.harness.flask_cli import cli_env, run_flask
from profiling.harness.gunicorn import GunicornServer, measured_env
from profiling.harness.otlp import Receiver, otlp_sink
from profiling.harness.processes import ROOT
from profiling.harness.progress import Steps, steps
from profiling.harness.wrk import start_wrk, stop_wrk, wrk_binary, wrk_command
from profiling.lab_report import format_summary, report_markdown, summary_json
from profiling.lab_results import (
    WORKERS,
    Experiment,
    Recording,
    Result,
    Settings,
    span_stats,
)

RESULTS = ROOT / "profiling" / "results"
DEFAULT_DATABASE_URL = f"sqlite:///{ROOT / 'var' / 'lab.db'}"
PAYMENTS_APP = "service.payments:create_app()"
STOCK_PRODUCTS = 10  # products with a huge stock, so that no order of the lab runs out
# A W3C traceparent whose "sampled" flag is off: the lab's own check requests make no
# spans (the servers sample by parent), so the traces hold the load and nothing else.
UNSAMPLED = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-00"}


# Settings and experiments


def experiments(settings: Settings, today: date) -> dict[str, Experiment]:
    # The whole seeded history (the seed spreads orders over 60 days; the API allows 3660).
    everything = f"from={today - timedelta(days=3000)}&to={today}"
    return {
        "cpu": Experiment(
            name="cpu",
            title="CPU-bound: the sales report computed in Python",
            api_env={"LAB_ROUTES": "true"},
            payments_env={},
            report_path=f"/lab/sales-in-python?group_by=product&{everything}",
            order_share=0,
        ),
        "io": Experiment(
            name="io",
            title="IO-bound: a slow payments service and a slow query",
            api_env={"REPORTS_SQL_DELAY_MS": str(settings.sql_delay_ms), "LAB_ROUTES": "true"},
            payments_env={"PAYMENTS_LATENCY_MS": str(settings.payments_latency_ms)},
            # One day without orders: the report's own work is nil, its time is the sleep
            # (the lab's route, uncached: the API's report would answer repeats from its cache).
            report_path="/lab/sales-in-python?group_by=day&from=2020-01-01&to=2020-01-01",
            order_share=settings.order_share,
        ),
    }


HELP = {
    "--database-url": "database to seed and use (LAB_DATABASE_URL; default the SQLite file "
    "var/lab.db)",
    "--orders": "seeded orders (LAB_ORDERS, default 22000; 1 in 12 cancelled, the rest paid)",
    "--seconds": "each py-spy window (LAB_SECONDS, default 5); an experiment records four",
    "--connections": "wrk connections (2: one per worker, no queue)",
    "--order-share": "percent of io requests placing an order",
    "--out": "lab-report.md here, the run in lab/<time>/",
}


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="make lab", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    database_url = env("LAB_DATABASE_URL") or DEFAULT_DATABASE_URL
    add("--database-url", default=database_url, help=HELP["--database-url"])
    add("--orders", type=int, default=int(env("LAB_ORDERS", "22000")), help=HELP["--orders"])
    add("--products", type=int, default=200, help="seeded products")
    add("--seconds", type=float, default=float(env("LAB_SECONDS", "5")), help=HELP["--seconds"])
    add("--warmup", type=float, default=3.0, help="seconds of load first")
    add("--rate", type=int, default=100, help="py-spy samples per second")
    add("--connections", type=int, default=2, help=HELP["--connections"])
    add("--payments-latency-ms", type=int, default=150)
    add("--sql-delay-ms", type=int, default=200)
    add("--order-share", type=int, default=75, help=HELP["--order-share"])
    add("--experiments", default="cpu,io", help="comma-separated: cpu,io")
    add("--out", type=Path, default=RESULTS, help=HELP["--out"])
    return parser


def _parse(argv: Sequence[str] | None) -> Settings:
    parser = _parser()
    args = parser.parse_args(argv)
    chosen = tuple(name.strip() for name in args.experiments.split(",") if name.strip())
    unknown = set(chosen) - {"cpu", "io"}
    if unknown or not chosen:
        parser.error(f"--experiments: choose from cpu, io (got {args.experiments!r})")
    return Settings(**{**vars(args), "experiments": chosen})


# The database: migrated and seeded once, then reused


def prepare_database(settings: Settings) -> dict[str, int]:
    """Migrate, then seed up to `settings.orders` orders; return what the database holds."""
    url = database.create_if_missing(settings.database_url, "lab")
    database.migrate(settings.database_url)
    engine = sa.create_engine(url)
    try:
        have = _counts(engine)
        missing = settings.orders - have["orders"]
        if missing > 0 or have["products"] == 0:
            products = settings.products if have["products"] == 0 else 0
            database.seed(
                settings.database_url, products=products, orders=max(missing, 0), prefix="lab"
            )
            have = _counts(engine)
    finally:
        engine.dispose()
    return have


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            "products": int(connection.scalar(sa.text("SELECT count(*) FROM products"))),
            "orders": int(connection.scalar(sa.text("SELECT count(*) FROM orders"))),
            "paid_orders": int(
                connection.scalar(sa.text("SELECT count(*) FROM orders WHERE status = 'paid'"))
            ),
        }


# The servers


def telemetry_env(receiver: Receiver, service_name: str) -> dict[str, str]:
    """Every span sampled and exported to the lab's receiver; no metrics or logs export."""
    return {
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "500",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }


@contextlib.contextmanager
def servers(
    settings: Settings, experiment: Experiment, receiver: Receiver, run_dir: Path
) -> Iterator[tuple[GunicornServer, GunicornServer]]:
    """The payments service and the API pointing at it, started together, always stopped."""
    latency_s = settings.payments_latency_ms / 1000
    payments_env = {
        **telemetry_env(receiver, "glassbox-payments"),
        "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics-payments"),
        **experiment.payments_env,
    }
    payments = GunicornServer(
        measured_env(payments_env, WORKERS), run_dir / "payments.log", PAYMENTS_APP
    )
    api_env = {
        **telemetry_env(receiver, "glassbox-api"),
        "DATABASE_URL": settings.database_url,
        "PAYMENTS_URL": payments.base_url,
        # Above the injected latency, and no retries: one call per order.
        "PAYMENTS_TIMEOUT": str(max(2.0, 4 * latency_s)),
        "PAYMENTS_RETRIES": "0",
        # Every request comes from one key and address: the limiter would answer 429.
        "RATELIMIT_ENABLED": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics-api"),
        **experiment.api_env,
    }
    api = GunicornServer(measured_env(api_env, WORKERS), run_dir / "api.log")
    try:
        for server in (payments, api):
            server.launch()
        for server in (payments, api):
            server.wait_ready("/health/live", timeout=60)
        yield api, payments
    finally:
        api.stop()
        payments.stop()


def _stock_product(category_id: int, number: int) -> dict[str, object]:
    """A product no order of the lab can exhaust."""
    return {
        "sku": f"LAB-STOCK-{secrets.token_hex(4)}",
        "name": f"Lab stock {number}",
        "price": "9.50",
        "stock": 1_000_000_000,
        "category_id": category_id,
    }


def stock_products(api: GunicornServer, token: str) -> list[int]:
    """Ids of the lab's products with a huge stock, created through the API when missing."""
    found = requests.get(
        f"{api.base_url}/api/v1/products",
        params={"q": "Lab stock", "limit": "100"},
        headers=UNSAMPLED,
        timeout=30,
    )
    found.raise_for_status()
    ids = [item["id"] for item in found.json()["items"] if item["sku"].startswith("LAB-STOCK-")]
    categories = requests.get(
        f"{api.base_url}/api/v1/categories", params={"limit": 1}, headers=UNSAMPLED, timeout=30
    )
    categories.raise_for_status()
    category_id = categories.json()["items"][0]["id"]
    headers = {"Authorization": f"Bearer {token}", **UNSAMPLED}
    while len(ids) < STOCK_PRODUCTS:
        body = _stock_product(category_id, len(ids) + 1)
        created = requests.post(api.url("/api/v1/products"), json=body, headers=headers, timeout=30)
        if created.status_code != 201:
            raise RuntimeError(f"creating a lab product: {created.status_code} {created.text}")
        ids.append(created.json()["id"])
    return ids[:STOCK_PRODUCTS]


def check_answers(
    api: GunicornServer, experiment: Experiment, token: str, product_ids: list[int]
) -> None:
    """One request of each kind the load sends, before measuring anything."""
    headers = {"Authorization": f"Bearer {token}", **UNSAMPLED}
    report = requests.get(api.base_url + experiment.report_path, headers=headers, timeout=120)
    if report.status_code != 200:
        raise RuntimeError(f"the report answered {report.status_code}: {report.text[:500]}")
    if experiment.order_share:
        order = requests.post(
            f"{api.base_url}/api/v1/orders",
            json={
                "customer_email": "lab@example.com",
                "items": [{"product_id": product_ids[0], "quantity": 1}],
            },
            headers=headers,
            timeout=60,
        )
        if order.status_code != 201 or order.json()["status"] != "paid":
            raise RuntimeError(f"an order answered {order.status_code}: {order.text[:500]}")


# Load


def start_load(
    api: GunicornServer,
    experiment: Experiment,
    *,
    token: str,
    product_ids: list[int],
    connections: int,
    seconds: float,
    log_path: Path,
) -> Any:
    """wrk for at most `seconds`; the lab stops it earlier with SIGINT (wrk then reports)."""
    env = {
        "LAB_REPORT_PATH": experiment.report_path,
        "LAB_ORDER_SHARE": str(experiment.order_share),
        "LAB_TOKEN": token,
        "LAB_PRODUCT_IDS": ",".join(map(str, product_ids)),
    }
    command = wrk_command(
        api.base_url, script="lab.lua", seconds=seconds, connections=connections, timeout="30s"
    )
    return start_wrk(command, env, log_path)


def wait_for_spans(receiver: Receiver, *, quiet: float = 1.5, timeout: float = 30.0) -> int:
    """Poll until no span arrived for `quiet` seconds (the exporters flush every 0.5 s)."""
    deadline = time.monotonic() + timeout
    count = receiver.span_count()
    changed = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)  # polling interval
        now = receiver.span_count()
        if now != count:
            count, changed = now, time.monotonic()
        elif time.monotonic() - changed >= quiet:
            break
    return count


# One experiment


def record(workers: list[int], out: Path, label: str, settings: Settings) -> Recording:
    """Raw collapsed stacks of every worker, then an SVG flame graph (two consecutive windows:
    one py-spy per process at a time, see profiling/pyspy.py)."""
    idle = label == "idle"
    raws = {pid: out / f"worker-{pid}-{label}.txt" for pid in workers}
    svgs = {pid: out / f"worker-{pid}-{label}.svg" for pid in workers}
    reports = pyspy.record_in_parallel(raws, "raw", settings.seconds, idle=idle, rate=settings.rate)
    reports += pyspy.record_in_parallel(
        svgs, "flamegraph", settings.seconds, idle=idle, rate=settings.rate
    )
    stacks = collapsed.read_stacks(raws.values())
    main = collapsed.profile(stacks, lambda stack: not collapsed.is_background_thread(stack))
    background = collapsed.profile(stacks, collapsed.is_background_thread)
    return Recording(
        label=label,
        svgs=list(svgs.values()),
        raws=list(raws.values()),
        window_s=max(1, round(settings.seconds)),
        rate=settings.rate,
        profile=main,
        background_samples=background.samples,
        py_spy=reports,
    )


LABELS = ("cpu", "idle")  # py-spy's default (on-CPU) and --idle (waiting threads too)


def record_under_load(
    settings: Settings,
    experiment: Experiment,
    api: GunicornServer,
    token: str,
    out: Path,
    progress: Steps,
) -> tuple[dict[str, Any], float, dict[str, Recording]]:
    """wrk against the API while py-spy records its workers; wrk's summary, its seconds, the
    recordings."""
    product_ids = stock_products(api, token) if experiment.order_share else []
    check_answers(api, experiment, token, product_ids)
    workers = pyspy.workers_of(api.pid)
    # Warm-up, two windows (raw, SVG) per label, and room for py-spy's own start-up.
    budget = settings.warmup + 2 * len(LABELS) * (settings.seconds + 5) + 30
    wrk_log = out / "wrk.log"
    started = time.monotonic()
    load = start_load(
        api,
        experiment,
        token=token,
        product_ids=product_ids,
        connections=settings.connections,
        seconds=budget,
        log_path=wrk_log,
    )
    recordings: dict[str, Recording] = {}
    try:
        time.sleep(settings.warmup)  # let the load reach its level before sampling
        for label in LABELS:
            progress.say(f"{experiment.name}: py-spy {label} on workers {workers}")
            recordings[label] = record(workers, out, label, settings)
            progress.advance()
    finally:
        stats = stop_wrk(load, wrk_log)
    return stats, time.monotonic() - started, recordings


def run_experiment(
    settings: Settings,
    experiment: Experiment,
    receiver: Receiver,
    token: str,
    run_dir: Path,
    progress: Steps,
) -> Result:
    out = run_dir / experiment.name
    out.mkdir(parents=True, exist_ok=True)
    booting = time.monotonic()
    with servers(settings, experiment, receiver, out) as (api, _payments):
        progress.say(f"{experiment.name}: servers up in {time.monotonic() - booting:.1f} s")
        receiver.clear()
        stats, load_seconds, recordings = record_under_load(
            settings, experiment, api, token, out, progress
        )
    # The servers are stopped: each worker flushed its spans on the way out.
    count = wait_for_spans(receiver)
    spans = receiver.spans()
    return Result(
        experiment=experiment,
        load=stats,
        load_seconds=load_seconds,
        recordings=recordings,
        spans=span_stats(spans),
        span_count=count,
        traces=len({span.trace_id for span in spans if not span.parent_span_id}),
    )


# The run


def run(settings: Settings) -> tuple[list[Result], Path]:
    """Prepare, run the chosen experiments, write the report; return the results and its path."""
    pyspy.py_spy_binary()
    wrk_binary()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = settings.out / "lab" / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_database(settings)
    print(
        f"lab: {data['products']} products, {data['orders']} orders ({data['paid_orders']} paid); "
        f"writing {run_dir}"
    )
    name = f"lab-{stamp}-{secrets.token_hex(3)}"
    token = run_flask(
        "api-keys",
        "create",
        name,
        "--scope",
        "customer",
        "--scope",
        "operator",
        env=cli_env(settings.database_url),
    ).strip()
    chosen = experiments(settings, datetime.now(UTC).date())
    results = []
    total = len(settings.experiments) * len(LABELS)
    with otlp_sink(keep=True) as receiver, steps("lab", "py-spy recordings", total) as progress:
        for name in settings.experiments:
            progress.say(f"experiment {name}: {chosen[name].title}")
            results.append(
                run_experiment(settings, chosen[name], receiver, token, run_dir, progress)
            )
            print(format_summary(results[-1], settings.top))  # above the bar on a terminal
    report = settings.out / "lab-report.md"
    report.write_text(report_markdown(results, settings, data, settings.out), encoding="utf-8")
    (run_dir / "summary.json").write_text(
        json.dumps(summary_json(results), indent=2, default=str), encoding="utf-8"
    )
    return results, report


def main(argv: Sequence[str] | None = None) -> int:
    settings = _parse(argv)
    # Progress lines as they happen, also when the output goes to a file or a pipe.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        _results, report = run(settings)
    except pyspy.ProfilingError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    print(f"lab: report in {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
