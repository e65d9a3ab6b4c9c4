"""The shop as users run it, for the money tests: both services in fresh processes.

The API and the payments service under gunicorn (2 workers each) on PostgreSQL (the ledger
in a database of its own), Redis as the cache, a proxy between the API and the gateway
that can hold every byte (the gateway down, slow, back), and `flask orders expire-pending`
run as the operator runs it. `violations()` checks orders and stock against the gateway's
own ledger.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import requests

from profiling.harness.processes import ROOT
from tests.payments.gateway import SHARED_SECRET, Gateway, postgres_ledger, start_gateway
from tests.processes import Process, start_gunicorn
from tests.reliability.blackhole import BlackHoleProxy, black_hole
from tests.reliability.servers import server_env, wait_until

FLASK = [sys.executable, "-m", "flask", "--app", "service"]


@dataclass
class Shop:
    api: Process
    gateway: Gateway
    proxy: BlackHoleProxy
    env: dict[str, str]  # the API's environment: the CLI runs with it
    database_url: str
    ledger_url: str
    token: str = ""  # a customer's key: places and cancels
    operator_token: str = ""  # an operator's key: cancels any order (the backlog's too)
    jobs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def place(self, key: str, product_id: int, quantity: int = 1) -> requests.Response:
        return requests.post(
            self.api.url("/api/v1/orders"),
            json={
                "customer_email": "shop@example.com",
                "items": [{"product_id": product_id, "quantity": quantity}],
            },
            headers={**self.headers, "Idempotency-Key": key},
            timeout=60,
        )

    def cancel(self, order_id: int, *, operator: bool = False) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.operator_token}"} if operator else self.headers
        return requests.post(
            self.api.url(f"/api/v1/orders/{order_id}/cancel"), headers=headers, timeout=60
        )

    def stock_read(self, product_id: int) -> int:
        """Stock as a client reads it: the cached product read of the API."""
        response = requests.get(self.api.url(f"/api/v1/products/{product_id}"), timeout=30)
        assert response.status_code == 200, response.text
        return int(response.json()["stock"])

    def start_expire_pending(self, older_than: int = 0) -> subprocess.Popen[str]:
        """`flask --app service orders expire-pending` in the background, as cron runs it."""
        job = subprocess.Popen(
            [*FLASK, "orders", "expire-pending", "--older-than", str(older_than)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.jobs.append(job)
        return job

    def sql(self, statement: str, *params: Any, ledger: bool = False) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.ledger_url if ledger else self.database_url) as connection:
            cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def add_backlog(self, count: int, product_id: int) -> None:
        """`count` pending orders of one unit each, an hour old, their stock already taken
        (what an outage leaves behind), inserted in one statement each."""
        self.sql(
            "INSERT INTO orders (customer_email, status, total, payment_key, created_at, "
            "updated_at) SELECT 'backlog@example.com', 'pending', 1.00, "
            "'order-backlog-' || n, now() - interval '1 hour', now() - interval '1 hour' "
            "FROM generate_series(1, %s) AS n",
            count,
        )
        self.sql(
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
            "SELECT id, %s, 1, 1.00 FROM orders WHERE customer_email = 'backlog@example.com' "
            "AND id NOT IN (SELECT order_id FROM order_items)",
            product_id,
        )

    def settled(self) -> bool:
        """No authorization still being decided, and no job still running."""
        if any(job.poll() is None for job in self.jobs):
            return False
        return not self.sql(
            "SELECT 1 FROM payment_authorizations WHERE status = 'processing'", ledger=True
        )

    def violations(self, initial_stock: dict[int, int]) -> list[str]:
        """Orders, stock and the gateway's ledger that do not agree (empty when all do).

        Check after `expire-pending` has run with the gateway answering: a cancel whose void or
        refund went unanswered (503) may hold a released payment beside a `paid` order until
        the job finishes it, and nothing is exempt afterwards.
        """
        found: list[str] = []
        held: dict[int, list[tuple[str, str]]] = {}
        for order_id, status, reference in self.sql(
            "SELECT order_id, status, reference FROM payment_authorizations", ledger=True
        ):
            held.setdefault(order_id, []).append((status, reference))
        orders = self.sql("SELECT id, status, payment_reference FROM orders ORDER BY id")
        for order_id, status, reference in orders:
            statuses = [s for s, _ in held.get(order_id, [])]
            approved = [r for s, r in held.get(order_id, []) if s == "approved"]
            if status == "paid" and approved != [reference]:
                found.append(f"order {order_id} is paid; the gateway holds {statuses}")
            if (
                status != "paid"
                and status != "pending"
                and {"approved", "processing"} & set(statuses)
            ):
                found.append(f"order {order_id} is {status}; the gateway holds {statuses}")
        expected = dict(initial_stock)
        for product_id, quantity in self.sql(
            "SELECT i.product_id, sum(i.quantity) FROM order_items i JOIN orders o "
            "ON o.id = i.order_id WHERE o.status IN ('paid', 'pending') GROUP BY i.product_id"
        ):
            if product_id in expected:
                expected[product_id] -= int(quantity)
        for product_id, stock in self.sql("SELECT id, stock FROM products"):
            if product_id in expected and stock != expected[product_id]:
                found.append(
                    f"product {product_id} has {stock} in stock, not {expected[product_id]}"
                )
        return found

    def cancel_everything_open(self) -> list[str]:
        """Every order can still be cancelled or is final: cancel each open one as an operator,
        trying again after a 503 as its detail says (the gateway may still be answering what it
        held); the answers that were not 200 in the end."""
        refused = []
        for (order_id,) in self.sql("SELECT id FROM orders WHERE status IN ('pending', 'paid')"):
            answers: list[requests.Response] = []

            def answered(order_id: int = order_id, answers: list[Any] = answers) -> bool:
                answers.append(self.cancel(order_id, operator=True))
                return bool(answers[-1].status_code != 503)

            # A cancel that never finishes is reported (with the run's seed), not raised.
            with suppress(TimeoutError):
                wait_until(answered, timeout=60, what=f"cancelling order {order_id}")
            if answers[-1].status_code != 200:
                refused.append(
                    f"cancel of order {order_id}: {answers[-1].status_code} {answers[-1].text}"
                )
        return refused


@contextmanager
def running_shop(
    tmp: Path, database_url: str, redis_url: str, *, payments_timeout: str = "0.5"
) -> Iterator[Shop]:
    """Start the payments service, the proxy and the API; stop all of them afterwards."""
    with postgres_ledger(database_url) as ledger_url:
        yield from _running_shop(tmp, database_url, redis_url, ledger_url, payments_timeout)


def _running_shop(
    tmp: Path, database_url: str, redis_url: str, ledger_url: str, payments_timeout: str
) -> Iterator[Shop]:
    gateway = start_gateway(tmp, ledger_url, WEB_CONCURRENCY="2")
    try:
        target = urlsplit(gateway.base_url)
        with black_hole(target.hostname or "127.0.0.1", target.port or 80) as proxy:
            env = server_env(
                DATABASE_URL=database_url,
                REDIS_URL=redis_url,
                LOG_LEVEL="WARNING",
                PAYMENTS_URL=f"http://127.0.0.1:{proxy.port}",
                PAYMENTS_SHARED_SECRET=SHARED_SECRET,
                PAYMENTS_TIMEOUT=payments_timeout,
                PAYMENTS_RETRIES="0",
            )
            api = start_gunicorn("api", env, tmp / "api.log")
            shop = Shop(api, gateway, proxy, env, database_url, ledger_url)
            try:
                yield shop
            finally:
                proxy.release()
                for job in shop.jobs:
                    if job.poll() is None:
                        job.kill()
                    job.communicate(timeout=30)
                api.stop()
    finally:
        gateway.process.stop()


def wait_settled(shop: Shop, timeout: float = 120) -> None:
    shop.proxy.release()
    wait_until(shop.settled, timeout=timeout, what="jobs ending and the gateway deciding")
