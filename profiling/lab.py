"""`make lab`: what a sampling profiler sees versus what distributed tracing sees.

    python -m profiling.lab [--database-url URL] [--orders N] [--seconds S] [--out DIR]
                            [--experiments cpu,io] [--payments-latency-ms MS] [--sql-delay-ms MS]

Starts its own API (gunicorn, 2 sync workers), payments service and OTLP/HTTP receiver on
free 127.0.0.1 ports, seeds the database once (LAB_DATABASE_URL, default the SQLite file
var/lab.db; later runs reuse the data), then runs two experiments under wrk load while
py-spy records every API worker, on-CPU and with `--idle`:

1. cpu: the sales report grouped by product over every seeded order — Python arithmetic.
2. io: order placement with the payments service slowed (PAYMENTS_LATENCY_MS) and a sales
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
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from profiling import collapsed, pyspy
from profiling.otlp import Receiver, Span, self_times, serve_receiver
from profiling.servers import (
    Server,
    clean_environment,
    free_port,
    start_gunicorn,
    stop,
    wait_until_ready,
)
from service.config import database_url as parse_database_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "profiling" / "results"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "lab.lua"
DEFAULT_DATABASE_URL = f"sqlite:///{ROOT / 'var' / 'lab.db'}"
PAYMENTS_APP = "service.payments:create_app()"
WORKERS = 2
STOCK_PRODUCTS = 10  # products with a huge stock, so that no order of the lab runs out
# A W3C traceparent whose "sampled" flag is off: the lab's own check requests make no
# spans (the servers sample by parent), so the traces hold the load and nothing else.
UNSAMPLED = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-00"}
SERVICE_FILE = re.compile(r"^service/")


# Settings and experiments


@dataclass(frozen=True)
class Settings:
    database_url: str
    orders: int
    products: int
    seconds: float  # length of each py-spy window
    warmup: float
    rate: int
    connections: int
    payments_latency_ms: int
    sql_delay_ms: int
    order_share: int
    experiments: tuple[str, ...]
    out: Path
    top: int = 8


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    api_env: dict[str, str]
    payments_env: dict[str, str]
    report_path: str
    order_share: int  # percent of requests that place an order, the rest GET report_path

    @property
    def description(self) -> str:
        if self.order_share == 0:
            return f"GET {self.report_path}"
        return (
            f"{self.order_share}% POST /api/v1/orders, "
            f"{100 - self.order_share}% GET {self.report_path}"
        )


def experiments(settings: Settings, today: date) -> dict[str, Experiment]:
    # The whole seeded history (the seed spreads orders over 60 days; the API allows 3660).
    everything = f"from={today - timedelta(days=3000)}&to={today}"
    return {
        "cpu": Experiment(
            name="cpu",
            title="CPU-bound: the sales report",
            api_env={},
            payments_env={},
            report_path=f"/api/v1/reports/sales?group_by=product&{everything}",
            order_share=0,
        ),
        "io": Experiment(
            name="io",
            title="IO-bound: a slow payments service and a slow query",
            api_env={"REPORTS_SQL_DELAY_MS": str(settings.sql_delay_ms)},
            payments_env={"PAYMENTS_LATENCY_MS": str(settings.payments_latency_ms)},
            # One day without orders: the report's own work is nil, its time is the sleep.
            report_path="/api/v1/reports/sales?group_by=day&from=2020-01-01&to=2020-01-01",
            order_share=settings.order_share,
        ),
    }


def _parse(argv: Sequence[str] | None) -> Settings:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="make lab", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=env("LAB_DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="database to seed and use (LAB_DATABASE_URL; default the SQLite file var/lab.db)",
    )
    parser.add_argument(
        "--orders",
        type=int,
        default=int(env("LAB_ORDERS", "22000")),
        help="seeded orders (LAB_ORDERS, default 22000; 1 in 12 cancelled, the rest paid)",
    )
    parser.add_argument("--products", type=int, default=200, help="seeded products")
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(env("LAB_SECONDS", "5")),
        help="each py-spy window (LAB_SECONDS, default 5); an experiment records four",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load first")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--connections", type=int, default=2, help="wrk connections (2: one per worker, no queue)"
    )
    parser.add_argument("--payments-latency-ms", type=int, default=150)
    parser.add_argument("--sql-delay-ms", type=int, default=200)
    parser.add_argument(
        "--order-share", type=int, default=75, help="percent of io requests placing an order"
    )
    parser.add_argument("--experiments", default="cpu,io", help="comma-separated: cpu,io")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="lab-report.md here, the run in lab/<time>/"
    )
    args = parser.parse_args(argv)
    chosen = tuple(name.strip() for name in args.experiments.split(",") if name.strip())
    unknown = set(chosen) - {"cpu", "io"}
    if unknown or not chosen:
        parser.error(f"--experiments: choose from cpu, io (got {args.experiments!r})")
    return Settings(
        database_url=args.database_url,
        orders=args.orders,
        products=args.products,
        seconds=args.seconds,
        warmup=args.warmup,
        rate=args.rate,
        connections=args.connections,
        payments_latency_ms=args.payments_latency_ms,
        sql_delay_ms=args.sql_delay_ms,
        order_share=args.order_share,
        experiments=chosen,
        out=args.out,
    )


# The database: migrated and seeded once, then reused


def _flask(database_url: str, *args: str, timeout: float = 1800) -> str:
    env = clean_environment(
        {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "OTEL_SDK_DISABLED": "true"}
    )
    result = subprocess.run(  # noqa: S603 - the project's own CLI
        [sys.executable, "-m", "flask", "--app", "service", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def _create_postgresql_database(url: sa.URL) -> None:
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": url.database},
            )
            if not exists:
                print(f"lab: creating database {url.database}")
                quoted = connection.dialect.identifier_preparer.quote(str(url.database))
                connection.execute(sa.text(f"CREATE DATABASE {quoted}"))
    finally:
        admin.dispose()


def prepare_database(settings: Settings) -> dict[str, int]:
    """Migrate, then seed up to `settings.orders` orders; return what the database holds."""
    url = parse_database_url(settings.database_url)
    if url.get_backend_name() == "postgresql":
        _create_postgresql_database(url)
    elif url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    _flask(settings.database_url, "db", "upgrade")
    engine = sa.create_engine(url)
    try:

        def counts() -> dict[str, int]:
            with engine.connect() as connection:
                return {
                    "products": int(connection.scalar(sa.text("SELECT count(*) FROM products"))),
                    "orders": int(connection.scalar(sa.text("SELECT count(*) FROM orders"))),
                    "paid_orders": int(
                        connection.scalar(
                            sa.text("SELECT count(*) FROM orders WHERE status = 'paid'")
                        )
                    ),
                }

        have = counts()
        missing = settings.orders - have["orders"]
        if missing > 0 or have["products"] == 0:
            products = settings.products if have["products"] == 0 else 0
            print(f"lab: seeding {products} products and {max(missing, 0)} orders (once)")
            started = time.monotonic()
            _flask(
                settings.database_url,
                "seed",
                "--products",
                str(products),
                "--orders",
                str(max(missing, 0)),
            )
            print(f"lab: seeded in {time.monotonic() - started:.0f} s")
            have = counts()
    finally:
        engine.dispose()
    return have


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
) -> Iterator[tuple[Server, Server]]:
    """The payments service and the API pointing at it, started together, always stopped."""
    latency_s = settings.payments_latency_ms / 1000
    payments_port = free_port()
    started: list[Server] = []
    try:
        started.append(
            start_gunicorn(
                {
                    **telemetry_env(receiver, "glassbox-payments"),
                    "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics-payments"),
                    **experiment.payments_env,
                },
                app=PAYMENTS_APP,
                workers=WORKERS,
                port=payments_port,
                log_path=run_dir / "payments.log",
            )
        )
        started.append(
            start_gunicorn(
                {
                    **telemetry_env(receiver, "glassbox-api"),
                    "DATABASE_URL": settings.database_url,
                    "PAYMENTS_URL": f"http://127.0.0.1:{payments_port}",
                    # Above the injected latency, and no retries: one call per order.
                    "PAYMENTS_TIMEOUT": str(max(2.0, 4 * latency_s)),
                    "PAYMENTS_RETRIES": "0",
                    # Every request comes from one key and address: the limiter would answer 429.
                    "RATELIMIT_ENABLED": "false",
                    "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics-api"),
                    **experiment.api_env,
                },
                workers=WORKERS,
                log_path=run_dir / "api.log",
            )
        )
        for server in started:
            wait_until_ready(server, "/health/live", timeout=60)
        payments, api = started
        yield api, payments
    finally:
        for server in reversed(started):
            stop(server)


def stock_products(api: Server, token: str) -> list[int]:
    """Ids of the lab's products with a huge stock, created through the API when missing."""
    found = requests.get(
        f"{api.url}/api/v1/products",
        params={"q": "Lab stock", "limit": "100"},
        headers=UNSAMPLED,
        timeout=30,
    )
    found.raise_for_status()
    ids = [item["id"] for item in found.json()["items"] if item["sku"].startswith("LAB-STOCK-")]
    categories = requests.get(
        f"{api.url}/api/v1/categories", params={"limit": 1}, headers=UNSAMPLED, timeout=30
    )
    categories.raise_for_status()
    category_id = categories.json()["items"][0]["id"]
    headers = {"Authorization": f"Bearer {token}", **UNSAMPLED}
    while len(ids) < STOCK_PRODUCTS:
        created = requests.post(
            f"{api.url}/api/v1/products",
            json={
                "sku": f"LAB-STOCK-{secrets.token_hex(4)}",
                "name": f"Lab stock {len(ids) + 1}",
                "price": "9.50",
                "stock": 1_000_000_000,
                "category_id": category_id,
            },
            headers=headers,
            timeout=30,
        )
        if created.status_code != 201:
            raise RuntimeError(f"creating a lab product: {created.status_code} {created.text}")
        ids.append(created.json()["id"])
    return ids[:STOCK_PRODUCTS]


