"""gunicorn's threaded worker, plus: each request read whole before a thread runs it,
problem+json for the server's own refusals, and on a graceful stop, serve what is queued.

Refusals: gunicorn's HTTP parser refuses some requests before the app sees them (a request
line or header section over the limits in service/gunicorn_conf.py, a malformed request
line, header or body framing, an HTTP version other than 1.x) and answers them with an
HTML page from `Worker.handle_error`. `answer_with_problem` answers the same errors as an
RFC 9457 application/problem+json document with the app's problem types and security
headers; any gunicorn worker class can call it from its `handle_error`.

Draining: on SIGTERM a stock worker finishes the requests in hand and exits. Connections
the kernel has already accepted into the listening socket's queue, waiting for a free
worker, are then reset when the last worker closes the socket: requests a client sent
before or just after the signal are lost. This worker takes those too before it exits, up
to half of gunicorn's graceful_timeout.
"""

from __future__ import annotations

import errno
import http
import json
import os
import re
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.http import errors as parse_errors
from gunicorn.http.body import LengthReader
from gunicorn.http.parser import RequestParser
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from service.edge import security_headers
from service.errors import PROBLEM_JSON, PROBLEM_TYPE_BASE


@dataclass(frozen=True)
class ServerProblem:
    """What the server answers for a request it refused (or failed) before the app ran."""

    status: int
    slug: str
    title: str
    detail: str

    def document(self) -> dict[str, Any]:
        return {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }


def _malformed(detail: str) -> ServerProblem:
    return ServerProblem(400, "malformed-request", "Malformed request", detail)


def problem_for(error: BaseException, cfg: Any) -> ServerProblem:
    """The problem for an exception that reached gunicorn's `handle_error` (`cfg`: its limits).

    The detail never echoes the request: the parts that were refused may be anything.
    """
    # The application's fault, not the client's; subclasses of InvalidHeader, so first.
    if isinstance(
        error, parse_errors.InvalidResponseHeader | parse_errors.InvalidResponseHeaderName
    ):
        return INTERNAL_ERROR
    if isinstance(error, parse_errors.LimitRequestLine):
        return ServerProblem(
            414,
            "request-line-too-long",
            "Request line too long",
            f"The request line (method, path, query and version) is over "
            f"{cfg.limit_request_line} bytes: send a shorter query.",
        )
    if isinstance(error, parse_errors.LimitRequestHeaders):
        title = "Request header fields too large"
        return ServerProblem(431, "request-headers-too-large", title, _headers(error, cfg))
    if isinstance(error, parse_errors.InvalidHTTPVersion):
        if isinstance(error.version, tuple):  # well formed, e.g. HTTP/2.0 or HTTP/0.9
            return ServerProblem(
                505,
                "http-version-not-supported",
                "HTTP version not supported",
                "This server speaks HTTP/1.0 and HTTP/1.1.",
            )
        return _malformed("The HTTP version is not of the form HTTP/1.1.")
    if isinstance(error, parse_errors.UnsupportedTransferCoding):
        return ServerProblem(
            501,
            "transfer-coding-not-implemented",
            "Transfer coding not implemented",
            "Transfer-Encoding names a coding this server does not implement: use chunked.",
        )
    if isinstance(error, parse_errors.ExpectationFailed):
        return ServerProblem(
            417,
            "expectation-failed",
            "Expectation failed",
            "The only expectation the server can meet is Expect: 100-continue.",
        )
    if isinstance(error, parse_errors.ForbiddenProxyRequest | ssl.SSLError):
        return ServerProblem(403, "forbidden", "Forbidden", "The connection is not allowed.")
    if isinstance(error, parse_errors.ConfigurationProblem):
        return INTERNAL_ERROR
    if isinstance(error, parse_errors.InvalidRequestLine):
        return _malformed("The request line is not 'METHOD /path HTTP/1.1'.")
    if isinstance(error, parse_errors.InvalidRequestMethod):
        return _malformed("The method is not a valid HTTP method name.")
    if isinstance(error, parse_errors.InvalidHeader) and error.hdr in MESSAGE_FRAMING:
        return _malformed(MESSAGE_FRAMING[error.hdr])
    if isinstance(
        error,
        parse_errors.InvalidHeader | parse_errors.InvalidHeaderName | parse_errors.ObsoleteFolding,
    ):
        return _malformed("A header field is malformed.")
    if isinstance(
        error,
        parse_errors.InvalidChunkSize
        | parse_errors.ChunkMissingTerminator
        | parse_errors.InvalidChunkExtension,
    ):
        return _malformed("The chunked request body is malformed.")
    if isinstance(error, parse_errors.ParseException):  # proxy lines, scheme headers, h2c …
        return _malformed("The server could not parse the request.")
    return INTERNAL_ERROR


