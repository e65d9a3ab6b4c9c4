"""The running service a consumer of the contract meets: gunicorn with two workers on SQLite,
rate limiting and tracing on (every answer has its RateLimit-* and X-Trace-Id headers), a real
payments service behind orders; beside it the same API with its database unreachable, for the
503s. Shared by the contract tests and the generated clients' tests."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from profiling.harness.processes import free_port
from tests.payments.gateway import SHARED_SECRET, start_gateway
from tests.processes import Process, flask_cli, start_gunicorn
from tests.reliability.servers import server_env

# The npm packages the contract tests run (one install, from npm's cache after the first).
NPM_PACKAGES = (
    "openapi-typescript@7.13.0",
    "typescript@5.9.3",
    "@stoplight/spectral-cli@6.16.3",
    "@stoplight/spectral-owasp-ruleset@2.0.1",
)
# Each API key (and the anonymous client address) gets this many requests a minute per worker
# (memory:// storage counts per process): far more than the tests make, except on purpose.
RATE_LIMIT = 200
MAX_BODY = 4096


def _api_env(database_url: str, payments_url: str, **overrides: str) -> dict[str, str]:
    return server_env(
        GLASSBOX_ENV="development",
        DATABASE_URL=database_url,
        PAYMENTS_URL=payments_url,
        PAYMENTS_SHARED_SECRET=SHARED_SECRET,
        RATELIMIT_ENABLED="true",
        RATELIMIT_DEFAULT=f"{RATE_LIMIT} per minute",
        MAX_CONTENT_LENGTH=str(MAX_BODY),
        # Spans are made (X-Trace-Id) and exported nowhere.
        OTEL_SDK_DISABLED="false",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        **overrides,
    )


@dataclass
class Service:
    api: Process
    down: Process  # the same API, its database unreachable
    env: dict[str, str]  # the API's environment, for its CLI


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("contract")
    payments = start_gateway(tmp, f"sqlite:///{tmp / 'ledger.db'}")
    env = _api_env(
        f"sqlite:///{tmp / 'shop.db'}",
        payments.base_url,
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"),
    )
    setup = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    flask_cli(setup, "db", "upgrade")
    flask_cli(setup, "seed", "--products", "20", "--orders", "0")
    flask_cli(setup, "api-keys", "ensure-dev")
    down_env = _api_env(
        f"postgresql://postgres@127.0.0.1:{free_port()}/unreachable",
        payments.base_url,
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics-down"),
        WEB_CONCURRENCY="1",
    )
    started: list[Process] = []
    try:
        started.append(start_gunicorn("api", env, tmp / "api.log"))
        started.append(start_gunicorn("api-down", down_env, tmp / "api-down.log"))
        yield Service(api=started[0], down=started[1], env=setup)
    finally:
        started.append(payments.process)
        for process in started:  # all stop side by side, each in its own time
            if process.process is not None and process.process.poll() is None:
                process.process.send_signal(signal.SIGTERM)
        for process in started:
            process.stop()


@pytest.fixture(scope="session")
def server(service: Service) -> Process:
    return service.api


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The npm packages above installed in one prefix; its node_modules."""
    prefix = tmp_path_factory.mktemp("npm")
    done = subprocess.run(
        [
            "npm",
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(prefix),
            *NPM_PACKAGES,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return prefix / "node_modules"


def run_node_tool(
    node_modules: Path, tool: str, *args: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(node_modules / ".bin" / tool), *args],
        cwd=cwd,
        env={**os.environ, "NODE_PATH": str(node_modules)},  # for .spectral.yaml's extends
        capture_output=True,
        text=True,
        timeout=300,
    )
