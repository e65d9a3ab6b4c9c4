"""The servers `make bench` measures besides gunicorn: glassbox under granian, and the peer.

Each answers what the bench asks of a server: `url(path)`, `worker_pids()` and `stop()`.
gunicorn itself is profiling/harness/gunicorn.py's GunicornServer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol

from profiling.harness.gunicorn import GunicornServer
from profiling.harness.processes import children_of
from profiling.peer.launch import Peer, start_instrumented_peer, start_peer

GLASSBOX_FACTORY = "service:create_app"


class BenchServer(Protocol):
    def url(self, path: str) -> str: ...

    def worker_pids(self) -> set[int]: ...

    def stop(self, timeout: float = 30) -> object: ...


class GranianServer(GunicornServer):
    """glassbox under granian's WSGI interface (WEB_CONCURRENCY workers, HTTP/1 keep-alive).

    The environment is the gunicorn variant's; gunicorn's config is not read, so the
    Prometheus multiprocess folder its `on_starting` hook makes is made here.
    """

    def launch(self) -> GranianServer:
        folder = self.env.get("PROMETHEUS_MULTIPROC_DIR")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
        super().launch()
        return self

    def command(self) -> list[str]:
        return [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "wsgi",
            "--workers",
            self.env.get("WEB_CONCURRENCY", "2"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http",
            "1",
            "--no-ws",
            "--factory",
            GLASSBOX_FACTORY,
        ]


class PeerServer:
    """A running peer (profiling/peer) seen as a bench server."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    @classmethod
    def start(
        cls,
        database_url: str,
        *,
        log_path: Path,
        workers: int,
        pool_size: int,
        otlp_endpoint: str,
        sampling: float | None,
    ) -> PeerServer:
        """Plain (`sampling` None) or under stock `opentelemetry-instrument` at `sampling`."""
        options: dict[str, Any] = {"workers": workers, "pool_max_size": pool_size, "timeout": 180.0}
        if sampling is None:
            peer = start_peer(database_url, log_path=log_path, **options)
        else:
            peer = start_instrumented_peer(
                database_url,
                otlp_endpoint=otlp_endpoint,
                sampling_ratio=sampling,
                log_path=log_path,
                **options,
            )
        return cls(peer)

    def url(self, path: str) -> str:
        return self.peer.url + path

    def worker_pids(self) -> set[int]:
        """uvicorn's worker processes: the supervisor's children but multiprocessing's
        resource tracker, if one runs."""
        workers = set()
        for pid in children_of(self.peer.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in command:
                workers.add(pid)
        return workers

    def stop(self, timeout: float = 30) -> None:
        self.peer.stop(timeout)
