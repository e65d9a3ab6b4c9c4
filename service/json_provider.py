"""Flask's JSON provider on orjson: the same documents as Flask's, encoded by orjson.

Keys are sorted like Flask's provider. Types orjson does not know natively (Decimal) and
dates (passed through so that they keep Flask's RFC 822 form) go to Flask's own `default`;
anything orjson refuses (an integer wider than 64 bits, non-string keys it cannot sort)
falls back to Flask's provider, so no document that encoded before fails now.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider, _default
from werkzeug.sansio.response import Response as BaseResponse

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def encode(document: Any) -> bytes:
    """`document` as a compact JSON body, keys sorted, with the newline Flask's jsonify adds."""
    try:
        return orjson.dumps(document, default=_default, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        text = json.dumps(document, default=_default, sort_keys=True, separators=(",", ":"))
        return (text + "\n").encode()


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs.keys() <= {"sort_keys"} and kwargs.get("sort_keys", True):
            try:
                return orjson.dumps(obj, default=_default, option=_OPTIONS).decode()
            except orjson.JSONEncodeError:
                pass
        return super().dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> BaseResponse:
        if self._app.debug or self.compact is False:
            return super().response(*args, **kwargs)  # indented, for people
        body = encode(self._prepare_response_obj(args, kwargs))
        return Response(body, mimetype=self.mimetype)


def init_app(app: Flask) -> None:
    app.json = OrjsonProvider(app)
