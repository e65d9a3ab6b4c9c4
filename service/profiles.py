"""Continuous profiling with Pyroscope (pyroscope-io), off unless PYROSCOPE_SERVER_ADDRESS is set.

When on, each process (each gunicorn worker: `create_app` runs after the fork) samples its
own stacks and pushes a profile to Pyroscope every 10 seconds, as the application
`service.name`. Samples taken while a request runs carry the label `http_route` (the same
template as the metrics' `http_route`), so a flame graph can be narrowed to one endpoint.
pyroscope-otel's span processor tags the samples of each sampled local-root span with its
span id and writes that id on the span as `pyroscope.profile.id`: the link between a trace
and the CPU it used (observability/README.md, "Profiles", says which clicks reach it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, g, request
from opentelemetry import trace

from service.config import load_profiling_config
from service.telemetry.server import route_template

log = logging.getLogger("service.profiles")

ROUTE_LABEL = "http_route"


@dataclass
class _ProcessState:
    pid: int | None = None
    active: bool = False


_state = _ProcessState()


def settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """PYROSCOPE_* settings, parsed; ConfigError names every invalid one."""
    return load_profiling_config(environ)


def configure_process(service_name: str) -> bool:
    """Start this process's profiler once; False when profiling is off."""
    if _state.pid == os.getpid():
        return _state.active
    _state.pid = os.getpid()
    values = settings()
    address = values["PYROSCOPE_SERVER_ADDRESS"]
    _state.active = bool(address)
    if not address:
        return False

    import pyroscope
    from opentelemetry.sdk.trace import TracerProvider
    from pyroscope.otel import PyroscopeSpanProcessor

    pyroscope.configure(
        application_name=values["OTEL_SERVICE_NAME"] or service_name,
        server_address=address,
        sample_rate=values["PYROSCOPE_SAMPLE_RATE"],
        # Wall-clock samples of threads holding the GIL only: a sync worker's request thread.
        gil_only=True,
        oncpu=True,
    )
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(PyroscopeSpanProcessor())
    log.info("continuous profiling to %s at %d Hz", address, values["PYROSCOPE_SAMPLE_RATE"])
    return True


def init_app(app: Flask, *, service_name: str) -> None:
    """Profile this process when configured, labelling request samples with their route."""
    if not configure_process(service_name):
        return
    import pyroscope

    @app.before_request
    def label_route() -> None:
        rule = request.url_rule
        if rule is not None:
            route = g.profiled_route = route_template(rule.rule)
            pyroscope.add_thread_tag(ROUTE_LABEL, route)

    @app.teardown_request
    def unlabel_route(_exc: BaseException | None) -> None:
        route = g.pop("profiled_route", None)
        if route is not None:
            pyroscope.remove_thread_tag(ROUTE_LABEL, route)
