"""REQUEST_BUDGET split between the dependencies a request may wait on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.config.parsers import ConfigError

# Seconds kept back from the budget to write the answer (the 503 itself, logging).
ANSWER_RESERVE = 0.25
# Added to the statement timeout for the client's own deadline, so that a live server's
# cancellation (a clean error on a usable connection) comes before the client gives up.
CLIENT_GRACE = 0.25
# payments.HttpPaymentGateway sleeps up to BACKOFF * 2**(attempt-1) before each retry.
PAYMENTS_BACKOFF_SECONDS = 0.1


def request_budget(values: Mapping[str, Any]) -> dict[str, float]:
    """Split REQUEST_BUDGET between the dependencies; refuse settings that do not fit.

    A hung dependency costs a request at most:
    - Redis: one REDIS_TIMEOUT for the limiter and one for the cache, then the breaker is
      open and further calls fail at once;
    - PostgreSQL: one client wait (statement timeout + grace; a pooled connection's
      pre-ping, or the statement) and one reconnection attempt (DATABASE_CONNECT_TIMEOUT,
      at least 2 s in psycopg), after which the request answers 503;
    - payments: PAYMENTS_TIMEOUT per attempt, 1 + PAYMENTS_RETRIES attempts, the backoff.
    """
    budget = float(values["REQUEST_BUDGET"])
    redis_part = 2 * float(values["REDIS_TIMEOUT"])
    connect = float(max(2, values["DATABASE_CONNECT_TIMEOUT"]))
    database_room = budget - redis_part - connect - ANSWER_RESERVE - CLIENT_GRACE
    statement = values["DATABASE_STATEMENT_TIMEOUT"]
    if statement is None:
        statement = round(database_room, 3)
    problems = []
    if statement < 0.1:
        problems.append(
            f"REQUEST_BUDGET={budget:g} leaves no time for SQL after DATABASE_CONNECT_TIMEOUT "
            f"({connect:g} s) and 2 x REDIS_TIMEOUT ({redis_part:g} s)"
        )
    elif statement > database_room + 1e-9:
        problems.append(
            f"DATABASE_STATEMENT_TIMEOUT={statement:g} does not fit REQUEST_BUDGET={budget:g}: "
            f"at most {database_room:.2f} after DATABASE_CONNECT_TIMEOUT and 2 x REDIS_TIMEOUT"
        )
    if float(values["DATABASE_POOL_TIMEOUT"]) > budget - redis_part - ANSWER_RESERVE:
        problems.append(
            f"DATABASE_POOL_TIMEOUT={values['DATABASE_POOL_TIMEOUT']:g} does not fit "
            f"REQUEST_BUDGET={budget:g}"
        )
    retries = int(values["PAYMENTS_RETRIES"])
    payments_worst = float(values["PAYMENTS_TIMEOUT"]) * (1 + retries) + (
        PAYMENTS_BACKOFF_SECONDS * (2**retries - 1)
    )
    # The order's own SQL (reserve, then record the payment) needs time beside the call.
    payments_total = budget - redis_part - ANSWER_RESERVE - 0.5
    if payments_worst > payments_total + 1e-9:
        problems.append(
            f"PAYMENTS_TIMEOUT={values['PAYMENTS_TIMEOUT']:g} x (1 + PAYMENTS_RETRIES={retries}) "
            f"plus backoff is {payments_worst:.2f} s: more than the {payments_total:.2f} s "
            f"REQUEST_BUDGET={budget:g} leaves for payments"
        )
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    statement_ms = int(statement * 1000)
    return {
        "budget": budget,
        "redis_call": float(values["REDIS_TIMEOUT"]),
        "database_connect": connect,
        "database_statement": statement,
        "database_wait": statement + CLIENT_GRACE,
        # A lock wait gets half a statement's time: the clearer error (lock_not_available)
        # arrives before the statement is cancelled.
        "database_lock_ms": max(1, statement_ms // 2),
        "database_statement_ms": statement_ms,
        # No transaction of a request is idle longer than the whole request may take; at
        # twice that the client is gone, and the server should end it and free its locks.
        "database_idle_in_transaction_ms": int(budget * 2 * 1000),
        "payments_worst": payments_worst,
        "payments_total": payments_total,
    }
