"""Fault flags (service/faults.py): the real flagd provider, in-process, reading a real flags
file that the test rewrites while the service runs; no restart between the states."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from openfeature import api

from service.catalog.models import Category
from service.extensions import db
from tests.conftest import build_app
from tests.payments.gateway import Gateway, start_gateway
from tests.telemetry.conftest import (  # noqa: F401 - plain_requests: a fixture used below
    plain_requests,
    telemetry_env,
)
from tests.telemetry.otlp import serve_receiver, wait_for

# The test's own calls carry no trace context even where an earlier test instrumented
# `requests` in this process: the server, sampling by parent, would record nothing.
pytestmark = pytest.mark.usefixtures("plain_requests")

FLAGS_FILE = Path(__file__).resolve().parent.parent / "observability/flagd/glassbox.flagd.json"
_keys = itertools.count(1)  # order ids start at 1


@pytest.fixture(autouse=True)
def _providers_shut_down() -> Iterator[None]:
    """The in-process providers a test's apps started stop watching their files after it."""
    yield
    api.clear_providers()


def write_flags(path: Path, **variants: str) -> None:
    """The committed flags file with the named flags on `variants`, the others off.

    The provider reloads on a newer modification time: it is moved forward explicitly, so
    two writes within the file system's time resolution still count as a change.
    """
    flags = json.loads(FLAGS_FILE.read_text())
    for name, variant in variants.items():
        assert variant in flags["flags"][name]["variants"], variant
        flags["flags"][name]["defaultVariant"] = variant
    previous = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(json.dumps(flags))
    stamp = max(time.time(), previous + 1.0)
    os.utime(path, (stamp, stamp))


def authorize(gateway: Gateway) -> requests.Response:
    return gateway.call(
        "POST",
        "/api/v1/authorizations",
        json={"order_id": next(_keys), "amount": "10.00"},
        headers={"Idempotency-Key": f"fault-{os.getpid()}-{next(_keys)}"},
    )


def statuses(gateway: Gateway, n: int) -> set[int]:
    return {authorize(gateway).status_code for _ in range(n)}


def test_the_committed_flags_are_all_off() -> None:
    flags = json.loads(FLAGS_FILE.read_text())["flags"]
    assert set(flags) == {
        "paymentsLatencyMs",
        "paymentsFailureRate",
        "reportsSqlDelayMs",
        "cacheOff",
    }
    for flag in flags.values():
        assert not flag["variants"][flag["defaultVariant"]], flag


def test_payments_fail_while_the_flag_says_so_and_recover_without_a_restart(
    tmp_path: Path,
) -> None:
    flags = tmp_path / "flags.json"
    write_flags(flags)
    receiver, server = serve_receiver()
    gateway = start_gateway(
        tmp_path,
        f"sqlite:///{tmp_path / 'ledger.db'}",
        **telemetry_env(receiver, "glassbox-payments", FAULT_FLAGS_FILE=str(flags)),
    )
    try:
        pid = gateway.process.process.pid
        assert statuses(gateway, 4) == {201}

        write_flags(flags, paymentsFailureRate="100%")
        # Both workers have re-read the file once several calls in a row fail.
        wait_for(lambda: statuses(gateway, 6) == {503}, what="the failure flag to take effect")
        failed = authorize(gateway)
        assert failed.status_code == 503
        assert failed.headers["Content-Type"] == "application/problem+json"
        assert "paymentsFailureRate" in failed.json()["detail"]

        def fault_span() -> Any:
            return next(
                (
                    s
                    for s in receiver.spans()
                    if s.attributes.get("glassbox.fault.paymentsFailureRate") == 1.0
                ),
                None,
            )

        span = wait_for(fault_span, what="a server span marked with the fault")
        assert span.name == "POST /api/v1/authorizations"
        assert "feature_flag.evaluation" in span.events

        write_flags(flags)
        wait_for(lambda: statuses(gateway, 6) == {201}, what="the flag to be switched off")
        assert gateway.process.process.pid == pid  # the same server all along
    finally:
        gateway.process.stop()
        server.shutdown()
        server.server_close()


def test_cache_off_sends_every_read_to_the_database(tmp_path: Path, sqlite_url: str) -> None:
    flags = tmp_path / "flags.json"
    write_flags(flags)
    app = build_app(sqlite_url, FAULT_FLAGS_FILE=str(flags))
    client = app.test_client()
    with app.app_context():
        category = Category(name="faults")
        db.session.add(category)
        db.session.commit()
        category_id = category.id

    def name() -> str:
        response = client.get(f"/api/v1/categories/{category_id}")
        assert response.status_code == 200, response.text
        return str(response.json["name"])

    def rename(new: str) -> None:  # behind the API's back: nothing invalidates the cache
        with app.app_context():
            db.session.execute(
                sa.text("UPDATE categories SET name = :n WHERE id = :i"),
                {"n": new, "i": category_id},
            )
            db.session.commit()

    try:
        assert name() == "faults"
        rename("renamed")
        assert name() == "faults"  # cached
        write_flags(flags, cacheOff="on")
        wait_for(lambda: name() == "renamed", what="the cacheOff flag to take effect")
        write_flags(flags)
        rename("renamed again")
        wait_for(lambda: name() == "faults", what="the cache to be used again")
    finally:
        with app.app_context():
            db.session.execute(sa.text("DELETE FROM categories WHERE id = :i"), {"i": category_id})
            db.session.commit()
            db.engine.dispose()


@pytest.mark.parametrize("loader", ["api", "payments"])
def test_production_refuses_faults_unless_allowed(loader: str) -> None:
    from service.config import ConfigError, load_config, load_payments_config

    base = {
        "GLASSBOX_ENV": "production",
        "SECRET_KEY": "k" * 40,
        "PAYMENTS_SHARED_SECRET": "s" * 40,
        "FAULT_FLAGS_FILE": str(FLAGS_FILE),
    }
    load = load_config if loader == "api" else load_payments_config
    with pytest.raises(ConfigError, match="FAULT_FLAGS_FILE"):
        load({}, base)
    knob = "REPORTS_SQL_DELAY_MS" if loader == "api" else "PAYMENTS_FAILURE_RATE"
    with pytest.raises(ConfigError, match=knob):
        load({}, {**base, "FAULT_FLAGS_FILE": "", knob: "1"})
    assert load({}, {**base, "FAULTS_ALLOWED_IN_PRODUCTION": "true"})["FAULT_FLAGS_FILE"]
    assert load({}, {**base, "GLASSBOX_ENV": "development"})["FAULT_FLAGS_FILE"]
