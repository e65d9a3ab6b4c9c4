"""SIGTERM to gunicorn flushes the spans still queued in the workers."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.telemetry.conftest import start_gunicorn, telemetry_env
from tests.telemetry.otlp import serve_receiver, wait_for


def test_spans_are_flushed_on_sigterm(tmp_path: Path, sqlite_url: str) -> None:
    receiver, server = serve_receiver()
    try:
        env = telemetry_env(
            receiver,
            "glassbox-api",
            DATABASE_URL=sqlite_url,
            WEB_CONCURRENCY="1",
            # Nothing leaves on the timer during the test: only shutdown can export it.
            OTEL_BSP_SCHEDULE_DELAY="600000",
            OTEL_METRIC_EXPORT_INTERVAL="600000",
        )
        api = start_gunicorn("api", env, tmp_path / "api.log")
        try:
            response = requests.get(api.base_url + "/api/v1/categories", timeout=10)
            trace_id = response.headers["X-Trace-Id"]
            assert not any(s.trace_id == trace_id for s in receiver.spans())
        finally:
            assert api.stop() == 0
        wait_for(
            lambda: any(s.trace_id == trace_id for s in receiver.spans()),
            timeout=5,
            what="the span flushed at shutdown",
        )
    finally:
        server.shutdown()
        server.server_close()
