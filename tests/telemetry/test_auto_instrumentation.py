"""`opentelemetry-instrument` users get each span once: glassbox steps aside for the distro."""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.reliability.servers import PROJECT_ROOT, VENV_BIN, free_port, wait_until
from tests.telemetry.conftest import telemetry_env
from tests.telemetry.otlp import serve_receiver, wait_for

SERVER = 2


def test_no_double_instrumentation_under_opentelemetry_instrument(
    tmp_path: Path, sqlite_url: str
) -> None:
    receiver, server = serve_receiver()
    port = free_port()
    env = telemetry_env(
        receiver,
        "glassbox-api",
        DATABASE_URL=sqlite_url,
        WEB_CONCURRENCY="1",
        HOST="127.0.0.1",
        PORT=str(port),
        OTEL_PYTHON_FLASK_EXCLUDED_URLS="health/.*",
    )
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "opentelemetry-instrument"),
                str(VENV_BIN / "gunicorn"),
                "-c",
                "python:service.gunicorn_conf",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(base + "/health/live", timeout=2).status_code == 200,
            timeout=60,
            what="gunicorn under opentelemetry-instrument",
        )
        response = requests.get(base + "/api/v1/products?limit=2", timeout=10)
        assert response.status_code == 200
        trace_id = response.headers["X-Trace-Id"]

        def spans() -> list | None:
            found = [s for s in receiver.spans() if s.trace_id == trace_id]
            return found if any(s.kind == SERVER for s in found) and len(found) > 1 else None

        found = wait_for(spans, what=f"spans of {trace_id}\n{log.read_text()[-3000:]}")
        servers = [s for s in found if s.kind == SERVER]
        assert len(servers) == 1, [(s.name, s.attributes) for s in found]
        # The distro's stock Flask instrumentation made it (it names spans by route too).
        assert servers[0].attributes.get("http.route") == "/api/v1/products"
        statements = [
            s.attributes.get("db.statement") or s.attributes.get("db.query.text")
            for s in found
            if s.kind == 3 and s.name.startswith("SELECT")
        ]
        assert statements
        assert len(statements) == len(set(statements)), "a statement was traced twice"
    finally:
        process.terminate()
        process.wait(timeout=30)
        server.shutdown()
        server.server_close()
