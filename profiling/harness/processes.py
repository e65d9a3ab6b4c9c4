"""Ports, polling with a deadline, the environment of a child process, its children."""

from __future__ import annotations

import contextlib
import glob
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from service.config import all_variable_names

ROOT = Path(__file__).resolve().parent.parent.parent


# Ports the tests and the lab take from, e.g. "20000-20999" (both ends included), so that
# they can share a machine with other services; unset or empty: any the kernel picks.
PORT_RANGE_VARIABLE = "TEST_PORT_RANGE"


def port_range() -> range | None:
    """TEST_PORT_RANGE as a range of ports; None when it is unset or empty."""
    text = os.environ.get(PORT_RANGE_VARIABLE, "").strip()
    if not text:
        return None
    low, _, high = text.partition("-")
    if not (low.strip().isdigit() and high.strip().isdigit()):
        raise ValueError(f"{PORT_RANGE_VARIABLE}={text!r}: expected LOW-HIGH, e.g. 20000-20999")
    ports = range(int(low), int(high) + 1)
    if not ports or ports.start < 1 or ports.stop > 65536:
        raise ValueError(f"{PORT_RANGE_VARIABLE}={text!r}: not a range of ports (1-65535)")
    return ports


def bind_free_port(sock: socket.socket) -> int:
    """Bind `sock` on 127.0.0.1 to a free port (within TEST_PORT_RANGE if set); the port."""
    ports = port_range()
    if ports is None:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
    start = random.randrange(len(ports))  # noqa: S311 - spreads concurrent runs, not a secret
    for offset in range(len(ports)):
        port = ports[(start + offset) % len(ports)]
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:  # taken
            continue
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE_VARIABLE}={os.environ[PORT_RANGE_VARIABLE]}")


def free_port() -> int:
    """A port nobody listens on right now on 127.0.0.1 (within TEST_PORT_RANGE if set)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return bind_free_port(probe)


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    transient: tuple[type[BaseException], ...] = (OSError,),
    interval: float = 0.05,
) -> float:
    """Poll `condition` until it is true; return the seconds it took, fail after `timeout`.

    `transient` errors (connection refused, timed out) mean "not yet"; anything else is fatal.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except transient:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)  # polling interval, not a wait for something to happen


def interrupt(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGINT (Ctrl+C: wrk prints its summary, a headless Locust run writes its reports),
    then SIGKILL if it has not ended after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def stop_group(process: subprocess.Popen[bytes], timeout: float, *, term_group: bool) -> None:
    """SIGTERM to the leader (or, with `term_group`, to its whole process group), then SIGKILL
    to the group if the leader has not ended after `timeout` seconds."""
    if term_group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    elif process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without glassbox or OTEL settings, plus `extra`.

    A measured server must run with exactly the variables it names, whatever the shell had.
    """
    names = all_variable_names()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in names and not key.startswith("OTEL_")
    }
    env.update(extra)
    return env


def children_of(pid: int) -> set[int]:
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_bytes(pid: int) -> int:
    """Resident set size of `pid` now (VmRSS), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    return 0  # a zombie has no VmRSS line
