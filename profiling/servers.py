"""Start gunicorn the way `make serve` does, wait until it answers, and always stop it.

Used by the benchmark harness, the profiling scripts' tests and the Locust smoke test.
Every wait is bounded; the server runs in its own process group so that stopping it
can never leave a worker behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from service.config import all_variable_names

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONFIG = "python:service.gunicorn_conf"


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without glassbox or OTEL settings, plus `extra`.

    A benchmark variant must be exactly the variables it names, whatever the shell had.
    """
    names = all_variable_names()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in names and not key.startswith("OTEL_")
    }
    env.update(extra)
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"gunicorn exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        if _answers(server.url + path):
            return
        time.sleep(0.1)  # polling interval, not a wait for something to happen
    raise TimeoutError(f"gunicorn did not answer {path} within {timeout} s:\n{server.log_tail()}")


def stop(server: Server, timeout: float = 30.0) -> None:
    """SIGTERM to the master (graceful), then SIGKILL to the group if it hangs."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
    # Workers whose master died abruptly would linger in the group: end them too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.process.pid, signal.SIGKILL)


def start_gunicorn(
    env: Mapping[str, str],
    *,
    app: str | None = None,
    workers: int = 2,
    port: int | None = None,
    log_path: Path,
) -> Server:
    """Start gunicorn with service/gunicorn_conf.py on 127.0.0.1 without waiting for it.

    `app` replaces the config's wsgi_app. The caller must `stop()` the server.
    """
    port = port or free_port()
    full_env = clean_environment(
        {"HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": str(workers), **env}
    )
    command = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG]
    if app:
        command.append(app)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed command, our own interpreter
            command,
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path)


@contextlib.contextmanager
def gunicorn(
    env: Mapping[str, str],
    *,
    app: str | None = None,
    workers: int = 2,
    port: int | None = None,
    log_path: Path,
    ready_path: str = "/health/live",
    timeout: float = 60.0,
) -> Iterator[Server]:
    """A gunicorn server that answers `ready_path`, stopped on the way out whatever happens."""
    server = start_gunicorn(env, app=app, workers=workers, port=port, log_path=log_path)
    try:
        wait_until_ready(server, ready_path, timeout)
        yield server
    finally:
        stop(server)
