"""py-spy on gunicorn workers: find them, record flame graphs, dump stacks, read the top frames.

The building blocks of `make profile` (profiling/capture.py), meant for reuse by other
experiments. py-spy reads another process's memory, so it needs ptrace rights: root or
CAP_SYS_PTRACE (docs/measurement.md says how to grant it in Docker and Kubernetes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

PTRACE_HINT = (
    "py-spy could not read the process: run as root or grant CAP_SYS_PTRACE "
    "(docs/measurement.md, 'Permissions')"
)


class ProfilingError(RuntimeError):
    pass


def py_spy_binary() -> str:
    """The py-spy installed beside this interpreter (the locked one), else the one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise ProfilingError("py-spy is not installed (it is in the dev dependencies: make venv)")
    return found


# Finding the workers


def _listeners(port: int) -> set[int]:
    pids = set()
    for connection in psutil.net_connections(kind="tcp"):
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.pid is not None
        ):
            pids.add(connection.pid)
    return pids


def master_listening_on(port: int) -> int:
    """The gunicorn master serving `port`.

    The master and its forked workers share the listening socket, and psutil names one
    of them as its owner: climb from that one to the oldest ancestor running gunicorn.
    """
    pids = _listeners(port)
    if not pids:
        raise ProfilingError(
            f"no process listens on port {port} (or its owner is hidden: run as root, "
            "or pass --pid / --pid-file)"
        )
    process = psutil.Process(min(pids))
    if not _is_gunicorn(process):
        raise ProfilingError(f"process {process.pid} on port {port} is not gunicorn: pass --pid")
    while (parent := process.parent()) is not None and _is_gunicorn(parent):
        process = parent
    return process.pid


def _is_gunicorn(process: psutil.Process) -> bool:
    try:
        return any("gunicorn" in part for part in process.cmdline())
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return False


def master_from_pid_file(path: Path) -> int:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError) as exc:
        raise ProfilingError(f"cannot read a PID from {path}: {exc}") from None


def workers_of(master: int) -> list[int]:
    """The worker processes of a gunicorn master (its direct children)."""
    try:
        children = psutil.Process(master).children()
    except psutil.NoSuchProcess:
        raise ProfilingError(f"no process {master}") from None
    workers = sorted(child.pid for child in children)
    if not workers:
        raise ProfilingError(f"process {master} has no children: is it a gunicorn master?")
    return workers


# Recording


@dataclass(frozen=True)
class Recording:
    pid: int
    label: str  # "cpu" (default sampling) or "idle" (--idle: waiting threads too)
    svg: Path
    speedscope: Path