INTERNAL_ERROR = ServerProblem(
    500, "internal-error", "Internal server error", "The server could not complete the request."
)

# The body's length must be certain, or a proxy in front may read the stream differently
# (request smuggling): gunicorn refuses these outright (RFC 9112 section 6).
MESSAGE_FRAMING = {
    "CONTENT-LENGTH": "Content-Length must be a single non-negative integer, and not be sent "
    "with Transfer-Encoding.",
    "TRANSFER-ENCODING": "Transfer-Encoding must end with chunked, once, on HTTP/1.1.",
}


def _headers(error: parse_errors.LimitRequestHeaders, cfg: Any) -> str:
    # gunicorn tells the cases apart only by its message.
    message = str(error)
    if message == "limit request headers fields":
        return f"The request has more than {cfg.limit_request_fields} header fields."
    if message == "limit request headers fields size":
        return f"A header field is over {cfg.limit_request_field_size} bytes."
    return "The request's header or trailer section is larger than the server accepts."


def problem_bytes(problem: ServerProblem) -> bytes:
    """The whole HTTP/1.1 response: the problem document, the app's security headers, no
    Server header, and the connection closed (the rest of the request is not read)."""
    body = json.dumps(problem.document()).encode()
    headers = {
        "Date": util.http_date(),  # RFC 9110 section 6.6.1: every 4xx from a server with a clock
        "Connection": "close",
        "Content-Type": PROBLEM_JSON,
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        **security_headers(),
    }
    head = f"HTTP/1.1 {problem.status} {http.HTTPStatus(problem.status).phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (head + "\r\n").encode("latin-1") + body


def answer_with_problem(
    worker: Worker,
    req: Any,
    client: socket.socket,
    addr: Any,
    error: BaseException,
) -> None:
    """`Worker.handle_error` with a problem+json answer instead of gunicorn's HTML page."""
    problem = problem_for(error, worker.cfg)
    if problem == INTERNAL_ERROR:  # 501 and 505 are the client's doing: warnings
        uri = getattr(req, "uri", None) or "(no URI read)"
        path, query_follows, _ = uri.partition("?")
        redacted = path + ("?<redacted>" if query_follows else "")
        worker.log.error("Error handling request %s", redacted, exc_info=error)
    else:
        ip = (addr or ("",))[0]  # a Unix socket has no address
        worker.log.warning(
            "Invalid request from ip=%s: %s (%d %s)",
            ip,
            log_safe_description(error),
            problem.status,
            problem.detail,
        )
    try:
        util.write_nonblock(client, problem_bytes(problem))
    except OSError:
        worker.log.debug("Failed to send error message.")


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_SAFE_TO_LOG = (parse_errors.LimitRequestLine, parse_errors.LimitRequestHeaders)


def log_safe_description(error: BaseException) -> str:
    """What a refusal's log line may say: the error's kind and, for a header, the first
    token of its name. gunicorn's own message quotes what the client sent (a header line
    without a colon whole, `Authorization Bearer <token>`; a request line whole, query
    string included)."""
    kind = type(error).__name__
    if isinstance(error, _SAFE_TO_LOG):  # sizes only
        return f"{kind}: {error}"
    name = getattr(error, "hdr", None)
    if isinstance(name, str):
        token = _HEADER_NAME.match(name)
        return f"{kind}: header {token.group() if token else '?'} (value redacted)"
    return kind


