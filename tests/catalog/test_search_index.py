"""Search on PostgreSQL runs on the trigram index and answers what the scan answered.

20,000 generated products, then `VACUUM ANALYZE`: with statistics of a real catalog the planner
chooses the GIN index for a selective term by itself. (`enable_seqscan=off` would not
prove that: it would still allow walking another index, such as the created_at sort's,
and filtering every row, and it says nothing about what production's planner picks.)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from service.catalog.models import Product
from service.catalog.service import _product_query
from service.extensions import db
from service.pagination import _LIMIT
from service.seed import seed_products
from tests.conftest import _clean, build_app

PRODUCTS = 20_000
NAMES = ["100% cocoa_nibs", "50% off_cut", "back\\slash roast", "Plain 100 cocoa nibs"]


@pytest.fixture(scope="module")
def big_catalog(postgres_url: str) -> Iterator[Flask]:
    """Built once for the module (seeding is the slow part), emptied after it."""
    pg_app = build_app(postgres_url)
    with pg_app.app_context():
        seed_products(PRODUCTS, rng=random.Random(7))
        category_id = db.session.scalar(sa.select(Product.category_id).limit(1))
        for n, name in enumerate(NAMES):
            db.session.add(
                Product(sku=f"META-{n}", name=name, price=1, stock=1, category_id=category_id)
            )
        db.session.commit()
        # What `flask seed` does after a bulk load: statistics, and the GIN index's pending
        # list merged (unmerged, the planner prices the index as the scan it would be).
        with db.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE products"
            )
    yield pg_app
    _clean(pg_app)


def _plan(app: Flask, term: str) -> str:
    statement = _product_query("created_at", frozenset({"q"})).first
    with app.app_context():
        compiled = statement.compile(dialect=db.engine.dialect)
        connection = db.session.connection()
        rows = connection.exec_driver_sql(
            f"EXPLAIN {compiled}", {"q": f"%{term}%", _LIMIT: 21}
        ).all()
        db.session.rollback()
    return "\n".join(row[0] for row in rows)


@pytest.mark.postgres
def test_a_selective_search_uses_the_trigram_index(big_catalog: Flask) -> None:
    plan = _plan(big_catalog, "cocoa_n")
    assert "ix_products_name_trgm" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.postgres
@pytest.mark.parametrize(
    "term", ["%", "_", "a_n", "100%", "\\", "h\\s", "roast", "cocoa nibs", "x%y", "1999"]
)
def test_search_answers_what_a_scan_answers_in_the_same_order(
    big_catalog: Flask, term: str
) -> None:
    """Every page of the API's search, LIKE metacharacters literal, as Python finds them."""
    with big_catalog.app_context():
        rows = db.session.execute(
            sa.select(Product.id, Product.name).order_by(Product.name, Product.id)
        ).all()
    expected = [id_ for id_, name in rows if term.lower() in name.lower()]
    client = big_catalog.test_client()
    found: list[int] = []
    params: dict[str, Any] = {"q": term, "sort": "name", "limit": 100}
    while True:
        response = client.get("/api/v1/products", query_string=params)
        assert response.status_code == 200, response.json
        found += [item["id"] for item in response.json["items"]]
        cursor = response.json.get("next_cursor")
        if not cursor:
            break
        params["cursor"] = cursor
    assert found == expected
