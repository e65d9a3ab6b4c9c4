"""The Makefile targets users look for: stack-up/stack-down, load-ui, dashboards.

No Docker engine runs on the development machines, so `docker` is a stand-in script that
records its arguments (the compose file itself is checked by tests/observability); the rest
runs for real: the .env the stack reads, Locust's web UI, the dashboard generator.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.reliability.servers import PROJECT_ROOT, free_port, wait_until

# Every secret compose.yaml requires (`${NAME:?…}`): .env must carry each one.
SECRETS = set(re.findall(r"\$\{([A-Z_]+):\?", (PROJECT_ROOT / "compose.yaml").read_text()))


def _make(*args: str, cwd: Path = PROJECT_ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile beside this checkout's venv and lock, in a folder the test may write."""
    root = tmp_path / "glassbox"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "Makefile", root)
    for name in (".venv", "pyproject.toml", "uv.lock"):
        (root / name).symlink_to(PROJECT_ROOT / name)
    return root


@pytest.fixture
def fake_docker(tmp_path: Path) -> tuple[Path, Path]:
    calls = tmp_path / "docker-calls"
    script = tmp_path / "docker"
    script.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, calls


def test_stack_up_makes_the_env_once_and_starts_compose(
    checkout: Path, fake_docker: tuple[Path, Path]
) -> None:
    docker, calls = fake_docker
    first = _make("stack-up", cwd=checkout, DOCKER=str(docker))
    assert first.returncode == 0, first.stdout + first.stderr
    env_file = checkout / ".env"
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(values) == SECRETS
    assert all(len(value) >= 32 for value in values.values())
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # secrets: owner only
    assert calls.read_text().splitlines() == ["compose --env-file .env up -d --build"]

    # Kept on the next start: the database volume was initialised with these passwords.
    again = _make("stack-up", cwd=checkout, DOCKER=str(docker))
    assert again.returncode == 0, again.stderr
    assert dict(line.split("=", 1) for line in env_file.read_text().splitlines()) == values

    down = _make("stack-down", "STACK_DOWN_ARGS=-v", cwd=checkout, DOCKER=str(docker))
    assert down.returncode == 0, down.stderr
    assert calls.read_text().splitlines()[-1] == "compose --env-file .env down -v"


def test_dashboards_regenerates_the_committed_json(checkout: Path) -> None:
    generator = PROJECT_ROOT / "observability" / "grafana" / "dashboards.py"
    (checkout / "observability" / "grafana").mkdir(parents=True)
    shutil.copy(generator, checkout / "observability" / "grafana")
    done = _make("dashboards", cwd=checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    written = checkout / "observability" / "grafana" / "provisioning" / "dashboards" / "glassbox"
    committed = generator.parent / "provisioning" / "dashboards" / "glassbox"
    names = sorted(p.name for p in written.glob("*.json"))
    assert names == sorted(p.name for p in committed.glob("*.json"))
    for name in names:
        assert (written / name).read_text() == (committed / name).read_text(), name


@pytest.fixture
def load_ui() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "load-ui",
            f"LOAD_UI_PORT={port}",
            f"LOAD_URL=http://127.0.0.1:{free_port()}",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_load_ui_serves_locusts_web_ui(load_ui: int) -> None:
    url = f"http://127.0.0.1:{load_ui}/"
    wait_until(lambda: requests.get(url, timeout=2).ok, timeout=90, what="Locust's web UI")
    page = requests.get(url, timeout=5)
    assert "locust" in page.text.lower()
