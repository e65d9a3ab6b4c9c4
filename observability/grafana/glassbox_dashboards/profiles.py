"""Profiles: a CPU flame graph per endpoint of the API, from Pyroscope (service/profiles.py
labels every sample taken during a request with its `http_route`)."""

from __future__ import annotations

from typing import Any

from observability.grafana.glassbox_dashboards.common import flame_graph, new_dashboard, variables

# The API's endpoints, as route templates (the `http_route` of metrics and profiles).
ENDPOINTS = (
    "/api/v1/products",
    "/api/v1/products/{product_id}",
    "/api/v1/categories",
    "/api/v1/categories/{category_id}",
    "/api/v1/orders",
    "/api/v1/orders/{order_id}",
    "/api/v1/orders/{order_id}/cancel",
    "/api/v1/reports/sales",
)


def endpoint_flame_graphs() -> list[Any]:
    return [
        flame_graph(
            f"CPU: {route}",
            f"Where the CPU of requests to {route} went (all methods), over the time range.",
            f'{{service_name=~"$service", http_route="{route}"}}',
        )
        for route in ENDPOINTS
    ]


def profiles() -> Any:
    board = new_dashboard(
        "glassbox-profiles",
        "glassbox: profiles",
        "CPU flame graphs per endpoint from continuous profiling (Pyroscope). From a slow "
        "trace: note its route and time, open this dashboard on that range "
        "(observability/README.md, Profiles).",
        ["profiles"],
    ).variables(variables())
    board = board.with_panel(
        flame_graph(
            "CPU: the whole service",
            "Every sample of the selected service, in and out of requests.",
            '{service_name=~"$service"}',
            width=24,
        )
    )
    for panel in endpoint_flame_graphs():
        board = board.with_panel(panel)
    return board
