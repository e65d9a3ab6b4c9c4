"""Requests gunicorn refuses before the app runs are answered as problem+json too.

Each malformed request goes over a raw socket (no HTTP client would send it) to the API and
to the payments service under gunicorn as `make serve` runs them (2 workers,
service/gunicorn_conf.py). Requests just inside each limit reach the app: the limits are
where the README says.
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from gunicorn.http import errors as parse_errors

from service import gunicorn_conf
from service.edge import security_headers
from service.errors import PROBLEM_JSON, PROBLEM_TYPE_BASE
from service.gunicorn_worker import answer_with_problem, problem_for
from tests.processes import PAYMENTS_APP, start_gunicorn
from tests.reliability.conftest import StartServer
from tests.reliability.servers import GunicornServer, server_env

LINE_LIMIT = gunicorn_conf.limit_request_line
FIELDS_LIMIT = gunicorn_conf.limit_request_fields
FIELD_SIZE_LIMIT = gunicorn_conf.limit_request_field_size


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def _request_line(length: int, path: bytes = b"/health/live") -> bytes:
    """`GET <path>?pad=… HTTP/1.1`, exactly `length` bytes long."""
    start, end = b"GET " + path + b"?pad=", b" HTTP/1.1"
    return start + b"a" * (length - len(start) - len(end)) + end


def _header_line(length: int) -> bytes:
    """One header line of `length` bytes, CRLF included (as gunicorn counts it)."""
    return b"X-Pad: " + b"a" * (length - len(b"X-Pad: \r\n")) + b"\r\n"


def _extra_headers(count: int) -> bytes:
    return b"".join(b"X-Extra-%d: 1\r\n" % n for n in range(count))


POST = b"POST /health/live HTTP/1.1\r\nHost: localhost\r\n"
# In credentials and query strings of refused requests: no log line may hold it (issue 23,
# finding 7).
SECRET = b"gbx_s3cr3t-that-must-not-be-logged"

# name → (raw request, status, problem slug)
REFUSED: dict[str, tuple[bytes, int, str]] = {
    "request line one byte over the limit": (
        _request_line(LINE_LIMIT + 1) + b"\r\nHost: localhost\r\n\r\n",
        414,
        "request-line-too-long",
    ),
    "request line of 6190 bytes (schemathesis' case)": (
        _request_line(6190) + b"\r\nHost: localhost\r\n\r\n",
        414,
        "request-line-too-long",
    ),
    "a header line one byte over the limit": (
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n"
        + _header_line(FIELD_SIZE_LIMIT + 1)
        + b"\r\n",
        431,
        "request-headers-too-large",
    ),
    "one header field more than the limit": (
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n"
        + _extra_headers(FIELDS_LIMIT)
        + b"\r\n",
        431,
        "request-headers-too-large",
    ),
    "request line without target and version": (
        b"GET\r\nHost: localhost\r\n\r\n",
        400,
        "malformed-request",
    ),
    "target without a leading slash": (
        b"GET health HTTP/1.1\r\nHost: localhost\r\n\r\n",
        400,
        "malformed-request",
    ),
    "invalid method": (b"G@T / HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "malformed-request"),
    "HTTP/2.0 in the request line": (
        b"GET /health/live HTTP/2.0\r\nHost: localhost\r\n\r\n",
        505,
        "http-version-not-supported",
    ),
    "HTTP/0.9 in the request line": (
        b"GET /health/live HTTP/0.9\r\nHost: localhost\r\n\r\n",
        505,
        "http-version-not-supported",
    ),
    "garbled HTTP version": (
        b"GET /health/live HTTP/1.x\r\nHost: localhost\r\n\r\n",
        400,
        "malformed-request",
    ),
    "header name with a space": (
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nBad Name: 1\r\n\r\n",
        400,
        "malformed-request",
    ),
    "obsolete line folding": (
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n folded\r\n\r\n",
        400,
        "malformed-request",
    ),
    "Content-Length not a number": (
        POST + b"Content-Length: abc\r\n\r\n{}",
        400,
        "malformed-request",
    ),
    "Content-Length negative": (POST + b"Content-Length: -2\r\n\r\n{}", 400, "malformed-request"),
    "two Content-Length headers": (
        POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
        "malformed-request",
    ),
    "Content-Length beside chunked": (
        POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        400,
        "malformed-request",
    ),
    "Transfer-Encoding not ending with chunked": (
        POST + b"Transfer-Encoding: gzip\r\n\r\n",
        400,
        "malformed-request",
    ),
    "unknown transfer coding": (
        POST + b"Transfer-Encoding: zstd-experimental\r\n\r\n",
        501,
        "transfer-coding-not-implemented",
    ),
    "an Authorization line without a colon": (
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nAuthorization Bearer "
        + SECRET
        + b"\r\n\r\n",
        400,
        "malformed-request",
    ),
    "a token in a malformed header name": (
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nAuthorization Bearer "
        + SECRET
        + b": x\r\n\r\n",
        400,
        "malformed-request",
    ),
    "a malformed request line with a query string": (
        b"GET health?token=" + SECRET + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        400,
        "malformed-request",
    ),
    "an invalid method before a query string": (
        b"G@T /health/live?token=" + SECRET + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        400,
        "malformed-request",
    ),
    "Expect other than 100-continue": (
        POST + b"Expect: payment\r\nContent-Length: 0\r\n\r\n",
        417,
        "expectation-failed",
    ),
}

# Both services read a chunked body before the app runs (service/api.py `BoundedChunkedBody`),
# so gunicorn's chunk parser refuses a malformed one.
REFUSED_WITH_BODIES = {
    **REFUSED,
    "malformed chunk size": (
        POST + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n{}\r\n0\r\n\r\n",
        400,
        "malformed-request",
    ),
}


def admitted(padded_path: bytes) -> dict[str, bytes]:
    """Just inside each limit: gunicorn lets these through, and the app answers 200.

    `padded_path` takes an unknown query parameter (the API's operations refuse one with
    422, so the API is given its spec, which takes any).
    """
    return {
        "request line at the limit": _request_line(LINE_LIMIT, padded_path)
        + b"\r\nHost: localhost\r\n\r\n",
        "a header line at the limit": (
            b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n"
            + _header_line(FIELD_SIZE_LIMIT)
            + b"\r\n"
        ),
        "as many header fields as the limit": (
            b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n"
            + _extra_headers(FIELDS_LIMIT - 1)
            + b"\r\n"
        ),
    }


def send_raw(port: int, request: bytes) -> Reply:
    """Send `request` as is, say nothing more, and read the reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} sent twice"
        headers[name.lower()] = value.strip()
    return Reply(int(status_line.split()[1]), headers, body)