# A request's whole head and body must arrive within this many seconds of the worker
# starting to wait for it (a new connection, or the next request on a kept-alive one);
# then the worker answers 408 and closes. The budget of the app's own work starts after.
REQUEST_READ_TIMEOUT = 10.0
# Requests larger than this (head and body) are handed to a thread once this much has
# arrived, and the thread reads the rest as it comes: what one connection can make a
# worker hold. The app refuses bodies over MAX_CONTENT_LENGTH (1 MiB by default) anyway.
BUFFER_LIMIT = 1024 * 1024 + 64 * 1024
# A head that names no body framing carries no body: the common GET, decided without a parse.
_BODY_FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding)[ \t]*:", re.IGNORECASE)
# A client that sends "Expect: 100-continue" waits for the server's 100 before its body: the
# thread takes such a request at its head (gunicorn sends the 100 before the app runs).
_EXPECT = re.compile(rb"\r\nexpect[ \t]*:", re.IGNORECASE)

REQUEST_TIMEOUT = ServerProblem(
    408,
    "request-timeout",
    "Request timeout",
    f"The request did not arrive whole within {REQUEST_READ_TIMEOUT:.0f} s.",
)


def whole_request(cfg: Any, received: bytes, peer: Any) -> bool:
    """True once `received` holds a whole request, or enough for gunicorn's parser to
    refuse it: a thread can then parse and serve it without waiting on the client.

    gunicorn's own parser decides (on a copy), so framing is read exactly as the thread
    will read it; a GET whose head has arrived needs only a search.
    """
    head_end = received.find(b"\r\n\r\n")
    if head_end != -1 and not _BODY_FRAMING.search(received, 0, head_end):
        return True
    if head_end != -1 and _EXPECT.search(received, 0, head_end):
        return True
    try:
        request = next(RequestParser(cfg, [received], peer))
        reader = request.body.reader
        announced = reader.length if isinstance(reader, LengthReader) else None
        body = request.body.read()  # from the copy: never waits
    except (parse_errors.NoMoreData, StopIteration):
        return False  # more is to come
    except Exception:  # the parser refuses it: the thread answers that
        return True
    return announced is None or len(body) >= announced


class NoAccessLogger(Logger):
    """gunicorn's logger without its access log: the app writes one JSON line per request
    (service/logs.py). gunicorn's `Logger.access` computes the access-log atoms for every
    request whenever `logconfig_dict` is set, even with `accesslog = None`: about 6% of a
    worker's time on a cached read (py-spy)."""

    @property
    def access_log_enabled(self) -> bool:
        return False

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


def accept_queued(listener: socket.socket, deadline: float) -> Iterator[tuple[Any, Any]]:
    """The connections already queued on `listener`, until none is left or `deadline`."""
    listener.setblocking(False)
    while time.monotonic() < deadline:
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno == errno.ECONNABORTED:
                continue  # that client gave up; others may be queued
            if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return  # nothing queued any more
            raise
        client.setblocking(True)
        util.close_on_exec(client)
        yield client, address


