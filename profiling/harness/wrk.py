"""wrk: find it (or say how to install it), run it, read the summary our Lua scripts print.

The scripts under profiling/wrk/ print one `WRK_JSON {...}` line when wrk finishes:
requests, duration, latency percentiles in microseconds and error counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from profiling.harness.processes import interrupt

SCRIPTS = Path(__file__).resolve().parent.parent / "wrk"
INSTALL_HINT = (
    "wrk is not installed. Install it, then run this again:\n"
    "  Debian/Ubuntu: sudo apt-get install wrk\n"
    "  macOS:         brew install wrk"
)
ERROR_COUNTS = ("connect_errors", "read_errors", "write_errors", "timeouts")


class WrkMissing(SystemExit):
    """wrk is not on PATH: the message says how to install it (exit status 1)."""

    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing
    return found


def wrk_command(
    url: str, *, script: str, seconds: float, connections: int, threads: int = 1, timeout: str
) -> list[str]:
    return [
        wrk_binary(),
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        timeout,
        "-s",
        str(SCRIPTS / script),
        url,
    ]


def summary_of(output: str) -> dict[str, Any] | None:
    """The WRK_JSON line's figures, or None when wrk printed none."""
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            data: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
            return data
    return None


def errors_of(summary: Mapping[str, int]) -> int:
    """Socket errors and timeouts of a run (not counting non-2xx/3xx answers)."""
    return sum(int(summary[key]) for key in ERROR_COUNTS)


def run_wrk(command: list[str], env: Mapping[str, str], seconds: float) -> dict[str, Any]:
    """Run wrk to the end and return its summary."""
    result = subprocess.run(  # noqa: S603 - wrk with our arguments
        command,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    summary = summary_of(result.stdout)
    if summary is None:
        raise RuntimeError(f"wrk printed no summary (exit {result.returncode}): {result.stderr}")
    return summary


def start_wrk(
    command: list[str], env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """wrk in the background, its output in `log_path`; end it with `stop_wrk`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - wrk with our arguments
            command,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_wrk(process: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    """SIGINT (wrk then prints its summary), SIGKILL if it hangs; return the summary."""
    interrupt(process, timeout=60)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    summary = summary_of(output)
    if summary is None:
        raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
    return summary
