"""`.env` made from `.env.example`, as its first line says, then the commands that read it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.journeys.conftest import clean_copy, make, user_env


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
    flask = str(tree / ".venv" / "bin" / "flask")
    seeded = subprocess.run(
        [flask, "--app", "service", "seed", "--products", "5", "--orders", "0"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert {path.name for path in tree.iterdir()} - before == {"var"}
    assert (tree / "var" / "glassbox.db").exists()
