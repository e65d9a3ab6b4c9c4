"""The environment variable names the manifests and compose.yaml give the app are exactly the
names the app reads (service.config.all_variable_names()): a typo cannot slip through, and a
new setting cannot be forgotten in Kubernetes without a reason written down here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.config import all_variable_names
from tests.deploy.conftest import OVERLAYS, ROOT, app_workloads, run, tool

# Not set by the Kubernetes manifests, so the app's (or the SDK's) default applies.
LEFT_AT_DEFAULT = {
    "RATELIMIT_STORAGE_URI": "empty means REDIS_URL: the limiter shares the cache's Redis",
    "DEV_API_KEY": "the development key is refused in production and no pod creates it",
    "OTEL_TRACES_EXPORTER": "otlp, the SDK's default",
    "OTEL_METRICS_EXPORTER": "otlp, the SDK's default",
    "PAYMENTS_PORT": "read by the Makefile only; the payments containers get PORT=8001",
    "REPORTS_SQL_DELAY_MS": "a knob of the profiling lab; 0 (off) is the only production value",
    "LAB_ROUTES": "the profiling lab's own routes; off (false) is the only production value",
    "FAULT_FLAGS_FILE": "fault flags are for rehearsals (the compose stack); none in a cluster",
    "FAULTS_ALLOWED_IN_PRODUCTION": "false: production refuses fault flags and knobs",
    "CORS_ORIGINS": "empty, no CORS: set it only where a browser app on another origin calls /api/",
    **{
        f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL": "OTEL_EXPORTER_OTLP_PROTOCOL covers every signal"
        for signal in ("TRACES", "METRICS", "LOGS")
    },
    "PYROSCOPE_SERVER_ADDRESS": "profiling is off unless k8s/components/pyroscope sets it",
    "PYROSCOPE_SAMPLE_RATE": "100 Hz, the profiler's default",
}


def _container_names(docs: list[dict[str, Any]], container: dict[str, Any]) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        # A Secret's keys are not in the repository: secrets are mapped one by one instead.
        assert set(source) == {"configMapRef"}, f"envFrom {source} cannot be checked"
        (config_map,) = [
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["configMapRef"]["name"]
        ]
        names |= set(config_map["data"])
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_set_only_names_the_app_reads(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    known = all_variable_names()
    everything: set[str] = set()
    workloads = app_workloads(docs)
    assert {w["metadata"]["name"] for w, _ in workloads} == {
        "glassbox-api",
        "glassbox-payments",
        "glassbox-migrate",
        "glassbox-reconcile",
    }
    for workload, spec in workloads:
        for container in spec["containers"]:
            names = _container_names(docs, container)
            unknown = names - known
            assert unknown == set(), f"{workload['metadata']['name']}: {sorted(unknown)}"
            everything |= names
    assert everything & set(LEFT_AT_DEFAULT) == set()
    assert everything | set(LEFT_AT_DEFAULT) == known, (
        "set these in k8s/ or say in LEFT_AT_DEFAULT why not: "
        f"{sorted(known - everything - set(LEFT_AT_DEFAULT))}"
    )


def test_left_at_default_names_exist() -> None:
    assert set(LEFT_AT_DEFAULT) <= all_variable_names()


def test_compose_sets_only_names_the_app_reads() -> None:
    # docker compose's own normalisation (anchors, merges, env_file) without interpolation,
    # so that no secret has to be set for the check.
    result = run(
        tool("docker-compose"),
        "--file",
        "compose.yaml",
        "config",
        "--no-interpolate",
        "--format",
        "json",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    app_services = {
        name: service
        for name, service in services.items()
        if str(service.get("image", "")).startswith("glassbox:")
        or service.get("build", {}).get("context") == str(ROOT)
    }
    assert set(app_services) == {"api", "payments", "migrate", "reconcile"}
    known = all_variable_names()
    for name, service in app_services.items():
        unknown = set(service.get("environment", {})) - known
        assert unknown == set(), f"compose service {name}: {sorted(unknown)}"
