"""The payments service as tests use it: under gunicorn, with a ledger of its own.

`Gateway` wraps a running payments service: its URL, its shared secret, and the look-ups
that let a test assert against what the gateway itself holds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests
from flask import Flask
from sqlalchemy.engine import make_url

from service.orders.payment_gateway import gateway_for
from tests.processes import PAYMENTS_APP, Process, start_gunicorn
from tests.reliability.servers import server_env

SHARED_SECRET = "payments-tests-shared-secret-0123456789abcdef"


@dataclass
class Gateway:
    process: Process

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {SHARED_SECRET}", **kwargs.pop("headers", {})}
        return requests.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)

    def authorizations_of(self, order_id: int) -> list[dict[str, Any]]:
        response = self.call("GET", f"/api/v1/authorizations?order_id={order_id}")
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


def start_gateway(log_dir: Path, ledger_url: str, **env: str) -> Gateway:
    process = start_gunicorn(
        "payments",
        server_env(PAYMENTS_DATABASE_URL=ledger_url, PAYMENTS_SHARED_SECRET=SHARED_SECRET, **env),
        log_dir / f"payments-{os.urandom(4).hex()}.log",
        app=PAYMENTS_APP,
    )
    return Gateway(process)


@contextlib.contextmanager
def postgres_ledger(test_database_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the ledger beside the test database (never its tables),
    `<name>_payments`; dropped on the way out, so no run leaves it behind."""
    url = make_url(test_database_url)
    name = f"{url.database}_payments"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def use_gateway(app: Flask, url: str, *, timeout: float = 2.0, retries: int = 1) -> None:
    """Point the app's orders at the payments service at `url`."""
    app.extensions["glassbox.payments"] = gateway_for(
        {
            **app.config,  # PAYMENTS_BUDGET, as the app would have it
            "PAYMENTS_URL": url,
            "PAYMENTS_TIMEOUT": timeout,
            "PAYMENTS_RETRIES": retries,
            "PAYMENTS_SHARED_SECRET": SHARED_SECRET,
        }
    )
