"""flask-smorest tailored to glassbox: problem+json errors in the spec, strict argument parsing."""

from __future__ import annotations

import http
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import request
from flask_smorest.utils import prepare_response
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import UnsupportedMediaType

from service.errors import PROBLEM_JSON, ProblemSchema, register_error_handlers
from service.fields import Money


class StrictParser(FlaskParser):
    """Reject unknown query parameters too, not only unknown body fields."""

    DEFAULT_UNKNOWN_BY_LOCATION: dict[str, str | None] = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": ma.RAISE,
        "querystring": ma.RAISE,
    }

    def load_json(self, req: Any, schema: ma.Schema) -> Any:
        # Every operation that reads a JSON body needs one (PATCH with nothing to change
        # sends `{}`): an absent body is refused rather than read as an empty object.
        data = super().load_json(req, schema)
        if data is core.missing:
            raise ma.ValidationError("A JSON request body is required.")
        return data


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictParser()


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ProblemSchema

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Money documents itself (string or number, service/fields.py): no type of its own.
        self.register_field(Money, None, None)

    def _register_error_handlers(self) -> None:
        register_error_handlers(self._app)

    def _register_responses(self) -> None:
        # Same as flask-smorest's, but every error is documented as application/problem+json.
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


def require_json_body() -> None:
    """A request body must be JSON: anything else is a 415, not a confusing 422."""
    has_body = (request.content_length or 0) > 0
    if request.method in ("POST", "PUT", "PATCH") and has_body and not request.is_json:
        raise UnsupportedMediaType("Send the body as application/json.")
