"""Domain errors and the one handler that renders every failure as problem+json (RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
import sqlalchemy.exc
from flask import Flask, Response, current_app, json, request
from werkzeug.exceptions import HTTPException

from service.extensions import db
from service.logs import EveryInterval
from service.telemetry import current_trace_id, record_exception

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:glassbox:problem:"

log = logging.getLogger("service.errors")
# An outage fails every request the same way: its stack is logged once per interval (each
# request still has its access line, its span with the exception, and its 5xx metric).
_database_down_logged = EveryInterval()


class AppError(Exception):
    """Base of every error the service layer raises on purpose.

    A subclass names its problem in the class line: `class NotFound(AppError, status=404,
    slug="not-found", title="Not found")`; what it does not name it inherits.
    """

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"
    retry_after: int | None = None  # seconds, sent as Retry-After

    def __init_subclass__(
        cls,
        *,
        status: int | None = None,
        slug: str | None = None,
        title: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init_subclass__()
        if retry_after is not None:
            cls.retry_after = retry_after
        if status is not None:
            cls.status = status
        if slug is not None:
            cls.slug = slug
        if title is not None:
            cls.title = title

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class InvalidRequest(AppError, status=400, slug="invalid-request", title="Invalid request"):
    pass


class InvalidCursor(InvalidRequest, slug="invalid-cursor", title="Invalid cursor"):
    pass


class InvalidJson(InvalidRequest, slug="invalid-json", title="Invalid JSON body"):
    pass


class Unauthorized(AppError, status=401, slug="unauthorized", title="Unauthorized"):
    pass


class InsufficientScope(AppError, status=403, slug="insufficient-scope", title="Forbidden"):
    """A valid key without the scope the operation needs (`required_scopes`: any one of them)."""


class NotFound(AppError, status=404, slug="not-found", title="Not found"):
    pass


class MethodNotAllowed(AppError, status=405, slug="method-not-allowed", title="Method not allowed"):
    pass


class Conflict(AppError, status=409, slug="conflict", title="Conflict"):
    pass


class OutOfStock(Conflict, slug="out-of-stock", title="Out of stock"):
    pass


class PreconditionFailed(
    AppError, status=412, slug="precondition-failed", title="Precondition failed"
):
    """The resource changed since the version the client's If-Match names."""


class BodyTooLarge(AppError, status=413, slug="body-too-large", title="Request body too large"):
    pass


class UnsupportedMediaType(
    AppError, status=415, slug="unsupported-media-type", title="Unsupported media type"
):
    pass


class ValidationFailed(AppError, status=422, slug="validation-failed", title="Validation failed"):
    """Input that is well-formed but breaks a rule (unknown reference, bad combination)."""

    def __init__(self, errors: dict[str, list[str]], detail: str | None = None) -> None:
        super().__init__(detail or "The request contains invalid fields.", errors=errors)


class RateLimited(AppError, status=429, slug="rate-limited", title="Too many requests"):
    pass


class DependencyUnavailable(
    AppError,
    status=503,
    slug="dependency-unavailable",
    title="Service unavailable",
    retry_after=5,  # as the database's 503
):
    pass


class DatabaseOutage(DependencyUnavailable, slug="database-unavailable"):
    pass


# The framework's own refusals (Werkzeug, webargs, Flask-Limiter), in the service's words:
# status → (problem, the detail when the exception brings only Werkzeug's stock text).
FRAMEWORK_PROBLEMS: dict[int, tuple[type[AppError], str]] = {
    400: (InvalidRequest, "The request could not be read; /openapi.json describes each one."),
    401: (Unauthorized, "This operation needs an API key: send 'Authorization: Bearer <token>'."),
    404: (
        NotFound,
        "Nothing is at {path}. /openapi.json lists every path; ids are positive integers.",
    ),
    405: (
        MethodNotAllowed,
        "{method} is not allowed on {path}; the Allow header lists the methods that are.",
    ),
    413: (BodyTooLarge, "The body is over {limit} bytes, the most this service reads: send less."),
    415: (UnsupportedMediaType, "Send the body as application/json."),
    422: (
        ValidationFailed,
        "The request contains invalid fields: `errors` names each one and what is wrong. "
        "Correct them and send the request again.",
    ),
    429: (RateLimited, "Too many requests: wait the seconds Retry-After gives, then retry."),
    500: (AppError, "The server could not complete the request."),
}


class ProblemSchema(ma.Schema):
    """An RFC 9457 problem document (documentation only; the handler builds the dict)."""

    class Meta:
        # RFC 9457 extension members (e.g. `product_id` and `available` when out of stock).
        unknown = ma.INCLUDE

    type = ma.fields.String(metadata={"description": "URI reference naming the problem type"})
    title = ma.fields.String(metadata={"description": "Short summary of the problem type"})
    status = ma.fields.Integer(metadata={"description": "HTTP status code"})
    detail = ma.fields.String(metadata={"description": "What went wrong this time"})
    instance = ma.fields.String(metadata={"description": "Path of the request"})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.String()),
        metadata={"description": "Field path → messages, on validation errors"},
    )
    trace_id = ma.fields.String(
        metadata={
            "description": "The request's trace (as in X-Trace-Id): quote it when reporting "
            "a problem"
        }
    )


