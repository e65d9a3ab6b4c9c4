"""Every PromQL expression of the stack, evaluated by a real Prometheus against the real app.

The API and the payments service run under gunicorn (2 workers each, prometheus_client
multiprocess mode) on PostgreSQL and Redis; Debian's Prometheus scrapes their /metrics every
second and evaluates the rule files. After two bursts of traffic (orders paid and declined, a
cancellation, cache misses and hits, 404, 422, 429), every dashboard query, dashboard
variable, datasource query and recording rule must return data with a finite value, and every
alert expression must evaluate without error.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from profiling.harness.processes import free_port
from service.auth import service as auth
from tests.conftest import TEST_REDIS_URL, _clean, build_app, require
from tests.factories import Factories
from tests.observability.conftest import (
    DASHBOARD_DIR,
    DATASOURCES,
    ROOT,
    RULE_FILES,
    load_yaml,
)

VENV_BIN = ROOT / ".venv" / "bin"
ENVIRONMENT = "test"  # the deployment_environment label the scrape config adds
RATE_LIMIT = 40  # per minute and API key: the burst key goes over it, the shopper key does not
SECRET_KEY = "observability-live-test-secret-key-0123456789"
# Grafana's variables, as it would fill them in with this environment selected.
GRAFANA_RANGE = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll until `check()` returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (requests.RequestException, KeyError, ValueError) as error:
            last_error = error
        else:
            if value:
                return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last_error})")


@dataclass
class Process:
    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def gunicorn(name: str, port: int, env: dict[str, str], tmp: Path, app: str = "") -> Process:
    metrics_dir = tmp / f"{name}-metrics"
    metrics_dir.mkdir()
    command = [str(VENV_BIN / "gunicorn"), "-c", "python:service.gunicorn_conf"]
    if app:
        command.append(app)
    return Process(
        name,
        command,
        {
            **env,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        tmp / f"{name}.log",
    )


@dataclass
class Stack:
    prometheus_url: str
    api_url: str
    targets: dict[str, str]  # job -> instance
    shopper_key: str
    burst_key: str
    product_ids: list[int]
    expensive_product_id: int
    processes: list[Process] = field(default_factory=list)

    def query(self, expr: str) -> dict[str, Any]:
        response = requests.post(
            f"{self.prometheus_url}/api/v1/query", data={"query": expr}, timeout=10
        )
        body = response.json()
        assert body["status"] == "success", f"{expr}\n{body}"
        return body["data"]

    def scraped_after(self, moment: float) -> None:
        """Wait for a scrape of every target that started after `moment` (a Unix time)."""
        wait_for(
            lambda: any(
                v > moment
                for v in self.values(
                    f'min(timestamp(up{{deployment_environment="{ENVIRONMENT}"}}))'
                )
            ),
            "a scrape after the traffic",
        )

    def evaluated_after(self, moment: float) -> None:
        """Wait until every rule has been evaluated for every scraped job after `moment`,
        twice over: the SLO budget group reads the 5-minute ratios that another group
        records, so its series stand complete only after a round that started once the
        ratios had the traffic (the latency budget of a job was seen missing after one)."""
        for round_started in (moment, None):
            started = time.time() if round_started is None else round_started
            for rule in always_recorded():
                wait_for(
                    lambda name=rule["record"], started=started: (
                        self.jobs_evaluated_after(name, started) == set(self.targets)
                    ),
                    f"an evaluation of {rule['record']} for every job after {started}",
                )

    def jobs_evaluated_after(self, name: str, moment: float) -> set[str]:
        data = self.query(f'timestamp({name}{{deployment_environment="{ENVIRONMENT}"}})')
        return {
            sample["metric"]["job"]
            for sample in data["result"]
            if float(sample["value"][1]) > moment
        }

    def values(self, expr: str) -> list[float]:
        data = self.query(expr)
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(sample["value"][1]) for sample in data["result"]]


def send_traffic(stack: Stack) -> None:
    """One burst: what a shopper does, plus a few mistakes and a client over its limit."""
    api = stack.api_url
    shopper = {"Authorization": f"Bearer {stack.shopper_key}"}

    def call(method: str, path: str, expected: int, **kwargs: Any) -> requests.Response:
        response = requests.request(method, api + path, headers=shopper, timeout=30, **kwargs)
        assert response.status_code == expected, (method, path, response.text)
        return response

    product = stack.product_ids[0]
    for _ in range(2):  # the second of each is a cache hit
        call("GET", f"/api/v1/products/{product}", 200)
        call("GET", "/api/v1/products?limit=5", 200)
        call("GET", "/api/v1/categories", 200)
    call("GET", "/api/v1/products/999999", 404)
    call("POST", "/api/v1/orders", 422, json={"customer_email": "not-an-email", "items": []})
    order = call(
        "POST",
        "/api/v1/orders",
        201,
        json={
            "customer_email": "ada@example.com",
            "items": [{"product_id": product, "quantity": 1}],
        },
    ).json()
    assert order["status"] == "paid"
    call("POST", f"/api/v1/orders/{order['id']}/cancel", 200)
    declined = requests.post(
        api + "/api/v1/orders",
        headers=shopper,
        json={
            "customer_email": "big@example.com",
            "items": [{"product_id": stack.expensive_product_id, "quantity": 1}],
        },
        timeout=30,
    )
    # The payments service declines amounts over 10,000: the order is cancelled.
    assert declined.status_code in (201, 402), declined.text
    # A client over its limit: RATE_LIMIT + 5 requests in one minute with one key.
    burst = {"Authorization": f"Bearer {stack.burst_key}"}
    statuses = [
        requests.get(f"{api}/api/v1/categories", headers=burst, timeout=30).status_code
        for _ in range(RATE_LIMIT + 5)
    ]
    assert 429 in statuses


@pytest.fixture(scope="module")
def stack(
    prometheus_binaries: dict[str, str],
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    redis_url = require(TEST_REDIS_URL, "TEST_REDIS_URL (Redis)")
    redis.Redis.from_url(redis_url).flushdb()
    tmp = tmp_path_factory.mktemp("promql-live")

    app = build_app(postgres_url, redis_url)
    make = Factories(app)
    category = make.category()
    products = [make.product(category_id=category.id, stock=100) for _ in range(3)]
    expensive = make.product(category_id=category.id, stock=10, price=Decimal("20000.00"))
    with app.app_context():
        shopper_key = auth.create_key(name="live-shopper", scopes=auth.DEVELOPMENT_SCOPES)
        burst_key = auth.create_key(name="live-burst", scopes=auth.DEVELOPMENT_SCOPES)

    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GLASSBOX_ENV": "production",
        "SECRET_KEY": SECRET_KEY,
        "PAYMENTS_SHARED_SECRET": SECRET_KEY,  # production refuses the development one
        "PAYMENTS_DATABASE_URL": f"sqlite:///{tmp / 'payments-ledger.db'}",
        "LOG_LEVEL": "WARNING",
        # No collector here: metrics reach Prometheus by the scrape path only.
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    payments_port, api_port, prometheus_port = free_port(), free_port(), free_port()
    payments = gunicorn(
        "payments", payments_port, base_env, tmp, app="service.payments:create_app()"
    )
    api = gunicorn(
        "api",
        api_port,
        {
            **base_env,
            "DATABASE_URL": postgres_url,
            "REDIS_URL": redis_url,
            "RATELIMIT_DEFAULT": f"{RATE_LIMIT} per minute",
            "PAYMENTS_URL": f"http://127.0.0.1:{payments_port}",
        },
        tmp,
    )
    # The orders/ledger reconciliation as a periodic job, scraped beside the services.
    reconcile_port = free_port()
    reconcile = Process(
        "reconcile",
        [
            *(str(VENV_BIN / "flask"), "--app", "service", "orders", "reconcile"),
            *("--every", "1", "--metrics-port", str(reconcile_port), "--metrics-host", "127.0.0.1"),
        ],
        {**base_env, "DATABASE_URL": postgres_url},
        tmp / "reconcile.log",
    )
    targets = {
        "glassbox-api": f"127.0.0.1:{api_port}",
        "glassbox-payments": f"127.0.0.1:{payments_port}",
    }
    jobs = {**targets, "glassbox-reconcile": f"127.0.0.1:{reconcile_port}"}
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {"targets": [target], "labels": {"deployment_environment": ENVIRONMENT}}
                ],
            }
            for job, target in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    prometheus = Process(
        "prometheus",
        [
            prometheus_binaries["prometheus"],
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--enable-feature=exemplar-storage",
        ],
        {"PATH": base_env["PATH"]},
        tmp / "prometheus.log",
    )
    processes = [payments, api, reconcile, prometheus]
    live = Stack(
        prometheus_url=f"http://127.0.0.1:{prometheus_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        targets=targets,
        shopper_key=shopper_key,
        burst_key=burst_key,
        product_ids=[p.id for p in products],
        expensive_product_id=expensive.id,
        processes=processes,
    )
    try:
        for process in processes:
            process.start()
        for name, url in (("payments", f"http://127.0.0.1:{payments_port}"), ("api", live.api_url)):
            wait_for(
                lambda url=url: requests.get(f"{url}/health/ready", timeout=2).ok, f"{name} ready"
            )
        wait_for(
            lambda: requests.get(f"{live.prometheus_url}/-/ready", timeout=2).ok, "prometheus ready"
        )
        wait_for(
            lambda: len(live.values('up{deployment_environment="test"} == 1')) == len(jobs),
            "every target scraped",
        )
        # Two bursts, each followed by a scrape that began after it ended, so that counters
        # grow while Prometheus watches: rate() and increase() then see the traffic.
        for _ in range(2):
            send_traffic(live)
            live.scraped_after(time.time())
        assert live.values('sum(glassbox_orders_placed_total{status="paid"})') == [2.0]
        # ...and the recording rules have been evaluated on that last scrape.
        live.evaluated_after(time.time())
        yield live
    except BaseException:
        for process in processes:
            print(f"--- {process.name} log ---\n{process.tail()}")
        raise
    finally:
        for process in reversed(processes):
            process.stop()
        _clean(app)
        redis.Redis.from_url(redis_url).flushdb()


def fill_in(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana's $name and ${name} variables with concrete values."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


def dashboard_values(stack: Stack, service: str) -> dict[str, str]:
    return {
        **GRAFANA_RANGE,
        "env": ENVIRONMENT,
        "service": service,
        # Grafana escapes a selected value for the regex, inside a PromQL string literal.
        "instance": re.escape(stack.targets[service]).replace("\\", "\\\\"),
    }


def label_values_as_promql(query: str) -> tuple[str, str]:
    """Grafana's label_values(selector, label) as the PromQL that yields the same values."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
    assert match, query
    return f"count by ({match.group(2)}) ({match.group(1)})", match.group(2)