def problem_mismatches(reply: Reply, status: int, slug: str) -> list[str]:
    """How `reply` differs from the problem+json refusal expected (empty when it does not)."""
    found = []
    if reply.status != status:
        found.append(f"status {reply.status}, expected {status}")
    if reply.headers.get("content-type") != PROBLEM_JSON:
        found.append(f"content type {reply.headers.get('content-type')!r}")
    if reply.headers.get("content-length") != str(len(reply.body)):
        found.append("Content-Length is not the body's length")
    if "server" in reply.headers:
        found.append(f"Server: {reply.headers['server']}")
    if not reply.headers.get("date", "").endswith(" GMT"):
        found.append(f"Date: {reply.headers.get('date')!r}")
    expected_headers = {"cache-control": "no-store", "connection": "close"}
    expected_headers |= {name.lower(): value for name, value in security_headers().items()}
    for name, value in expected_headers.items():
        if reply.headers.get(name) != value:
            found.append(f"{name}: {reply.headers.get(name)!r}, expected {value!r}")
    try:
        problem = json.loads(reply.body)
    except ValueError:
        return [*found, f"body is not JSON: {reply.body[:200]!r}"]
    if set(problem) != {"type", "title", "status", "detail"}:
        found.append(f"members {sorted(problem)}")
    if problem.get("type") != PROBLEM_TYPE_BASE + slug:
        found.append(f"type {problem.get('type')!r}")
    if problem.get("status") != status:
        found.append(f"status member {problem.get('status')!r}")
    for member in ("title", "detail"):
        if not isinstance(problem.get(member), str) or not problem[member]:
            found.append(f"{member} {problem.get(member)!r}")
    if "aaaa" in reply.body.decode(errors="replace"):
        found.append("the body echoes the request")
    return found


