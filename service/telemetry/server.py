"""The HTTP server side: the server span, request metrics and the access line, per request."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import sanitize_method

from service import logs as app_logging
from service.edge import set_trace_headers, unobserved_path
from service.metrics import metrics

tracer = trace.get_tracer("glassbox")

_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_SCHEMES = frozenset(("http", "https"))
# Load generators mark their requests with this baggage entry (the OpenTelemetry Demo's
# convention; loadtests/locustfile.py sends it): recorded on the server span and as the
# `synthetic` label of the request metrics, so SLOs and dashboards can leave them out.
SYNTHETIC_BAGGAGE = "synthetic_request"
_baggage_propagator = W3CBaggagePropagator()


_route_templates: dict[str, str] = {}


def route_template(rule: str) -> str:
    """Flask's `/products/<int(min=1):product_id>` as OpenAPI's `/products/{product_id}`."""
    template = _route_templates.get(rule)
    if template is None:
        template = _route_templates[rule] = _RULE_ARGUMENT.sub(r"{\1}", rule)
    return template


@dataclass
class _Request:
    started: float
    method: str  # as sent
    metric_method: str  # bounded: a known method or _OTHER
    route: str  # the template, "" when no route matched
    scheme: str
    observed: bool
    synthetic: bool
    span: Any = None
    token: Any = None


def observe_requests(app: Flask, *, spans: bool) -> None:
    def before() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
        rule = req.url_rule
        scheme = req.scheme
        state = _Request(
            started=time.perf_counter(),
            method=req.method,
            # Labels stay bounded whatever a client sends (HTTP semantic conventions):
            # a made-up method is _OTHER, an unmatched path has no route.
            metric_method=sanitize_method(req.method),
            route=route_template(rule.rule) if rule is not None else "",
            scheme=scheme if scheme in _SCHEMES else "_OTHER",
            observed=not unobserved_path(req.path),
            synthetic=_is_synthetic(req.environ),
        )
        g.observed_request = state
        if not state.observed:
            return
        metrics.active_requests(state.metric_method, 1)
        if spans:
            parent = propagate.extract(req.headers) if _has_trace_headers(req.environ) else None
            method = "HTTP" if state.metric_method == "_OTHER" else state.metric_method
            name = f"{method} {state.route}" if state.route else method
            span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
            if span.is_recording():
                span.set_attributes(_server_attributes(req, state))
            state.span = span
            state.token = context.attach(trace.set_span_in_context(span, parent))

    def after(response: Response) -> Response:
        state: _Request | None = g.get("observed_request")
        if state is None:
            return response
        seconds = time.perf_counter() - state.started
        status = response.status_code
        span = state.span or trace.get_current_span()
        span_context = span.get_span_context()
        if span_context.is_valid:
            set_trace_headers(response, span_context)
        if state.span is not None and state.span.is_recording():
            state.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                state.span.set_attribute("error.type", str(status))
                state.span.set_status(Status(StatusCode.ERROR))
        if state.observed:
            # Recorded while the server span is current, so the histogram keeps its trace
            # id as an exemplar (OTLP path).
            metrics.http_request(
                state.metric_method, state.route, status, state.scheme, seconds, state.synthetic
            )
            if status == 429:
                metrics.rate_limited(state.route)
        app_logging.log_access(state.method, state.route, status, seconds)
        return response

    def teardown(exc: BaseException | None) -> None:
        state: _Request | None = g.pop("observed_request", None)
        if state is None or not state.observed:
            return
        metrics.active_requests(state.metric_method, -1)
        if state.span is not None:
            if exc is not None and state.span.is_recording():
                state.span.record_exception(exc)
                state.span.set_status(Status(StatusCode.ERROR))
            state.span.end()
        if state.token is not None:
            context.detach(state.token)

    app.before_request(before)
    app.after_request(after)
    app.teardown_request(teardown)


_propagator_keys: tuple[str, ...] | None = None


def _has_trace_headers(environ: dict[str, Any]) -> bool:
    """Does the request carry any header the configured propagators read (OTEL_PROPAGATORS)?

    Most requests carry no context: they skip the propagators' header parsing.
    """
    global _propagator_keys  # computed once per process
    if _propagator_keys is None:
        fields = propagate.get_global_textmap().fields
        _propagator_keys = tuple("HTTP_" + f.upper().replace("-", "_") for f in fields)
    return any(key in environ for key in _propagator_keys)


def _is_synthetic(environ: dict[str, Any]) -> bool:
    """Does the request's W3C baggage say `synthetic_request=true`? (Whatever
    OTEL_PROPAGATORS says: the mark must reach the metrics with tracing off too.)"""
    header = environ.get("HTTP_BAGGAGE")
    if not header:
        return False
    marked = baggage.get_baggage(
        SYNTHETIC_BAGGAGE, _baggage_propagator.extract({"baggage": header})
    )
    return str(marked).lower() == "true"


def _server_attributes(req: Any, state: _Request) -> dict[str, Any]:
    environ = req.environ
    attributes: dict[str, Any] = {
        "http.request.method": state.metric_method,
        "url.path": req.path,
        "url.scheme": state.scheme,
        "server.address": req.host.split(":")[0],
        "network.protocol.version": environ.get("SERVER_PROTOCOL", "HTTP/1.1")[5:],
        "client.address": req.remote_addr or "",
        "user_agent.original": req.user_agent.string,
    }
    if state.metric_method != state.method:
        attributes["http.request.method_original"] = state.method
    if state.route:
        attributes["http.route"] = state.route
    if state.synthetic:  # semantic conventions: a test's request, not a user's
        attributes["user_agent.synthetic.type"] = "test"
    port = environ.get("SERVER_PORT")
    if port and port.isdigit():
        attributes["server.port"] = int(port)
    return attributes


def record_exception(error: BaseException) -> None:
    """Attach a handled exception to the current span (the global error handler calls this)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None