def dashboard_targets() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        model = json.loads(path.read_text())
        for panel in model["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] != "prometheus":
                    continue  # LogQL and Pyroscope selectors: test_dashboards.py
                found.append((path.stem, f"{panel['title']} [{target['refId']}]", target["expr"]))
    return found


def assert_finite_data(stack: Stack, expr: str, what: str) -> list[float]:
    values = stack.values(expr)
    assert values, f"{what}: no data for\n{expr}"
    assert any(math.isfinite(v) for v in values), f"{what}: only {values} for\n{expr}"
    return values


# Panels whose data come from the api only (payments serves HTTP and runtime metrics too).
PAYMENTS_PANELS = ("service-overview", "runtime")


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    evaluated = 0
    for dashboard, panel, expr in dashboard_targets():
        services = ["glassbox-api"]
        if dashboard in PAYMENTS_PANELS:
            services.append("glassbox-payments")
        for service in services:
            assert_finite_data(
                stack, fill_in(expr, dashboard_values(stack, service)), f"{dashboard}: {panel}"
            )
            evaluated += 1
    # The same queries with "All" selected, as a dashboard opens.
    for dashboard, panel, expr in dashboard_targets():
        values = {**GRAFANA_RANGE, "env": ENVIRONMENT, "service": ".*", "instance": ".*"}
        assert_finite_data(stack, fill_in(expr, values), f"{dashboard}: {panel} (All)")
        evaluated += 1
    print(f"dashboard queries evaluated: {evaluated} ({len(dashboard_targets())} expressions)")


def test_dashboard_variables_offer_the_scraped_values(stack: Stack) -> None:
    expected = {
        "deployment_environment": {ENVIRONMENT},
        "job": set(stack.targets),
        "instance": set(stack.targets.values()),
    }
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        for variable in json.loads(path.read_text())["templating"]["list"]:
            promql, label = label_values_as_promql(variable["query"])
            values = {"env": ENVIRONMENT, "service": ".*"}
            data = stack.query(fill_in(promql, values))["result"]
            offered = {sample["metric"][label] for sample in data}
            assert offered == expected[label], (path.name, variable["name"], offered)


def test_datasource_trace_to_metrics_queries_return_data(stack: Stack) -> None:
    jaeger = next(d for d in load_yaml(DATASOURCES)["datasources"] if d["uid"] == "jaeger")
    for item in jaeger["jsonData"]["tracesToMetrics"]["queries"]:
        # Grafana turns $$ into $ at provisioning, then $__tags into the span's tags.
        expr = item["query"].replace("$$__tags", 'job="glassbox-api"')
        assert_finite_data(stack, expr, f"Jaeger datasource: {item['name']}")


def rules_of(kind: str) -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if kind in rule
    ]


