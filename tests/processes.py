"""Start the API or the payments service under gunicorn, as users run them, for a test."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.reliability.servers import PROJECT_ROOT, VENV_BIN, free_port, wait_until

PAYMENTS_APP = "service.payments:create_app()"


@dataclass
class Process:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    base_url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def start_gunicorn(name: str, env: dict[str, str], log: Path, app: str | None = None) -> Process:
    port = free_port()
    command = [str(VENV_BIN / "gunicorn"), "-c", "python:service.gunicorn_conf"]
    if app:
        command.append(app)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**env, "HOST": "127.0.0.1", "PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Process(name, process, log, f"http://127.0.0.1:{port}")

    def live() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited:\n{started.output()}")
        return requests.get(f"{started.base_url}/health/live", timeout=2).status_code == 200

    wait_until(live, timeout=60, what=f"{name} answering")
    return started
