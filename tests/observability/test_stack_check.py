"""observability/stack_check.py (`make stack-check`) against small fakes of the four HTTP APIs
it reads: Jaeger's /api/traces, Prometheus' /api/v1/query and /api/v1/query_exemplars, Loki's
/loki/api/v1/query_range and Pyroscope's Connect API SelectMergeStacktraces. The real stack
needs a Docker engine (the stack workflow runs the script against it); these fakes answer the
way those APIs document, and each one can be emptied to show the check then fails by name."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from observability.stack_check import Stack, check_stack
from tests.observability.conftest import ROOT

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class FakeBackends(ThreadingHTTPServer):
    """One server for the four APIs (their paths do not overlap); `empty` backends answer
    as those APIs do before data has arrived."""

    empty: set[str]
    requests: list[tuple[str, dict[str, list[str]] | dict[str, Any]]]


def answer(server: FakeBackends, path: str, query: dict[str, list[str]], body: Any) -> Any:
    if path == "/api/traces":
        if "jaeger" in server.empty or query["service"] != ["glassbox-api"]:
            return {"data": []}
        processes = {
            "p1": {"serviceName": "glassbox-api"},
            "p2": {"serviceName": "glassbox-payments"},
        }
        return {"data": [{"traceID": TRACE_ID, "spans": [], "processes": processes}]}
    if path == "/api/v1/query":
        result = (
            [] if "prometheus" in server.empty else [{"metric": {"le": "0.3"}, "value": [0, "4"]}]
        )
        return {"status": "success", "data": {"resultType": "vector", "result": result}}
    if path == "/api/v1/query_exemplars":
        if "exemplars" in server.empty:
            return {"status": "success", "data": []}
        exemplar = {"labels": {"trace_id": TRACE_ID}, "value": "0.42", "timestamp": 1}
        return {"status": "success", "data": [{"seriesLabels": {}, "exemplars": [exemplar]}]}
    if path == "/loki/api/v1/query_range":
        wanted = f'trace_id="{TRACE_ID}"'
        if "loki" in server.empty or wanted not in query["query"][0]:
            return {"status": "success", "data": {"resultType": "streams", "result": []}}
        stream = {"stream": {"service_name": "glassbox-api"}, "values": [["1", "GET /x 200"]]}
        return {"status": "success", "data": {"resultType": "streams", "result": [stream]}}
    if path == "/querier.v1.QuerierService/SelectMergeStacktraces":
        assert body["profileTypeID"].startswith("process_cpu:")
        total = "0" if "pyroscope" in server.empty else "1234"
        return {"flamegraph": {"names": ["total"], "levels": [], "total": total, "maxSelf": "1"}}
    return None


class Handler(BaseHTTPRequestHandler):
    server: FakeBackends

    def _reply(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.requests.append((url.path, query))
        self._reply(answer(self.server, url.path, query, None))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, body))
        self._reply(answer(self.server, self.path, {}, body))

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fakes() -> Iterator[FakeBackends]:
    server = FakeBackends(("127.0.0.1", 0), Handler)
    server.empty = set()
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def stack_of(server: FakeBackends) -> Stack:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return Stack(jaeger=url, prometheus=url, loki=url, pyroscope=url)


def test_a_joined_stack_passes(fakes: FakeBackends) -> None:
    assert check_stack(stack_of(fakes), timeout=1, interval=0.05) == []
    paths = {path for path, _ in fakes.requests}
    assert paths == {
        "/api/traces",
        "/api/v1/query",
        "/api/v1/query_exemplars",
        "/loki/api/v1/query_range",
        "/querier.v1.QuerierService/SelectMergeStacktraces",
    }
    loki = next(q for p, q in fakes.requests if p == "/loki/api/v1/query_range")
    assert loki["query"] == [f'{{service_name="glassbox-api"}} | trace_id="{TRACE_ID}"']


@pytest.mark.parametrize(
    ("empty", "named"),
    [
        ("jaeger", "trace with the payments hop"),
        ("prometheus", "histogram with an exemplar"),
        ("exemplars", "histogram with an exemplar"),
        ("loki", "log line of the trace"),
        ("pyroscope", "profile"),
    ],
)
def test_a_missing_signal_fails_by_name(fakes: FakeBackends, empty: str, named: str) -> None:
    fakes.empty = {empty}
    failures = check_stack(stack_of(fakes), timeout=0.3, interval=0.05)
    assert len(failures) == 1, failures
    assert failures[0].startswith(named)


def test_an_unreachable_backend_fails_instead_of_hanging(fakes: FakeBackends) -> None:
    stack = Stack(**{**stack_of(fakes).__dict__, "pyroscope": "http://127.0.0.1:9"})
    failures = check_stack(stack, timeout=0.3, interval=0.05)
    assert [f.split(":")[0] for f in failures] == ["profile"]


def test_the_command_line_exits_non_zero_on_failure(fakes: FakeBackends) -> None:
    url = f"http://127.0.0.1:{fakes.server_address[1]}"
    command = [sys.executable, "observability/stack_check.py", "--timeout", "0.5"]
    command += ["--interval", "0.05"]
    for backend in ("jaeger", "prometheus", "loki", "pyroscope"):
        command += [f"--{backend}", url]
    ok = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("ok  ") == 4
    fakes.empty = {"loki"}
    failed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    assert "FAIL log line of the trace" in failed.stderr
