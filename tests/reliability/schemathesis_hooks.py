"""Schemathesis hooks: what the OpenAPI schema cannot say, told to the data generator.

Loaded by the schemathesis CLI through SCHEMATHESIS_HOOKS (tests/reliability/
test_schemathesis.py). Only *positive* cases (those schemathesis promises are valid and
so must be accepted) are changed, and only where validity depends on something a JSON
schema cannot express. Negative cases go out exactly as generated, so every check still
runs on them.

- `cursor`: a cursor is a token the server signed (HMAC with SECRET_KEY, bound to the
  list, sort and filters); no generated string can be a valid one. Positive cases go
  without it. Bad cursors have their own tests (tests/test_pagination.py,
  tests/reliability/test_bad_input.py).
- `If-Match`: the same, an ETag the server computed from the resource's current version;
  a generated one is stale (412). Positive cases go without it (tests/catalog/
  test_preconditions.py tests it).
- `product_id` / `category_id` in request bodies: a reference must name an existing
  row (else 422); positive cases point at rows the test created
  (GLASSBOX_ST_PRODUCT_IDS, GLASSBOX_ST_CATEGORY_IDS). Ids in *paths* are left alone:
  a missing one is a 404, which the checks accept.
- `from`/`to` of the sales report and `min_price`/`max_price`: "from before to, at most
  3660 days apart" and "min below max" relate two parameters, which OpenAPI 3.0 cannot.
- `Idempotency-Key`: the same key with a different body is refused by design (422), and
  the generator reuses short keys across bodies. Positive cases get a fresh key each
  (the body may still change after this hook, when a stateful link fills in an id).

One kind of failure is not counted (`filter_failure`), narrowly matched: in the stateful
phase, a positive case refused with 422 only because a reference in its body names a row
that an earlier step of the same scenario deleted (links fill in ids after the hook above
has run, e.g. POST /categories -> DELETE it -> PATCH a product into it). Refusing a
reference to a deleted row is the documented behaviour.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import MutableMapping
from datetime import date, timedelta
from typing import Any

import schemathesis

MAX_RANGE_DAYS = 3660


def _ids(name: str) -> list[int]:
    return [int(value) for value in os.environ.get(name, "").split(",") if value]


PRODUCT_IDS = _ids("GLASSBOX_ST_PRODUCT_IDS")
CATEGORY_IDS = _ids("GLASSBOX_ST_CATEGORY_IDS")
_KEYS = itertools.count(1)


def _pick(ids: list[int], generated: Any) -> Any:
    # Deterministic for a given generated value, so a fixed seed replays the same run.
    if not ids or not isinstance(generated, int):
        return generated
    return ids[generated % len(ids)]


def _fix_body(body: Any) -> None:
    if not isinstance(body, dict):
        return
    if "category_id" in body:
        body["category_id"] = _pick(CATEGORY_IDS, body["category_id"])
    items = body.get("items")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and "product_id" in item:
                item["product_id"] = _pick(PRODUCT_IDS, item["product_id"])


def _ordered(query: dict[str, Any], low_name: str, high_name: str, parse: Any) -> None:
    low, high = query.get(low_name), query.get(high_name)
    if low is None or high is None:
        return
    try:
        if parse(low) > parse(high):
            query[low_name], query[high_name] = high, low
    except (TypeError, ValueError):
        return


def _fix_query(query: dict[str, Any]) -> None:
    query.pop("cursor", None)
    _ordered(query, "min_price", "max_price", float)
    if "from" not in query and "to" not in query:
        return
    try:
        # The same defaults as the server: `to` is today, `from` 30 days before `to`.
        end = date.fromisoformat(str(query["to"])) if "to" in query else date.today()
        start = (
            date.fromisoformat(str(query["from"]))
            if "from" in query
            else max(date.min + timedelta(days=30), end) - timedelta(days=30)
        )
    except (TypeError, ValueError):
        return
    start, end = min(start, end), max(start, end)
    if (end - start).days > MAX_RANGE_DAYS:
        start = end - timedelta(days=MAX_RANGE_DAYS)
    query["from"], query["to"] = start.isoformat(), end.isoformat()


def _fix_headers(headers: MutableMapping[str, Any]) -> None:
    for name in list(headers):
        if name.lower() == "idempotency-key":
            headers[name] = f"st-{next(_KEYS)}"
        elif name.lower() == "if-match":
            del headers[name]


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    _fix_body(case.body)
    if isinstance(case.query, dict):
        _fix_query(case.query)
    if isinstance(case.headers, MutableMapping):  # a requests CaseInsensitiveDict
        _fix_headers(case.headers)
    return case


def _is_stale_reference(failure: Any, case: Any, response: Any) -> bool:
    if failure.code != "ST202" or response.status_code != 422:
        return False
    if case.meta is None or case.meta.phase.name != "stateful":
        return False
    try:
        problem = json.loads(response.content)
    except ValueError:
        return False
    errors = problem.get("errors") or {}
    messages = [message for values in errors.values() for message in values]
    return (
        problem.get("type") == "urn:glassbox:problem:validation-failed"
        and set(errors) <= {"category_id", "items"}
        and bool(messages)
        and all(message.endswith("does not exist.") for message in messages)
    )


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except the kind described at the top of this module."""
    if not _is_stale_reference(failure, case, response):
        return True
    kind = "stale-reference"
    ledger = os.environ.get("GLASSBOX_ST_FILTERED_LOG")
    if ledger:  # the test reports what was set aside, by kind
        with open(ledger, "a", encoding="utf-8") as file:
            file.write(f"{kind} {failure.code} {response.status_code} {case.operation.label}\n")
    return False
