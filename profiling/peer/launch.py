"""Start the peer under uvicorn (2 workers, uvloop, httptools), plain or under stock
`opentelemetry-instrument`, wait until every worker is up, and stop it.

The server runs in its own process group on 127.0.0.1 (stopping it ends the group), and
every wait has a deadline.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from profiling.harness.processes import (
    ROOT,
    clean_environment,
    free_port,
    stop_group,
    wait_until,
)

APP = "profiling.peer.app:app"
SERVICE_NAME = "glassbox-peer"
PEER_INSTRUMENTATIONS = ("fastapi", "asyncpg")
# uvicorn logs this once per worker when its lifespan (the asyncpg pool) has started.
_WORKER_READY = "Application startup complete."


@dataclass
class Peer:
    """A running peer; `stop()` (or leaving a `with` block) ends it and its workers."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the group, SIGKILL after `timeout` s."""
        stop_group(self.process, timeout, term_group=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def uvicorn_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        APP,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        # uvicorn kills a worker that has not answered its supervisor within this time (5 s
        # by default); a worker importing FastAPI under auto-instrumentation on a loaded
        # machine took longer than that and was restarted in a loop.
        "--timeout-worker-healthcheck",
        "60",
    ]


def _foreign_instrumentations() -> list[str]:
    """The instrumentations installed for glassbox (Flask, SQLAlchemy, Redis, …), not the peer's.

    They share this environment; a FastAPI service's own would hold only FastAPI's and
    asyncpg's, so the distro must not load the others (each imports its library).
    """
    installed = entry_points(group="opentelemetry_instrumentor")
    return sorted({point.name for point in installed} - set(PEER_INSTRUMENTATIONS))


def telemetry_env(otlp_endpoint: str, sampling_ratio: float) -> dict[str, str]:
    """What a user of the zero-code distro sets: where to export and how much to sample.

    Everything else stays at the distro's defaults (traces, metrics and logs exporters
    `otlp`, batch span processor). Only the protocol is named: the distro defaults to gRPC,
    and the OTLP/HTTP exporter is the one installed (as for glassbox).
    """
    return {
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(_foreign_instrumentations()),
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(sampling_ratio),
    }


def _peer_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """`extra` over a clean environment, with bytecode caching on, as in a built image.

    With PYTHONDONTWRITEBYTECODE set, each spawned worker compiled FastAPI, pydantic and the
    OTel SDK from source at every start.
    """
    env = clean_environment(extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _workers_ready(peer: Peer, workers: int) -> bool:
    if peer.process.poll() is not None:
        raise RuntimeError(f"the peer exited with {peer.process.returncode}:\n{peer.log_tail()}")
    text = peer.log_path.read_text(encoding="utf-8", errors="replace")
    return text.count(_WORKER_READY) >= workers


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
        return int(response.status) == 200


def start_peer(
    database_url: str,
    *,
    log_path: Path,
    port: int | None = None,
    workers: int = 2,
    pool_max_size: int = 10,
    timeout: float = 60.0,
    telemetry: Mapping[str, str] | None = None,
) -> Peer:
    """The peer on 127.0.0.1:`port` (a free one if None), every worker up and answering.

    `database_url` is glassbox's DATABASE_URL (PostgreSQL). Without `telemetry` it runs
    with none; with `telemetry_env(...)` it runs under `opentelemetry-instrument`. The
    caller must `stop()` it (or use it in a `with` block).
    """
    port = port or free_port()
    command = uvicorn_command(port, workers)
    env = {"PEER_DATABASE_URL": database_url, "PEER_POOL_MAX_SIZE": str(pool_max_size)}
    if telemetry is not None:
        command = [str(Path(sys.executable).parent / "opentelemetry-instrument"), *command]
        env.update(telemetry)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed command, our own interpreter
            command,
            cwd=ROOT,
            env=_peer_environment(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    peer = Peer(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path)
    try:
        wait_until(
            lambda: _workers_ready(peer, workers), timeout=timeout, what="the peer's workers"
        )
        wait_until(lambda: _answers(peer.url + "/health/live"), timeout=10, what="the peer")
    except BaseException:
        peer.stop()
        raise
    return peer


def start_instrumented_peer(
    database_url: str,
    *,
    otlp_endpoint: str,
    sampling_ratio: float,
    log_path: Path,
    **options: Any,
) -> Peer:
    """`start_peer` under `opentelemetry-instrument` (FastAPI, ASGI and asyncpg spans),
    exporting OTLP/HTTP to `otlp_endpoint` with `sampling_ratio` (0.1, 1.0) of traces.
    """
    telemetry = telemetry_env(otlp_endpoint, sampling_ratio)
    return start_peer(database_url, log_path=log_path, telemetry=telemetry, **options)
