"""The project's own CLI (`flask --app service ...`) in a child process: migrate, seed, keys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from profiling.harness.processes import ROOT, clean_environment


def cli_env(database_url: str) -> dict[str, str]:
    """A clean environment for the CLI against `database_url`, telemetry off, warnings only."""
    return clean_environment(
        {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "OTEL_SDK_DISABLED": "true"}
    )


def run_flask(
    *args: str, env: Mapping[str, str], timeout: float = 1800, show_output: bool = False
) -> str:
    """Run `flask --app service *args`; return its standard output.

    `show_output` lets the command write to this process's terminal (the seed's progress)
    instead of capturing it; then nothing is returned. A failure raises with the output.
    """
    command = [sys.executable, "-m", "flask", "--app", "service", *args]
    if show_output:
        shown = subprocess.run(  # noqa: S603 - the project's own CLI
            command, cwd=ROOT, env=dict(env), timeout=timeout, check=False
        )
        if shown.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed with {shown.returncode}")
        return ""
    result = subprocess.run(  # noqa: S603 - the project's own CLI
        command,
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout
