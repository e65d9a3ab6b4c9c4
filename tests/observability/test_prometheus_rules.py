"""Prometheus config and rules, checked by Debian's promtool: syntax, unit tests, and that every
alert is tested both ways and links to its own section of docs/runbook.md."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.observability.conftest import (
    DASHBOARD_DIR,
    PROMETHEUS_DIR,
    ROOT,
    RULE_FILES,
    RULE_TEST_FILES,
    RUNBOOK,
    load_yaml,
)

DASHBOARD_UIDS = {json.loads(p.read_text())["uid"] for p in DASHBOARD_DIR.glob("*.json")}


def run(command: list[str], cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Second-level sections of the runbook by anchor: {anchor: section text}."""
    sections: dict[str, str] = {}
    current = None
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("## "):
            current = github_anchor(line[3:])
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


# storage.tsdb.retention of the pinned Prometheus (3.14.0's docs/configuration/configuration.md):
# the config-file field that replaces the deprecated --storage.tsdb.retention.* flags. Debian's
# promtool (2.42) predates it, so it is checked here and left out of what promtool reads.
RETENTION_KEYS = {"time", "size", "percentage"}


def test_retention_is_in_the_config_file_not_a_deprecated_flag() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    retention = config["storage"]["tsdb"]["retention"]
    assert set(retention) <= RETENTION_KEYS
    assert re.fullmatch(r"\d+[dwh]", retention["time"])
    command = load_yaml(ROOT / "compose.yaml")["services"]["prometheus"]["command"]
    assert not [flag for flag in command if flag.startswith("--storage.tsdb.retention")]


def test_promtool_accepts_the_compose_prometheus_config(promtool: str, tmp_path: Path) -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    del config["storage"]["tsdb"]["retention"]  # newer than promtool (above)
    if not config["storage"]["tsdb"]:
        del config["storage"]
    config["rule_files"] = [str(PROMETHEUS_DIR / glob) for glob in config["rule_files"]]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(json.dumps(config))  # JSON is YAML
    result = run([promtool, "check", "config", str(checked)])
    assert result.returncode == 0, result.stdout + result.stderr
    # The config's rule_files glob must find the rule files, not match nothing.
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


def test_promtool_accepts_the_rules(promtool: str, rules: list[dict[str, Any]]) -> None:
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", result.stdout))
    assert found == len(rules) > 0


@pytest.mark.parametrize("test_file", RULE_TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(promtool: str, test_file: Path) -> None:
    result = run([promtool, "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """A wrong expectation fails: the suite is not passing vacuously."""
    source = PROMETHEUS_DIR / "tests" / "dependencies_test.yml"
    text = source.read_text().replace("4.762% of database", "0.001% of database")
    broken = tmp_path / "broken_test.yml"
    broken.write_text(text.replace("../rules/", f"{PROMETHEUS_DIR / 'rules'}/"))
    result = run([promtool, "test", "rules", str(broken)])
    assert result.returncode != 0
    assert "GlassboxDatabaseErrors" in result.stdout + result.stderr


def test_every_rule_file_is_unit_tested() -> None:
    tested = set()
    for path in RULE_TEST_FILES:
        for name in load_yaml(path)["rule_files"]:
            tested.add((path.parent / name).resolve())
    assert tested == {path.resolve() for path in RULE_FILES}


def test_every_slo_recording_rule_is_unit_tested(rules: list[dict[str, Any]]) -> None:
    """The slo:* series (rules/slo_budget.yml) each have a promql_expr_test of their value."""
    tested = "\n".join(
        check["expr"]
        for path in RULE_TEST_FILES
        for case in load_yaml(path)["tests"]
        for check in case.get("promql_expr_test", [])
    )
    records = {rule["record"] for rule in rules if rule.get("record", "").startswith("slo:")}
    assert records, "no slo:* recording rules"
    assert {name for name in records if name not in tested} == set()


def test_every_alert_is_tested_firing_and_quiet(alerts: list[dict[str, Any]]) -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TEST_FILES:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in alerts}
    assert names - firing == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_alert_has_summary_description_severity_and_runbook(
    alerts: list[dict[str, Any]],
) -> None:
    sections = runbook_sections()
    for alert in alerts:
        name = alert["alert"]
        annotations = alert.get("annotations", {})
        assert annotations.get("summary"), name
        assert annotations.get("description"), name
        # The Prometheus mixins' severities, which observability/alertmanager/ routes.
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        base, _, anchor = annotations["runbook_url"].partition("#")
        assert base == "{{ $externalLabels.runbook_url }}", name
        assert anchor == name.lower(), f"{name}: runbook anchor {anchor!r}"
        assert anchor in sections, f"{name}: no section #{anchor} in docs/runbook.md"
        grafana = "{{ $externalLabels.grafana_url }}"
        dashboard = urlsplit(annotations["dashboard_url"].replace(grafana, "http://grafana"))
        assert dashboard.netloc == "grafana", name
        uid = dashboard.path.removeprefix("/d/")
        assert uid in DASHBOARD_UIDS, f"{name}: no dashboard {uid}"


def test_the_base_urls_of_the_annotations_are_absolute() -> None:
    """runbook_url and dashboard_url start with external labels of prometheus.yml: absolute
    URLs, clickable from a pager, Alertmanager or Grafana."""
    labels = load_yaml(PROMETHEUS_DIR / "prometheus.yml")["global"]["external_labels"]
    for name in ("runbook_url", "grafana_url"):
        url = urlsplit(labels[name])
        assert url.scheme in ("http", "https"), name
        assert url.netloc, name
    assert labels["runbook_url"].endswith("/docs/runbook.md")


def test_every_runbook_section_says_where_to_look(alerts: list[dict[str, Any]]) -> None:
    """Each alert's section: what it means, the first three things to check, the dashboard
    and the Jaeger query to use, and a mitigation with kubectl and compose commands."""
    sections = runbook_sections()
    for alert in alerts:
        text = sections[alert["alert"].lower()]
        assert "**What it means**" in text, alert["alert"]
        steps = re.findall(r"^\d\. ", text, flags=re.MULTILINE)
        assert len(steps) >= 3, f"{alert['alert']}: fewer than three first things to look at"
        assert "Dashboard:" in text, alert["alert"]
        assert "Jaeger:" in text, alert["alert"]
        # What to do about it, in production (Kubernetes) and in the compose stack.
        mitigation = text.partition("**Mitigation**")[2]
        assert mitigation.strip(), f"{alert['alert']}: no mitigation"
        assert "kubectl" in text, alert["alert"]
        assert "docker compose" in text, alert["alert"]


def test_runbook_has_no_section_for_an_alert_that_does_not_exist(
    alerts: list[dict[str, Any]],
) -> None:
    names = {alert["alert"].lower() for alert in alerts}
    alert_like = {anchor for anchor in runbook_sections() if re.fullmatch(r"[a-z]+", anchor)}
    assert alert_like - names == set()
