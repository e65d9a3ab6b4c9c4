"""Real processes for reliability tests: gunicorn, a throwaway PostgreSQL cluster, a Redis.

Each class starts its process on 127.0.0.1 and a free port, waits for it by polling with a
deadline, and stops it in `stop()` (the fixtures in conftest.py call it in a `finally`).
gunicorn, free ports and polling come from the measurement harness (profiling/harness/).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pty
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
import requests

from profiling.harness.gunicorn import GunicornServer
from profiling.harness.processes import ROOT, children_of, free_port, stop_group
from profiling.harness.processes import wait_until as harness_wait_until

PROJECT_ROOT = ROOT
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
TEST_SECRET_KEY = "reliability-tests-secret-key-0123456789abcdef"


class MakeServe(GunicornServer):
    """`make serve` as a user runs it (migrations, then the server), in its own process group."""

    def command(self) -> list[str]:
        return ["make", "--no-print-directory", "serve"]

    def worker_pids(self) -> set[int]:
        # make -> (bash ->) the server's master -> its workers: the deepest generation.
        generation = children_of(self.pid)
        while generation:
            below = {child for pid in generation for child in children_of(pid)}
            if not below:
                return generation
            generation = below
        return set()

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM to the whole group (make passes no signal on), SIGKILL after `timeout`."""
        if self.process is None:
            return None
        stop_group(self.process, timeout, term_group=True)
        return super().stop(timeout)


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Poll `condition` until it is true; return the seconds it took, fail after `timeout`.

    Not there yet (connection refused, timed out) means keep polling; anything else is fatal.
    """
    transient = (OSError, requests.RequestException, redis.RedisError)
    return harness_wait_until(condition, timeout=timeout, what=what, transient=transient)


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


def create_product(server: GunicornServer, headers: dict[str, str], name: str, sku: str) -> Any:
    """A category and a product in it (stock 3), made through the running server's API."""
    category = requests.post(
        server.url("/api/v1/categories"), json={"name": name}, headers=headers, timeout=10
    ).json()
    return requests.post(
        server.url("/api/v1/products"),
        json={"sku": sku, "name": name, "price": "2.00", "stock": 3, "category_id": category["id"]},
        headers=headers,
        timeout=10,
    ).json()


def run_venv_tool(
    tool: str, *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the project's `.venv/bin/<tool>` from the project root; its status and output."""
    return subprocess.run(
        [str(VENV_BIN / tool), *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_on_terminal(
    command: list[str], env: dict[str, str], timeout: float = 120
) -> tuple[int, bytes]:
    """Run `command` with a pseudo-terminal as its stdout and stderr (what a person at a
    terminal sees: colours, progress bars); its exit status and everything it wrote."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=follower,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    output = b""
    with contextlib.suppress(OSError):  # EIO once the child closes the terminal
        while chunk := os.read(leader, 4096):
            output += chunk
    os.close(leader)
    return process.wait(timeout=timeout), output


def serves_reads(server: GunicornServer, headers: dict[str, str], timeout: float) -> bool:
    """Six authenticated reads all answer 200: several, so the kernel hands some to each
    worker."""
    return all(
        requests.get(server.url("/api/v1/orders"), headers=headers, timeout=timeout).status_code
        == 200
        for _ in range(6)
    )


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