# Recorded only while an objective burns (rules/slo_budget.yml); promtool tests it.
RECORDED_WHILE_BURNING = {"slo:time_to_exhaustion:seconds"}


def always_recorded() -> list[dict[str, Any]]:
    return [r for r in rules_of("record") if r["record"] not in RECORDED_WHILE_BURNING]


def test_every_recording_rule_returns_data(stack: Stack) -> None:
    for rule in always_recorded():
        values = assert_finite_data(stack, rule["expr"], rule["record"])
        # Both services were scraped, each is recorded under its own job.
        recorded = stack.query(f'{rule["record"]}{{deployment_environment="{ENVIRONMENT}"}}')
        jobs = {sample["metric"]["job"] for sample in recorded["result"]}
        assert jobs == set(stack.targets), (rule["record"], jobs)
        if rule["record"].startswith("job:"):  # the shares of bad requests
            assert all(0 <= v <= 1 for v in values if math.isfinite(v)), (rule["record"], values)


def test_every_alert_expression_evaluates(stack: Stack) -> None:
    for rule in rules_of("alert"):
        stack.query(rule["expr"])  # asserts status success


def test_alerts_that_must_be_quiet_are_quiet(stack: Stack) -> None:
    """With both targets up and metrics arriving, these have nothing to say."""
    for name in (
        "PrometheusScrapeTargetDown",
        "GlassboxProcessesAbsent",
        "GlassboxDatabaseErrors",
        "GlassboxAvailabilityBudgetBurnFast",
        "GlassboxAvailabilityBudgetBurnSlow",
    ):
        (rule,) = [r for r in rules_of("alert") if r["alert"] == name]
        assert stack.values(rule["expr"]) == [], name


