"""The driver path (service/driver_reads.py) answers exactly what SQLAlchemy answers, from the
very first request of a fresh process: generated list queries (every filter, sort and page,
search terms with LIKE's own characters, quotes and non-ASCII), in-process on a new app each
time and in gunicorn workers that serve one request each.

SQLAlchemy's PostgreSQL dialect learns some of its state on its first connect (among it
`standard_conforming_strings`, which decides how `ESCAPE '\\'` is written); a statement
compiled before that is wrong for the life of the process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from profiling.harness.gunicorn import GunicornServer
from service.extensions import db
from tests.conftest import _clean, build_app, uncached_app
from tests.factories import Factories
from tests.processes import search_until_every_worker_answered, start_gunicorn
from tests.reliability.servers import TEST_SECRET_KEY, server_env

pytestmark = pytest.mark.postgres

DRIVER = "glassbox.driver_reads"
# Names with what LIKE and SQL string literals treat specially, and text beyond ASCII.
NAMES = [
    "100% cotton tee",
    "snake_case mug",
    "back\\slash poster",
    "O'Brien's tea",
    'the "best" pen',
    "Crème brûlée kit",
    "日本茶 sencha",
    "Straße map",
    "50%_off\\ sign",
    "plain thing",
    "ÉCLAIR box",
    "under__score",
]
FRAGMENTS = ["%", "_", "\\", "'", '"', "%_", "\\%", "é", "É", "日本", "ß", "thing", "t_e", "00%"]
SORTS = ["name", "-name", "price", "-price", "created_at", "-created_at"]


@pytest.fixture(scope="module")
def catalog(postgres_url: str) -> Iterator[list[int]]:
    """The rows every query here reads (module-wide: generated queries only read)."""
    app = build_app(postgres_url)
    make = Factories(app)
    categories = [make.category(name=f"Shelf {n}").id for n in range(3)]
    for n in range(36):
        make.product(
            sku=f"FRESH-{n:03}",
            name=f"{NAMES[n % len(NAMES)]} {n // len(NAMES)}",
            price=Decimal(f"{(n * 37) % 60 + 1}.{(n * 13) % 100:02}"),
            stock=n,
            category_id=categories[n % 3],
        )
    yield categories
    _clean(app)


def _list_queries(categories: list[int]) -> st.SearchStrategy[dict[str, Any]]:
    prices = st.decimals(min_value=0, max_value=70, places=2)
    terms = st.one_of(
        st.sampled_from(FRAGMENTS),
        st.sampled_from(NAMES).map(lambda name: name[1:6]),
        st.text(alphabet="%_\\'\"éÉ日ßt e", min_size=1, max_size=4),
        st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=5),
    )
    return st.fixed_dictionaries(
        {"limit": st.integers(1, 9), "sort": st.sampled_from(SORTS)},
        optional={
            "category_id": st.sampled_from([*categories, 999_999]),
            "min_price": prices,
            "max_price": prices,
            "q": terms,
        },
    )


def _path(query: dict[str, Any]) -> str:
    return f"/api/v1/products?{urlencode(query)}"


def _without_trace(body: Any) -> Any:
    if isinstance(body, dict):
        return {key: value for key, value in body.items() if key != "trace_id"}
    return body


def _walk(get: Any, query: dict[str, Any]) -> list[tuple[int, Any]]:
    """Every page of one list query (status and body), following next_cursor."""
    answers = []
    cursor = None
    while True:
        status, body = get(_path({**query, **({"cursor": cursor} if cursor else {})}))
        answers.append((status, _without_trace(body)))
        cursor = body.get("next_cursor") if status == 200 else None
        if not cursor:
            return answers


def _in_process(app: Flask) -> Any:
    client = app.test_client()

    def get(path: str) -> tuple[int, Any]:
        response = client.get(path)
        return response.status_code, response.get_json()

    return get


def _reference(postgres_url: str) -> Flask:
    """Every read through SQLAlchemy's own execution (the driver path switched off)."""
    app = uncached_app(postgres_url)
    app.config["SECRET_KEY"] = TEST_SECRET_KEY  # the servers' key: cursors compare equal
    app.extensions[DRIVER] = None
    return app


# No example database: nothing is written into the checkout; a failure prints its query.
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_fresh_app_on_the_driver_answers_what_sqlalchemy_answers(
    catalog: list[int], postgres_url: str, data: st.DataObject
) -> None:
    query = data.draw(_list_queries(catalog))
    fresh = uncached_app(postgres_url)  # a new engine: its dialect has not connected yet
    fresh.config["SECRET_KEY"] = TEST_SECRET_KEY
    reference = _reference(postgres_url)
    try:
        assert fresh.extensions[DRIVER] is not None
        assert _walk(_in_process(fresh), query) == _walk(_in_process(reference), query)
    finally:
        for app in (fresh, reference):
            with app.app_context():
                db.engine.dispose()


@pytest.fixture
def one_request_workers(
    catalog: list[int], postgres_url: str, tmp_path: Path
) -> Iterator[GunicornServer]:
    """gunicorn as `make serve` runs it, 2 workers, each replaced after one request: every
    request is the first one of a fresh worker."""
    env = server_env(
        DATABASE_URL=postgres_url,
        SECRET_KEY=TEST_SECRET_KEY,
        WEB_CONCURRENCY="2",
        CACHE_TYPE="NullCache",
        GUNICORN_CMD_ARGS="--max-requests 1",
    )
    server = start_gunicorn("api", env, tmp_path / "api.log")
    try:
        yield server
    finally:
        server.stop()


def test_fresh_workers_answer_generated_lists_as_sqlalchemy_does(
    catalog: list[int], postgres_url: str, one_request_workers: GunicornServer
) -> None:
    reference = _reference(postgres_url)

    def served(path: str) -> tuple[int, Any]:
        response = requests.get(one_request_workers.url(path), timeout=60)
        return response.status_code, response.json()

    # No shrinking: each step would start fresh workers again; the failing query is printed.
    @settings(max_examples=5, deadline=None, database=None, phases=[Phase.generate])
    @given(query=_list_queries(catalog))
    def check(query: dict[str, Any]) -> None:
        assert _walk(served, query) == _walk(_in_process(reference), query)

    try:
        check()
    finally:
        with reference.app_context():
            db.engine.dispose()


def test_a_search_as_each_workers_first_request_answers(
    catalog: list[int], postgres_url: str, tmp_path: Path
) -> None:
    """`make serve` on PostgreSQL, 2 workers: searches are the first requests each worker
    serves, and every one of them (and every later one) answers 200 with its rows."""
    env = server_env(DATABASE_URL=postgres_url, WEB_CONCURRENCY="2")
    server = start_gunicorn("api", env, tmp_path / "api.log")
    try:
        statuses = search_until_every_worker_answered(
            server.base_url, server.log_records, term="thing", workers=2
        )
    finally:
        server.stop()
    assert statuses == Counter({200: statuses.total()}), statuses
