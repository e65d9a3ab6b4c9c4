"""`flask orders expire-pending` racing the clients' keyed retries (issue 23, finding 1).

After a payments outage the clients retry with their Idempotency-Keys while the job walks a
backlog of stale pending orders. The job may only release money of an order it claimed
while still pending: it must never void or refund an order a retry has paid meanwhile.
Both services run under gunicorn on PostgreSQL; the job runs as the operator runs it.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from service.auth import service as auth
from tests.factories import Factories
from tests.orders.shop import running_shop, wait_settled
from tests.reliability.servers import wait_until

BACKLOG = 40
RETRIED = 3


def test_expire_pending_never_releases_the_money_of_an_order_a_retry_paid(
    pg_app: Flask, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    with running_shop(tmp_path, postgres_url, redis_url) as shop:
        with pg_app.app_context():
            shop.token = auth.create_key(name="retrier")
        product = Factories(pg_app).product(stock=10)
        backlog_product = Factories(pg_app).product(stock=0)
        shop.add_backlog(BACKLOG, backlog_product.id)  # older, so walked first

        shop.proxy.hold()  # the outage: placements time out and stay pending
        first = [shop.place(f"outage-{n}", product.id) for n in range(RETRIED)]
        assert [r.status_code for r in first] == [503] * RETRIED, [r.text for r in first]
        shop.proxy.release()

        job = shop.start_expire_pending()
        wait_until(
            lambda: shop.sql("SELECT 1 FROM orders WHERE status = 'cancelled' LIMIT 1") != [],
            timeout=60,
            what="the job walking the backlog",
        )
        # The documented recovery, while the job is still on the backlog.
        retries = [shop.place(f"outage-{n}", product.id) for n in range(RETRIED)]
        assert {r.status_code for r in retries} <= {201, 409}, [r.text for r in retries]
        wait_settled(shop)
        output, _ = job.communicate(timeout=30)
        assert job.returncode == 0, output

        initial = {product.id: 10, backlog_product.id: BACKLOG}
        assert shop.violations(initial) == []
        statuses = shop.sql("SELECT status, count(*) FROM orders GROUP BY status ORDER BY 1")
        assert dict(statuses)["cancelled"] >= BACKLOG, statuses
        # Every order the retries paid can still be cancelled, and gives its money back.
        assert shop.cancel_everything_open() == []
        assert shop.violations(initial) == []
        assert shop.stock_read(product.id) == 10
        assert shop.stock_read(backlog_product.id) == BACKLOG
