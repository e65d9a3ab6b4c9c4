"""The OpenTelemetry Collector and Jaeger configs, checked against what the pinned versions
accept (tests/observability/collector_schema.py). Neither binary runs here: these checks are
structural, not a start of the real process (observability/README.md says so)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from tests.observability.collector_schema import (
    COLLECTOR_VERSION,
    CONTRIB,
    JAEGER_VERSION,
    check_config,
)
from tests.observability.collector_schema import (
    JAEGER as JAEGER_V2,
)
from tests.observability.conftest import OBSERVABILITY, ROOT, load_yaml

COLLECTOR = OBSERVABILITY / "otel-collector" / "config.yaml"
JAEGER = OBSERVABILITY / "jaeger" / "config.yaml"

# Functions and paths of OTTL (pkg/ottl at the collector's version) the transform may use.
OTTL_SET = re.compile(
    r'set\(attributes\["[\w.]+"\], resource\.attributes\["[\w.]+"\]\)'
    r'( where resource\.attributes\["[\w.]+"\] != nil)?'
)
OTTL_DELETE_KEY = re.compile(r'delete_key\(attributes, "[\w.]+"\)')
LABEL_RULE = "transform/prometheus_labels"


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
    assert check_config(collector, CONTRIB) == []


def test_jaeger_config_fits_jaeger_v2(jaeger: dict[str, Any]) -> None:
    assert check_config(jaeger, JAEGER_V2) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c: c["exporters"]["prometheus"].update(enpoint="0.0.0.0:1"), "unknown field"),
        (lambda c: c["processors"].update(nonsense={}), "no 'nonsense' in this distribution"),
        (
            lambda c: c["service"]["pipelines"]["traces"]["exporters"].append("otlp_grpc/tempo"),
            "'otlp_grpc/tempo' undefined",
        ),
        (
            lambda c: c["exporters"].update({"otlp/old": {"endpoint": "x:4317"}}),
            "deprecated alias, use 'otlp_grpc'",
        ),
        (lambda c: c["connectors"]["span_metrics"].update(dimension=[]), "unknown field"),
        (lambda c: c["exporters"].update({"debug": {}}), "defined but never used"),
        (
            lambda c: c["processors"]["tail_sampling"]["policies"][0].update(type="errors"),
            "is not one of",
        ),
        (lambda c: c["service"]["telemetry"]["metrics"].update(level="verbose"), "is not one of"),
        (
            lambda c: c["exporters"]["prometheus"].update(
                resource_to_telemetry_conversion={"enabled": False}
            ),
            "unknown field 'resource_to_telemetry_conversion'",
        ),
    ],
    ids=[
        "typo",
        "unknown-component",
        "undefined-in-pipeline",
        "deprecated-alias",
        "connector-typo",
        "unused",
        "bad-policy",
        "bad-level",
        "deprecated-field",
    ],
)
def test_the_check_catches_mistakes(collector: dict[str, Any], change: Any, problem: str) -> None:
    broken = copy.deepcopy(collector)
    change(broken)
    assert any(problem in p for p in check_config(broken, CONTRIB))


def test_valid_upstream_settings_are_accepted(collector: dict[str, Any]) -> None:
    """Fields of the upstream metadata (config.schema.yaml) that glassbox does not use yet
    pass the check: it refuses mistakes, not valid configs."""
    valid = copy.deepcopy(collector)
    sampling = valid["processors"]["tail_sampling"]
    sampling.update(decision_wait_after_root_received="1s", sample_on_first_match=True)
    sampling["policies"] += [
        {"name": "drop-health", "type": "drop", "drop": {"drop_sub_policy": []}},
        {"name": "not-ok", "type": "not", "not": {"not_sub_policy": {}}},
        {
            "name": "bytes",
            "type": "bytes_limiting",
            "bytes_limiting": {"bytes_per_second": 1024, "burst_capacity": 2048},
        },
    ]
    valid["exporters"]["prometheus"].update(
        resource_constant_labels={"included": ["service.name"], "excluded": []},
        without_scope_info=True,
        sending_queue={"enabled": True},
    )
    valid["receivers"].update(hostmetrics={}, httpcheck={})
    valid["processors"]["resourcedetection"] = {}
    for pipeline, kind, name in (
        ("metrics", "receivers", "hostmetrics"),
        ("metrics", "receivers", "httpcheck"),
        ("metrics", "processors", "resourcedetection"),
    ):
        valid["service"]["pipelines"][pipeline][kind].append(name)
    assert check_config(valid, CONTRIB) == []


def test_collector_pipelines_follow_the_recommended_order(collector: dict[str, Any]) -> None:
    """memory_limiter first (refuse before buffering), batch last (after sampling)."""
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "traces/span_metrics", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        assert pipeline["processors"][0] == "memory_limiter", name
        assert "otlp" in pipeline["receivers"], name
        if name != "traces/span_metrics":
            assert pipeline["processors"][-1] == "batch", name
    assert pipelines["traces"]["exporters"] == ["otlp_grpc/jaeger"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert pipelines["logs"]["exporters"] == ["otlp_http/loki"]
    assert "tail_sampling" in pipelines["traces"]["processors"]


def test_span_metrics_see_every_span_before_sampling(collector: dict[str, Any]) -> None:
    """The Monitor tab's rates count every request: the connector is fed from a pipeline
    without tail sampling, and its output joins the metrics pipeline to Prometheus."""
    pipelines = collector["service"]["pipelines"]
    feeding = [n for n, p in pipelines.items() if "span_metrics" in p.get("exporters", [])]
    assert feeding == ["traces/span_metrics"]
    assert "tail_sampling" not in pipelines["traces/span_metrics"]["processors"]
    assert "span_metrics" in pipelines["metrics"]["receivers"]
    connector = collector["connectors"]["span_metrics"]
    assert connector["namespace"] == "traces.span.metrics"
    assert connector["histogram"]["unit"] == "ms"
    assert connector["exemplars"]["enabled"] is True


def test_jaeger_monitor_tab_reads_the_span_metrics(jaeger: dict[str, Any]) -> None:
    storage = jaeger["extensions"]["jaeger_storage"]["metric_backends"]
    name = jaeger["extensions"]["jaeger_query"]["storage"]["metrics"]
    backend = storage[name]["prometheus"]
    assert backend["endpoint"] == "http://prometheus:9090"
    # traces_span_metrics_calls_total and ..._duration_milliseconds_bucket, as the
    # collector's exporter writes them (translation_strategy with suffixes).
    assert backend["normalize_calls"] is True
    assert backend["normalize_duration"] is True
    ui = json.loads((OBSERVABILITY / "jaeger" / "ui-config.json").read_text())
    assert ui["monitor"]["menuEnabled"] is True


def test_logs_go_to_lokis_otlp_endpoint(collector: dict[str, Any]) -> None:
    exporter = collector["exporters"]["otlp_http/loki"]
    assert exporter["endpoint"] == "http://loki:3100/otlp"
    loki = load_yaml(OBSERVABILITY / "loki" / "config.yaml")
    assert loki["server"]["http_listen_port"] == 3100
    assert loki["limits_config"]["allow_structured_metadata"] is True
    (schema,) = loki["schema_config"]["configs"]
    assert (schema["store"], schema["schema"]) == ("tsdb", "v13")


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
    # _seconds, _bytes, _total
    assert exporter["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    assert exporter["enable_open_metrics"] is True  # exemplars
    assert exporter["resource_constant_labels"] == {"included": []}  # no resource labels
    assert "resource_to_telemetry_conversion" not in exporter  # deprecated
    assert "namespace" not in exporter  # no prefix on metric names
    statements = collector["processors"][LABEL_RULE]["metric_statements"]
    # The datapoint statements read resource attributes: they run before the deletion.
    assert [s["context"] for s in statements] == ["datapoint", "resource"]
    for statement in statements[0]["statements"]:
        assert OTTL_SET.fullmatch(statement), statement
        assert statement.startswith('set(attributes["deployment_environment"]')
    assert any("deployment.environment.name" in s for s in statements[0]["statements"])
    assert statements[1]["statements"] == ['delete_key(attributes, "service.namespace")']
    assert OTTL_DELETE_KEY.fullmatch(statements[1]["statements"][0])
    compose = load_yaml(ROOT / "compose.yaml")
    attributes = compose["x-app-environment"]["OTEL_RESOURCE_ATTRIBUTES"]
    assert "deployment.environment.name=" in attributes


def test_traces_go_to_jaeger_where_it_listens(
    collector: dict[str, Any], jaeger: dict[str, Any]
) -> None:
    endpoint = collector["exporters"]["otlp_grpc/jaeger"]["endpoint"]
    host, port = endpoint.rsplit(":", 1)
    assert host == "jaeger"
    grpc = jaeger["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc.rsplit(":", 1)[1] == port
    assert collector["exporters"]["otlp_grpc/jaeger"]["tls"]["insecure"] is True


def test_jaeger_storage_names_agree(jaeger: dict[str, Any]) -> None:
    backends = jaeger["extensions"]["jaeger_storage"]["backends"]
    assert jaeger["extensions"]["jaeger_query"]["storage"]["traces"] in backends
    assert jaeger["exporters"]["jaeger_storage_exporter"]["trace_storage"] in backends
    (backend,) = backends.values()
    assert backend["memory"]["max_traces"] > 0


def test_each_config_file_opens_with_its_purpose() -> None:
    for path in (COLLECTOR, JAEGER, OBSERVABILITY / "loki" / "config.yaml"):
        assert path.read_text().startswith("# "), path
