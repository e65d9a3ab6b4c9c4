"""Real processes for reliability tests: gunicorn, a throwaway PostgreSQL cluster, a Redis.

Each class starts its process on 127.0.0.1 and a free port, waits for it by polling with a
deadline, and stops it in `stop()` (the fixtures in conftest.py call it in a `finally`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import redis
import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
TEST_SECRET_KEY = "reliability-tests-secret-key-0123456789abcdef"


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Poll `condition` until it is true; return the seconds it took, fail after `timeout`."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        # Not there yet (connection refused, timed out): keep polling. Anything else is fatal.
        with contextlib.suppress(OSError, requests.RequestException, redis.RedisError):
            if condition():
                return time.monotonic() - started
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def _children(pid: int) -> set[int]:
    """Direct child processes of `pid`, from /proc (no extra dependency)."""
    found = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:  # the process ended while we looked
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.add(int(stat.split("/")[2]))
    return found


class GunicornServer:
    """`gunicorn -c python:service.gunicorn_conf` as users run it, stdout captured to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, app: str | None = None) -> None:
        self.app = app  # another WSGI app than the API, e.g. the payments service
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60) -> GunicornServer:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(VENV_BIN / "gunicorn"),
                    "-c",
                    "python:service.gunicorn_conf",
                    *([self.app] if self.app else []),
                ],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own, to stop it whole
            )
        wait_until(self._live, timeout=timeout, what=f"gunicorn on {self.base_url}")
        wait_until(
            lambda: len(self.worker_pids()) == int(self.env.get("WEB_CONCURRENCY", "1")),
            timeout=timeout,
            what="every gunicorn worker booting",
        )
        return self

    def _live(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited; its output:\n{self.output()}")
        return requests.get(f"{self.base_url}/health/live", timeout=2).status_code == 200

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> set[int]:
        return _children(self.pid)

    def url(self, path: str) -> str:
        return self.base_url + path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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
        """SIGTERM, then SIGKILL after `timeout` s; the exit status (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def server_env(**overrides: str) -> dict[str, str]:
    """The environment of a test server: this one's PATH and friends, glassbox set for tests."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GLASSBOX_", "DATABASE_", "REDIS_", "RATELIMIT_", "TEST_"))
    }
    return {
        **inherited,
        "GLASSBOX_ENV": "test",
        "SECRET_KEY": TEST_SECRET_KEY,
        "WEB_CONCURRENCY": "2",
        "LOG_LEVEL": "INFO",
        "RATELIMIT_ENABLED": "false",
        "REDIS_URL": "",
        # Telemetry export is not under test here and must not reach out anywhere.
        "OTEL_SDK_DISABLED": "true",
        **overrides,
    }


def _run_as_postgres(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    # initdb refuses to run as root; as any other user, run the command directly.
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(
        prefix + command, check=True, capture_output=True, text=True, timeout=120, **kwargs
    )


def postgres_bin() -> Path:
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return Path(versions[-1]).parent


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own in a temporary folder, on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
        self.directory = Path(tempfile.mkdtemp(prefix="glassbox-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self.bin = postgres_bin()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.directory, account.pw_uid, account.pw_gid)

    def init(self) -> ThrowawayPostgres:
        _run_as_postgres(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ]
        )
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c fsync=off"
        )
        _run_as_postgres(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            _run_as_postgres(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]
            )

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisProcess:
    """`redis-server` without persistence, on a free port, in the foreground of a subprocess."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            wait_until(lambda: bool(client.ping()), timeout=30, what="redis-server answering")
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@contextlib.contextmanager
def running(server: GunicornServer) -> Iterator[GunicornServer]:
    try:
        yield server.start()
    finally:
        server.stop()
