"""Runtime: CPU, memory, GC per worker."""

from __future__ import annotations

from typing import Any

from observability.grafana.glassbox_dashboards.common import (
    SELECTOR,
    graph,
    new_dashboard,
    variables,
)


def _panels_1() -> list[Any]:
    return [
        graph(
            "CPU per worker",
            "CPU seconds per second (1 = one core) of each worker process.",
            "percentunit",
            [
                (
                    "sum by (instance, worker) (rate(process_cpu_time_seconds_total"
                    f"{{{SELECTOR}}}[$__rate_interval]))",
                    "{{instance}} worker {{worker}}",
                )
            ],
        ),
        graph(
            "CPU by mode",
            "User and system CPU of all selected workers.",
            "percentunit",
            [
                (
                    "sum by (cpu_mode) (rate(process_cpu_time_seconds_total"
                    f"{{{SELECTOR}}}[$__rate_interval]))",
                    "{{cpu_mode}}",
                )
            ],
            stacked=True,
        ),
        graph(
            "Memory per worker",
            "Resident memory of each worker process.",
            "bytes",
            [
                (
                    f"sum by (instance, worker) (process_memory_usage_bytes{{{SELECTOR}}})",
                    "{{instance}} worker {{worker}}",
                )
            ],
        ),
        graph(
            "GC collections per worker and generation",
            "CPython garbage collections per second; generation 2 runs are the costly ones.",
            "short",
            [
                (
                    "sum by (instance, worker, cpython_gc_generation) (rate("
                    f"cpython_gc_collections_total{{{SELECTOR}}}[$__rate_interval]))",
                    "{{instance}} worker {{worker}} gen {{cpython_gc_generation}}",
                )
            ],
        ),
    ]


def _panels_2() -> list[Any]:
    return [
        graph(
            "Requests in flight per instance",
            "Sync workers serve one request each: in-flight equal to the worker count means "
            "requests are queueing.",
            "short",
            [
                (
                    f"sum by (instance) (http_server_active_requests{{{SELECTOR}}})",
                    "{{instance}}",
                )
            ],
            width=24,
        ),
    ]


def runtime() -> Any:
    board = new_dashboard(
        "glassbox-runtime",
        "glassbox: runtime",
        "CPU, memory and garbage collection per gunicorn worker (label worker = its pid).",
        ["runtime"],
    ).variables(variables())
    for panel in [*_panels_1(), *_panels_2()]:
        board = board.with_panel(panel)
    return board
