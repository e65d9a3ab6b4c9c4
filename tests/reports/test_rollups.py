"""`flask reports rebuild-rollups`: orders paid or cancelled by code that kept no rollups
(the previous release during a deploy of migration 0007) are in the report afterwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from flask import Flask

from service.extensions import db
from service.orders.models import Order, OrderStatus
from service.reports import rollups
from service.reports.service import _aggregate
from tests.factories import Factories
from tests.processes import flask_cli
from tests.reliability.servers import server_env
from tests.reports.rollup_rows import assert_as_rebuilt

MARCH_1 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _behind_the_rollups_back(app: Flask, order_id: int, status: str) -> None:
    """What the previous release does: the status changes, the rollups do not."""
    with app.app_context():
        db.session.execute(sa.update(Order).where(Order.id == order_id).values(status=status))
        db.session.commit()


def test_a_rebuild_from_a_day_takes_in_what_changed_without_the_rollups(
    app: Flask, make: Factories
) -> None:
    beans = make.product(price=Decimal("3.00"), stock=99)
    before = make.order(items=[(beans, 1)], created_at=MARCH_1)
    paid_unseen = make.order(items=[(beans, 2)], created_at=MARCH_1 + timedelta(days=1))
    cancelled_unseen = make.order(items=[(beans, 3)], created_at=MARCH_1 + timedelta(days=2))
    _behind_the_rollups_back(app, cancelled_unseen.id, OrderStatus.CANCELLED)
    pending = make.order(
        items=[(beans, 4)], created_at=MARCH_1 + timedelta(days=1), status=OrderStatus.PENDING
    )
    _behind_the_rollups_back(app, pending.id, OrderStatus.PAID)
    # An older day the rebuild must leave as it is, even where it disagrees with the orders.
    _behind_the_rollups_back(app, before.id, OrderStatus.CANCELLED)
    with app.app_context():
        stale, _ = _aggregate(MARCH_1.date(), MARCH_1.date() + timedelta(days=2), "day")
        assert stale["totals"]["orders"] == 3  # before, paid_unseen, cancelled_unseen

        assert rollups.rebuild(MARCH_1.date() + timedelta(days=1)) == 2
        report, _ = _aggregate(MARCH_1.date(), MARCH_1.date() + timedelta(days=2), "day")
        db.session.rollback()
    assert [(g["key"], g["orders"], g["units"]) for g in report["groups"]] == [
        ("2026-03-01", 1, 1),  # before: left alone
        ("2026-03-02", 2, 6),  # paid_unseen and the pending order paid behind its back
    ]

    with app.app_context():
        assert rollups.rebuild() == 2  # every day: `before` is gone too
        kept = assert_as_rebuilt()  # and a second rebuild changes nothing
    assert {row[0] for row in kept["order_sales"]} == {paid_unseen.id, pending.id}


def test_the_rebuild_command_runs_as_a_user_runs_it(tmp_path: Any) -> None:
    env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'shop.db'}", GLASSBOX_ENV="development")
    flask_cli(env, "db", "upgrade")
    flask_cli(env, "seed", "--products", "20", "--orders", "50")
    database = sa.create_engine(env["DATABASE_URL"])
    try:
        with database.connect() as connection:
            paid = connection.scalar(sa.text("SELECT count(*) FROM orders WHERE status = 'paid'"))
        answer = flask_cli(env, "reports", "rebuild-rollups", "--since", "2000-01-01")
        assert answer.strip() == f"rebuilt the rollups of {paid} paid orders since 2000-01-01"
        assert paid > 0
    finally:
        database.dispose()
