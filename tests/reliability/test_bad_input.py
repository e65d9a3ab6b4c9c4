"""Bad input is refused with a problem+json 4xx that gives nothing away; odd but valid input
is stored and returned exactly.

Runs on every backend (SQLite, and PostgreSQL + Redis when configured). Complements
tests/test_errors.py (status per error kind), tests/test_pagination.py (tampered and
foreign cursors) and the per-field cases in tests/catalog and tests/orders.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from tests.factories import Factories
from tests.reliability.conftest import StartServer
from tests.reliability.servers import PROJECT_ROOT

# What must never reach a client: stack traces, SQL, file paths (this checkout's among them),
# exception class names.
INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|/usr/|/srv/|site-packages|sqlalchemy|psycopg|sqlite"
    + "|"
    + re.escape(str(PROJECT_ROOT))
    + r"|\bSELECT\b|\bINSERT\b|\bUPDATE\b|\bDELETE FROM\b|\bWHERE\b"
    r"|\b[A-Z][A-Za-z]*(Error|Exception|Warning)\b",
)

WRITES = [
    ("POST", "/api/v1/categories"),
    ("POST", "/api/v1/products"),
    ("POST", "/api/v1/orders"),
    ("PATCH", "/api/v1/categories/1"),
    ("PATCH", "/api/v1/products/1"),
]
# Every body goes through one parser (service/api.py): two operations stand for all.
SOME_WRITES = [WRITES[1], WRITES[3]]


def assert_problem(response: Any, *statuses: int) -> dict[str, Any]:
    """A problem+json refusal with one of `statuses` and no internals in it."""
    text = response.get_data(as_text=True)
    assert response.status_code in statuses, text
    assert response.content_type == "application/problem+json"
    assert response.headers["Cache-Control"] == "no-store"
    assert INTERNALS.search(text) is None, text
    body = response.json
    assert body["status"] == response.status_code
    return dict(body)


def send(client: FlaskClient, method: str, path: str, **kwargs: Any) -> Any:
    return client.open(path, method=method, **kwargs)


# Malformed and non-object JSON


MALFORMED = [
    pytest.param(b"{", id="truncated"),
    pytest.param(b'{"name": }', id="missing-value"),
    pytest.param(b"{'name': 'x'}", id="single-quotes"),
    pytest.param(b'{"name": "x",}', id="trailing-comma"),
    pytest.param(b'{"name": "x"} {"name": "y"}', id="two-documents"),
    pytest.param(b'"unterminated', id="unterminated-string"),
    pytest.param(b"\xff\xfe{}", id="not-utf-8"),
    pytest.param(b"\x00", id="nul-byte"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-100000-deep"),
    pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="objects-50000-deep"),
    pytest.param(b'{"stock": 1' + b"0" * 5000 + b"}", id="5000-digit-integer"),
    pytest.param(b'{"name": "half a pair \\ud800"}', id="unpaired-surrogate"),
]


@pytest.mark.parametrize("body", MALFORMED)
@pytest.mark.parametrize(("method", "path"), SOME_WRITES)
def test_malformed_json_is_400(
    client: FlaskClient, auth_headers: dict, method: str, path: str, body: bytes
) -> None:
    assert_problem(send_json_bytes(client, method, path, body, auth_headers), 400)


@pytest.mark.parametrize(
    "body", [b"[]", b"[1, 2]", b'"text"', b"42", b"true", b"null", b"NaN", b"Infinity"]
)
@pytest.mark.parametrize(("method", "path"), WRITES)
def test_json_that_is_not_an_object_is_422(
    client: FlaskClient, auth_headers: dict, method: str, path: str, body: bytes
) -> None:
    assert_problem(send_json_bytes(client, method, path, body, auth_headers), 422)


def send_json_bytes(client: FlaskClient, method: str, path: str, body: bytes, headers: dict) -> Any:
    """`body` as it is, labelled application/json."""
    return send(client, method, path, data=body, content_type="application/json", headers=headers)


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_absent_body_is_422(
    client: FlaskClient, auth_headers: dict, method: str, path: str
) -> None:
    response = send(client, method, path, content_type="application/json", headers=auth_headers)
    body = assert_problem(response, 422)
    assert body["errors"] == {"_schema": ["A JSON request body is required."]}


# Wrong content type and size


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/octet-stream",
        None,
    ],
)
@pytest.mark.parametrize(("method", "path"), SOME_WRITES)
def test_a_body_that_is_not_json_is_415(
    client: FlaskClient, auth_headers: dict, method: str, path: str, content_type: str | None
) -> None:
    headers = dict(auth_headers)
    if content_type:
        headers["Content-Type"] = content_type
    response = send(client, method, path, data=b'{"name": "x"}', headers=headers)
    assert_problem(response, 415)


def test_body_over_the_default_limit_is_413(
    app: Flask, client: FlaskClient, auth_headers: dict
) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit == 1024 * 1024  # the documented default
    body = json.dumps({"name": "x", "description": "y" * limit}).encode()
    response = client.post(
        "/api/v1/categories", data=body, content_type="application/json", headers=auth_headers
    )
    assert_problem(response, 413)


# Unicode, control characters and SQL-looking strings are data


UNICODE_NAMES = [
    "Café ☕ \u2013 東京 🇯🇵",
    "مقهى القهوة",  # right to left
    "e\u0301 (combining accent) and \u00e9 (precomposed)",
    "zero\u200bwidth\u200djoiner",
    "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522 (astral)",
    "\ufeffbyte order mark",
    "C1 control \u0085 is not C0",
]


@pytest.mark.parametrize("name", UNICODE_NAMES)
def test_unicode_is_stored_and_returned_verbatim(
    client: FlaskClient, auth_headers: dict, name: str
) -> None:
    description = f"line one\nline two\ttabbed\r\n{name}"
    created = client.post(
        "/api/v1/categories",
        json={"name": name, "description": description},
        headers=auth_headers,
    )
    assert created.status_code == 201, created.json
    fetched = client.get(f"/api/v1/categories/{created.json['id']}").json
    assert fetched["name"] == name
    assert fetched["description"] == description


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x1b", "\x7f", "\x0b", "\n"])
def test_control_characters_are_422(
    client: FlaskClient, auth_headers: dict, character: str
) -> None:
    body = assert_problem(
        client.post("/api/v1/categories", json={"name": f"a{character}b"}, headers=auth_headers),
        422,
    )
    assert body["errors"] == {"name": ["Control characters are not allowed."]}
    query = client.get("/api/v1/products", query_string={"q": f"a{character}b"})
    assert_problem(query, 422)


@pytest.mark.parametrize("character", ["\x00", "\x1b", "\x7f"])
def test_multiline_text_still_refuses_other_control_characters(
    client: FlaskClient, auth_headers: dict, character: str
) -> None:
    response = client.post(
        "/api/v1/categories",
        json={"name": "ok", "description": f"a{character}b"},
        headers=auth_headers,
    )
    assert assert_problem(response, 422)["errors"] == {
        "description": ["Control characters are not allowed."]
    }


SQL_INJECTIONS = [
    "Robert'); DROP TABLE products; --",
    "' OR '1'='1",
    '" OR ""="',
    "1; SELECT pg_sleep(5)",
    "%' OR 1=1 --",
    "' UNION SELECT token_hash, name FROM api_keys --",
    "100%",
    "under_score",
    "back\\slash",
]


def test_sql_injection_strings_are_plain_data(
    client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    category = make.category()
    created = {}
    for n, text in enumerate(SQL_INJECTIONS):
        as_category = client.post("/api/v1/categories", json={"name": text}, headers=auth_headers)
        assert as_category.status_code == 201, as_category.json
        assert client.get(f"/api/v1/categories/{as_category.json['id']}").json["name"] == text
        product = client.post(
            "/api/v1/products",
            json={
                "sku": f"SQL-{n}",
                "name": text,
                "description": text,
                "price": "1.00",
                "stock": 1,
                "category_id": category.id,
            },
            headers=auth_headers,
        )
        assert product.status_code == 201, product.json
        assert product.json["name"] == text
        created[text] = product.json["id"]
    plain = make.product(category_id=category.id, name="plain coffee")

    for text, product_id in created.items():
        found = client.get("/api/v1/products", query_string={"q": text, "limit": 100})
        assert found.status_code == 200
        names = {item["name"] for item in found.json["items"]}
        # The search matched the text literally: no wildcard, quote or operator took effect.
        assert text in names
        assert all(text.lower() in name.lower() for name in names)
        assert plain.name not in names
        assert client.get(f"/api/v1/products/{product_id}").json["description"] == text

    # Nothing was dropped or leaked along the way.
    listing = client.get("/api/v1/products?limit=100").json["items"]
    assert len(listing) == len(SQL_INJECTIONS) + 1
    assert client.get("/api/v1/orders", headers=auth_headers).status_code == 200


# Numbers: overflow and negatives, in every numeric field and query parameter


HOSTILE_NUMBERS = [-1, -(2**31), 2**31, 2**63, -(2**63) - 1, 10**40, 1e308, -1e308, 0.5]


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/products", "stock"),
        ("/api/v1/products", "price"),
        ("/api/v1/products", "category_id"),
        ("/api/v1/orders", "product_id"),
        ("/api/v1/orders", "quantity"),
    ],
)
def test_out_of_range_numbers_in_bodies_are_422(
    client: FlaskClient,
    make: Factories,
    auth_headers: dict,
    path: str,
    field: str,
    value: float,
) -> None:
    if value == 0.5 and field == "price":
        value = 0.005  # half a unit is a valid price; a third decimal is not
    product = make.product(stock=5)
    if path == "/api/v1/orders":
        item = {"product_id": product.id, "quantity": 1, field: value}
        body: dict[str, Any] = {"customer_email": "n@example.com", "items": [item]}
        expected_field = f"items.0.{field}"
    else:
        body = {
            "sku": "NUM-1",
            "name": "n",
            "price": "1.00",
            "stock": 1,
            "category_id": product.category_id,
            field: value,
        }
        expected_field = field
    response = client.post(path, json=body, headers=auth_headers)
    assert expected_field in assert_problem(response, 422)["errors"]
    # The same values in a change of an existing product.
    if path == "/api/v1/products":
        patched = client.patch(
            f"/api/v1/products/{product.id}", json={field: value}, headers=auth_headers
        )
        assert field in assert_problem(patched, 422)["errors"]
        assert client.get(f"/api/v1/products/{product.id}").json["stock"] == 5


@pytest.mark.parametrize(
    "value", ["-1", "-0.01", "10000000000", "1e3", "NaN", "Infinity", "1_000", " 5", "0.001"]
)
@pytest.mark.parametrize("parameter", ["min_price", "max_price"])
def test_bad_prices_in_queries_are_422(client: FlaskClient, parameter: str, value: str) -> None:
    response = client.get("/api/v1/products", query_string={parameter: value})
    assert parameter in assert_problem(response, 422)["errors"]


@pytest.mark.parametrize("value", ["-1", "0", "2147483648", "99999999999999999999", "1.5", "x"])
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/api/v1/products/{}"),
        ("GET", "/api/v1/categories/{}"),
        ("GET", "/api/v1/orders/{}"),
        ("DELETE", "/api/v1/products/{}"),
        ("PATCH", "/api/v1/categories/{}"),
        ("POST", "/api/v1/orders/{}/cancel"),
    ],
)
def test_out_of_range_ids_in_paths_are_404(
    client: FlaskClient, auth_headers: dict, method: str, template: str, value: str
) -> None:
    response = send(client, method, template.format(value), json={}, headers=auth_headers)
    assert_problem(response, 404)


@pytest.mark.parametrize(
    "query", ["to=0001-01-01", "from=9999-12-01&to=9999-12-31", "to=9999-12-31"]
)
def test_report_dates_at_the_ends_of_the_calendar_work(
    client: FlaskClient, auth_headers: dict, query: str
) -> None:
    response = client.get(f"/api/v1/reports/sales?{query}", headers=auth_headers)
    assert response.status_code == 200, response.json
    assert response.json["totals"]["orders"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "from=0000-01-01",
        "to=10000-01-01",
        "from=-2026-01-01",
        "from=2026-02-30",
        "from=1900-01-01",  # `to` defaults to today: more than the 3660 days allowed
        "from=9999-12-31",  # after the default `to`
    ],
)
def test_report_dates_out_of_range_are_422(
    client: FlaskClient, auth_headers: dict, query: str
) -> None:
    response = client.get(f"/api/v1/reports/sales?{query}", headers=auth_headers)
    errors = assert_problem(response, 422)["errors"]
    assert errors
    assert set(errors) <= {"from", "to"}


# Unknown query parameters


@pytest.mark.parametrize(
    "path",
    ["/api/v1/categories", "/api/v1/products", "/api/v1/orders", "/api/v1/reports/sales"],
)
def test_unknown_query_parameters_are_422(
    client: FlaskClient, auth_headers: dict, path: str
) -> None:
    response = client.get(path, query_string={"limt": "5"}, headers=auth_headers)
    assert assert_problem(response, 422)["errors"] == {"limt": ["Unknown field."]}


# Cursors: invalid, forged with the real key, replayed


def _sign(app: Flask, payload: dict[str, Any]) -> str:
    """A cursor signed with the deployment's key: only a leak or a bug could produce one."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    key = str(app.config["SECRET_KEY"]).encode()
    signature = hmac.new(key, b"cursor:" + raw, hashlib.sha256).digest()[:16]

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(raw)}.{b64(signature)}"


