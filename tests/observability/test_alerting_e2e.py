"""End to end: an outage reaches the person on call. Debian's Prometheus, Alertmanager and
blackbox_exporter run the repository's rules, Alertmanager config (receivers rendered by
render-receivers.sh, pointed at a webhook in this test) and probe module; the api and the
payments service run under gunicorn (2 workers each) on PostgreSQL and Redis.

Two faults, and the inhibition rules:
- the payments service fails every authorization (PAYMENTS_FAILURE_RATE=1): orders answer
  503, the availability SLO burns, GlassboxAvailabilityBudgetBurnFast must page;
- the api is killed (SIGKILL to its whole process group): GlassboxServiceUnavailable (the
  black-box probe) and GlassboxProcessesAbsent must page;
- alerts posted to Alertmanager as Prometheus posts them: a page inhibits its own tickets only.

Time is scaled for a test, and only the rules' side of it: Prometheus scrapes and evaluates
every second, and every alert's `for` is divided by FOR_SCALE (1m -> 3 s, 2m -> 6 s).
Alertmanager runs its routes as shipped (a page waits group_wait 10 s). A notification must
arrive within the alert's scaled `for` + NOTIFY_MARGIN: the scrape, the evaluation, the 10 s
group wait and this busy machine. At production settings the same path is: a probe every 15 s,
`for: 1m`, 10 s group wait: a killed api pages within two minutes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from profiling.harness.processes import free_port
from service.auth import service as auth
from service.auth.models import Scope
from tests.conftest import TEST_REDIS_URL, _clean, build_app, require
from tests.factories import Factories
from tests.observability.conftest import (
    OBSERVABILITY,
    PROMETHEUS_DIR,
    RULE_FILES,
    load_yaml,
    render_alertmanager_config,
)
from tests.observability.test_promql_live import Process, wait_for
from tests.processes import PAYMENTS_APP, start_gunicorn
from tests.reliability.servers import server_env

ENVIRONMENT = "e2e"
FOR_SCALE = 20
NOTIFY_MARGIN = 40.0  # seconds beyond the scaled `for`
SECRET_KEY = "alerting-e2e-test-secret-key-0123456789abcdef"


def seconds(duration: str) -> float:
    """A Prometheus duration of the rule files (30s, 2m, 1h) in seconds."""
    number, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(number) * {"s": 1, "m": 60, "h": 3600}[unit]


def scaled_for(alert: dict[str, Any]) -> float:
    return max(1.0, seconds(alert.get("for", "0s")) / FOR_SCALE)


def alerts_by_name() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def write_scaled_rules(folder: Path) -> list[str]:
    """The repository's rule files with every `for` divided by FOR_SCALE."""
    folder.mkdir()
    written = []
    for path in RULE_FILES:
        groups = load_yaml(path)
        for group in groups["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = f"{int(scaled_for(rule))}s"
        (folder / path.name).write_text(json.dumps(groups))  # JSON is YAML
        written.append(str(folder / path.name))
    return written


@dataclass
class Notification:
    receiver_path: str
    body: dict[str, Any]
    received: float  # time.monotonic()


@dataclass
class Webhook:
    """An HTTP server that records every notification Alertmanager posts to it."""

    server: ThreadingHTTPServer
    received: list[Notification] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def firing(self, path: str, alertname: str, job: str) -> list[dict[str, Any]]:
        return [
            alert
            for note in list(self.received)
            if note.receiver_path == path and note.body["status"] == "firing"
            for alert in note.body["alerts"]
            if alert["labels"].get("alertname") == alertname
            and alert["labels"].get("job") == job
            and alert["status"] == "firing"
        ]


def start_webhook() -> Webhook:
    hook = Webhook(ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hook.received.append(Notification(self.path, body, time.monotonic()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    hook.server.RequestHandlerClass = Handler
    threading.Thread(target=hook.server.serve_forever, daemon=True).start()
    return hook


@dataclass
class Stack:
    api: Any
    api_url: str
    prometheus_url: str
    alertmanager_url: str
    webhook: Webhook
    shopper: dict[str, str]
    product_id: int


def blackbox_job(exporter: str, targets: dict[str, str]) -> dict[str, Any]:
    """prometheus.yml's own blackbox job, pointed at this test's exporter and services."""
    (job,) = [
        job
        for job in load_yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]
        if job["job_name"] == "blackbox"
    ]
    job["static_configs"] = [
        {
            "targets": [f"{url}/health/ready"],
            "labels": {"service": service, "deployment_environment": ENVIRONMENT},
        }
        for service, url in targets.items()
    ]
    job["relabel_configs"][-1]["replacement"] = exporter
    job["scrape_interval"] = "1s"
    return dict(job)


@pytest.fixture(scope="module")
def stack(
    prometheus_binaries: dict[str, str],
    alertmanager_binaries: dict[str, str],
    blackbox_exporter: str,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    redis_url = require(TEST_REDIS_URL, "TEST_REDIS_URL (Redis)")
    redis.Redis.from_url(redis_url).flushdb()
    tmp = tmp_path_factory.mktemp("alerting-e2e")
    app = build_app(postgres_url, redis_url)
    make = Factories(app)
    product = make.product(stock=10_000, price=Decimal("5.00"))
    with app.app_context():
        key = auth.create_key(name="e2e-shopper", scopes=[Scope.CUSTOMER])

    webhook = start_webhook()
    for name in ("payments-metrics", "api-metrics"):
        (tmp / name).mkdir()
    services = {
        "SECRET_KEY": SECRET_KEY,
        "PAYMENTS_SHARED_SECRET": SECRET_KEY,
        "GLASSBOX_ENV": "production",
        "OTEL_SDK_DISABLED": "true",
        "LOG_LEVEL": "WARNING",
    }
    payments = start_gunicorn(
        "payments, failing every authorization",
        server_env(
            **services,
            PAYMENTS_DATABASE_URL=f"sqlite:///{tmp / 'ledger.db'}",
            PAYMENTS_FAILURE_RATE="1.0",
            FAULTS_ALLOWED_IN_PRODUCTION="true",  # a rehearsal: production refuses faults
            PROMETHEUS_MULTIPROC_DIR=str(tmp / "payments-metrics"),
        ),
        tmp / "payments.log",
        app=PAYMENTS_APP,
    )
    api = start_gunicorn(
        "api",
        server_env(
            **services,
            DATABASE_URL=postgres_url,
            REDIS_URL=redis_url,
            PAYMENTS_URL=payments.base_url,
            PAYMENTS_RETRIES="0",
            PROMETHEUS_MULTIPROC_DIR=str(tmp / "api-metrics"),
        ),
        tmp / "api.log",
    )
    ports = {name: free_port() for name in ("blackbox", "alertmanager", "prometheus")}
    am_config = render_alertmanager_config(
        {
            "ALERTMANAGER_PAGE_WEBHOOK_URL": f"{webhook.url}/page",
            "ALERTMANAGER_TICKET_WEBHOOK_URL": f"{webhook.url}/ticket",
        },
        tmp / "alertmanager.yml",
    )
    external = load_yaml(PROMETHEUS_DIR / "prometheus.yml")["global"]["external_labels"]
    jobs = {"glassbox-api": api.base_url, "glassbox-payments": payments.base_url}
    config = {
        "global": {
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "evaluation_interval": "1s",
            "external_labels": external,
        },
        "rule_files": write_scaled_rules(tmp / "rules"),
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}
            ]
        },
        "scrape_configs": [
            *(
                {
                    "job_name": job,
                    "static_configs": [
                        {
                            "targets": [url.removeprefix("http://")],
                            "labels": {"deployment_environment": ENVIRONMENT},
                        }
                    ],
                }
                for job, url in jobs.items()
            ),
            blackbox_job(f"127.0.0.1:{ports['blackbox']}", jobs),
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    path_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    tools = [
        Process(
            "blackbox_exporter",
            [
                blackbox_exporter,
                f"--config.file={OBSERVABILITY / 'blackbox' / 'blackbox.yml'}",
                f"--web.listen-address=127.0.0.1:{ports['blackbox']}",
            ],
            path_env,
            tmp / "blackbox.log",
        ),
        Process(
            "alertmanager",
            [
                alertmanager_binaries["prometheus-alertmanager"],
                f"--config.file={am_config}",
                f"--storage.path={tmp / 'alertmanager'}",
                f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                "--cluster.listen-address=",  # one instance: no gossip port
            ],
            path_env,
            tmp / "alertmanager.log",
        ),
        Process(
            "prometheus",
            [
                prometheus_binaries["prometheus"],
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            ],
            path_env,
            tmp / "prometheus.log",
        ),
    ]
    try:
        for tool in tools:
            tool.start()
        for name, port, path in (
            ("blackbox_exporter", ports["blackbox"], "/-/healthy"),
            ("alertmanager", ports["alertmanager"], "/-/ready"),
            ("prometheus", ports["prometheus"], "/-/ready"),
        ):
            wait_for(
                lambda p=port, q=path: requests.get(f"http://127.0.0.1:{p}{q}", timeout=2).ok,
                f"{name} ready",
            )
        yield Stack(
            api=api,
            api_url=api.base_url,
            prometheus_url=f"http://127.0.0.1:{ports['prometheus']}",
            alertmanager_url=f"http://127.0.0.1:{ports['alertmanager']}",
            webhook=webhook,
            shopper={"Authorization": f"Bearer {key}"},
            product_id=product.id,
        )
    except BaseException:
        for tool in tools:
            print(f"--- {tool.name} log ---\n{tool.tail()}")
        raise
    finally:
        for tool in reversed(tools):
            tool.stop()
        api.stop()
        payments.stop()
        webhook.server.shutdown()
        webhook.server.server_close()
        _clean(app)
        redis.Redis.from_url(redis_url).flushdb()


def wait_for_page(stack: Stack, alertname: str, job: str, since: float) -> dict[str, Any]:
    """The first firing notification of `alertname` for `job` on the page receiver, within
    the alert's scaled `for` + NOTIFY_MARGIN of `since`."""
    budget = scaled_for(alerts_by_name()[alertname]) + NOTIFY_MARGIN
    (alert, *_) = wait_for(
        lambda: stack.webhook.firing("/page", alertname, job),
        f"a page for {alertname} ({job})",
        timeout=budget - (time.monotonic() - since),
    )
    return dict(alert)


def assert_actionable(alert: dict[str, Any], anchor: str) -> None:
    """What the person paged reads: severity, environment, absolute links."""
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["deployment_environment"] == ENVIRONMENT
    runbook = alert["annotations"]["runbook_url"]
    assert runbook.startswith("https://"), runbook
    assert runbook.endswith(f"/docs/runbook.md#{anchor}"), runbook
    assert alert["annotations"]["dashboard_url"].startswith("http"), alert["annotations"]


def test_a_failing_payments_provider_pages_for_the_availability_slo(stack: Stack) -> None:
    started = time.monotonic()

    def shop() -> list[dict[str, Any]]:
        # What a shopper does: browse, and try to buy (503: the payments service fails).
        for _ in range(3):
            requests.get(f"{stack.api_url}/api/v1/products?limit=5", timeout=10)
        placed = requests.post(
            f"{stack.api_url}/api/v1/orders",
            headers=stack.shopper,
            json={
                "customer_email": "ada@example.com",
                "items": [{"product_id": stack.product_id, "quantity": 1}],
            },
            timeout=10,
        )
        assert placed.status_code == 503, placed.text
        return stack.webhook.firing("/page", "GlassboxAvailabilityBudgetBurnFast", "glassbox-api")

    budget = scaled_for(alerts_by_name()["GlassboxAvailabilityBudgetBurnFast"]) + NOTIFY_MARGIN
    (alert, *_) = wait_for(shop, "a page for the availability burn", timeout=budget)
    assert_actionable(alert, "glassboxavailabilitybudgetburnfast")
    assert alert["labels"]["slo"] == "availability"
    print(f"SLO burn page after {time.monotonic() - started:.1f} s (budget {budget:.0f} s)")


def test_a_killed_api_pages_by_probe_and_by_absence(stack: Stack) -> None:
    assert requests.get(f"{stack.api_url}/health/ready", timeout=5).ok
    killed = time.monotonic()
    os.killpg(stack.api.pid, signal.SIGKILL)
    probe = wait_for_page(stack, "GlassboxServiceUnavailable", "glassbox-api", killed)
    assert_actionable(probe, "glassboxserviceunavailable")
    assert probe["labels"]["instance"] == f"{stack.api_url}/health/ready"
    absent = wait_for_page(stack, "GlassboxProcessesAbsent", "glassbox-api", killed)
    assert_actionable(absent, "glassboxprocessesabsent")
    # The payments service still answers: nothing pages for it.
    assert not stack.webhook.firing("/page", "GlassboxServiceUnavailable", "glassbox-payments")
    print(f"killed-api pages after {time.monotonic() - killed:.1f} s")


def test_a_page_inhibits_its_own_tickets_only(stack: Stack) -> None:
    """Alerts posted to the running Alertmanager as Prometheus posts them: the fast burn of an
    SLO silences the slow burn of the same SLO, service and environment, not another SLO's;
    an unavailable service silences its other tickets."""

    def alert(name: str, severity: str, job: str, **labels: str) -> dict[str, Any]:
        return {
            "labels": {
                "alertname": name,
                "severity": severity,
                "job": job,
                "deployment_environment": ENVIRONMENT,
                **labels,
            }
        }

    posted = [
        alert("GlassboxAvailabilityBudgetBurnFast", "critical", "inhibit-a", slo="availability"),
        alert("GlassboxAvailabilityBudgetBurnSlow", "warning", "inhibit-a", slo="availability"),
        alert("GlassboxLatencyBudgetBurnSlow", "warning", "inhibit-a", slo="latency"),
        alert("GlassboxAvailabilityBudgetBurnSlow", "warning", "inhibit-b", slo="availability"),
        alert("GlassboxServiceUnavailable", "critical", "inhibit-c"),
        alert("GlassboxDatabasePoolWaits", "warning", "inhibit-c"),
    ]
    response = requests.post(f"{stack.alertmanager_url}/api/v2/alerts", json=posted, timeout=10)
    assert response.status_code == 200, response.text

    def states() -> dict[tuple[str, str], bool] | None:
        found = requests.get(
            f"{stack.alertmanager_url}/api/v2/alerts",
            params={"filter": 'job=~"inhibit-.*"'},
            timeout=10,
        ).json()
        if len(found) < len(posted):
            return None
        return {
            (a["labels"]["alertname"], a["labels"]["job"]): bool(a["status"]["inhibitedBy"])
            for a in found
        }

    assert wait_for(states, "Alertmanager holding the posted alerts") == {
        ("GlassboxAvailabilityBudgetBurnFast", "inhibit-a"): False,
        ("GlassboxAvailabilityBudgetBurnSlow", "inhibit-a"): True,  # by its own fast burn
        ("GlassboxLatencyBudgetBurnSlow", "inhibit-a"): False,  # another SLO
        ("GlassboxAvailabilityBudgetBurnSlow", "inhibit-b"): False,  # another service
        ("GlassboxServiceUnavailable", "inhibit-c"): False,
        ("GlassboxDatabasePoolWaits", "inhibit-c"): True,  # a symptom of the outage
    }
