"""The PostgreSQL timeouts of the request budget reach the server, directly and through
PgBouncer in transaction pooling mode, and only for requests.

Directly (DATABASE_POOLER=none) they are session settings of a connection a request uses;
through PgBouncer (DATABASE_POOLER=transaction) they are set per transaction.

The PgBouncer fixtures are the deploy tests' (Debian's pgbouncer in transaction mode, with
fewer server connections than clients), so each transaction may land on another server
connection: per-transaction settings must be there every time and leak nowhere.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from service.auth.models import Scope
from service.extensions import db
from tests.conftest import bearer_headers, build_app
from tests.deploy.test_pgbouncer import pgbouncer, scratch_database  # noqa: F401 (fixtures)

pytestmark = pytest.mark.postgres

TIMEOUTS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
# REQUEST_BUDGET=5: statement 2 s, lock half of it, idle in transaction twice the budget.
EXPECTED = {
    "statement_timeout": "2s",
    "lock_timeout": "1s",
    "idle_in_transaction_session_timeout": "10s",
}


def _settings() -> dict[str, str]:
    values = {name: str(db.session.execute(text(f"SHOW {name}")).scalar()) for name in TIMEOUTS}
    db.session.commit()
    return values


def _server_defaults(url: str) -> dict[str, str]:
    with psycopg.connect(url, connect_timeout=5) as connection:
        return {name: str(connection.execute(f"SHOW {name}").fetchone()[0]) for name in TIMEOUTS}  # type: ignore[index]


@pytest.fixture
def database_urls(postgres_url: str, pgbouncer: dict[str, Any]) -> dict[str, str]:  # noqa: F811
    return {"direct": postgres_url, "pgbouncer": pgbouncer["url"]}


@pytest.mark.parametrize(
    ("route", "pooler"),
    [("direct", "none"), ("direct", "transaction"), ("pgbouncer", "transaction")],
)
def test_every_request_transaction_runs_with_the_budget_timeouts(
    database_urls: dict[str, str], route: str, pooler: str
) -> None:
    url = database_urls[route]
    defaults = _server_defaults(url)
    assert defaults != EXPECTED  # so that seeing EXPECTED proves the app set them
    app = build_app(url, DATABASE_POOLER=pooler)
    try:
        with app.test_request_context():
            # Several transactions: behind PgBouncer they run on different server connections.
            for _ in range(4):
                assert _settings() == EXPECTED
        with app.app_context():  # CLI commands (migrations, seeding): the server's defaults
            assert _settings() == defaults
        with app.test_request_context():  # the same pooled connection, back in a request
            assert _settings() == EXPECTED
        with app.app_context():
            assert _settings() == defaults
        # Nothing stayed on a (possibly shared) server connection.
        assert _server_defaults(url) == defaults
    finally:
        with app.app_context():
            db.engine.dispose()


def test_a_statement_past_its_timeout_is_cancelled_by_the_server_and_answers_503(
    postgres_url: str,
) -> None:
    # pg_sleep(3) past the 2 s statement_timeout: it would answer 200 if it ran to the end.
    app = build_app(postgres_url, REPORTS_SQL_DELAY_MS=3000)
    headers = bearer_headers(app, "budget", Scope.OPERATOR)
    response = app.test_client().get("/api/v1/reports/sales", headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.mimetype == "application/problem+json"
    with app.app_context():
        db.engine.dispose()


def test_libpq_startup_options_do_not_carry_timeouts_through_pgbouncer(
    pgbouncer: dict[str, Any],  # noqa: F811
) -> None:
    """Why the timeouts are set per transaction: PgBouncer refuses `options` (before 1.20),
    or refuses the parameters inside it that it cannot track, or drops them when told to
    ignore them (pgbouncer/pgbouncer#381, #525, #907)."""
    refused, applied = "", None
    try:
        connection = psycopg.connect(
            pgbouncer["url"], options="-c statement_timeout=2000", connect_timeout=5
        )
    except psycopg.OperationalError as error:
        refused = str(error)
    else:
        with connection:
            applied = connection.execute("SHOW statement_timeout").fetchone()
        assert applied != ("2s",)
    assert not refused or "unsupported startup parameter" in refused
    print(f"PgBouncer {pgbouncer['version']}: {refused.strip() or 'options accepted, not applied'}")
