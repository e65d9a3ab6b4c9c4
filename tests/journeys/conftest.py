"""Journeys: README's commands run the way a user types them, from a clean copy of the tree.

The copy is `git archive HEAD` of this checkout (committed files only, as a clone has them)
with this checkout's `.venv` linked in, so nothing is reinstalled; every make target still
runs for real (its own `uv sync` included). Servers bind free ports on 127.0.0.1 and are
stopped, with their whole process group, at the end.

`.env` from the example, `make load` and `make lab` do not fit CI's time budget: they are
collected only with GLASSBOX_SLOW_JOURNEYS=1 (test_slow_journeys.py), e.g.
`GLASSBOX_SLOW_JOURNEYS=1 make test PYTEST_ARGS=tests/journeys`. GLASSBOX_JOURNEY_REF (default
HEAD) names the commit to copy: the journeys against an older commit show what they find.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from sqlalchemy.engine import make_url

from profiling import pyspy
from profiling.harness.processes import clean_environment, free_port, wait_until
from tests.conftest import TEST_DATABASE_URL, require
from tests.processes import flask_cli
from tests.reliability.servers import PROJECT_ROOT

SLOW = os.environ.get("GLASSBOX_SLOW_JOURNEYS") == "1"
collect_ignore = [] if SLOW else ["test_slow_journeys.py"]


# The commit the journeys copy: HEAD, or another one to show what a journey found on it.
JOURNEY_REF = os.environ.get("GLASSBOX_JOURNEY_REF", "HEAD")


def clean_copy(root: Path) -> Path:
    """The committed tree (JOURNEY_REF) in `root`, beside this checkout's `.venv`."""
    root.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", JOURNEY_REF],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
        timeout=120,
    )
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True, timeout=120)
    (root / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    return root


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean copy of the committed tree that the journeys share."""
    return clean_copy(tmp_path_factory.mktemp("journeys") / "glassbox")


def user_env(**extra: str) -> dict[str, str]:
    """A shell without glassbox's or OpenTelemetry's variables, plus `extra`."""
    inherited = clean_environment(extra)
    return {k: v for k, v in inherited.items() if not k.startswith(("TEST_", "GLASSBOX_"))}


def make(tree: Path, *args: str, env: dict[str, str], timeout: float = 300) -> str:
    """`make ARGS` in the tree until it ends; its output, which the failure shows."""
    done = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"make {' '.join(args)} exited {done.returncode}:\n{done.stdout}"
    return done.stdout


class MakeServer:
    """A make target that serves on 127.0.0.1:PORT until it is stopped (run, serve)."""

    def __init__(self, tree: Path, target: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", target, f"PORT={self.port}"],
                cwd=tree,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stopping it stops every child
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 240) -> MakeServer:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.output()}")
            return requests.get(f"{self.url}/health/live", timeout=5).status_code == 200

        transient = (OSError, requests.RequestException)
        wait_until(answers, timeout=timeout, what=f"{self.url}/health/live", transient=transient)
        return self

    def workers(self) -> list[int]:
        return pyspy.workers_of(pyspy.master_listening_on(self.port))

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines the server wrote."""
        found = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextlib.contextmanager
def serving(tree: Path, target: str, env: dict[str, str], log: Path) -> Iterator[MakeServer]:
    server = MakeServer(tree, target, env, log)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def journey_database() -> Iterator[str]:
    """A PostgreSQL database of its own, `<test database>_journey`, dropped afterwards."""
    url = make_url(require(TEST_DATABASE_URL, "TEST_DATABASE_URL (PostgreSQL)"))
    name = f"{url.database}_journey"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepared(tree: Path, database_url: str, *, dev_key: bool = True) -> dict[str, str]:
    """What a user does before `make serve` (README, docs/measurement.md): the migrations,
    demo data and (`dev_key`) the development key in DATABASE_URL; the environment of the
    next steps."""
    env = user_env(DATABASE_URL=database_url)
    make(tree, "migrate", env=env)
    flask_cli(env, "seed", "--products", "120", "--orders", "60", tree=tree, timeout=300)
    if dev_key:
        flask_cli(env, "api-keys", "ensure-dev", tree=tree, timeout=300)
    return env


def readme_block(tree: Path, heading: str) -> str:
    """The first ```sh block after a README heading."""
    text = (tree / "README.md").read_text()
    after = text.split(f"\n{heading}\n", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]
