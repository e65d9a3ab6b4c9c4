"""flask-smorest tailored to glassbox: problem+json errors in the spec, strict argument parsing."""

from __future__ import annotations

import functools
import http
import json
from collections.abc import Callable
from typing import Any, NoReturn, cast

import flask_smorest
import marshmallow as ma
from flask import Flask, request
from flask.views import MethodView
from flask_smorest import etag as smorest_etag
from flask_smorest.exceptions import PreconditionFailed as SmorestPreconditionFailed
from flask_smorest.utils import get_appcontext, prepare_response
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from webargs.multidictproxy import MultiDictProxy
from werkzeug.routing import IntegerConverter

from service.edge import unobserved_prefix
from service.errors import (
    PROBLEM_JSON,
    InvalidJson,
    PreconditionFailed,
    ProblemSchema,
    register_error_handlers,
)
from service.fields import MoneyField
from service.representations import etag_of


class StrictParser(FlaskParser):
    """Reject unknown and repeated query parameters too, not only unknown body fields."""

    DEFAULT_UNKNOWN_BY_LOCATION: dict[str, str | None] = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": ma.RAISE,
        "querystring": ma.RAISE,
    }

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return core.missing
        try:
            # As webargs' own parse (UTF-8 only), but an object may not repeat a name.
            text = req.get_data(cache=True).decode("utf-8")
            data = json.loads(text, object_pairs_hook=_object_without_repeats)
        except RepeatedNames as repeated:
            raise ma.ValidationError(
                {name: ["Give this field once."] for name in repeated.names}
            ) from None
        except json.JSONDecodeError as error:
            if error.doc == "":
                raise  # no body at all: webargs reads it as missing (a 422 in load_json)
            _refuse_json(
                f"The body is not valid JSON: {error.msg} at line {error.lineno}, column "
                f"{error.colno}. Correct it there and send it again."
            )
        except UnicodeDecodeError:
            _refuse_json("The body is not UTF-8 text: send JSON encoded as UTF-8.")
        except RecursionError:
            _refuse_json("The JSON body is nested too deeply.")
        except ValueError:  # e.g. an integer of more than 4300 digits
            _refuse_json("The JSON body contains a number too large to read.")
        if _has_unpaired_surrogate(data):
            # JSON may escape half of a UTF-16 pair ("\ud800"): that is not text, and no
            # database can store it.
            _refuse_json("The JSON body contains an unpaired UTF-16 surrogate escape.")
        return data

    def load_querystring(self, req: Any, schema: ma.Schema) -> Any:
        # webargs takes the first of repeated values (`limit=1&limit=50`) unless the field
        # is a list: a client that repeats a parameter meant something, so say no.
        proxy: MultiDictProxy = super().load_querystring(req, schema)
        known = {field.data_key or name for name, field in schema.fields.items()}
        repeated = sorted(
            name
            for name, values in req.args.lists()
            if len(values) > 1 and name in known and name not in proxy.multiple_keys
        )
        if repeated:
            raise ma.ValidationError({name: ["Give this parameter once."] for name in repeated})
        return proxy

    def load_json(self, req: Any, schema: ma.Schema) -> Any:
        # Every operation that reads a JSON body needs one (PATCH with nothing to change
        # sends `{}`): an absent body is refused rather than read as an empty object.
        data = super().load_json(req, schema)
        if data is core.missing:
            raise ma.ValidationError("A JSON request body is required.")
        return data


