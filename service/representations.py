"""Cached reads stored as their final bytes: rendered once on a miss, sent as-is on a hit.

A `Representation` is what a read route answers: the JSON body (dumped through the route's
schema by its compiled dump, service/dumping.py, and encoded like every other JSON response),
its ETag where the resource has one, and for a list page the cursor its `Link` header is
built from (the header names the request's own URL, so it is built per request). Services
cache whatever the route's `render` returns, so a hit costs neither a dump nor an ETag hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
import orjson
from flask import Response, current_app, request
from flask_smorest.exceptions import NotModified
from flask_smorest.utils import get_appcontext

from service.dumping import compile_dump
from service.json_provider import encode


@dataclass(frozen=True)
class Representation:
    body: bytes
    etag: str | None = None
    next_cursor: str | None = None


Render = Callable[[Any], Representation]


def etag_of(version: Any) -> str:
    """A strong ETag from what identifies a version of the resource (sha1, as flask-smorest)."""
    document = orjson.dumps(version, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha1(document, usedforsecurity=False).hexdigest()


def renderer(
    schema: ma.Schema, *, version: Callable[[Any], Any] | None = None, body_etag: bool = False
) -> Render:
    """Render one resource through `schema`; with `version`, give it an ETag computed from it.

    With `body_etag`, the ETag is the body's hash: for a computed resource (a report) that
    has no version of its own.
    """
    dump = compile_dump(schema)

    def render(data: Any) -> Representation:
        body = encode(dump(data))
        if body_etag:
            return Representation(body, hashlib.sha1(body, usedforsecurity=False).hexdigest())
        etag = etag_of(version(data)) if version is not None else None
        return Representation(body, etag)

    return render


def page_renderer(schema: ma.Schema) -> Render:
    """Render a list page (a `Page`) through `schema`, keeping its next cursor for `Link`."""
    dump = compile_dump(schema)

    def render(page: Any) -> Representation:
        return Representation(encode(dump(page)), next_cursor=page.next_cursor)

    return render


def respond(representation: Representation, headers: Mapping[str, str] | None = None) -> Response:
    """The 200 response of a representation, or 304 when the client holds its ETag.

    The semantics of flask-smorest's `@etag` (its decorator stays on the route for the
    OpenAPI document): `If-None-Match` naming the ETag, or `*`, gives 304.
    """
    etag = representation.etag
    if etag is not None:
        if etag in request.if_none_match:
            raise NotModified
        # What flask-smorest's Blueprint.set_etag stores, without hashing again: its @etag
        # decorator then puts it on the response.
        get_appcontext().setdefault("etag", {})["etag"] = etag
    response: Response = current_app.response_class(
        representation.body, mimetype="application/json", headers=dict(headers or {})
    )
    if etag is not None:
        response.set_etag(etag)
    return response
