"""The payments service as a gateway: one ledger for every worker, idempotency that compares
the request, void and refund, look-ups, and a shared secret (issue 10, findings 1 and 5).

Each test runs the real service under gunicorn with 2 workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import TEST_DATABASE_URL, require
from tests.payments.gateway import SHARED_SECRET, Gateway, postgres_ledger, start_gateway
from tests.reliability.servers import run_venv_tool, server_env

StartPayments = Callable[..., Gateway]


def authorize(
    gateway: Gateway, key: str, order_id: int, amount: str, currency: str = "EUR", path: str = ""
) -> requests.Response:
    """POST an authorization (or, with `path="/void"`, a void by key)."""
    return gateway.call(
        "POST",
        f"/api/v1/authorizations{path}",
        json={"order_id": order_id, "amount": amount, "currency": currency},
        headers={"Idempotency-Key": key},
    )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One service per ledger backend for the module: each test uses keys of its own."""
    tmp = tmp_path_factory.mktemp("gateway")
    with contextlib.ExitStack() as stack:
        ledger = f"sqlite:///{tmp / 'ledger.db'}"
        if request.param == "postgres":
            url = require(TEST_DATABASE_URL, "TEST_DATABASE_URL")
            ledger = stack.enter_context(postgres_ledger(url))
        # Latency keeps the first request undecided while the others arrive at both workers.
        started = start_gateway(tmp, ledger, WEB_CONCURRENCY="2", PAYMENTS_LATENCY_MS="300")
        yield started
        started.process.stop()


def test_one_key_is_one_authorization_across_workers(gateway: Gateway) -> None:
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: authorize(gateway, "k-1", 7, "10.11"), range(10)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["reference"] for a in answers}) == 1
    assert [a["status"] for a in gateway.authorizations_of(7)] == ["approved"]


def test_a_replay_with_another_amount_or_order_is_refused(gateway: Gateway) -> None:
    assert authorize(gateway, "order-537", 537, "0.00").status_code == 201
    for order_id, amount, currency in (
        (537, "10.11", "EUR"),
        (538, "0.00", "EUR"),
        (537, "0.00", "USD"),
    ):
        replay = authorize(gateway, "order-537", order_id, amount, currency)
        assert replay.status_code == 422
        assert replay.headers["Content-Type"] == "application/problem+json"
        assert replay.json()["type"].endswith("idempotency-key-reused")
    assert [a["amount"] for a in gateway.authorizations_of(537)] == ["0.00"]
    assert gateway.authorizations_of(538) == []


def test_an_amount_finer_than_cents_is_refused(gateway: Gateway) -> None:
    # 1.006 rounds up to 1.01: refused whichever way it would round (a mutant survived).
    for amount in ("1.006", "1.004"):
        refused = authorize(gateway, f"k-cents-{amount}", 61, amount)
        assert refused.status_code == 422, refused.text
    assert gateway.authorizations_of(61) == []


def test_void_and_refund_are_idempotent_and_exclusive(gateway: Gateway) -> None:
    first = authorize(gateway, "k-void", 1, "5.00").json()["reference"]
    second = authorize(gateway, "k-refund", 2, "6.00").json()["reference"]
    for _ in range(2):
        voided = gateway.call("POST", f"/api/v1/authorizations/{first}/void")
        assert (voided.status_code, voided.json()["status"]) == (200, "voided")
        refunded = gateway.call("POST", f"/api/v1/authorizations/{second}/refund")
        assert (refunded.status_code, refunded.json()["status"]) == (200, "refunded")
    assert gateway.call("POST", f"/api/v1/authorizations/{first}/refund").status_code == 409
    assert gateway.call("POST", f"/api/v1/authorizations/{second}/void").status_code == 409
    assert gateway.call("GET", f"/api/v1/authorizations/{first}").json()["status"] == "voided"
    assert gateway.call("GET", "/api/v1/authorizations/pay-nope").status_code == 404
    # A replay of a voided authorization does not approve it again.
    assert authorize(gateway, "k-void", 1, "5.00").json()["type"].endswith("voided")


def test_a_void_by_key_with_another_order_amount_or_currency_changes_nothing(
    gateway: Gateway,
) -> None:
    """Compared before anything changes (issue 23, finding 2): a mismatched void is 422 and
    the approval it named stays approved."""
    assert authorize(gateway, "k-mismatch", 41, "7.00").status_code == 201
    for order_id, amount, currency in (
        (42, "7.00", "EUR"),
        (41, "7.01", "EUR"),
        (41, "7.00", "USD"),
    ):
        refused = authorize(gateway, "k-mismatch", order_id, amount, currency, path="/void")
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"].endswith("idempotency-key-reused")
        assert [a["status"] for a in gateway.authorizations_of(41)] == ["approved"]
    assert gateway.authorizations_of(42) == []
    voided = authorize(gateway, "k-mismatch", 41, "7.00", path="/void")
    assert (voided.status_code, voided.json()["status"]) == (200, "voided")