def problem_response(
    status: int,
    *,
    title: str,
    detail: str,
    slug: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
    }
    trace_id = current_trace_id()
    if trace_id:
        body["trace_id"] = trace_id  # paste into Jaeger to see this request
    body.update({key: value for key, value in extra.items() if value is not None})
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested messages into ``{"items.0.quantity": ["..."]}``."""
    if isinstance(messages, dict):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_messages(value, path))
        return flat
    if isinstance(messages, list | tuple):
        if all(isinstance(item, str) for item in messages):
            return {prefix or "_schema": [str(item) for item in messages]}
        flat = {}
        for index, item in enumerate(messages):
            flat.update(flatten_messages(item, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    return {prefix or "_schema": [str(messages)]}


def _validation_errors(data: dict[str, Any]) -> dict[str, list[str]] | None:
    messages = data.get("errors") or data.get("messages")
    if not messages:
        return None
    # webargs nests by location ({"json": {...}, "query": {...}}); the location adds nothing.
    if isinstance(messages, dict) and set(messages) <= {"json", "query", "headers", "form"}:
        merged: dict[str, list[str]] = {}
        for value in messages.values():
            merged.update(flatten_messages(value))
        return merged
    return flatten_messages(messages)


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    if status == 304:
        # Not an error: an empty body, and the ETag the client already holds.
        response = Response(status=304)
        tags = list(request.if_none_match.as_set())
        if len(tags) == 1:
            response.set_etag(tags[0])
        return response
    if isinstance(error.response, Response) and error.response.mimetype == PROBLEM_JSON:
        return error.response  # already in the service's words (the limiter's 429)
    data = getattr(error, "data", None) or {}
    errors = _validation_errors(data) if isinstance(data, dict) else None
    headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
    if isinstance(data, dict) and isinstance(data.get("headers"), dict):
        headers.update(data["headers"])
    slug, title, detail = framework_problem(error, errors)
    if status >= 500:
        log.error("http error %s: %s", status, error.name)
    return problem_response(
        status, title=title, detail=detail, slug=slug, headers=headers, errors=errors
    )


def framework_problem(
    error: HTTPException, errors: dict[str, list[str]] | None = None
) -> tuple[str, str, str]:
    """(slug, title, detail) of a framework's refusal, in the service's words."""
    status = error.code or 500
    problem, stock_detail = FRAMEWORK_PROBLEMS.get(status, (None, ""))
    if status == 400 and errors:
        detail = next(iter(errors.values()))[0]
    elif problem is None or (error.description and error.description != type(error).description):
        detail = error.description or error.name  # the raiser's own words
    else:
        detail = stock_detail.format(
            path=request.path,
            method=request.method,
            limit=current_app.config.get("MAX_CONTENT_LENGTH"),
        )
    if problem is None:  # a status the service does not otherwise answer: Werkzeug's name
        return error.name.lower().replace(" ", "-"), error.name.capitalize(), detail
    return problem.slug, problem.title, detail


def handle_app_error(error: AppError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="glassbox"'
    elif isinstance(error, InsufficientScope):  # RFC 6750 section 3.1
        scopes = " ".join(error.extra["required_scopes"])
        headers["WWW-Authenticate"] = (
            f'Bearer realm="glassbox", error="insufficient_scope", scope="{scopes}"'
        )
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.status >= 500:
        _rollback()
        log.warning("%s: %s", error.slug, error.detail)
    return problem_of(error, headers)


def handle_unexpected(error: Exception) -> Response:
    _rollback()
    record_exception(error)
    if isinstance(error, sqlalchemy.exc.OperationalError | sqlalchemy.exc.TimeoutError):
        # Connection refused, dropped, or no pooled connection in time: the database is
        # the problem, not this request, so say so with a 503 the client may retry.
        if _database_down_logged.due():
            log.error("database unavailable: %s", type(error).__name__, exc_info=error)
        else:
            log.debug("database unavailable: %s", type(error).__name__)
        return problem_of(
            DatabaseOutage("The database is not answering. Try again shortly."),
            headers={"Retry-After": "5"},
        )
    if isinstance(error, sqlalchemy.exc.IntegrityError):
        log.warning("integrity error not mapped by the service layer", exc_info=error)
        return problem_of(Conflict("The request conflicts with the current state of a resource."))
    log.error("unhandled exception on %s %s", request.method, request.path, exc_info=error)
    return problem_of(AppError("The server could not complete the request."))


def problem_of(error: AppError, headers: dict[str, str] | None = None) -> Response:
    """The problem+json response of `error`, also for code that answers rather than raises."""
    return problem_response(
        error.status,
        title=error.title,
        detail=error.detail,
        slug=error.slug,
        headers=headers,
        **error.extra,
    )


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # the connection may be gone; the session is discarded anyway
        log.debug("rollback after error failed", exc_info=True)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(AppError, handle_app_error)
    app.register_error_handler(Exception, handle_unexpected)