def check_answers(api: Server, experiment: Experiment, token: str, product_ids: list[int]) -> None:
    """One request of each kind the load sends, before measuring anything."""
    report = requests.get(api.url + experiment.report_path, headers=UNSAMPLED, timeout=120)
    if report.status_code != 200:
        raise RuntimeError(f"the report answered {report.status_code}: {report.text[:500]}")
    if experiment.order_share:
        order = requests.post(
            f"{api.url}/api/v1/orders",
            json={
                "customer_email": "lab@example.com",
                "items": [{"product_id": product_ids[0], "quantity": 1}],
            },
            headers={"Authorization": f"Bearer {token}", **UNSAMPLED},
            timeout=60,
        )
        if order.status_code != 201 or order.json()["status"] != "paid":
            raise RuntimeError(f"an order answered {order.status_code}: {order.text[:500]}")


# Load


def start_wrk(
    api: Server,
    experiment: Experiment,
    *,
    token: str,
    product_ids: list[int],
    connections: int,
    seconds: float,
    log_path: Path,
) -> subprocess.Popen[bytes]:
    """wrk for at most `seconds`; the lab stops it earlier with SIGINT (wrk then reports)."""
    env = {
        **os.environ,
        "LAB_REPORT_PATH": experiment.report_path,
        "LAB_ORDER_SHARE": str(experiment.order_share),
        "LAB_TOKEN": token,
        "LAB_PRODUCT_IDS": ",".join(map(str, product_ids)),
    }
    command = [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(WRK_SCRIPT),
        api.url,
    ]
    with log_path.open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - wrk with our arguments
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wrk_binary() -> str:
    """wrk from Debian (`make lab` installs it as root when missing)."""
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("lab: wrk is not installed: `apt-get install wrk` (make lab does it)")
    return found


