"""The SDK's exporter variables, as users set them: OTLP over gRPC to a real gRPC server
decoding the real export requests, console output, and refusal of unknown values."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from service.config import ConfigError, otel_exports
from tests.processes import start_gunicorn
from tests.reliability.servers import PROJECT_ROOT, VENV_BIN, run_venv_tool, server_env
from tests.telemetry.conftest import one_worker_env
from tests.telemetry.otlp import value_of, wait_for


@dataclass
class GrpcCollector:
    """An OTLP/gRPC receiver: the generated service stubs, recording every request."""

    url: str = ""
    traces: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received so far."""
        with self.lock:
            requests_ = list(self.traces)
        return [
            ({kv.key: value_of(kv.value) for kv in rs.resource.attributes}, span)
            for request in requests_
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def metric_names(self) -> set[str]:
        with self.lock:
            requests_ = list(self.metrics)
        return {
            metric.name
            for request in requests_
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: GrpcCollector) -> None:
        self.collector = collector

    def Export(self, request: Any, context: Any) -> Any:
        with self.collector.lock:
            self.collector.traces.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, collector: GrpcCollector) -> None:
        self.collector = collector

    def Export(self, request: Any, context: Any) -> Any:
        with self.collector.lock:
            self.collector.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def grpc_collector() -> Iterator[GrpcCollector]:
    collector = GrpcCollector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(collector), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(collector), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    collector.url = f"http://127.0.0.1:{port}"
    try:
        yield collector
    finally:
        server.stop(grace=None)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('exporters') / 'shop.db'}"
    done = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "service", "db", "upgrade"],
        env=server_env(DATABASE_URL=url),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return url


@pytest.mark.parametrize(
    "protocol",
    [
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        # The per-signal variable wins over the general one.
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            "OTEL_METRICS_EXPORTER": "none",
        },
    ],
    ids=["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"],
)
def test_otlp_over_grpc_reaches_a_grpc_collector(
    protocol: dict[str, str], grpc_collector: GrpcCollector, database: str, tmp_path: Path
) -> None:
    env = one_worker_env(database, OTEL_EXPORTER_OTLP_ENDPOINT=grpc_collector.url, **protocol)
    api = start_gunicorn("api", env, tmp_path / "api.log")
    try:
        response = requests.get(api.url("/api/v1/categories"), timeout=10)
        assert response.status_code == 200
        trace_id = response.headers["X-Trace-Id"]

        def server_span() -> tuple[dict[str, Any], Any] | None:
            return next(
                (
                    (resource, span)
                    for resource, span in grpc_collector.spans()
                    if span.trace_id.hex() == trace_id and span.name == "GET /api/v1/categories"
                ),
                None,
            )

        resource, _ = wait_for(server_span, what="the request's span over gRPC")
        assert resource["service.name"] == "glassbox-api"
        assert resource["deployment.environment.name"] == "test"
        assert "deployment.environment" not in resource  # deprecated name
        if "OTEL_METRICS_EXPORTER" not in protocol:
            wait_for(
                lambda: "http.server.request.duration" in grpc_collector.metric_names(),
                what="request metrics over gRPC",
            )
        else:
            assert not grpc_collector.metrics
    finally:
        api.stop()


CONSOLE_RUN = """
from service import create_app
from service import telemetry

app = create_app()
assert app.test_client().get("/api/v1/categories").status_code == 200
telemetry.shutdown()  # flush, as gunicorn's worker_exit does
"""


def test_console_exporter_prints_spans(database: str) -> None:
    done = run_venv_tool(
        "python",
        "-c",
        CONSOLE_RUN,
        env=one_worker_env(
            database,
            OTEL_TRACES_EXPORTER="console",
            OTEL_METRICS_EXPORTER="none",
            OTEL_EXPORTER_OTLP_ENDPOINT="",
        ),
    )
    assert done.returncode == 0, done.stderr
    # ConsoleSpanExporter writes each span as an indented JSON object.
    decoder = json.JSONDecoder()
    spans = []
    text = done.stdout
    position = text.find("{")
    while position != -1:
        try:
            item, end = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        if isinstance(item, dict) and "context" in item:
            spans.append(item)
        position = text.find("{", end)
    server = [s for s in spans if s["name"] == "GET /api/v1/categories"]
    assert server, done.stdout[-2000:]
    assert server[0]["resource"]["attributes"]["deployment.environment.name"] == "test"
    assert server[0]["kind"] == "SpanKind.SERVER"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_LOGS_EXPORTER", "otlp,none"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpcs"),
    ],
)
def test_unknown_values_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable}={value!r}"):
        otel_exports({variable: value})


def test_the_service_refuses_to_start_with_an_unknown_exporter() -> None:
    done = run_venv_tool(
        "flask",
        "--app",
        "service",
        "routes",
        env=server_env(OTEL_SDK_DISABLED="false", OTEL_TRACES_EXPORTER="zipkin"),
    )
    assert done.returncode != 0
    assert "ConfigError: invalid configuration: OTEL_TRACES_EXPORTER='zipkin'" in done.stderr


def test_documented_values_are_accepted() -> None:
    exports = otel_exports(
        {
            "OTEL_TRACES_EXPORTER": "otlp,console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
        }
    )
    assert exports["TRACES"].exporters == ("otlp", "console")
    assert exports["TRACES"].protocol == "grpc"
    assert exports["METRICS"].exporters == ()
    assert exports["METRICS"].protocol == "http/protobuf"
    assert exports["LOGS"].exporters == ()  # logs are opt-in
