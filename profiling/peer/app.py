"""The peer: glassbox's two catalog reads as a FastAPI team would write them.

Async all the way: an asyncpg pool per worker (asyncpg prepares each query once per
connection and reuses it from its statement cache), responses serialised by orjson and
returned as ready bytes so FastAPI adds no encoding pass of its own. It reads glassbox's
own `products` table and answers the same JSON: the same fields in the same order (glassbox's
Flask JSON provider sorts keys), prices as strings with two decimals, timestamps in ISO 8601
with their UTC offset, a page as `{"items": [...], "next_cursor": ...}`. Its cursor is its
own opaque string (not signed: the peer has no secret to protect a list with).

Settings, from the environment: PEER_DATABASE_URL (a PostgreSQL URL; a SQLAlchemy driver
suffix such as `+psycopg` is dropped), PEER_POOL_MIN_SIZE and PEER_POOL_MAX_SIZE (per
worker). Run it with uvicorn: `uvicorn profiling.peer.app:app --workers 2 --loop uvloop
--http httptools` (profiling/peer/launch.py does).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import Response

MAX_ID = 2**31 - 1  # PostgreSQL `integer`
DEFAULT_LIMIT = 20
MAX_LIMIT = 100

# Columns in the order glassbox's JSON has them (alphabetical).
_COLUMNS = "category_id, created_at, description, id, name, price, sku, stock, updated_at"
_BY_ID = f"SELECT {_COLUMNS} FROM products WHERE id = $1"  # noqa: S608 - constant columns
# glassbox's default list order: created_at, then id, both ascending (keyset pagination).
_FIRST_PAGE = f"SELECT {_COLUMNS} FROM products ORDER BY created_at, id LIMIT $1"  # noqa: S608
_PAGE_AFTER = (
    f"SELECT {_COLUMNS} FROM products WHERE (created_at, id) > ($1, $2) "  # noqa: S608
    "ORDER BY created_at, id LIMIT $3"
)


class OrjsonResponse(Response):
    """JSON rendered by orjson (FastAPI's own ORJSONResponse is deprecated since 0.130)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def asyncpg_dsn(url: str) -> str:
    """asyncpg reads libpq URLs: `postgresql+psycopg://…` becomes `postgresql://…`."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ValueError("PEER_DATABASE_URL must be a PostgreSQL URL")
    return f"postgresql://{rest}"


def _product(record: asyncpg.Record) -> dict[str, Any]:
    product = dict(record)
    product["price"] = f"{record['price']:f}"  # NUMERIC(12, 2): always two decimals
    return product


def _encode_cursor(created_at: datetime, product_id: int) -> str:
    token = f"{created_at.isoformat()}|{product_id}".encode()
    return base64.urlsafe_b64encode(token).decode("ascii")


def _decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    try:
        created_at, product_id = base64.urlsafe_b64decode(cursor).decode().split("|")
        after = datetime.fromisoformat(created_at), int(product_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return None
    return after if after[0].tzinfo is not None else None


def _problem(status: int, title: str, detail: str, path: str) -> OrjsonResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return OrjsonResponse(
        {**body, "instance": path}, status_code=status, media_type="application/problem+json"
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(os.environ["PEER_DATABASE_URL"]),
        min_size=int(os.environ.get("PEER_POOL_MIN_SIZE", "4")),
        max_size=int(os.environ.get("PEER_POOL_MAX_SIZE", "10")),
    )
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(title="glassbox peer", lifespan=lifespan, docs_url=None, redoc_url=None)


@app.get("/health/live")
async def live() -> OrjsonResponse:
    return OrjsonResponse({"status": "ok"})


@app.get("/api/v1/products/{product_id}")
async def get_product(
    request: Request, product_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> Response:
    record = await request.app.state.pool.fetchrow(_BY_ID, product_id)
    if record is None:
        detail = f"Product {product_id} does not exist."
        return _problem(404, "Not Found", detail, request.url.path)
    return OrjsonResponse(_product(record))


@app.get("/api/v1/products")
async def list_products(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> Response:
    pool = request.app.state.pool
    if cursor is None:
        records = await pool.fetch(_FIRST_PAGE, limit + 1)
    else:
        after = _decode_cursor(cursor)
        if after is None:
            return _problem(400, "Bad Request", "The cursor is malformed.", request.url.path)
        records = await pool.fetch(_PAGE_AFTER, *after, limit + 1)
    items = [_product(record) for record in records[:limit]]
    next_cursor = None
    if len(records) > limit:
        last = records[limit - 1]
        next_cursor = _encode_cursor(last["created_at"], last["id"])
    return OrjsonResponse({"items": items, "next_cursor": next_cursor})