def stop_wrk(process: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("WRK_JSON "):
            data: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
            return data
    raise RuntimeError(f"wrk printed no summary:\n{log_path.read_text(errors='replace')[-2000:]}")


# Reading the spans


@dataclass(frozen=True)
class SpanStat:
    service: str
    name: str
    statement: str  # db.query.text of SQL spans, else empty
    count: int
    self_s: float
    duration_s: float
    share: float  # of all self time received

    @property
    def label(self) -> str:
        # A SQL span's name is the statement's start: its text says which statement it was.
        return f"SQL {shorten(self.statement, 44)!r}" if self.statement else self.name


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def span_stats(spans: Sequence[Span]) -> list[SpanStat]:
    """Spans grouped by service, name and SQL text, by total self time, largest first."""
    own = self_times(spans)
    total_self = sum(own.values()) or 1
    groups: dict[tuple[str, str, str], list[Span]] = defaultdict(list)
    for span in spans:
        statement = " ".join(str(span.attributes.get("db.query.text", "")).split())
        groups[(span.service, span.name, statement)].append(span)
    stats = [
        SpanStat(
            service=service,
            name=name,
            statement=statement,
            count=len(members),
            self_s=sum(own[s.span_id] for s in members) / 1e9,
            duration_s=sum(s.duration_ns for s in members) / 1e9,
            share=sum(own[s.span_id] for s in members) / total_self,
        )
        for (service, name, statement), members in groups.items()
    ]
    return sorted(stats, key=lambda stat: stat.self_s, reverse=True)


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


@dataclass
class Recording:
    label: str  # "cpu": py-spy's default (on-CPU); "idle": --idle (waiting threads too)
    svgs: list[Path]
    raws: list[Path]
    window_s: float
    rate: int
    profile: collapsed.Profile  # the workers' main threads (the request handling)
    background_samples: int  # OpenTelemetry's export threads and other helper threads
    py_spy: list[str] = field(default_factory=list)  # py-spy's "Samples: N Errors: E" lines

    @property
    def busy_share(self) -> float:
        """Main-thread samples per sampling tick: the share of time the workers were sampled
        running (on-CPU) or, with --idle, present at all (close to 1)."""
        ticks = self.window_s * self.rate * len(self.raws)
        return self.profile.samples / ticks if ticks else 0.0


@dataclass
class Result:
    experiment: Experiment
    load: dict[str, Any]
    load_seconds: float
    recordings: dict[str, Recording]
    spans: list[SpanStat]
    span_count: int
    traces: int


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


def run_experiment(
    settings: Settings,
    experiment: Experiment,
    receiver: Receiver,
    token: str,
    run_dir: Path,
) -> Result:
    out = run_dir / experiment.name
    out.mkdir(parents=True, exist_ok=True)
    labels = ("cpu", "idle")
    # Warm-up, two windows (raw, SVG) per label, and room for py-spy's own start-up.
    budget = settings.warmup + 2 * len(labels) * (settings.seconds + 5) + 30
    booting = time.monotonic()
    with servers(settings, experiment, receiver, out) as (api, _payments):
        print(f"lab: {experiment.name}: servers up in {time.monotonic() - booting:.1f} s")
        product_ids = stock_products(api, token) if experiment.order_share else []
        check_answers(api, experiment, token, product_ids)
        workers = pyspy.workers_of(api.pid)
        receiver.clear()
        wrk_log = out / "wrk.log"
        started = time.monotonic()
        load = start_wrk(
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
            for label in labels:
                print(f"lab: {experiment.name}: py-spy {label} on workers {workers}")
                recordings[label] = record(workers, out, label, settings)
        finally:
            stats = stop_wrk(load, wrk_log)
        load_seconds = time.monotonic() - started
    # The servers are stopped: each worker flushed its spans on the way out.
    count = wait_for_spans(receiver)
    spans = receiver.spans()
    traces = len({span.trace_id for span in spans if not span.parent_span_id})
    return Result(
        experiment=experiment,
        load=stats,
        load_seconds=load_seconds,
        recordings=recordings,
        spans=span_stats(spans),
        span_count=count,
        traces=traces,
    )


# Printing and the report


def _is_service(file: str) -> bool:
    return bool(SERVICE_FILE.match(file))


def frame_lines(recording: Recording, top: int) -> list[str]:
    lines = ["  self  function (file)"]
    for frame in recording.profile.top_self(top):
        where = f"{frame.file}:{frame.hottest_line}" if frame.hottest_line else frame.file
        lines.append(f"{frame.share:6.1%}  {frame.name} ({where})")
    return lines


def service_lines(recording: Recording, top: int) -> list[str]:
    lines = ["  total  glassbox function (file)"]
    for frame in recording.profile.top_total(top, _is_service):
        lines.append(f"{frame.share:7.1%}  {frame.name} ({frame.file})")
    return lines or ["  (no glassbox function sampled)"]


def span_lines(result: Result, top: int) -> list[str]:
    lines = ["  self   count  mean self  span (service)"]
    for stat in result.spans[:top]:
        mean_ms = 1000 * stat.self_s / stat.count
        service = stat.service.removeprefix("glassbox-")
        lines.append(
            f"{stat.share:6.1%}  {stat.count:6d}  {mean_ms:7.1f} ms  {stat.label} ({service})"
        )
    return lines


def side_by_side(left_title: str, left: list[str], right_title: str, right: list[str]) -> str:
    width = 62
    rows = [f"{left_title:<{width}} | {right_title}"]
    for index in range(max(len(left), len(right))):
        a = left[index] if index < len(left) else ""
        b = right[index] if index < len(right) else ""
        a = a if len(a) <= width else a[: width - 1] + "…"
        rows.append(f"{a:<{width}} | {b}")
    return "\n".join(rows)


def _load_line(result: Result) -> str:
    load = result.load
    errors = sum(
        load[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    ) + int(load["status_errors"])
    return (
        f"load: wrk, {result.load_seconds:.0f} s, {load['requests']} requests "
        f"({load['requests'] / max(result.load_seconds, 1):.1f}/s), {errors} errors, "
        f"p50 {load['p50_us'] / 1000:.0f} ms, p99 {load['p99_us'] / 1000:.0f} ms; "
        f"traces received: {result.traces} ({result.span_count} spans)"
    )


def format_summary(result: Result, top: int) -> str:
    cpu, idle = result.recordings["cpu"], result.recordings["idle"]
    head = [
        f"== {result.experiment.name}: {result.experiment.title}",
        f"   {result.experiment.description}",
        f"   {_load_line(result)}",
        f"   py-spy: {cpu.profile.samples} on-CPU samples of the workers' main threads "
        f"(on CPU {cpu.busy_share:.0%} of the time), {idle.profile.samples} with --idle",
        "",
    ]
    first = side_by_side(
        "py-spy, default (on-CPU): top frames by self time",
        frame_lines(cpu, top),
        "traces: top spans by self time",
        span_lines(result, top),
    )
    second = side_by_side(
        "py-spy --idle: top frames by self time",
        frame_lines(idle, top),
        "py-spy, default: glassbox functions by total time",
        service_lines(cpu, top),
    )
    return "\n".join(head) + first + "\n\n" + second + "\n"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def report_markdown(
    results: Sequence[Result], settings: Settings, data: dict[str, int], base: Path
) -> str:
    def rel(path: Path) -> str:
        return os.path.relpath(path, base)

    url = parse_database_url(settings.database_url).render_as_string(hide_password=True)
    lines = [
        "# The lab: what a profiler sees versus what tracing sees",
        "",
        f"- run: {datetime.now(UTC).isoformat(timespec='seconds')}, `make lab`",
        f"- database: `{url}` with {data['products']} products, {data['orders']} orders "
        f"({data['paid_orders']} paid)",
        f"- servers: the API and the payments service under gunicorn, {WORKERS} sync workers "
        "each, every span sampled and exported over OTLP/HTTP to the lab's receiver",
        f"- py-spy: every API worker, {settings.rate} samples/s, windows of "
        f"{settings.seconds:g} s: raw stacks (the tables), then the SVG (the pictures), "
        "default and `--idle`",
        '- how to read it: docs/measurement.md, "The lab"',
        "",
    ]
    for result in results:
        experiment = result.experiment
        cpu, idle = result.recordings["cpu"], result.recordings["idle"]
        lines += [
            f"## {experiment.name}: {experiment.title}",
            "",
            f"- load: {_md(experiment.description)}",
            f"- {_md(_load_line(result))}",
            f"- knobs: API {experiment.api_env or 'defaults'}, "
            f"payments {experiment.payments_env or 'defaults'}",
            f"- py-spy default: {cpu.profile.samples} samples of the workers' main threads, on "
            f"CPU {cpu.busy_share:.0%} of the time; `--idle`: {idle.profile.samples} "
            f"(+{idle.background_samples} of background threads)",
            "",
        ]
        for recording in (cpu, idle):
            title = "default (on-CPU)" if recording.label == "cpu" else "`--idle`"
            lines += [f"### Flame graphs, {title}", ""]
            for svg in recording.svgs:
                pid = svg.stem.split("-")[1]
                lines += [f"![worker {pid}, {recording.label}]({rel(svg)})", ""]
        lines += ["### py-spy: top frames by self time", ""]
        rows = []
        for cpu_frame, idle_frame in zip(
            _padded(cpu.profile.top_self(settings.top), settings.top),
            _padded(idle.profile.top_self(settings.top), settings.top),
            strict=True,
        ):
            rows.append([_frame_cell(cpu_frame), _frame_cell(idle_frame)])
        lines += _table(["default (on-CPU)", "`--idle`"], rows)
        lines += ["", "### py-spy: glassbox functions by total time (default)", ""]
        lines += _table(
            ["total", "function", "file"],
            [
                [f"{f.share:.1%}", f"`{f.name}`", f.file]
                for f in cpu.profile.top_total(settings.top, _is_service)
            ],
        )
        lines += ["", "### Traces: top spans by self time", ""]
        lines += _table(
            ["self time", "share", "count", "mean self", "mean duration", "span", "service"],
            [
                [
                    f"{stat.self_s:.2f} s",
                    f"{stat.share:.1%}",
                    str(stat.count),
                    f"{1000 * stat.self_s / stat.count:.1f} ms",
                    f"{1000 * stat.duration_s / stat.count:.1f} ms",
                    f"`{stat.name}`"
                    + (f" `{_md(shorten(stat.statement, 60))}`" if stat.statement else ""),
                    stat.service,
                ]
                for stat in result.spans[: settings.top]
            ],
        )
        lines.append("")
    return "\n".join(lines)


def _padded(frames: list[collapsed.Ranked], size: int) -> list[collapsed.Ranked | None]:
    return [*frames, *([None] * (size - len(frames)))]


def _frame_cell(frame: collapsed.Ranked | None) -> str:
    if frame is None:
        return ""
    return f"{frame.share:.1%} `{frame.name}` ({frame.file})"


def summary_json(results: Sequence[Result]) -> dict[str, Any]:
    """The run's figures, for tests and for comparing runs."""
    out: dict[str, Any] = {}
    for result in results:
        out[result.experiment.name] = {
            "load": result.load,
            "traces": result.traces,
            "spans": [stat.__dict__ for stat in result.spans],
            "recordings": {
                label: {
                    "svgs": [str(p) for p in recording.svgs],
                    "samples": recording.profile.samples,
                    "busy_share": recording.busy_share,
                    "top_self": [f.__dict__ for f in recording.profile.top_self(10)],
                    "service_total": [
                        f.__dict__ for f in recording.profile.top_total(10, _is_service)
                    ],
                    "py_spy": recording.py_spy,
                }
                for label, recording in result.recordings.items()
            },
        }
    return out


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
    token = _flask(
        settings.database_url, "api-keys", "create", f"lab-{stamp}-{secrets.token_hex(3)}"
    )
    token = token.strip()
    receiver, receiver_server = serve_receiver()
    results = []
    try:
        chosen = experiments(settings, datetime.now(UTC).date())
        for name in settings.experiments:
            print(f"lab: experiment {name}: {chosen[name].title}")
            results.append(run_experiment(settings, chosen[name], receiver, token, run_dir))
            print(format_summary(results[-1], settings.top))
    finally:
        receiver_server.shutdown()
        receiver_server.server_close()
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