def assert_server_answers_problems(
    server: GunicornServer, refused: dict[str, tuple[bytes, int, str]], padded_path: bytes
) -> None:
    workers = server.worker_pids()
    mismatches = {}
    for name, (request, status, slug) in refused.items():
        found = problem_mismatches(send_raw(server.port, request), status, slug)
        if found:
            mismatches[name] = found
    for name, request in admitted(padded_path).items():
        reply = send_raw(server.port, request)
        if reply.status != 200:
            mismatches[name] = [f"status {reply.status}: {reply.body[:300]!r}"]
    assert mismatches == {}

    # No worker died for a refusal; each refusal is a warning in the log, none an error
    # (read after a graceful stop: the workers' stdout is a file, flushed at exit).
    assert server.worker_pids() == workers
    assert server.stop() == 0
    records = server.log_records()
    refusals = [r for r in records if str(r.get("message", "")).startswith("Invalid request")]
    assert len(refusals) == len(refused)
    assert {r["level"] for r in refusals} == {"WARNING"}
    assert [r for r in records if r.get("level") in ("ERROR", "CRITICAL")] == []
    leaks = [r for r in records if SECRET.decode() in json.dumps(r)]
    assert leaks == []


def test_the_api_answers_every_server_refusal_as_problem_json(
    gunicorn_server: StartServer, server_database: str
) -> None:
    server = gunicorn_server(DATABASE_URL=server_database)
    assert_server_answers_problems(server, REFUSED_WITH_BODIES, b"/openapi.json")


def test_the_payments_service_answers_every_server_refusal_as_problem_json(
    tmp_path: Path,
) -> None:
    payments = start_gunicorn(
        "payments", server_env(WEB_CONCURRENCY="2"), tmp_path / "payments.log", app=PAYMENTS_APP
    )
    try:
        assert_server_answers_problems(payments, REFUSED_WITH_BODIES, b"/health/live")
    finally:
        payments.stop()


# Failures no request can provoke from outside, each mapped by the same function


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        # The app sent a bad header: its fault, not the client's (subclasses of InvalidHeader).
        (parse_errors.InvalidResponseHeader("X-Bad\n"), 500, "internal-error"),
        (parse_errors.InvalidResponseHeaderName("X Bad"), 500, "internal-error"),
        (parse_errors.ConfigurationProblem("no such setting"), 500, "internal-error"),
        (RuntimeError("bug outside the app's error handlers"), 500, "internal-error"),
        (parse_errors.ForbiddenProxyRequest("10.0.0.1"), 403, "forbidden"),
        (ssl.SSLError("handshake"), 403, "forbidden"),
        (parse_errors.InvalidProxyHeader("unsupported version 3"), 400, "malformed-request"),
        (parse_errors.InvalidChunkSize(b"zz"), 400, "malformed-request"),
        (parse_errors.LimitRequestHeaders("max buffer headers"), 431, "request-headers-too-large"),
    ],
)
def test_every_gunicorn_failure_maps_to_a_problem(
    error: BaseException, status: int, slug: str
) -> None:
    problem = problem_for(error, gunicorn_conf)
    assert (problem.status, problem.slug) == (status, slug)
    assert problem.title
    assert problem.detail


def test_a_server_failure_is_a_500_problem_and_an_error_with_its_stack_in_the_log() -> None:
    worker: Any = mock.Mock(cfg=gunicorn_conf)
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        error = RuntimeError("bug outside the app's error handlers")
        answer_with_problem(worker, None, server_side, ("127.0.0.1", 1234), error)
        server_side.shutdown(socket.SHUT_WR)
        received = client_side.makefile("rb").read()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert json.loads(body)["type"] == PROBLEM_TYPE_BASE + "internal-error"
    worker.log.error.assert_called_once()
    assert worker.log.error.call_args.kwargs["exc_info"] is error
    worker.log.warning.assert_not_called()


def test_a_server_failure_logs_its_path_without_the_query_string() -> None:
    worker: Any = mock.Mock(cfg=gunicorn_conf)
    request: Any = mock.Mock(uri="/api/v1/orders?token=" + SECRET.decode())
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        error = RuntimeError("bug outside the app's error handlers")
        answer_with_problem(worker, request, server_side, ("127.0.0.1", 1234), error)
    assert worker.log.error.call_args.args == (
        "Error handling request %s",
        "/api/v1/orders?<redacted>",
    )
