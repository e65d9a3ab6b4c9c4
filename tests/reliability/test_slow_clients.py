"""Slow clients against `make serve`: connections that stop sending must not stall the API.

N = 2 x workers connections stop mid-request: half in the middle of the header section (no
key needed), half in the middle of the body of an authenticated POST (10 of 1,000 bytes).
While they hold their connections open, every other request must still be answered within
the request budget (REQUEST_BUDGET, 5 s): each is sent with that as its client timeout.
Then each stalled client gets a 408 (problem+json) once its request's read deadline passes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterator

import pytest
import requests
from gunicorn.config import Config as gunicorn_config

from service.gunicorn_worker import REQUEST_READ_TIMEOUT, whole_request
from tests.conftest import BACKENDS, _clean, build_app
from tests.reliability.conftest import api_key_for
from tests.reliability.servers import MakeServe, server_env

WORKERS = 2
SLOW_CLIENTS = 2 * WORKERS
REQUEST_BUDGET = 5.0
PROBES = 12


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MakeServe, str]]:
    """`make serve` on the test database (PostgreSQL in CI), and an API key in it; one for
    the module, as starting it (migrations, then the workers) is most of each test's time."""
    database = str(
        request.getfixturevalue("postgres_url" if "postgres" in BACKENDS else "sqlite_url")
    )
    token = api_key_for(database, "slow-clients")
    folder = tmp_path_factory.mktemp("make-serve")
    env = server_env(
        DATABASE_URL=database,
        WEB_CONCURRENCY=str(WORKERS),
        PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics"),
    )
    server = MakeServe(env, folder / "make-serve.log")
    try:
        yield server.start(timeout=120), token
    finally:
        server.stop()
        _clean(build_app(database))


def _stalled_connections(server: MakeServe, token: str) -> list[socket.socket]:
    """Connections that each sent part of a request and then nothing more."""
    mid_headers = b"GET /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: appl"
    mid_body = (
        b"POST /api/v1/categories HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"name": "s'  # 10 of the 1,000 bytes announced
    )
    stalled = []
    for index in range(SLOW_CLIENTS):
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        client.sendall(mid_headers if index % 2 == 0 else mid_body)
        stalled.append(client)
    return stalled


def _answered(server: MakeServe, path: str, headers: dict[str, str]) -> int | str:
    """The status of one request sent with the request budget as its timeout, or why none."""
    try:
        return requests.get(server.url(path), headers=headers, timeout=REQUEST_BUDGET).status_code
    except requests.RequestException as error:
        return type(error).__name__


def test_slow_clients_do_not_stall_the_others(served: tuple[MakeServe, str]) -> None:
    make_serve, server_token = served
    headers = {"Authorization": f"Bearer {server_token}"}
    stalled = _stalled_connections(make_serve, server_token)
    answers: list[int | str] = []
    try:
        # Several, one after another, so that each worker has a turn at them; the first
        # unanswered one is enough.
        while len(answers) < PROBES and answers.count(200) == len(answers):
            path = ("/api/v1/orders", "/health/ready")[len(answers) % 2]
            answers.append(_answered(make_serve, path, headers))
        assert answers == [200] * PROBES, make_serve.log_tail(5)
        # Then each stalled client hears why its connection closes.
        for client in stalled:
            client.settimeout(REQUEST_READ_TIMEOUT + 10)
            head, _, body = _read_until_closed(client).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), head
            assert b"application/problem+json" in head
            assert json.loads(body)["status"] == 408
    finally:
        for client in stalled:
            client.close()


def _read_until_closed(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def test_a_client_reuses_its_connection(served: tuple[MakeServe, str]) -> None:
    """Three requests on one connection: each answered, none closing it, one local port."""
    make_serve, server_token = served
    connection = http.client.HTTPConnection("127.0.0.1", make_serve.port, timeout=10)
    headers = {"Authorization": f"Bearer {server_token}"}
    with contextlib.closing(connection):
        answers = []
        for _ in range(3):
            connection.request("GET", "/api/v1/orders", headers=headers)
            response = connection.getresponse()
            response.read()
            # http.client drops its socket when the server answers "Connection: close".
            port = connection.sock.getsockname()[1] if connection.sock else None
            closes = response.getheader("Connection", "").lower() == "close"
            answers.append((response.status, closes, port))
    first_port = answers[0][2]
    assert first_port is not None, answers
    assert answers == [(200, False, first_port)] * 3


@pytest.mark.parametrize(
    ("received", "whole"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", False),
        (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd", True),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", False),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", True),
        # The client waits for a 100 before sending the body: the thread answers it.
        (b"POST / HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n", True),
        # Refused by gunicorn's parser as soon as the request line is there: no waiting.
        (b"GET / HTTP/2.0\r\nHost: a", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", True),
    ],
)
def test_a_thread_gets_a_request_once_it_can_be_served_without_waiting(
    received: bytes, whole: bool
) -> None:
    assert whole_request(gunicorn_config(), received, ("127.0.0.1", 1)) is whole
