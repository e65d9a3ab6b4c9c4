"""The OpenTelemetry Collector and Jaeger configs, checked against what the pinned versions
accept (tests/observability/collector_schema.py). Neither binary runs here: these checks are
structural, not a start of the real process (observability/README.md says so)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from tests.observability.collector_schema import (
    COLLECTOR_VERSION,
    CONTRIB_0_115,
    JAEGER_2_5,
    JAEGER_VERSION,
    check_config,
)
from tests.observability.conftest import OBSERVABILITY, ROOT, load_yaml

COLLECTOR = OBSERVABILITY / "otel-collector" / "config.yaml"
JAEGER = OBSERVABILITY / "jaeger" / "config.yaml"

# Functions and paths of OTTL (pkg/ottl at the collector's version) the transform may use.
OTTL_SET = re.compile(
    r'set\(attributes\["[\w.]+"\], resource\.attributes\["[\w.]+"\]\)'
    r'( where resource\.attributes\["[\w.]+"\] != nil)?'
)


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return load_yaml(COLLECTOR)


@pytest.fixture(scope="module")
def jaeger() -> dict[str, Any]:
    return load_yaml(JAEGER)


def test_the_checked_versions_are_the_ones_compose_runs() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    assert f"otel/opentelemetry-collector-contrib:{COLLECTOR_VERSION}\n" in compose
    assert f"jaegertracing/jaeger:{JAEGER_VERSION}\n" in compose
    assert COLLECTOR_VERSION in COLLECTOR.read_text().splitlines()[0]
    assert JAEGER_VERSION in JAEGER.read_text().splitlines()[0]


def test_collector_config_fits_the_contrib_distribution(collector: dict[str, Any]) -> None:
    assert check_config(collector, CONTRIB_0_115) == []


def test_jaeger_config_fits_jaeger_v2(jaeger: dict[str, Any]) -> None:
    assert check_config(jaeger, JAEGER_2_5) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c: c["exporters"]["prometheus"].update(enpoint="0.0.0.0:1"), "unknown field"),
        (lambda c: c["processors"].update(nonsense={}), "no 'nonsense' in this distribution"),
        (
            lambda c: c["service"]["pipelines"]["traces"]["exporters"].append("otlp/tempo"),
            "'otlp/tempo' undefined",
        ),
        (lambda c: c["exporters"].update({"debug": {}}), "defined but never used"),
        (
            lambda c: c["processors"]["tail_sampling"]["policies"][0].update(type="errors"),
            "is not one of",
        ),
        (lambda c: c["service"]["telemetry"]["metrics"].update(level="verbose"), "is not one of"),
    ],
    ids=["typo", "unknown-component", "undefined-in-pipeline", "unused", "bad-policy", "bad-level"],
)
def test_the_check_catches_mistakes(collector: dict[str, Any], change: Any, problem: str) -> None:
    broken = copy.deepcopy(collector)
    change(broken)
    assert any(problem in p for p in check_config(broken, CONTRIB_0_115))


def test_collector_pipelines_follow_the_recommended_order(collector: dict[str, Any]) -> None:
    """memory_limiter first (refuse before buffering), batch last (after sampling)."""
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for name, pipeline in pipelines.items():
        assert pipeline["processors"][0] == "memory_limiter", name
        assert pipeline["processors"][-1] == "batch", name
        assert pipeline["receivers"] == ["otlp"], name
    assert pipelines["traces"]["exporters"] == ["otlp/jaeger"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert "tail_sampling" in pipelines["traces"]["processors"]


def test_memory_limiter_has_a_limit(collector: dict[str, Any]) -> None:
    limiter = collector["processors"]["memory_limiter"]
    assert limiter["check_interval"]
    assert limiter.get("limit_mib") or limiter.get("limit_percentage")
    assert limiter["spike_limit_percentage"] < limiter["limit_percentage"]


def test_tail_sampling_keeps_errors_and_slow_traces(collector: dict[str, Any]) -> None:
    policies = {p["type"]: p for p in collector["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    # "Slow" is the latency objective's threshold: le="0.3" in rules/slo.yml.
    assert policies["latency"]["latency"]["threshold_ms"] == 300
    slo = (OBSERVABILITY / "prometheus" / "rules" / "slo.yml").read_text()
    assert 'le="0.3"' in slo
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100


def test_prometheus_exporter_matches_the_scrape_path(collector: dict[str, Any]) -> None:
    """The settings that make OTLP metrics look like the services' /metrics."""
    exporter = collector["exporters"]["prometheus"]
    assert exporter["add_metric_suffixes"] is True  # _seconds, _bytes, _total
    assert exporter["enable_open_metrics"] is True  # exemplars
    assert exporter["resource_to_telemetry_conversion"]["enabled"] is False
    assert "namespace" not in exporter  # no prefix on metric names
    statements = collector["processors"]["transform/environment"]["metric_statements"]
    assert [s["context"] for s in statements] == ["datapoint"]
    for statement in statements[0]["statements"]:
        assert OTTL_SET.fullmatch(statement), statement
        assert statement.startswith('set(attributes["deployment_environment"]')
    assert any("deployment.environment.name" in s for s in statements[0]["statements"])
    compose = load_yaml(ROOT / "compose.yaml")
    attributes = compose["x-app-environment"]["OTEL_RESOURCE_ATTRIBUTES"]
    assert attributes.startswith("deployment.environment.name=")


def test_traces_go_to_jaeger_where_it_listens(
    collector: dict[str, Any], jaeger: dict[str, Any]
) -> None:
    endpoint = collector["exporters"]["otlp/jaeger"]["endpoint"]
    host, port = endpoint.rsplit(":", 1)
    assert host == "jaeger"
    grpc = jaeger["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc.rsplit(":", 1)[1] == port
    assert collector["exporters"]["otlp/jaeger"]["tls"]["insecure"] is True


def test_jaeger_storage_names_agree(jaeger: dict[str, Any]) -> None:
    backends = jaeger["extensions"]["jaeger_storage"]["backends"]
    assert jaeger["extensions"]["jaeger_query"]["storage"]["traces"] in backends
    assert jaeger["exporters"]["jaeger_storage_exporter"]["trace_storage"] in backends
    (backend,) = backends.values()
    assert backend["memory"]["max_traces"] > 0


def test_each_config_file_opens_with_its_purpose() -> None:
    for path in (COLLECTOR, JAEGER):
        assert path.read_text().startswith("# "), path
