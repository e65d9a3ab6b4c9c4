"""Builders shared by glassbox's dashboards: datasources, variables, panels, queries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import (
    grafanapyroscope,
    logs,
    loki,
    prometheus,
    stat,
    timeseries,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

# Fixed UIDs of provisioning/datasources/datasources.yaml.
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")

# Every query is narrowed by the template variables; the environment and instance variables are
# required on every dashboard, the service variable separates the api from payments.
SELECTOR = 'deployment_environment=~"$env", job=~"$service", instance=~"$instance"'
# What the SLOs count: user traffic, not probes, scrapes or a load generator's requests
# (baggage synthetic_request=true: the `synthetic` label, service/telemetry/server.py).
USER_TRAFFIC = SELECTOR + ', http_route!~"/health/.*|/metrics", synthetic!="true"'
HTTP_COUNT = "http_server_request_duration_seconds_count"
HTTP_BUCKET = "http_server_request_duration_seconds_bucket"

# SLOs (rules/slo.yml): 99.9% without 5xx; 99% within 300 ms.
AVAILABILITY_BUDGET = 0.001
LATENCY_BUDGET = 0.01


def variables(metric: str = HTTP_COUNT) -> list[dashboard_builders.QueryVariable]:
    """Environment, service (Prometheus job) and instance, each narrowing the next."""

    def query_variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
        return (
            dashboard_builders.QueryVariable(name)
            .label(label)
            .datasource(PROMETHEUS)
            .query(query)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )

    return [
        query_variable("env", "Environment", f"label_values({metric}, deployment_environment)"),
        query_variable(
            "service",
            "Service",
            f'label_values({metric}{{deployment_environment=~"$env"}}, job)',
        )
        .multi(True)
        .include_all(True)
        .all_value(".*"),
        query_variable(
            "instance",
            "Instance",
            f'label_values({metric}{{deployment_environment=~"$env", job=~"$service"}}, instance)',
        )
        .multi(True)
        .include_all(True)
        .all_value(".*"),
    ]


def query(expr: str, legend: str = "", ref: str = "A", exemplar: bool = False) -> Any:
    target = (
        prometheus.Dataquery()
        .datasource(PROMETHEUS)
        .expr(expr)
        .ref_id(ref)
        .range()
        .exemplar(exemplar)
    )
    return target.legend_format(legend) if legend else target


def graph(
    title: str,
    description: str,
    unit: str,
    targets: Iterable[tuple[str, str]],
    *,
    width: int = 12,
    exemplar: bool = False,
    stacked: bool = False,
    lines: list[float] | None = None,
    shares: Iterable[str] = (),
) -> timeseries.Panel:
    """A time series panel; `lines` draws a dashed horizontal line at each value (an objective,
    an alert's threshold); the series named in `shares` (legends) are ratios, drawn in percent
    on an axis of their own on the right, not squashed near 0 on the rates' axis."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    for legend in shares:
        panel = panel.override_by_name(
            legend,
            [
                DynamicConfigValue(id_val="unit", value="percentunit"),
                DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        )
    if lines:
        steps = [Threshold(value=None, color="transparent")]
        steps += [Threshold(value=value, color="red") for value in sorted(lines)]
        panel = panel.thresholds(
            dashboard_builders.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)
        ).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    for index, (expr, legend) in enumerate(targets):
        panel = panel.with_target(query(expr, legend, chr(ord("A") + index), exemplar))
    return panel


def single(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    thresholds: list[tuple[float | None, str]] | None = None,
    width: int = 6,
    decimals: int | None = None,
) -> stat.Panel:
    steps = thresholds or [(None, "green")]
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(width)
        .height(5)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=value, color=color) for value, color in steps])
        )
        .with_target(query(expr))
    )
    return panel.decimals(decimals) if decimals is not None else panel


def quantile(q: float, bucket: str, selector: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({group}) "
        f"(rate({bucket}{{{selector}}}[$__rate_interval])))"
    )


def ratio_or_zero(part: str, whole: str, by: str) -> str:
    """part / whole per group, 0 (not "no data") for groups where `part` has no series."""
    return f"({part} or {whole} * 0) / {whole}" if by else f"({part} or vector(0)) / {whole}"


def new_dashboard(uid: str, title: str, description: str, tags: list[str]) -> Any:
    return (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["glassbox", *tags])
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .link(
            dashboard_builders.DashboardLink("glassbox")
            .type("dashboards")
            .tags(["glassbox"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .annotation(
            dashboard_builders.AnnotationQuery()
            .name("Deploys")
            .datasource(PROMETHEUS)
            .enable(True)
            .icon_color("#5794F2")
            .expr(DEPLOYS)
        )
    )


# A deploy: a (service, version) pair that target_info did not have 10 minutes earlier. The
# version is service.version, from the package metadata (service/version.py), on the OTLP
# path's target_info (resource attributes); marked for the 10 minutes after it appears.
_VERSIONS = (
    "count by (job, service_version) "
    '(target_info{job=~"$service", deployment_environment_name=~"$env"})'
)
DEPLOYS = f"{_VERSIONS} unless {_VERSIONS.replace('})', '} offset 10m)')}"


# Logs (Loki, OTLP ingestion) and profiles (Pyroscope), joined to the traces by their ids.
LOKI = DataSourceRef(type_val="loki", uid="loki")
PYROSCOPE = DataSourceRef(type_val="grafana-pyroscope-datasource", uid="pyroscope")
# Loki's stream labels for the same variables: service.name, deployment.environment.name
# (made an index label in observability/loki/config.yaml) and service.instance.id.
LOG_SELECTOR = (
    'service_name=~"$service", deployment_environment_name=~"$env", '
    'service_instance_id=~"$instance"'
)
CPU_PROFILE = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"


def logs_panel(title: str, description: str, expr: str, *, width: int = 24) -> Any:
    target = loki.Dataquery().datasource(LOKI).expr(expr).ref_id("A").query_type("range")
    return (
        logs.Panel()
        .title(title)
        .description(description)
        .datasource(LOKI)
        .span(width)
        .height(10)
        .show_time(True)
        .wrap_log_message(True)
        .enable_log_details(True)
        .sort_order(common.LogsSortOrder.DESCENDING)
        .with_target(target)
    )


def flame_graph(title: str, description: str, selector: str, *, width: int = 12) -> Any:
    target = (
        grafanapyroscope.Dataquery()
        .datasource(PYROSCOPE)
        .profile_type_id(CPU_PROFILE)
        .label_selector(selector)
        .query_type("profile")
        .ref_id("A")
    )
    return (
        dashboard_builders.Panel()
        .type("flamegraph")
        .title(title)
        .description(description)
        .datasource(PYROSCOPE)
        .span(width)
        .height(12)
        .with_target(target)
    )
