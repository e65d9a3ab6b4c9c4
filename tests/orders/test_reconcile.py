"""The orders/ledger reconciliation: each of the four mismatches is counted, a clean pair of
books counts none, the ledger is only read, and the periodic job's gauge goes non-zero when a
test forces a mismatch (a fresh `flask orders reconcile` process, scraped over HTTP)."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from profiling.harness.processes import free_port
from service.database import utcnow
from service.orders.models import OrderStatus
from service.orders.reconcile import Mismatches, Windows, ledger_engine, reconcile
from service.payments.ledger import Ledger, Status
from tests.factories import Factories
from tests.reliability.servers import VENV_BIN, server_env, wait_until

SETTLED = Windows(settle=timedelta(0))


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def ledger(ledger_url: str) -> Ledger:
    """The payments service's own ledger code writes the rows the check then reads."""
    return Ledger(make_url(ledger_url))


def authorize(ledger: Ledger, order_id: int, status: Status) -> None:
    key = f"order-{order_id}"
    ledger.begin(key=key, order_id=order_id, amount=Decimal("10.00"), currency="EUR")
    ledger.decide(key, status)


def check(app: Flask, ledger_url: str, windows: Windows = SETTLED) -> Mismatches:
    with app.app_context():
        return reconcile(ledger=ledger_engine(ledger_url), windows=windows)


def test_books_that_agree_have_no_mismatch(
    app: Flask, make: Factories, ledger: Ledger, ledger_url: str
) -> None:
    product = make.product()
    paid = make.order(items=[(product, 1)])
    authorize(ledger, paid.id, Status.APPROVED)
    failed = make.order(items=[(product, 1)], status=OrderStatus.PAYMENT_FAILED)
    authorize(ledger, failed.id, Status.DECLINED)
    make.order(items=[(product, 1)], status=OrderStatus.PENDING)  # just placed
    assert check(app, ledger_url) == Mismatches(0, 0, 0, 0)


def test_each_mismatch_is_counted(
    app: Flask, make: Factories, ledger: Ledger, ledger_url: str
) -> None:
    product = make.product()
    make.order(items=[(product, 1)])  # paid, nothing in the ledger
    cancelled = make.order(items=[(product, 1)], status=OrderStatus.CANCELLED)
    authorize(ledger, cancelled.id, Status.APPROVED)  # money held for a cancelled order
    ten_minutes_ago = utcnow() - timedelta(minutes=10)
    make.order(items=[(product, 1)], status=OrderStatus.PENDING, created_at=ten_minutes_ago)
    an_hour_ago = utcnow() - timedelta(hours=1)
    make.order(items=[(product, 1)], status=OrderStatus.PENDING, created_at=an_hour_ago)
    assert check(app, ledger_url) == Mismatches(
        paid_without_approval=1,
        approval_without_paid_order=1,
        pending_backlog=2,  # both are stuck
        expire_pending_not_running=1,  # only the hour-old one is past expire-pending's run
    )


def test_changes_within_the_settle_window_are_not_mismatches_yet(
    app: Flask, make: Factories, ledger: Ledger, ledger_url: str
) -> None:
    """The two books are written one after the other: a check in between sees no mismatch."""
    product = make.product()
    make.order(items=[(product, 1)])
    pending = make.order(items=[(product, 1)], status=OrderStatus.PENDING)
    authorize(ledger, pending.id, Status.APPROVED)
    assert check(app, ledger_url, Windows()) == Mismatches(0, 0, 0, 0)


def test_the_ledger_is_only_read(app: Flask, ledger: Ledger, ledger_url: str) -> None:
    path = Path(make_url(ledger_url).database or "")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    check(app, ledger_url)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    with (
        ledger_engine(ledger_url).connect() as connection,
        pytest.raises(OperationalError, match="readonly"),
    ):
        connection.exec_driver_sql("DELETE FROM payment_authorizations")


def test_the_periodic_job_exports_a_forced_mismatch(
    pg_app: Flask, postgres_url: str, ledger: Ledger, ledger_url: str, tmp_path: Path
) -> None:
    """`flask orders reconcile --every` in its own process: its gauge is 0 on agreeing books,
    then non-zero once a paid order without an approval is forced into the orders database."""
    port = free_port()
    env = server_env(DATABASE_URL=postgres_url, PAYMENTS_DATABASE_URL=ledger_url)
    log = (tmp_path / "reconcile.log").open("wb")
    job = subprocess.Popen(
        [
            *(str(VENV_BIN / "flask"), "--app", "service", "orders", "reconcile"),
            *("--every", "1", "--settle", "0"),
            *("--metrics-port", str(port), "--metrics-host", "127.0.0.1"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    metric = 'glassbox_reconcile_mismatches{mismatch="paid_without_approval"}'

    def gauge() -> float | None:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        lines = [line for line in text.splitlines() if line.startswith(metric)]
        return float(lines[0].split()[-1]) if lines else None

    try:
        wait_until(lambda: gauge() == 0.0, timeout=60, what="a first, clean reconciliation")
        make = Factories(pg_app)
        make.order(items=[(make.product(), 1)])  # paid; the ledger never approved it
        wait_until(lambda: gauge() == 1.0, timeout=60, what="the mismatch in the gauge")
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "glassbox_reconcile_last_success_timestamp_seconds" in text
    finally:
        job.terminate()
        job.wait(timeout=30)
        log.close()