class DrainingThreadWorker(ThreadWorker):
    """gunicorn's gthread worker (threads, connections kept alive), plus:

    * it reads each request whole before a thread runs it, like a buffering proxy in
      front: the worker's event loop collects the bytes as they arrive (`whole_request`
      says when they are enough), so a client that stops mid-headers or mid-body holds
      only a socket, never a thread; after REQUEST_READ_TIMEOUT it gets a 408. The stock
      gthread worker waits up to 5 s for the first byte in a thread, then reads the rest
      there without a deadline: one stalled client per thread stops the worker;
    * problem+json for the parser's refusals (`answer_with_problem`);
    * balance: it takes a new connection only while one of its threads is free. The stock
      worker accepts until `worker_connections` (1000): with keep-alive, the worker whose
      poll woke first took every connection of a burst and kept them (measured here: one
      of two workers served all requests in 3 of 12 wrk runs, docs/deploy.md);
    * on SIGTERM it goes on taking queued and new connections while requests are in
      flight (up to half of graceful_timeout), answers them with `Connection: close`, then
      serves what is still queued before it closes the socket.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.busy = 0  # connections handed to the thread pool and not yet back
        self.drain_deadline = 0.0
        self.reading: deque[TConn] = deque()  # in the order of their read deadlines
        self.linger_until = 0.0  # once stopping: when connections that sent nothing close

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        answer_with_problem(self, req, client, addr, exc)

    # The main thread runs all three (the pool's results come back through its poller).

    def enqueue_req(self, conn: Any) -> None:
        # gthread calls this for a new connection, a kept-alive one that became readable
        # and one with pipelined bytes left; only a whole request goes to the threads.
        if not getattr(conn, "whole", False) and not self.cfg.is_ssl:
            self._read_request(conn)
            return
        conn.whole = False
        self.busy += 1
        super().enqueue_req(conn)
        self._open_or_close_door()

    def _read_request(self, conn: Any) -> None:
        conn.received = bytearray()
        conn.timeout = time.monotonic() + REQUEST_READ_TIMEOUT
        conn.sock.setblocking(False)
        self.reading.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if conn.parser is not None and conn.parser.unreader.buf.getvalue():
            self._hand_over_if_whole(conn)  # pipelined behind the last request
        else:
            self._on_readable(conn, conn.sock)  # a kept-alive connection's bytes are there

    def _on_readable(self, conn: Any, _sock: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed, or reset the connection
            self._stop_reading(conn)
            self.nr_conns -= 1
            conn.close()
            return
        conn.received += data
        self._hand_over_if_whole(conn)

    def _hand_over_if_whole(self, conn: Any) -> None:
        parser = conn.parser
        held = parser.unreader.buf.getvalue() if parser is not None else b""
        request = held + conn.received
        if len(request) < BUFFER_LIMIT and not whole_request(self.cfg, request, conn.client):
            return
        self._stop_reading(conn)
        conn.init()  # the parser, once per connection (blocking socket, for the thread)
        conn.sock.setblocking(True)
        unreader = conn.parser.unreader
        unreader.buf.seek(0, os.SEEK_END)
        unreader.buf.write(bytes(conn.received))
        conn.received = bytearray()
        conn.data_ready = True
        conn.whole = True
        self.enqueue_req(conn)

    def _stop_reading(self, conn: Any) -> None:
        self.poller.unregister(conn.sock)
        self.reading.remove(conn)

    def _expire_reading(self) -> None:
        """408 to requests past their read deadline. A connection that sent nothing closes
        then too, or STOP_KEEPALIVE_LINGER after the worker began to stop (as gthread does
        with its kept-alive connections)."""
        now = time.monotonic()
        if not self.alive and not self.linger_until:
            self.linger_until = now + STOP_KEEPALIVE_LINGER
        for conn in list(self.reading):
            deadline = conn.timeout
            if not self.alive and not conn.received:
                deadline = min(deadline, self.linger_until)
            if deadline > now:
                if self.alive:
                    break  # the rest have later deadlines
                continue
            self._stop_reading(conn)
            self.nr_conns -= 1
            if conn.received:
                try:
                    util.write_nonblock(conn.sock, problem_bytes(REQUEST_TIMEOUT))
                except OSError:
                    self.log.debug("Failed to send the request timeout.")
            conn.close()

    def finish_request(self, conn: Any, fs: Any) -> None:
        self.busy -= 1
        super().finish_request(conn, fs)
        self._open_or_close_door()

    def set_accept_enabled(self, enabled: bool) -> None:
        # run() calls this to open at start and to close when it stops; the door decides.
        if not self.alive and not self.drain_deadline:
            self.drain_deadline = time.monotonic() + self.cfg.graceful_timeout / 2
        self._open_or_close_door()

    def _open_or_close_door(self) -> None:
        taking = self.alive or time.monotonic() < self.drain_deadline
        room = self.nr_conns < self.worker_connections and self.busy < self.cfg.threads
        super().set_accept_enabled(taking and room)

    def murder_pending(self) -> None:
        self._expire_reading()
        super().murder_pending()  # run() calls this once per turn of its loop, stopping too
        if not self.alive:
            self._open_or_close_door()  # closes once the drain deadline has passed

    def run(self) -> None:
        # run() closes its listeners at the end; these copies keep the socket open (the
        # kernel goes on queueing connections) until the last queued one is taken below.
        copies = [(listener.dup(), listener.getsockname()) for listener in self.sockets]
        super().run()  # returns when nothing is in flight any more, or graceful_timeout
        deadline = max(self.drain_deadline, time.monotonic() + 1)
        for listener, name in copies:
            # The thread pool is shut down: what arrived in the last instant is served here.
            for client, address in accept_queued(listener, deadline):
                self.notify()
                conn = TConn(self.cfg, client, address, name)
                conn.data_ready = True  # nothing to wait for in a poller that is closed
                self.handle(conn)
                conn.close()
            listener.close()
