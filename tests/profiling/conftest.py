"""Fixtures shared by the bench, lab and py-spy tests."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from profiling.harness.wrk import wrk_binary


@pytest.fixture(scope="session")
def wrk() -> str:
    """wrk from Debian, installed when missing (CI runs as root)."""
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, timeout=300)
    return wrk_binary()