@pytest.mark.parametrize(
    "cursor",
    ["", "x" * 513, ".", "a.", ".b", "é.é", "%00.%00", "a.b.c", "YQ.YQ=", "null"],
)
def test_invalid_cursors_are_refused(client: FlaskClient, cursor: str) -> None:
    response = client.get("/api/v1/products", query_string={"cursor": cursor})
    assert_problem(response, 400, 422)


@pytest.mark.parametrize(
    "key",
    [
        ["abc", 1],
        [{"d": "NaN"}, 1],
        [{"d": "1e999999"}, 1],
        [10**30, 1],
        [{"t": "2026-01-01T00:00:00+00:00"}, "x"],
        [{"t": "2026-01-01T00:00:00"}, 1],  # no time zone
        [{"d": "1.00"}, 2**70],
        [None, 1],
        [[1], 1],
        [{"d": "1.00"}],
    ],
)
@pytest.mark.parametrize("sort", ["price", "-created_at", "name"])
def test_signed_cursors_with_wrong_values_are_400_not_500(
    app: Flask, client: FlaskClient, sort: str, key: list[Any]
) -> None:
    from service.pagination import scope_of

    filters = {"sort": sort, "category_id": None, "min_price": None, "max_price": None, "q": None}
    with app.test_request_context():
        cursor = _sign(app, {"s": scope_of("products", filters), "k": key})
    response = client.get("/api/v1/products", query_string={"sort": sort, "cursor": cursor})
    if sort == "name" and key == ["abc", 1]:
        assert response.status_code == 200  # a well-formed key for this sort
    else:
        assert_problem(response, 400)


