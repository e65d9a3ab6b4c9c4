"""observability/alertmanager/: Debian's amtool (Alertmanager 0.25) accepts the config as
shipped and as rendered with webhooks, routes pages and tickets apart, and the receivers follow
the environment (null by default)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.observability.conftest import (
    ALERTMANAGER_DIR,
    DATASOURCES,
    PROMETHEUS_DIR,
    load_yaml,
    render_alertmanager_config,
)

WEBHOOKS = {
    "ALERTMANAGER_PAGE_WEBHOOK_URL": "https://pager.example.com/hooks/glassbox?token=a&b=c",
    "ALERTMANAGER_TICKET_WEBHOOK_URL": "https://tickets.example.com/hooks/glassbox",
}


def amtool(binaries: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binaries["amtool"], *args], capture_output=True, text=True, timeout=60)


def route_test(
    binaries: dict[str, str], config: Path, receiver: str, *labels: str
) -> subprocess.CompletedProcess[str]:
    """`amtool config routes test`: whether alerts with `labels` go to `receiver`."""
    return amtool(
        binaries,
        "config",
        "routes",
        "test",
        f"--config.file={config}",
        f"--verify.receivers={receiver}",
        *labels,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_alertmanager_config(WEBHOOKS, tmp_path_factory.mktemp("am") / "am.yml")


def test_amtool_accepts_the_config_as_shipped_and_rendered(
    alertmanager_binaries: dict[str, str], rendered: Path
) -> None:
    for path in (ALERTMANAGER_DIR / "alertmanager.yml", rendered):
        result = amtool(alertmanager_binaries, "check-config", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout
        assert "2 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=GlassboxServiceUnavailable", "job=glassbox-api"], "page"),
        (["severity=warning", "alertname=GlassboxDatabasePoolWaits"], "ticket"),
        # A datastore exporter that cannot be scraped (rules: PrometheusScrapeTargetDown).
        (
            ["severity=warning", "alertname=PrometheusScrapeTargetDown", "job=postgres-exporter"],
            "ticket",
        ),
        (["severity=info", "alertname=Watchdog"], "null"),
        (["alertname=NoSeverity"], "null"),
    ],
)
def test_amtool_routes_pages_and_tickets_apart(
    alertmanager_binaries: dict[str, str], rendered: Path, labels: list[str], receiver: str
) -> None:
    result = route_test(alertmanager_binaries, rendered, receiver, *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_amtool_sees_a_wrong_route(alertmanager_binaries: dict[str, str], rendered: Path) -> None:
    """The route check can fail: a ticket is not delivered as a page."""
    result = route_test(alertmanager_binaries, rendered, "page", "severity=warning")
    assert result.returncode != 0


def receivers_of(path: Path) -> dict[str, Any]:
    return {r["name"]: r for r in load_yaml(path)["receivers"]}


def test_receivers_are_null_without_webhooks_and_take_them_from_the_environment(
    rendered: Path, tmp_path: Path
) -> None:
    bare = receivers_of(render_alertmanager_config({}, tmp_path / "bare.yml"))
    assert all(set(r) == {"name"} for r in bare.values()), bare
    configured = receivers_of(rendered)
    assert configured["page"]["webhook_configs"] == [
        {"url": WEBHOOKS["ALERTMANAGER_PAGE_WEBHOOK_URL"], "send_resolved": True}
    ]
    assert (
        configured["ticket"]["webhook_configs"][0]["url"]
        == WEBHOOKS["ALERTMANAGER_TICKET_WEBHOOK_URL"]
    )
    assert set(configured["null"]) == {"name"}


def test_a_url_that_would_break_the_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        render_alertmanager_config(
            {"ALERTMANAGER_PAGE_WEBHOOK_URL": 'https://x.example.com/" injected'},
            tmp_path / "bad.yml",
        )
    assert "ALERTMANAGER_PAGE_WEBHOOK_URL" in refused.value.stderr


def test_a_ticket_is_inhibited_by_its_page_only() -> None:
    rules = load_yaml(ALERTMANAGER_DIR / "alertmanager.yml")["inhibit_rules"]
    slo = rules[0]
    assert slo["source_matchers"] == ['severity="critical"', 'slo=~".+"']
    assert slo["target_matchers"] == ['severity="warning"', 'slo=~".+"']
    # Same service, environment and objective: a page of one SLO leaves the other's ticket.
    assert set(slo["equal"]) == {"job", "deployment_environment", "slo"}


def test_prometheus_and_grafana_reach_alertmanager() -> None:
    prometheus = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (manager,) = prometheus["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]
    datasources = {d["uid"]: d for d in load_yaml(DATASOURCES)["datasources"]}
    assert datasources["alertmanager"]["type"] == "alertmanager"
    assert datasources["alertmanager"]["url"] == "http://alertmanager:9093"
    assert datasources["alertmanager"]["jsonData"]["implementation"] == "prometheus"
