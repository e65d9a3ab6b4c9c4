"""The journeys past CI's time budget, collected only with GLASSBOX_SLOW_JOURNEYS=1:
`.env` from the example, `make load` (short) against `make serve`, and `make lab` (short)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.journeys.conftest import clean_copy, make, prepared, serving, user_env
from tests.processes import flask_cli


def test_env_from_the_example_leaves_no_files_behind(tmp_path: Path) -> None:
    tree = clean_copy(tmp_path / "glassbox")
    python = str(tree / ".venv" / "bin" / "python")
    dotenv = subprocess.run([python, "-c", "import dotenv"], capture_output=True, timeout=60)
    if dotenv.returncode != 0:  # without python-dotenv flask reads no .env: nothing to check
        pytest.fail("python-dotenv is not installed: run `make test`, which installs it")
    shutil.copy(tree / ".env.example", tree / ".env")
    before = {path.name for path in tree.iterdir()}
    env = user_env()

    make(tree, "migrate", env=env)
    flask_cli(env, "seed", "--products", "5", "--orders", "0", tree=tree)

    assert {path.name for path in tree.iterdir()} - before == {"var"}
    assert (tree / "var" / "glassbox.db").exists()


def test_make_load_passes_its_thresholds_against_make_serve(
    tree: Path, journey_database: str, tmp_path: Path
) -> None:
    env = prepared(tree, journey_database)
    with serving(tree, "serve", {**env, "WEB_CONCURRENCY": "2"}, tmp_path / "serve.log") as server:
        out = make(tree, "load", f"LOAD_URL={server.url}", "LOAD_SHAPE=smoke", env=env)
    assert "thresholds met (shape smoke)" in out
    assert (tree / "loadtests" / "results" / "smoke.html").stat().st_size > 0


def test_make_lab_writes_its_report(tree: Path) -> None:
    out = make(tree, "lab", env=user_env(LAB_SECONDS="1", LAB_ORDERS="300"), timeout=600)
    report = (tree / "profiling" / "results" / "lab-report.md").read_text()
    assert "cpu" in report, out
    assert "io" in report, out
