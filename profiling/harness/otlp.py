"""An OTLP/HTTP receiver that decodes the real protobuf payloads the exporters send.

Used by the profiling lab (profiling/lab.py), which summarises the spans of one run by self
time, by the telemetry tests (tests/telemetry/otlp.py), and, counting exports without
decoding or keeping them, by the bench and levers (so telemetry-on variants export for
real at no memory cost). It keeps what arrives in memory for the life of the process and
implements nothing of a collector, Jaeger or Prometheus: no UI, no storage, no query language.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from profiling.harness.processes import free_port

_MESSAGES: dict[str, tuple[Any, Any]] = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs}


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    status_code: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    events: list[str]
    start_ns: int = 0
    end_ns: int = 0

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name", "?"))


@dataclass
class Receiver:
    url: str = ""
    requests: dict[str, list[Any]] = field(default_factory=lambda: {p: [] for p in _MESSAGES})
    counts: dict[str, int] = field(default_factory=dict)  # exports received, by path
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> None:
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1

    def record(self, path: str, message: Any) -> None:
        with self.lock:
            self.requests[path].append(message)

    def clear(self) -> None:
        """Forget everything received so far (the lab starts each experiment empty)."""
        with self.lock:
            for messages in self.requests.values():
                messages.clear()

    def _copy(self, path: str) -> list[Any]:
        with self.lock:
            return list(self.requests[path])

    def _items(self, path: str, kind: str, items: str) -> Iterator[tuple[Any, Any]]:
        """(ResourceX, item) for every item received on `path`: the three signals nest the
        same way (resource_<kind> > scope_<kind> > items)."""
        for request in self._copy(path):
            for resource_level in getattr(request, f"resource_{kind}"):
                for scope_level in getattr(resource_level, f"scope_{kind}"):
                    for item in getattr(scope_level, items):
                        yield resource_level, item

    def spans(self) -> list[Span]:
        return [
            Span(
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                name=span.name,
                kind=span.kind,
                status_code=span.status.code,
                attributes=attributes(span.attributes),
                resource=attributes(resource_spans.resource.attributes),
                events=[event.name for event in span.events],
                start_ns=span.start_time_unix_nano,
                end_ns=span.end_time_unix_nano,
            )
            for resource_spans, span in self._items("/v1/traces", "spans", "spans")
        ]

    def span_count(self) -> int:
        return sum(1 for _ in self._items("/v1/traces", "spans", "spans"))

    def metrics(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """(resource attributes, Metric) for every metric received."""
        for resource_metrics, metric in self._items("/v1/metrics", "metrics", "metrics"):
            yield attributes(resource_metrics.resource.attributes), metric

    def log_records(self) -> Iterator[tuple[dict[str, Any], Any]]:
        for resource_logs, record in self._items("/v1/logs", "logs", "log_records"):
            yield attributes(resource_logs.resource.attributes), record


def self_times(spans: Iterable[Span]) -> dict[str, int]:
    """Each span's self time in ns: its duration minus its direct children's durations.

    Children are matched by parent span id across services (the payments server span is a
    child of the API's client span). Children of a synchronous span do not overlap, so
    what remains is the time the span spent in its own code (or, for a client span, on
    the wire); overlapping children would make it negative, hence the floor at zero.
    """
    spans = list(spans)
    children: dict[str, int] = defaultdict(int)
    for span in spans:
        if span.parent_span_id:
            children[span.parent_span_id] += span.duration_ns
    return {span.span_id: max(0, span.duration_ns - children[span.span_id]) for span in spans}


def _handler(receiver: Receiver, keep: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            kinds = _MESSAGES.get(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not keep:
                # An empty protobuf message is a valid Export*ServiceResponse (full success).
                receiver.count(self.path)
                self._answer(200, b"")
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if kinds is None or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            request_type, response_type = kinds
            message = request_type()
            message.ParseFromString(body)  # raises on anything but a valid OTLP payload
            receiver.count(self.path)
            receiver.record(self.path, message)
            self._answer(200, response_type().SerializeToString())

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            return

    return Handler


def serve_receiver(*, keep: bool = True) -> tuple[Receiver, ThreadingHTTPServer]:
    """Start a receiver on 127.0.0.1 and a free port in a daemon thread.

    `keep=False` only counts the exports (no decoding, nothing kept). The caller stops it
    with `server.shutdown()` and `server.server_close()`, or uses `otlp_sink`.
    """
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(receiver, keep))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


@contextlib.contextmanager
def otlp_sink(*, keep: bool = False) -> Iterator[Receiver]:
    """A receiver for the length of a `with` block (counting only, unless `keep`)."""
    receiver, server = serve_receiver(keep=keep)
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
