from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.auth.models import Scope
from service.reports.reference import percentile
from tests.conftest import bearer_headers
from tests.factories import Factories
from tests.reports.rollup_rows import assert_as_rebuilt


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """The report is the operator's: every request here carries an operator key."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = bearer_headers(app, "reports", Scope.OPERATOR)[
        "Authorization"
    ]
    return client


def test_percentile_interpolates_like_numpy() -> None:
    values = [Decimal(v) for v in ("1", "2", "3", "4")]
    assert percentile(values, 50) == Decimal("2.50")
    assert percentile(values, 90) == Decimal("3.70")
    assert percentile([Decimal("5")], 99) == Decimal("5.00")
    assert percentile([], 50) == Decimal("0")


@pytest.fixture
def sales(make: Factories) -> dict:
    coffee, tea = make.category(name="Coffee"), make.category(name="Tea")
    beans = make.product(name="Beans", price=Decimal("10.00"), category_id=coffee.id, stock=99)
    leaves = make.product(name="Leaves", price=Decimal("4.00"), category_id=tea.id, stock=99)
    day1 = datetime(2026, 3, 1, 9, tzinfo=UTC)
    day2 = day1 + timedelta(days=1)
    make.order(items=[(beans, 1)], created_at=day1)  # 10.00
    make.order(items=[(beans, 2), (leaves, 1)], created_at=day1)  # 24.00
    make.order(items=[(leaves, 3)], created_at=day2)  # 12.00
    make.order(items=[(beans, 5)], created_at=day2, status="cancelled")  # not counted
    make.order(items=[(beans, 9)], created_at=day2 + timedelta(days=5))  # out of range
    return {"coffee": coffee.id, "tea": tea.id, "beans": beans.id, "leaves": leaves.id}


def test_by_day(client: FlaskClient, sales: dict) -> None:
    report = client.get("/api/v1/reports/sales?from=2026-03-01&to=2026-03-02&group_by=day").json
    assert report["totals"] == {
        "orders": 3,
        "units": 7,
        "revenue": "46.00",
        "average": "15.33",
        "p50": "12.00",
        "p90": "21.60",
        "p99": "23.76",
    }
    assert [(g["key"], g["orders"], g["revenue"]) for g in report["groups"]] == [
        ("2026-03-01", 2, "34.00"),
        ("2026-03-02", 1, "12.00"),
    ]
    assert report["from"] == "2026-03-01"


def test_by_product_and_category(client: FlaskClient, sales: dict) -> None:
    by_product = client.get("/api/v1/reports/sales?from=2026-03-01&to=2026-03-02&group_by=product")
    groups = {g["label"]: g for g in by_product.json["groups"]}
    assert groups["Beans"]["units"] == 3
    assert groups["Beans"]["revenue"] == "30.00"
    assert groups["Leaves"]["orders"] == 2
    assert groups["Leaves"]["revenue"] == "16.00"
    by_category = client.get(
        "/api/v1/reports/sales?from=2026-03-01&to=2026-03-02&group_by=category"
    )
    assert {g["label"]: g["revenue"] for g in by_category.json["groups"]} == {
        "Coffee": "30.00",
        "Tea": "16.00",
    }


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-03-05&to=2026-03-01",
        "group_by=week",
        "from=yesterday",
        "from=2000-01-01&to=2026-01-01",
    ],
)
def test_bad_report_arguments(client: FlaskClient, query: str) -> None:
    response = client.get(f"/api/v1/reports/sales?{query}")
    assert response.status_code == 422


def test_empty_range(client: FlaskClient) -> None:
    report = client.get("/api/v1/reports/sales?from=2020-01-01&to=2020-01-31").json
    assert report["groups"] == []
    assert report["totals"]["orders"] == 0
    assert report["totals"]["revenue"] == "0.00"


def test_sql_delay_knob_for_the_lab(backend: str, request: pytest.FixtureRequest) -> None:
    """REPORTS_SQL_DELAY_MS makes the report wait in the database (pg_sleep, on SQLite too)."""
    from tests.conftest import build_app

    database = request.getfixturevalue("postgres_url" if backend == "postgres" else "sqlite_url")
    app = build_app(database, REPORTS_SQL_DELAY_MS=5)
    statements: list[str] = []
    from sqlalchemy import event

    from service.extensions import db

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    headers = bearer_headers(app, "slow-report", Scope.OPERATOR)
    response = app.test_client().get("/api/v1/reports/sales", headers=headers)
    with app.app_context():
        db.engine.dispose()
    assert response.status_code == 200
    assert any("pg_sleep" in statement for statement in statements)


def test_report_has_an_etag_and_answers_304(client: FlaskClient, sales: dict) -> None:
    url = "/api/v1/reports/sales?from=2026-03-01&to=2026-03-02"
    first = client.get(url)
    assert first.status_code == 200
    assert first.headers["ETag"]
    again = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_paid_and_cancelled_orders_and_renames_invalidate_the_cached_report(
    client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    """Cached like the catalog: what an order's payment or cancellation changes is dropped."""
    beans = make.product(name="Beans", price=Decimal("10.00"), stock=99)
    today = datetime.now(UTC).date()
    url = f"/api/v1/reports/sales?from={today}&to={today}&group_by=product"

    def totals() -> tuple[int, str]:
        report = client.get(url).json
        return report["totals"]["orders"], ",".join(g["label"] for g in report["groups"])

    assert totals() == (0, "")
    make.order(items=[(beans, 1)])  # written behind the service's back: nothing invalidated
    assert totals() == (0, "")  # so the cached report answers
    body = {"customer_email": "a@example.com", "items": [{"product_id": beans.id, "quantity": 2}]}
    placed = client.post("/api/v1/orders", json=body, headers=auth_headers)
    assert placed.status_code == 201, placed.json
    assert totals() == (2, "Beans")  # paid: the cached report was dropped
    renamed = client.patch(
        f"/api/v1/products/{beans.id}", json={"name": "Roasted beans"}, headers=auth_headers
    )
    assert renamed.status_code == 200
    assert totals() == (2, "Roasted beans")
    cancelled = client.post(f"/api/v1/orders/{placed.json['id']}/cancel", headers=auth_headers)
    assert cancelled.status_code == 200
    assert totals() == (1, "Roasted beans")