class RepeatedNames(Exception):
    """A JSON object gave these names more than once (RFC 8259: names SHOULD be unique)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self.names = names


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        names = [name for name, _ in pairs]
        raise RepeatedNames(sorted({name for name in names if names.count(name) > 1}))
    return found


def _refuse_json(message: str) -> NoReturn:
    raise InvalidJson(message)


def _has_unpaired_surrogate(data: Any) -> bool:
    pending = [data]
    while pending:  # iterative: the body may be nested as deep as the JSON parser allows
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class NoQueryParameters(ma.Schema):
    """The query of an operation that takes none: any parameter is unknown, hence a 422."""

    class Meta:
        unknown = ma.RAISE


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint; its ETags are the service's (`etag_of`), and If-Match is
    honoured when sent but not required (README, Conditional writes): no 428."""

    ARGUMENTS_PARSER = StrictParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.append(self._prepare_contract_doc)

    def _prepare_contract_doc(
        self, doc: dict[str, Any], doc_info: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        """What every operation answers beyond its own decorators (docs/api-contract.md): the
        limiter's 429 and the database's 503, a bad cursor's 400, an unreadable body's
        400/413/415, the headers each answer carries, and `security: []` on public ones."""
        responses = doc.setdefault("responses", {})
        parameters = [p for p in doc.get("parameters", []) if isinstance(p, dict)]
        paginated = any(
            p.get("in") == "query" and "cursor" in getattr(p.get("schema"), "fields", {})
            for p in parameters
        )
        if "security" not in doc_info.get("manual_doc", {}):
            doc["security"] = []  # public: no key needed
        if unobserved_prefix(self.url_prefix or ""):
            # Probes: not limited, not traced; a 422 only for a query string they do not take.
            if 422 in responses:
                responses[422] = {
                    "description": "A query parameter was given (none is taken)",
                    "content": {PROBLEM_JSON: {"schema": ProblemSchema}},
                }
            return doc
        for status, response in responses.items():
            if isinstance(response, dict):  # the operation's own answers; errors are refs
                headers = response.setdefault("headers", {})
                headers.update(API_HEADERS)
                if paginated and 200 <= int(status) < 300:
                    headers["Link"] = "LINK"
        if paginated:
            responses.setdefault(400, "INVALID_CURSOR")
        if "requestBody" in doc:
            responses.setdefault(400, "INVALID_JSON")
            responses.setdefault(413, "REQUEST_ENTITY_TOO_LARGE")
            responses.setdefault(415, "UNSUPPORTED_MEDIA_TYPE")
        responses.setdefault(429, "TOO_MANY_REQUESTS")
        responses.setdefault(503, "SERVICE_UNAVAILABLE")
        return doc

    @staticmethod
    def _generate_etag(etag_data: Any, extra_data: Any = None) -> str:
        # `set_etag(version)` on a write gives the tag a GET of the same version gives.
        return etag_of((etag_data, extra_data) if extra_data else etag_data)

    def _check_precondition(self) -> None:
        return None  # flask-smorest answers 428 without If-Match; glassbox does not require it

    def _prepare_etag_doc(self, doc: dict[str, Any], doc_info: Any, **kwargs: Any) -> Any:
        doc = super()._prepare_etag_doc(doc, doc_info, **kwargs)
        doc.get("responses", {}).pop(428, None)
        return doc

    def precondition(self, resource: str, version: Callable[[Any], Any]) -> Callable[[Any], None]:
        """A check of the request's If-Match against `resource`'s current version, for the
        service to call on the row it is about to change, inside that write's transaction."""

        def check(current: Any) -> None:
            if not request.if_match:
                get_appcontext().setdefault("etag", {})["etag_checked"] = True
                return
            try:
                self.check_etag(version(current))
            except SmorestPreconditionFailed:
                raise PreconditionFailed(
                    f"{resource} has changed since the version your If-Match names. GET it "
                    "for its current state and ETag, apply your change to that, and send the "
                    "new ETag in If-Match."
                ) from None

        return check

    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: Any = None,
        provide_automatic_options: bool | None = None,
        **options: Any,
    ) -> None:
        """Every operation refuses query parameters it does not declare (`?stock=0` on PATCH).

        An operation without a query schema gets an empty one, outermost, so webargs refuses
        unknown parameters there as it does on the lists.
        """
        if isinstance(view_func, type) and issubclass(view_func, MethodView):
            for method in view_func.methods or ():
                handler = getattr(view_func, method.lower())
                if not _reads_query(handler):
                    setattr(view_func, method.lower(), self._no_query(handler))
        elif view_func is not None and not _reads_query(view_func):
            view_func = self._no_query(view_func)
        super().add_url_rule(rule, endpoint, view_func, provide_automatic_options, **options)

    def _no_query(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        decorate = self.arguments(NoQueryParameters(), location="query", as_kwargs=True)
        parsed = cast(Callable[..., Any], decorate(handler))

        # Without a query string there is nothing to refuse: skip webargs' parse of an empty
        # schema (measured: docs/measurement.md). `wraps` keeps the parsed one's `_apidoc`.
        @functools.wraps(parsed)
        def view(*args: Any, **kwargs: Any) -> Any:
            if request.query_string:
                return parsed(*args, **kwargs)
            return handler(*args, **kwargs)

        return view


# Header components (registered by Api), by the name a response carries them under.
HEADERS: dict[str, tuple[str, dict[str, Any]]] = {
    "X-Trace-Id": (
        "X_TRACE_ID",
        {
            "description": "The request's trace id (also in `traceresponse` and a problem's "
            "`trace_id`): quote it when reporting a problem",
            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        },
    ),
    "RateLimit-Limit": (
        "RATELIMIT_LIMIT",
        {
            "description": "Requests allowed in the window (RATELIMIT_DEFAULT), per API key "
            "or, without one, per client address; absent when rate limiting is off",
            "schema": {"type": "integer"},
        },
    ),
    "RateLimit-Remaining": (
        "RATELIMIT_REMAINING",
        {"description": "Requests left in the window", "schema": {"type": "integer"}},
    ),
    "RateLimit-Reset": (
        "RATELIMIT_RESET",
        {"description": "Seconds until the window resets", "schema": {"type": "integer"}},
    ),
    "Retry-After": (
        "RETRY_AFTER",
        {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}},
    ),
    "Link": (
        "LINK",
        {
            "description": 'The next page: `<URL>; rel="next"` (absent on the last page)',
            "schema": {"type": "string"},
        },
    ),
}
# Every answer under /api/ carries these (the limiter's only while it is enabled).
API_HEADERS = {
    name: HEADERS[name][0]
    for name in ("X-Trace-Id", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
}
# Problem responses beyond one per status: (status, description).
EXTRA_PROBLEMS = {
    "INVALID_CURSOR": (400, "Invalid cursor: tampered, or from another list, sort or filter"),
    "INVALID_JSON": (400, "Invalid JSON body: `detail` gives the line and column"),
}


def _reads_query(handler: Any) -> bool:
    parameters = getattr(handler, "_apidoc", {}).get("arguments", {}).get("parameters", [])
    return any(p.get("in") in ("query", "querystring") for p in parameters)


class AsciiIntegerConverter(IntegerConverter):
    """Werkzeug's `int` converter matches `\\d`, which takes other scripts' digits too (an
    Arabic-Indic three in `/products/<id>` was product 3): ASCII digits only."""

    regex = r"[0-9]+"


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ProblemSchema

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # MoneyField documents itself (string or number, service/fields.py): no type of its own.
        self.register_field(MoneyField, None, None)

    def init_app(self, app: Flask, **kwargs: Any) -> None:
        app.url_map.converters["int"] = AsciiIntegerConverter  # before any route is added
        super().init_app(app, **kwargs)

    def _register_error_handlers(self) -> None:
        register_error_handlers(self._app)

    def _register_etag_headers(self) -> None:
        # flask-smorest's, except that If-Match is not required.
        self.spec.components.parameter(
            "IF_NONE_MATCH", "header", smorest_etag.IF_NONE_MATCH_HEADER, lazy=True
        )
        self.spec.components.header("ETAG", smorest_etag.ETAG_HEADER, lazy=True)
        self.spec.components.parameter(
            "IF_MATCH",
            "header",
            {
                **smorest_etag.IF_MATCH_HEADER,
                "required": False,
                "description": "The ETag of the version this change is meant for: "
                "a stale one is refused with 412 and nothing is written",
            },
            lazy=True,
        )

    def _register_responses(self) -> None:
        # Same as flask-smorest's, but every error is documented as application/problem+json,
        # with the headers every answer under /api/ carries (and Retry-After on 429 and 503).
        for component, header in HEADERS.values():
            self.spec.components.header(component, header, lazy=True)
        problems = [(s.name, s.value, s.phrase) for s in http.HTTPStatus]
        problems += [(name, status, text) for name, (status, text) in EXTRA_PROBLEMS.items()]
        for name, status, description in problems:
            response: dict[str, Any] = {"description": description}
            if status == 304:
                response["headers"] = {**API_HEADERS, "ETag": "ETAG"}
            elif not (100 <= status < 200) and status != 204:
                response["schema"] = self.ERROR_SCHEMA
                response["headers"] = dict(API_HEADERS)
                if status in (429, 503):
                    response["headers"]["Retry-After"] = "RETRY_AFTER"
                if status == 415:  # refused before the limiter counts the request
                    response["headers"] = {"X-Trace-Id": "X_TRACE_ID"}
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)