def test_prometheus_evaluates_every_rule_without_error(stack: Stack) -> None:
    groups = requests.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()["data"]
    seen = 0
    for group in groups["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
            seen += 1
    assert seen == len(rules_of("record")) + len(rules_of("alert"))


def test_the_traffic_is_what_the_metrics_say(stack: Stack) -> None:
    """A few sums checked against the requests sent: the scrape path counts what happened."""
    api = 'job="glassbox-api"'
    # Declined payments end `payment_failed`; only the customers' two cancels are cancellations.
    declined = stack.values(f'sum(glassbox_orders_placed_total{{{api}, status="payment_failed"}})')
    assert declined == [2.0]
    assert stack.values(f"sum(glassbox_orders_cancelled_total{{{api}}})") == [2.0]
    assert stack.values(f'sum(glassbox_orders_placed_total{{{api}, status="paid"}})') == [2.0]
    statuses = stack.query(
        f"sum by (http_response_status_code) (http_server_request_duration_seconds_count{{{api}}})"
    )["result"]
    codes = {s["metric"]["http_response_status_code"] for s in statuses}
    assert {"200", "201", "404", "422", "429"} <= codes
    hits = stack.values(f'sum(glassbox_cache_requests_total{{{api}, result="hit"}})')
    misses = stack.values(f'sum(glassbox_cache_requests_total{{{api}, result="miss"}})')
    assert hits[0] > 0
    assert misses[0] > 0
    assert stack.values(f"sum(rate(glassbox_ratelimit_rejections_total{{{api}}}[1m]))")[0] > 0
    assert stack.values(f"sum(rate(glassbox_orders_placed_total{{{api}}}[1m]))")[0] > 0
    # Each worker that served a request reports through the one scrape (2 workers run;
    # the kernel decides which of them accepted the connections).
    workers = stack.query(f"count by (worker) (process_cpu_time_seconds_total{{{api}}})")["result"]
    assert 1 <= len(workers) <= 2
    outcomes = {
        s["metric"]["outcome"]
        for s in stack.query("sum by (outcome) (glassbox_payments_duration_seconds_count)")[
            "result"
        ]
    }
    assert {"approved", "declined"} <= outcomes
    # The route template, not the raw path, labels the requests.
    routes = {
        s["metric"].get("http_route", "")
        for s in stack.query(
            f"count by (http_route) (http_server_request_duration_seconds_count{{{api}}})"
        )["result"]
    }
    assert "/api/v1/products/{product_id}" in routes
    assert not any(re.search(r"/\d+", r) for r in routes), routes