@pytest.mark.parametrize("lab_routes", [False, True])
def test_lab_route_serves_the_python_report_only_when_enabled(
    backend: str, request: pytest.FixtureRequest, lab_routes: bool
) -> None:
    from tests.conftest import build_app

    database = request.getfixturevalue("postgres_url" if backend == "postgres" else "sqlite_url")
    app = build_app(database, LAB_ROUTES=lab_routes)
    query = "from=2020-01-01&to=2020-01-31&group_by=category"
    lab = app.test_client().get(f"/lab/sales-in-python?{query}")
    operator = bearer_headers(app, f"lab-report-{lab_routes}", Scope.OPERATOR)
    api = app.test_client().get(f"/api/v1/reports/sales?{query}", headers=operator)
    with app.app_context():
        from service.extensions import db

        db.engine.dispose()
    assert lab.status_code == (200 if lab_routes else 404)
    if lab_routes:
        assert lab.json == api.json


def test_payments_cancels_and_moves_keep_the_rollups_as_a_rebuild_makes_them(
    app: Flask, client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    """Through the API: what the report reads after orders are paid and cancelled and a
    product changes category is what the rollups hold when rebuilt from the orders."""
    coffee, tea = make.category(name="Coffee"), make.category(name="Tea")
    beans = make.product(name="Beans", price=Decimal("10.00"), category_id=coffee.id, stock=99)
    leaves = make.product(name="Leaves", price=Decimal("4.00"), category_id=tea.id, stock=99)
    placed = []
    for lines in ([(beans, 1), (leaves, 2)], [(beans, 3)], [(leaves, 1), (beans, 1)]):
        body = {
            "customer_email": "a@example.com",
            "items": [{"product_id": p.id, "quantity": q} for p, q in lines],
        }
        answer = client.post("/api/v1/orders", json=body, headers=auth_headers)
        assert answer.status_code == 201, answer.json
        placed.append(answer.json["id"])
    cancelled = client.post(f"/api/v1/orders/{placed[1]}/cancel", headers=auth_headers)
    assert cancelled.status_code == 200, cancelled.json
    moved = client.patch(
        f"/api/v1/products/{beans.id}", json={"category_id": tea.id}, headers=auth_headers
    )
    assert moved.status_code == 200, moved.json

    today = datetime.now(UTC).date()
    by_category = client.get(f"/api/v1/reports/sales?from={today}&to={today}&group_by=category")
    assert [(g["label"], g["orders"], g["revenue"]) for g in by_category.json["groups"]] == [
        ("Tea", 2, "32.00")  # 10 + 8, then 4 + 10: the cancelled order's 30 is gone
    ]
    with app.app_context():
        kept = assert_as_rebuilt()
    assert {row[0] for row in kept["order_sales"]} == {placed[0], placed[2]}