def test_a_replayed_cursor_survives_its_row_being_deleted(
    client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    category = make.category()
    ids = [make.product(category_id=category.id).id for _ in range(5)]
    first = client.get("/api/v1/products?limit=2&sort=created_at").json
    assert [item["id"] for item in first["items"]] == ids[:2]
    cursor = first["next_cursor"]
    # The row the cursor points after is gone: the next page is still the next rows.
    assert client.delete(f"/api/v1/products/{ids[1]}", headers=auth_headers).status_code == 204
    for _ in range(2):  # and replaying it gives the same page
        page = client.get(f"/api/v1/products?limit=2&sort=created_at&cursor={cursor}").json
        assert [item["id"] for item in page["items"]] == ids[2:4]


# Through gunicorn: bodies sent in chunks, with no Content-Length


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_chunked_bodies_are_held_to_the_same_rules(
    gunicorn_server: StartServer, server_database: str, server_token: str
) -> None:
    server = gunicorn_server(DATABASE_URL=server_database, MAX_CONTENT_LENGTH="4096")
    workers = server.worker_pids()
    url = server.url("/api/v1/categories")
    headers = {"Authorization": f"Bearer {server_token}", "Content-Type": "application/json"}

    too_big = json.dumps({"name": "big", "description": "y" * 5000}).encode()
    response = requests.post(url, data=_chunks(too_big), headers=headers, timeout=30)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"

    # Exactly at the limit is still fine: padding keeps the document at 4096 bytes.
    document = json.dumps({"name": "fits"}).encode()
    at_limit = document + b" " * (4096 - len(document))
    response = requests.post(url, data=_chunks(at_limit), headers=headers, timeout=30)
    assert response.status_code == 201, response.text

    plain = {**headers, "Content-Type": "text/plain"}
    response = requests.post(url, data=_chunks(b'{"name": "x"}'), headers=plain, timeout=30)
    assert response.status_code == 415
    assert server.worker_pids() == workers
