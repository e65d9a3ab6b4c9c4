"""One label rule for service.namespace (observability/README.md, "One label rule"): compose
and every Kubernetes overlay are rendered as their tools render them (`docker compose config`,
`kubectl kustomize`), the Prometheus `job` each service's metrics will get is derived the way
the collector's Prometheus exporter derives it (`service.namespace/service.name`, or
`service.name` alone when the namespace is absent, collector-contrib #8355) after the
collector's own metric processors, and every alert, recording rule, dashboard query and
datasource selector that names a job must name one of those (or a job of prometheus.yml)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import KUSTOMIZE, OVERLAYS, run, tool
from tests.observability.conftest import (
    DASHBOARD_DIR,
    DATASOURCES,
    OBSERVABILITY,
    ROOT,
    RULE_FILES,
    STACK_SECRETS,
    load_yaml,
)

APP_SERVICES = ("api", "payments")
FORMAT = ("--format", "json")
# `job="…"` and `job=~"…"` in PromQL; `$…` values are dashboard variables, not selectors.
JOB_SELECTOR = re.compile(r'\bjob\s*(=~|=|!=|!~)\s*"([^"$]*)"')


def resource_attributes(text: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


def collector_drops_namespace_from_metrics() -> bool:
    """True when the collector's metrics pipeline deletes service.namespace from the resource
    before its Prometheus exporter builds `job`."""
    config = load_yaml(OBSERVABILITY / "otel-collector" / "config.yaml")
    for name in config["service"]["pipelines"]["metrics"]["processors"]:
        for block in config["processors"][name].get("metric_statements", []):
            if block["context"] == "resource" and any(
                s.startswith('delete_key(attributes, "service.namespace")')
                for s in block["statements"]
            ):
                return True
    return False


def job_of(service_name: str, attributes: dict[str, str]) -> str:
    namespace = attributes.get("service.namespace")
    if namespace and not collector_drops_namespace_from_metrics():
        return f"{namespace}/{service_name}"
    return service_name


def compose_jobs(tmp_path: Path) -> dict[str, str]:
    env_file = tmp_path / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in STACK_SECRETS.items()))
    binary = str(Path(tool("docker-compose")))
    result = subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(ROOT / "compose.yaml"), "config", *FORMAT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    jobs = {}
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        attributes = resource_attributes(environment["OTEL_RESOURCE_ATTRIBUTES"])
        jobs[f"compose:{name}"] = job_of(environment["OTEL_SERVICE_NAME"], attributes)
    return jobs


def kubernetes_jobs(overlay: str) -> dict[str, str]:
    result = run(tool("kubectl"), *KUSTOMIZE, f"k8s/overlays/{overlay}")
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    config_maps = {
        d["metadata"]["name"]: d.get("data", {}) for d in documents if d["kind"] == "ConfigMap"
    }
    jobs = {}
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "OTEL_SERVICE_NAME" not in env:
                continue
            attributes: dict[str, str] = {}
            for source in container.get("envFrom", []):
                name = (source.get("configMapRef") or {}).get("name")
                data = config_maps.get(name, {})
                if "OTEL_RESOURCE_ATTRIBUTES" in data:
                    attributes = resource_attributes(data["OTEL_RESOURCE_ATTRIBUTES"])
            assert attributes, f"{overlay}: {deployment['metadata']['name']} has no attributes"
            jobs[f"{overlay}:{deployment['metadata']['name']}"] = job_of(
                env["OTEL_SERVICE_NAME"], attributes
            )
    return jobs


@pytest.fixture(scope="module")
def produced_jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    jobs = compose_jobs(tmp_path_factory.mktemp("compose"))
    for overlay in OVERLAYS:
        jobs.update(kubernetes_jobs(overlay))
    return jobs


def scrape_jobs() -> set[str]:
    config = load_yaml(OBSERVABILITY / "prometheus" / "prometheus.yml")
    return {job["job_name"] for job in config["scrape_configs"]}


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every rule, dashboard target and variable, and datasource query."""
    found = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                found.append((f"{path.name}:{rule.get('alert') or rule['record']}", rule["expr"]))
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        text = path.read_text()
        for match in re.finditer(r'"(?:expr|query)":\s*("(?:[^"\\]|\\.)*")', text):
            found.append((path.name, json.loads(match.group(1))))
    for source in load_yaml(DATASOURCES)["datasources"]:
        for query in source.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", []):
            found.append((f"datasource {source['name']}", query["query"]))
    return found


def test_compose_and_kubernetes_give_each_service_the_same_job(
    produced_jobs: dict[str, str],
) -> None:
    by_service: dict[str, set[str]] = {}
    for where, job in produced_jobs.items():
        service = where.split(":", 1)[1].removeprefix("glassbox-")
        by_service.setdefault(service, set()).add(job)
    assert by_service == {"api": {"glassbox-api"}, "payments": {"glassbox-payments"}}


def test_every_job_selector_names_a_job_that_will_exist(produced_jobs: dict[str, str]) -> None:
    allowed = set(produced_jobs.values()) | scrape_jobs()
    checked = 0
    for where, query in queries():
        for operator, value in JOB_SELECTOR.findall(query):
            checked += 1
            if operator == "=":
                assert value in allowed, f"{where}: job={value!r} matches nothing in {allowed}"
            elif operator == "=~":
                assert any(re.fullmatch(value, job) for job in allowed), f"{where}: {value!r}"
    assert checked >= 3  # the telemetry-absent alert and the collector/scrape alerts


def test_grafana_maps_service_name_to_the_labels_the_backends_use(
    produced_jobs: dict[str, str],
) -> None:
    """Jaeger's links put the span's service.name into `job` (Prometheus) and `service_name`
    (Loki, whose OTLP ingestion names the stream label so): right only while job is
    service.name."""
    assert all("/" not in job for job in produced_jobs.values())
    jaeger = next(s for s in load_yaml(DATASOURCES)["datasources"] if s["uid"] == "jaeger")
    assert jaeger["jsonData"]["tracesToMetrics"]["tags"] == [
        {"key": "service.name", "value": "job"}
    ]
    assert jaeger["jsonData"]["tracesToLogsV2"]["tags"] == [
        {"key": "service.name", "value": "service_name"}
    ]


def test_the_rule_would_catch_a_namespaced_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the collector's deletion, Kubernetes' service.namespace=glassbox would turn
    job into glassbox/glassbox-api, which the alerts' job="glassbox-api" would not find."""
    monkeypatch.setattr(
        "tests.observability.test_label_rule.collector_drops_namespace_from_metrics",
        lambda: False,
    )
    assert job_of("glassbox-api", {"service.namespace": "glassbox"}) == "glassbox/glassbox-api"
