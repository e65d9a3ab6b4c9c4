"""Start the peer under uvicorn (2 workers, uvloop, httptools), plain or under stock
`opentelemetry-instrument`, wait until every worker is up, and stop it.

The server runs in its own process group on 127.0.0.1 (profiling/servers.py's `stop`
ends the group), and every wait has a deadline.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from profiling.servers import ROOT, Server, clean_environment, free_port, stop, wait_until_ready

APP = "profiling.peer.app:app"
SERVICE_NAME = "glassbox-peer"
PEER_INSTRUMENTATIONS = ("fastapi", "asyncpg")
# uvicorn logs this once per worker when its lifespan (the asyncpg pool) has started.
_WORKER_READY = "Application startup complete."


@dataclass
class Peer:
    """A running peer; `stop()` (or leaving a `with` block) ends it and its workers."""

    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        return self.server.pid

    def stop(self) -> None:
        stop(self.server)

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


def _ready_workers(server: Server) -> int:
    try:
        return server.log_path.read_text(encoding="utf-8", errors="replace").count(_WORKER_READY)
    except OSError:
        return 0


def _wait_for_workers(server: Server, workers: int, deadline: float) -> None:
    while _ready_workers(server) < workers:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the peer exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"the peer's {workers} workers did not start:\n{server.log_tail()}")
        time.sleep(0.1)  # polling interval, not a wait for something to happen


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
    server = Server(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path)
    deadline = time.monotonic() + timeout
    try:
        _wait_for_workers(server, workers, deadline)
        wait_until_ready(server, "/health/live", max(1.0, deadline - time.monotonic()))
    except BaseException:
        stop(server)
        raise
    return Peer(server)


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
