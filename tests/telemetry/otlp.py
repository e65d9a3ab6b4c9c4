"""The OTLP/HTTP receiver for tests (profiling/harness/otlp.py): decodes the real protobuf payloads.

It stands in for the OpenTelemetry Collector (none can run here) and only records what
arrives; it implements nothing of Jaeger or Prometheus.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from profiling.harness.otlp import Receiver, Span, attributes, serve_receiver, value_of

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], *, timeout: float = 20.0, what: str = "") -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


__all__ = [
    "KeyValue",
    "Receiver",
    "Span",
    "attributes",
    "serve_receiver",
    "value_of",
    "wait_for",
]
