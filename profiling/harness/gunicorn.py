"""gunicorn with service/gunicorn_conf.py, as `make serve` runs it, for a benchmark or a test.

The server runs in its own process group, so stopping it never leaves a worker behind;
every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from profiling.harness.processes import (
    ROOT,
    children_of,
    clean_environment,
    free_port,
    stop_group,
    wait_until,
)

GUNICORN_CONFIG = "python:service.gunicorn_conf"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
            return int(response.status) == 200
    except (urllib.error.HTTPError, http.client.HTTPException):
        return False


class GunicornServer:
    """`gunicorn -c python:service.gunicorn_conf [app]` on 127.0.0.1, output captured to a file.

    `env` is the server's whole environment (HOST and PORT are added); `app` replaces the
    config's wsgi_app (the payments service, a bench baseline); `cwd` is where it runs and
    imports `service` from (another commit's files, for the bench's before variants).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        app: str | None = None,
        *,
        port: int | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.app = app
        self.cwd = cwd
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.process: subprocess.Popen[bytes] | None = None
        self.rebinds = 0

    def launch(self) -> GunicornServer:
        """Start the master without waiting for it (start several, then wait for each)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and config
                self.command(),
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own, to stop it whole
            )
        return self

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG]
        return [*command, *([self.app] if self.app else [])]

    def wait_ready(self, path: str = "/health/live", *, timeout: float = 60) -> GunicornServer:
        """Wait until `path` answers 200 and every worker (WEB_CONCURRENCY) has booted."""
        wait_until(
            lambda: self._answers(path), timeout=timeout, what=f"gunicorn on {self.url(path)}"
        )
        expected = self.env.get("WEB_CONCURRENCY")
        if expected:
            wait_until(
                lambda: len(self.worker_pids()) == int(expected),
                timeout=timeout,
                what="every gunicorn worker booting",
            )
        return self

    def start(self, *, timeout: float = 60, ready_path: str = "/health/live") -> GunicornServer:
        return self.launch().wait_ready(ready_path, timeout=timeout)

    def _answers(self, path: str) -> bool:
        if self.process is None or self.process.poll() is not None:
            if self.process is not None and self._port_was_taken():
                self._relaunch_on_another_port()
                return False
            code = None if self.process is None else self.process.returncode
            raise RuntimeError(f"gunicorn exited with {code}; its output:\n{self.output()}")
        return _answers(self.url(path))

    def _port_was_taken(self) -> bool:
        """free_port's port went to another process before gunicorn bound it (seen with 27
        bench servers starting beside other test suites): worth another port, twice."""
        return self.rebinds < 2 and "Address already in use" in self.output()

    def _relaunch_on_another_port(self) -> None:
        self.rebinds += 1
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env["PORT"] = str(self.port)
        self.launch()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> set[int]:
        return children_of(self.pid)

    def url(self, path: str) -> str:
        return self.base_url + path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines gunicorn and the app wrote (other lines are skipped)."""
        records = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (graceful), SIGKILL to the group after `timeout` s; the exit status."""
        if self.process is None:
            return None
        stop_group(self.process, timeout, term_group=False)
        # Workers whose master died abruptly would linger in the group: end them too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


def measured_env(env: Mapping[str, str], workers: int) -> dict[str, str]:
    """A clean environment (see clean_environment) with `workers` workers and `env`."""
    return clean_environment({"WEB_CONCURRENCY": str(workers), **env})


@contextlib.contextmanager
def gunicorn(
    env: Mapping[str, str],
    *,
    app: str | None = None,
    workers: int = 2,
    log_path: Path,
    ready_path: str = "/health/live",
    timeout: float = 60.0,
) -> Iterator[GunicornServer]:
    """A server with only `env`'s settings, answering `ready_path`, stopped whatever happens."""
    server = GunicornServer(measured_env(env, workers), log_path, app)
    try:
        yield server.start(timeout=timeout, ready_path=ready_path)
    finally:
        server.stop()