def _record_command(
    pid: int, output: Path, file_format: str, seconds: float, *, idle: bool, rate: int
) -> list[str]:
    command = [
        py_spy_binary(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        file_format,
        "--output",
        str(output),
    ]
    if idle:
        command.append("--idle")
    return command


def record_workers(
    pids: Sequence[int], out_dir: Path, *, seconds: float, idle: bool, rate: int = 100
) -> list[Recording]:
    """Record every worker as an SVG flame graph, then again as speedscope JSON.

    All workers are sampled in parallel, but each process gets one py-spy at a time:
    py-spy pauses its target through ptrace and a second tracer on the same process
    fails to sample (seen here as "Errors: 22" of 95 samples). So the SVG and the
    speedscope file cover two consecutive windows of the same load.
    """
    label = "idle" if idle else "cpu"
    out_dir.mkdir(parents=True, exist_ok=True)
    recordings = [
        Recording(
            pid,
            label,
            out_dir / f"worker-{pid}-{label}.svg",
            out_dir / f"worker-{pid}-{label}.speedscope.json",
        )
        for pid in pids
    ]
    for file_format in ("flamegraph", "speedscope"):
        outputs = {
            r.pid: (r.svg if file_format == "flamegraph" else r.speedscope) for r in recordings
        }
        reports = record_in_parallel(outputs, file_format, seconds, idle=idle, rate=rate)
        with (out_dir / "py-spy.log").open("a", encoding="utf-8") as log:
            log.writelines(f"{report}\n" for report in reports)
    return recordings


def record_in_parallel(
    outputs: dict[int, Path], file_format: str, seconds: float, *, idle: bool, rate: int
) -> list[str]:
    """Run one py-spy per process at once; return each one's closing line (samples, errors).

    `outputs` maps each PID to its output file; `file_format` is py-spy's `--format`
    (flamegraph, speedscope, raw, chrometrace).
    """
    running: list[tuple[subprocess.Popen[str], Path]] = []
    for pid, output in outputs.items():
        command = _record_command(pid, output, file_format, seconds, idle=idle, rate=rate)
        process = subprocess.Popen(  # noqa: S603 - py-spy with our arguments
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        running.append((process, output))
    failures = []
    reports = []
    for process, output in running:
        try:
            text, _ = process.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            text, _ = process.communicate(timeout=10)
        if process.returncode != 0 or not output.exists():
            failures.append(f"{output.name}: {text.strip()[-500:]}")
        counts = [line for line in text.splitlines() if "Samples:" in line]
        reports.append(counts[-1] if counts else f"{output.name}: {text.strip()[-200:]}")
    if failures:
        raise ProfilingError(PTRACE_HINT + "\n" + "\n".join(failures))
    return reports


def dump(pid: int, *, local_variables: bool = False) -> str:
    """`py-spy dump`: the stack of every thread of `pid`, right now."""
    command = [py_spy_binary(), "dump", "--pid", str(pid)]
    if local_variables:
        command.append("--locals")
    result = subprocess.run(  # noqa: S603 - py-spy with our arguments
        command, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise ProfilingError(f"{PTRACE_HINT}\n{result.stderr.strip()}")
    return result.stdout


# Reading a recording


@dataclass(frozen=True)
class Frame:
    name: str
    where: str
    self_share: float  # share of samples in which this frame was on top of the stack
    total_share: float  # share of samples in which it was anywhere on the stack


def top_frames(
    speedscope_path: Path, limit: int = 10, *, by: str = "self", file_contains: str = ""
) -> list[Frame]:
    """The frames with the most samples in a py-spy speedscope file (all threads together).

    `by="total"` ranks by inclusive time; `file_contains` keeps only frames whose file path
    contains it (e.g. "service/" for the project's own functions).
    """
    data = json.loads(speedscope_path.read_text(encoding="utf-8"))
    frames = data["shared"]["frames"]
    self_weight: Counter[int] = Counter()
    total_weight: Counter[int] = Counter()
    grand_total = 0.0
    for profile in data["profiles"]:
        samples: Iterable[list[int]] = profile["samples"]
        for stack, weight in zip(samples, profile["weights"], strict=True):
            grand_total += weight
            if stack:
                self_weight[stack[-1]] += weight
            for index in set(stack):
                total_weight[index] += weight
    if grand_total == 0:
        return []
    ranking = self_weight if by == "self" else total_weight
    result: list[Frame] = []
    for index, _weight in ranking.most_common():
        if len(result) == limit:
            break
        frame = frames[index]
        if file_contains not in str(frame.get("file", "")):
            continue
        where = f"{frame.get('file', '?')}:{frame.get('line', '?')}"
        result.append(
            Frame(
                name=str(frame.get("name", "?")),
                where=where,
                self_share=self_weight[index] / grand_total,
                total_share=total_weight[index] / grand_total,
            )
        )
    return result


def sample_count(speedscope_path: Path) -> int:
    data = json.loads(speedscope_path.read_text(encoding="utf-8"))
    return sum(len(profile["samples"]) for profile in data["profiles"])


def stack_share(speedscope_path: Path, matches: Callable[[dict[str, Any]], bool]) -> float:
    """The share of a py-spy speedscope file's samples whose stack holds a frame `matches`
    accepts (a frame: its speedscope dict, with `name`, `file`, `line`)."""
    data = json.loads(speedscope_path.read_text(encoding="utf-8"))
    wanted = {index for index, frame in enumerate(data["shared"]["frames"]) if matches(frame)}
    total = matched = 0.0
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            total += weight
            if wanted.intersection(stack):
                matched += weight
    return matched / total if total else 0.0