def test_void_by_key_stops_an_authorization_still_to_come(gateway: Gateway) -> None:
    body = {"order_id": 9, "amount": "3.00", "currency": "EUR"}
    voided = gateway.call(
        "POST", "/api/v1/authorizations/void", json=body, headers={"Idempotency-Key": "k-9"}
    )
    assert (voided.status_code, voided.json()["status"]) == (200, "voided")
    late = authorize(gateway, "k-9", 9, "3.00")
    assert late.status_code == 409
    assert [a["status"] for a in gateway.authorizations_of(9)] == ["voided"]


def test_declined_is_402_and_looked_up_by_order(gateway: Gateway) -> None:
    declined = authorize(gateway, "k-big", 3, "10000.01")
    assert declined.status_code == 402
    assert declined.json()["authorization"]["status"] == "declined"
    assert [a["status"] for a in gateway.authorizations_of(3)] == ["declined"]


def test_without_the_shared_secret_every_api_call_is_401(payments_server: StartPayments) -> None:
    gateway = payments_server()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SHARED_SECRET}):
        response = requests.post(
            gateway.base_url + "/api/v1/authorizations",
            json={"order_id": 1, "amount": "1.00"},
            headers={"Idempotency-Key": "k", **headers},
            timeout=10,
        )
        assert response.status_code == 401
        assert response.headers["Content-Type"] == "application/problem+json"
        assert "WWW-Authenticate" in response.headers
    assert requests.get(gateway.base_url + "/health/live", timeout=10).status_code == 200
    assert gateway.authorizations_of(1) == []


@pytest.mark.parametrize("secret", ["", "glassbox-payments-development-secret", "short"])
def test_production_refuses_to_start_without_a_real_secret(tmp_path: Path, secret: str) -> None:
    env = server_env(
        GLASSBOX_ENV="production",
        PAYMENTS_SHARED_SECRET=secret,
        PAYMENTS_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
    )
    started = run_venv_tool(
        "python", "-c", "from service.payments import create_app; create_app()", env=env
    )
    assert started.returncode != 0
    assert "PAYMENTS_SHARED_SECRET" in started.stderr


# Issue 23, finding 4: input the ledger cannot hold is a 422 problem, never a 500.
NESTED = "[" * 5_000 + "]" * 5_000  # past the JSON parser's recursion limit, within 64 KiB


@pytest.mark.parametrize(
    "body",
    [
        {"order_id": 1, "amount": 1e17, "currency": "EUR"},  # 1e19 cents: past BIGINT
        {"order_id": 1, "amount": "100000000000000000.00", "currency": "EUR"},
        {"order_id": 1, "amount": 1e30, "currency": "EUR"},  # decimal.InvalidOperation
        {"order_id": 1, "amount": "1e30", "currency": "EUR"},
        {"order_id": 10**23, "amount": "1.00", "currency": "EUR"},
        {"order_id": 2**63, "amount": "1.00", "currency": "EUR"},
        {"order_id": 1, "amount": "1.00", "currency": "ßab"},  # upper-cases to SSAB
        {"order_id": 1, "amount": "1.00", "currency": "EU\u0130"},  # İ upper-cases to two
        NESTED,
        '{"order_id": 1, "amount": "1.00", "currency": "EUR", "nested": ' + NESTED + "}",
    ],
    ids=lambda body: repr(body)[:40],
)
def test_input_the_ledger_cannot_hold_is_422(gateway: Gateway, body: object) -> None:
    for path in ("/api/v1/authorizations", "/api/v1/authorizations/void"):
        if isinstance(body, str):
            kwargs: dict[str, object] = {
                "data": body,
                "headers": {"Content-Type": "application/json", "Idempotency-Key": "edge"},
            }
        else:
            kwargs = {"json": body, "headers": {"Idempotency-Key": f"edge-{id(body)}"}}
        response = gateway.call("POST", path, **kwargs)
        assert response.status_code == 422, (path, response.status_code, response.text[:300])
        assert response.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(
    "query", ["order_id=9223372036854775808", "order_id=1&order_id=2", "order_id=1e3"]
)
def test_looking_up_by_an_order_id_out_of_range_or_repeated_is_422(
    gateway: Gateway, query: str
) -> None:
    response = gateway.call("GET", f"/api/v1/authorizations?{query}")
    assert response.status_code == 422, response.text[:300]
    assert response.headers["Content-Type"] == "application/problem+json"
    assert gateway.call("GET", "/api/v1/authorizations?order_id=9223372036854775807").json() == {
        "items": []
    }
