"""Grafana provisioning: the dashboards are what the generator writes, survive a round trip
through grafana-foundation-sdk (Grafana 11.6 schema) without losing a key, use only the
provisioned datasources, and carry the environment and instance variables."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from tests.observability.conftest import DASHBOARD_DIR, DATASOURCES, OBSERVABILITY, load_yaml

DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
# Variables Grafana itself provides.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}


def load_generator() -> ModuleType:
    path = OBSERVABILITY / "grafana" / "dashboards.py"
    spec = importlib.util.spec_from_file_location("glassbox_dashboards", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def round_trip(model: dict[str, Any]) -> dict[str, Any]:
    register_default_plugins()
    return json.loads(json.dumps(Dashboard.from_json(model), cls=JSONEncoder))


def lost_keys(original: Any, copy: Any, path: str = "") -> list[str]:
    """Keys (and values) present in `original` but missing or different in `copy`."""
    if isinstance(original, dict):
        if not isinstance(copy, dict):
            return [path or "/"]
        found = []
        for key, value in original.items():
            if key not in copy:
                found.append(f"{path}/{key}")
            else:
                found += lost_keys(value, copy[key], f"{path}/{key}")
        return found
    if isinstance(original, list):
        if not isinstance(copy, list) or len(copy) != len(original):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(original, copy, strict=True))
            for p in lost_keys(a, b, f"{path}[{i}]")
        ]
    return [] if original == copy else [path]


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in model.get("panels", []):
        found.append(panel)
        found += panel.get("panels", [])  # panels inside rows
    return found


def query_text(target: dict[str, Any]) -> str:
    """PromQL or LogQL (`expr`), or a Pyroscope label selector."""
    return str(target.get("expr") or target.get("labelSelector") or "")


@pytest.fixture(scope="module", params=DASHBOARD_FILES, ids=lambda p: p.stem)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return json.loads(Path(request.param).read_text())


@pytest.fixture(scope="module")
def datasource_uids() -> dict[str, str]:
    return {d["uid"]: d["type"] for d in load_yaml(DATASOURCES)["datasources"]}


def test_the_six_dashboards_are_provisioned() -> None:
    assert [p.name for p in DASHBOARD_FILES] == [
        "business.json",
        "dependencies.json",
        "payments.json",
        "profiles.json",
        "runtime.json",
        "service-overview.json",
    ]


def test_committed_json_is_what_the_generator_writes() -> None:
    generator = load_generator()
    for name, build in generator.DASHBOARDS.items():
        expected = generator.to_text(generator.render(build()))
        assert (DASHBOARD_DIR / name).read_text() == expected, (
            f"{name} is stale: run .venv/bin/python observability/grafana/dashboards.py"
        )


def test_dashboard_round_trips_through_the_sdk_without_losing_keys(
    dashboard: dict[str, Any],
) -> None:
    again = round_trip(dashboard)
    assert lost_keys(dashboard, again) == []
    assert again == dashboard


def test_the_round_trip_would_notice_a_misspelt_key(dashboard: dict[str, Any]) -> None:
    """from_json drops what the schema does not know: that is what the comparison catches."""
    broken = json.loads(json.dumps(dashboard))
    broken["panels"][0]["gridPosition"] = broken["panels"][0].pop("gridPos")
    broken["templating"]["list"][0]["refreshh"] = 2
    lost = lost_keys(broken, round_trip(broken))
    assert "/panels[0]/gridPosition" in lost
    assert "/templating/list[0]/refreshh" in lost


def test_every_datasource_reference_is_provisioned(
    dashboard: dict[str, Any], datasource_uids: dict[str, str]
) -> None:
    references = []
    for panel in panels(dashboard):
        if panel["type"] != "row":
            references.append(panel["datasource"])
            references += [target["datasource"] for target in panel["targets"]]
    references += [v["datasource"] for v in dashboard["templating"]["list"] if "datasource" in v]
    assert references
    for reference in references:
        assert reference["uid"] in datasource_uids, reference
        assert datasource_uids[reference["uid"]] == reference["type"], reference


def test_environment_and_instance_variables_narrow_every_query(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"env", "instance"} <= set(variables)
    assert variables["instance"]["includeAll"] is True
    assert variables["instance"]["allValue"] == ".*"
    defined = set(variables) | BUILTIN_VARIABLES
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = query_text(target)
            used = set(re.findall(r"\$(\w+)", expr))
            assert used <= defined, (panel["title"], used - defined)
            kind = target["datasource"]["type"]
            if kind == "loki":
                # Loki's stream labels for the same resource attributes.
                assert 'deployment_environment_name=~"$env"' in expr, panel["title"]
                assert 'service_instance_id=~"$instance"' in expr, panel["title"]
                continue
            if kind == "grafana-pyroscope-datasource":
                # Profiles carry service_name and http_route, not the environment: one
                # Pyroscope per environment (observability/README.md, "Profiles").
                assert 'service_name=~"$service"' in expr, panel["title"]
                continue
            assert 'deployment_environment=~"$env"' in expr, panel["title"]
            # Recording rules aggregate instances away; everything else filters by instance.
            # ...and so do the reconciliation's gauges (one job per environment).
            if not expr.startswith(("job:slo_", "min(slo:")) and "glassbox_reconcile_" not in expr:
                assert 'instance=~"$instance"' in expr, panel["title"]


def test_panels_are_unique_and_on_the_grid(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["title"]
        assert panel.get("description"), panel["title"]
        for target in panel.get("targets", []):
            assert query_text(target).strip(), panel["title"]
    refs = [[t["refId"] for t in p.get("targets", [])] for p in panels(dashboard)]
    assert all(len(r) == len(set(r)) for r in refs)


def test_each_dashboard_shows_what_it_is_for() -> None:
    def exprs(name: str) -> str:
        model = json.loads((DASHBOARD_DIR / name).read_text())
        return "\n".join(query_text(t) for p in panels(model) for t in p.get("targets", []))

    overview = exprs("service-overview.json")
    for needle in (
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "job:slo_errors_per_request:ratio_rate1h",
        "job:slo_slow_requests:ratio_rate1h",
        'http_response_status_code=~"5.."',
        "sum by (http_route",
        # The 30-day budget as recorded (rules/slo_budget.yml), not a raw [30d] range.
        "slo:error_budget_remaining:ratio",
    ):
        assert needle in overview, needle
    dependencies = exprs("dependencies.json")
    for metric in (
        "db_client_connection_count",
        "db_client_connection_max",
        "db_client_connection_wait_time_seconds",
        "db_client_operation_duration_seconds_bucket",
        "glassbox_cache_requests_total",
        "glassbox_payments_duration_seconds",
        "glassbox_ratelimit_rejections_total",
    ):
        assert metric in dependencies, metric
    business = exprs("business.json")
    for metric in (
        "glassbox_orders_placed_total",
        "glassbox_revenue_total",
        "glassbox_orders_cancelled_total",
    ):
        assert metric in business, metric
    runtime = exprs("runtime.json")
    for metric in (
        "process_cpu_time_seconds_total",
        "process_memory_usage_bytes",
        "cpython_gc_collections_total",
    ):
        assert metric in runtime, metric
    assert "by (instance, worker" in runtime


def test_latency_panels_ask_for_exemplars(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = query_text(target)
            traced = "http_server_request" in expr or "glassbox_payments" in expr
            if "histogram_quantile" in expr and traced:
                assert target["exemplar"] is True, panel["title"]


def test_datasources_have_fixed_uids_and_link_exemplars_to_jaeger() -> None:
    sources = {d["uid"]: d for d in load_yaml(DATASOURCES)["datasources"]}
    assert set(sources) == {"prometheus", "jaeger", "loki", "pyroscope", "alertmanager"}
    prometheus = sources["prometheus"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["isDefault"] is True
    (destination,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    # The collector's prometheus exporter names the exemplar label trace_id.
    assert destination == {
        "name": "trace_id",
        "datasourceUid": "jaeger",
        "urlDisplayLabel": "Open the trace in Jaeger",
    }
    jaeger = sources["jaeger"]
    assert jaeger["type"] == "jaeger"
    to_metrics = jaeger["jsonData"]["tracesToMetrics"]
    assert to_metrics["datasourceUid"] == "prometheus"
    assert to_metrics["tags"] == [{"key": "service.name", "value": "job"}]
    for item in to_metrics["queries"]:
        # `$$` survives Grafana's environment expansion as `$__tags`.
        assert "$$__tags" in item["query"]
        assert re.search(r"(?<!\$)\$__tags", item["query"]) is None


def test_dashboard_provider_loads_the_folder() -> None:
    provider = load_yaml(DASHBOARD_DIR.parent / "glassbox.yaml")["providers"]
    assert [p["type"] for p in provider] == ["file"]
    assert provider[0]["options"]["path"].endswith("/dashboards/glassbox")
    assert provider[0]["allowUiUpdates"] is False


def test_logs_link_to_traces_and_spans_link_to_logs() -> None:
    """Loki's trace_id (structured metadata from OTLP) opens the trace in Jaeger; a Jaeger
    span opens its service's log lines with that trace id in Loki."""
    sources = {d["uid"]: d for d in load_yaml(DATASOURCES)["datasources"]}
    loki = sources["loki"]
    assert (loki["type"], loki["url"]) == ("loki", "http://loki:3100")
    (field,) = loki["jsonData"]["derivedFields"]
    assert field["matcherType"] == "label"
    assert field["matcherRegex"] == "trace_id"
    assert field["datasourceUid"] == "jaeger"
    assert field["url"] == "$${__value.raw}"  # `$$`: a literal `$` after env expansion
    to_logs = sources["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki"
    assert to_logs["tags"] == [{"key": "service.name", "value": "service_name"}]
    assert to_logs["customQuery"] is True
    assert to_logs["query"] == '{$${__tags}} | trace_id="$${__trace.traceId}"'
    pyroscope = sources["pyroscope"]
    assert pyroscope["type"] == "grafana-pyroscope-datasource"
    assert pyroscope["url"] == "http://pyroscope:4040"


def test_the_service_overview_shows_its_logs() -> None:
    model = json.loads((DASHBOARD_DIR / "service-overview.json").read_text())
    (logs,) = [p for p in panels(model) if p["type"] == "logs"]
    (target,) = logs["targets"]
    assert target["datasource"] == {"type": "loki", "uid": "loki"}
    assert target["expr"].startswith('{service_name=~"$service"')


def test_a_flame_graph_per_endpoint_of_the_api() -> None:
    """Every route template of the API under /api/v1 has a flame graph, and every flame
    graph's route exists (the label service/profiles.py writes is the route template)."""
    from service import create_app
    from service.telemetry import route_template

    app = create_app({"DATABASE_URL": "sqlite://", "GLASSBOX_ENV": "test"})
    routes = {
        route_template(rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
    }
    model = json.loads((DASHBOARD_DIR / "profiles.json").read_text())
    graphs = [p for p in panels(model) if p["type"] == "flamegraph"]
    by_route = {}
    for panel in graphs:
        (target,) = panel["targets"]
        assert target["datasource"] == {"type": "grafana-pyroscope-datasource", "uid": "pyroscope"}
        assert target["profileTypeId"] == "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
        match = re.search(r'http_route="([^"]+)"', target["labelSelector"])
        if match:
            by_route[match.group(1)] = panel
    assert set(by_route) == routes
    assert len(graphs) == len(routes) + 1  # and one for the whole service


def test_ratios_beside_rates_have_a_percent_axis_of_their_own(dashboard: dict[str, Any]) -> None:
    """A ratio drawn on a rate's `short` axis is squashed near 0: each gets percent units on
    the right axis."""
    for panel in panels(dashboard):
        if panel.get("type") != "timeseries":
            continue
        if panel["fieldConfig"]["defaults"].get("unit") == "percentunit":
            continue
        overridden = {
            o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
            for o in panel["fieldConfig"].get("overrides", [])
        }
        for target in panel.get("targets", []):
            legend = target.get("legendFormat", "")
            if re.search(r"\b(ratio|share)\b", legend):
                assert overridden.get(legend) == {
                    "unit": "percentunit",
                    "custom.axisPlacement": "right",
                }, (panel["title"], legend)


def test_objectives_and_burn_thresholds_are_drawn() -> None:
    model = json.loads((DASHBOARD_DIR / "service-overview.json").read_text())
    drawn = {
        panel["title"]: sorted(
            step["value"]
            for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            if step["value"] is not None
        )
        for panel in panels(model)
        if panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("thresholdsStyle")
        == {"mode": "dashed"}
    }
    assert drawn == {
        "Latency quantiles (exemplars link to Jaeger)": [0.3],
        "Availability burn rate": [1, 6, 14.4],
        "Latency burn rate": [1, 6, 14.4],
    }


def test_every_dashboard_marks_deploys(dashboard: dict[str, Any]) -> None:
    (deploys,) = [a for a in dashboard["annotations"]["list"] if a["name"] == "Deploys"]
    assert deploys["enable"] is True
    assert deploys["datasource"]["uid"] == "prometheus"
    assert "service_version" in deploys["expr"]


def test_the_deploy_annotation_marks_a_new_version_for_ten_minutes(
    promtool: str, tmp_path: Path
) -> None:
    """promtool evaluates the annotation's query: 0.1.0 runs, 0.2.0 replaces it at 30m; the
    query answers 0.2.0 from 30m to 40m and nothing before or after."""
    model = json.loads((DASHBOARD_DIR / "service-overview.json").read_text())
    (deploys,) = [a for a in model["annotations"]["list"] if a["name"] == "Deploys"]
    expr = deploys["expr"].replace("$service", "glassbox-api").replace("$env", "production")
    labels = 'job="glassbox-api", deployment_environment_name="production", instance="w1"'
    (tmp_path / "deploys_test.yml").write_text(
        json.dumps(
            {
                "rule_files": [],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {
                                "series": f'target_info{{{labels}, service_version="0.1.0"}}',
                                "values": "1x29 stale",
                            },
                            {
                                "series": f'target_info{{{labels}, service_version="0.2.0"}}',
                                "values": "_x30 1x30",
                            },
                        ],
                        "promql_expr_test": [
                            {"expr": expr, "eval_time": "20m", "exp_samples": []},
                            {
                                "expr": expr,
                                "eval_time": "35m",
                                "exp_samples": [
                                    {
                                        "labels": '{job="glassbox-api", service_version="0.2.0"}',
                                        "value": 1,
                                    }
                                ],
                            },
                            {"expr": expr, "eval_time": "45m", "exp_samples": []},
                        ],
                    }
                ],
            }
        )
    )
    result = subprocess.run(
        [promtool, "test", "rules", "deploys_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
