"""A tracer provider whose tracers start client spans only under a recording parent."""

from __future__ import annotations

import contextlib
from typing import Any

from opentelemetry import trace


class _ParentGatedTracer(trace.Tracer):
    """Creates client spans only under a recording parent; otherwise costs one check.

    Given to the contrib Redis and requests instrumentors: most requests are not sampled,
    and their per-call span set-up was a measurable share of a cached read. Context
    still propagates: `requests` injects the (unsampled) current span's traceparent.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        if not _parent_recording(kwargs.get("context")):
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, *args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]  # same call, any context manager
        self, name: str, *args: Any, **kwargs: Any
    ) -> Any:
        if not _parent_recording(kwargs.get("context")):
            yield trace.INVALID_SPAN
            return
        with self._tracer.start_as_current_span(name, *args, **kwargs) as span:
            yield span


def _parent_recording(parent: Any) -> bool:
    return bool(trace.get_current_span(parent).is_recording())


class ParentGatedTracerProvider(trace.TracerProvider):
    def __init__(self, provider: trace.TracerProvider) -> None:
        self._provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _ParentGatedTracer(self._provider.get_tracer(*args, **kwargs))
