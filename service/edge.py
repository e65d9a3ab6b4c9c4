"""The HTTP edge: the request hooks and the headers every response carries, in one place.

(A response's own headers stay with what makes it: ETag, Location and Link in the routes,
Cache-Control: no-store on problem documents in service/errors.py.)

* Headers on every response: the security headers (also on the HTTP server's own refusals,
  service/gunicorn_worker.py), the docs' Content-Security-Policy, Retry-After and
  RateLimit-Reset (after Flask-Limiter), `traceresponse` and `X-Trace-Id` (called by the
  telemetry hooks, service/telemetry/http.py, which the payments service shares), CORS.
* Request hooks: a body must be JSON; a chunked body gets a length or a 413.
* The paths of probes, scrapes, docs and static files: not rate limited, not observed.

A leaf: it imports nothing of the service, so telemetry and the limiter can use it.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from flask_cors import CORS
from opentelemetry.trace import SpanContext
from werkzeug.exceptions import UnsupportedMediaType

# Probes, scrapes, docs, the spec and static files: they answer even when a client is over
# its limit, and get no spans and no request metrics (only the access line). Exact paths:
# `/metricsX/n` or `/static/no-such-file` is counted, limited and observed like any path.
STATIC_FOLDER = Path(__file__).parent / "static"
UNOBSERVED_PATHS = frozenset(
    ["/health/live", "/health/ready", "/metrics", "/docs", "/openapi.json"]
    + [f"/static/{p.relative_to(STATIC_FOLDER).as_posix()}" for p in STATIC_FOLDER.rglob("*")]
)

DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


def unobserved_path(path: str) -> bool:
    return path in UNOBSERVED_PATHS


def unobserved_prefix(prefix: str) -> bool:
    """Whether a blueprint mounted at `prefix` serves exempt paths (the health probes)."""
    return any(path.startswith(f"{prefix}/") for path in UNOBSERVED_PATHS)


def unobserved_url_patterns() -> str:
    """UNOBSERVED_PATHS as OpenTelemetry's `excluded_urls`: regexes searched in the whole
    URL, so each is anchored to the path and ends before the query."""
    return ",".join(rf"^[a-z]+://[^/]+{re.escape(path)}(\?|$)" for path in sorted(UNOBSERVED_PATHS))


def security_headers() -> dict[str, str]:
    """Headers every response carries: the app's, and the HTTP server's own refusals."""
    return {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    }


def init_app(app: Flask) -> None:
    """The API's edge. Call after telemetry (its hooks see every request, refused ones too)
    and before the limiter (whose header hooks must run before `finalize_headers`)."""
    app.after_request(finalize_headers)
    app.before_request(require_json_body)
    app.wsgi_app = BoundedChunkedBody(app.wsgi_app, app)  # type: ignore[method-assign]
    init_cors(app)


def finalize_headers(response: Response) -> Response:
    headers = response.headers
    # Flask-Limiter sends Retry-After on every response; it is the limiter's only on a 429.
    # Any other status carries the service's own value (a 503's) or none. And
    # RateLimit-Reset is seconds until the window resets (IETF draft), not the epoch
    # timestamp the library writes.
    if response.status_code != 429:
        own = own_retry_after()
        if own is None:
            headers.pop("Retry-After", None)
        else:
            headers["Retry-After"] = own
    reset = headers.get("RateLimit-Reset")
    if reset is not None and reset.isdigit() and int(reset) > 1_000_000_000:
        headers["RateLimit-Reset"] = str(max(0, int(reset) - int(time.time())))
    for name, value in security_headers().items():
        headers.setdefault(name, value)
    if request.path.startswith("/docs"):
        headers["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
    return response


def set_aside_retry_after(response: Response) -> Response:
    """Registered by the limiter to run before its own hook: keeps the service's value."""
    own = response.headers.get("Retry-After")
    if own is not None:
        del response.headers["Retry-After"]
        g.own_retry_after = own
    return response


def own_retry_after() -> str | None:
    """The Retry-After the service itself set on this response, if any."""
    value: str | None = g.pop("own_retry_after", None)
    return value


def set_trace_headers(response: Response, span_context: SpanContext) -> None:
    """W3C `traceresponse` and `X-Trace-Id`: the client can find its request's trace."""
    trace_id = format(span_context.trace_id, "032x")
    response.headers["traceresponse"] = (
        f"00-{trace_id}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"
    )
    response.headers["X-Trace-Id"] = trace_id


def require_json_body() -> None:
    """A request body must be JSON: anything else is a 415, not a confusing 422."""
    has_body = (request.content_length or 0) > 0
    if request.method in ("POST", "PUT", "PATCH") and has_body and not request.is_json:
        raise UnsupportedMediaType("Send the body as application/json.")


def init_cors(app: Flask) -> None:
    """CORS for /api/ from the origins in CORS_ORIGINS; none configured, no CORS headers.

    API keys travel in the Authorization header, never in cookies: no credentials mode.
    """
    origins = list(app.config["CORS_ORIGINS"])
    if not origins:
        return
    CORS(
        app,
        resources={r"/api/*": {"origins": origins}},
        methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "If-Match",
            "If-None-Match",
        ],
        expose_headers=[
            "ETag",
            "Link",
            "Location",
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "X-Trace-Id",
            "Idempotent-Replayed",
        ],
        supports_credentials=False,
        max_age=600,
    )


class BoundedChunkedBody:
    """WSGI middleware: a chunked request body gets a Content-Length, or a 413.

    Werkzeug stops reading a chunked body (no Content-Length) at MAX_CONTENT_LENGTH and
    hands over the truncated bytes: a body over the limit would be a confusing 400, or
    worse, a valid document cut short. Reading one byte past the limit here tells the two
    apart; the Content-Length set from it lets Flask refuse with its usual 413.
    """

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], app: Flask) -> None:
        self.wsgi_app = wsgi_app
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            limit = int(self.app.config["MAX_CONTENT_LENGTH"])
            body = bytearray()
            while len(body) <= limit:  # a read may stop at the end of one chunk
                data = environ["wsgi.input"].read(limit + 1 - len(body))
                if not data:
                    break
                body += data
            # The body is now plain bytes of a known length: say so, as a proxy would.
            environ["wsgi.input"] = io.BytesIO(bytes(body))
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]
        return self.wsgi_app(environ, start_response)
