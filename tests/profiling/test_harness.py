"""The measurement harness (profiling/harness/): what bench and lab do when wrk is missing,
and their progress output. (The OTLP sink's counting mode: tests/profiling/test_bench.py.)"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from profiling.harness.gunicorn import GunicornServer, measured_env
from profiling.harness.processes import ROOT, bind_free_port, free_port
from profiling.harness.progress import steps


def _path_without_wrk(tmp_path: Path) -> tuple[str, Path]:
    """A PATH with make and a fake apt-get (which leaves a mark if anything runs it), no wrk."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = shutil.which("make")
    assert make is not None
    (bin_dir / "make").symlink_to(make)
    mark = tmp_path / "apt-get-ran"
    fake = bin_dir / "apt-get"
    fake.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    fake.chmod(0o755)
    return str(bin_dir), mark


@pytest.mark.parametrize("target", ["bench", "lab"])
def test_make_without_wrk_says_how_to_install_it_and_runs_no_apt_get(
    target: str, tmp_path: Path
) -> None:
    path, mark = _path_without_wrk(tmp_path)
    result = subprocess.run(
        # -o: take the virtualenv as up to date (the test runs inside it).
        [f"{path}/make", "--no-print-directory", "-o", ".venv/.synced", target],
        cwd=ROOT,
        env={**os.environ, "PATH": path, "LAB_DATABASE_URL": f"sqlite:///{tmp_path}/lab.db"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "apt-get install wrk" in result.stderr, result.stderr
    assert "brew install wrk" in result.stderr, result.stderr
    assert not mark.exists(), "apt-get was run"
    assert not (tmp_path / "lab.db").exists(), "work started before wrk was checked"


def test_progress_is_plain_lines_when_output_is_not_a_terminal() -> None:
    code = (
        "from profiling.harness.progress import steps\n"
        "with steps('bench', 'rounds', 2) as progress:\n"
        "    progress.advance('round 1/2 done')\n"
        "    progress.say('a note')\n"
        "    progress.advance('round 2/2 done')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "bench: rounds (2 steps)",
        "bench: round 1/2 done",
        "bench: a note",
        "bench: round 2/2 done",
    ]


def test_progress_draws_a_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with steps("lab", "recordings", 2) as progress:
        progress.advance("cpu recorded")
        progress.advance("idle recorded")
        bar = progress.progress  # type: ignore[attr-defined]
        (task,) = bar.tasks
        assert (task.completed, task.total) == (2, 2)


def test_gunicorn_moves_to_another_port_when_its_port_was_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        bind_free_port(taken)
        taken.listen()
        port = taken.getsockname()[1]
        server = GunicornServer(
            measured_env({}, 1),
            tmp_path / "gunicorn.log",
            "profiling.bench_apps:bare_wsgi",
            port=port,
        )
        try:
            server.start(ready_path="/", timeout=60)
            assert server.port != port
            assert server.rebinds == 1
        finally:
            server.stop()


def test_ports_come_from_test_port_range_when_it_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    base = free_port()  # somewhere free; the next few usually are too
    monkeypatch.setenv("TEST_PORT_RANGE", f"{base}-{base + 2}")
    held = []
    try:
        for _ in range(3):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            try:
                assert base <= bind_free_port(sock) <= base + 2
            except RuntimeError:  # another process holds one of the three: fine
                break
        with pytest.raises(RuntimeError, match="no free port in TEST_PORT_RANGE"):
            free_port()
    finally:
        for sock in held:
            sock.close()
    monkeypatch.setenv("TEST_PORT_RANGE", "8000")
    with pytest.raises(ValueError, match="expected LOW-HIGH"):
        free_port()
