"""`make profile`: py-spy on every gunicorn worker of a running server while load runs.

    python -m profiling.capture [--url URL] [--pid PID | --pid-file FILE] [--seconds N]
                                [--load locust|wrk|none] [--out DIR]

Finds the workers (the children of the gunicorn master listening on the URL's port, or of
--pid / --pid-file), starts a load (a short Locust `steady` run by default), then records
each worker twice — default sampling (what is on the CPU) and `--idle` (waiting threads
too) — as an SVG flame graph and speedscope JSON, and takes a `py-spy dump` of each worker
mid-load. The load runs until the last window has ended. Everything lands in
profiling/results/<time>/ with a summary.md; `latest` points to the newest run.
docs/measurement.md explains how to read the files.

The Locust load gets API keys of its own, one per shopper, made in the server's database
(DATABASE_URL, as `make serve` reads it) and revoked afterwards: orders are authorised, and
each shopper has its own rate-limit allowance, so the limiter runs on every request (its
share of the samples is in the summary) without refusing the load. The summary counts the
load's 401 and 429 answers and flags a recording taken while no load ran, or that shows no
request being handled.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from profiling import pyspy
from profiling.harness.processes import interrupt
from profiling.harness.wrk import wrk_command

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "profiling" / "results"
PROJECT_FILES = str(ROOT / "service") + "/"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("LOAD_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--pid", type=int, default=None, help="PID of the gunicorn master")
    parser.add_argument("--pid-file", type=Path, default=None, help="gunicorn --pid file")
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("PROFILE_SECONDS", "15")),
        help="length of each recording (default and --idle), default 15",
    )
    parser.add_argument(
        "--load",
        choices=("locust", "wrk", "none"),
        default=os.environ.get("PROFILE_LOAD", "locust"),
        help="load to run meanwhile: locust (the shopper mix), wrk (GET mix, saturating), "
        "or none (you drive it)",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load first")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    return parser.parse_args(argv)


def _find_workers(args: argparse.Namespace) -> tuple[int, list[int]]:
    if args.pid is not None:
        master = args.pid
    elif args.pid_file is not None:
        master = pyspy.master_from_pid_file(args.pid_file)
    else:
        port = urlsplit(args.url).port or 80
        master = pyspy.master_listening_on(port)
    return master, pyspy.workers_of(master)


LOAD_SHOPPERS = 20
# Each shopper thinks 0.2-1 s between clicks (steady's 1-5 s, scaled): a few requests a
# second each, far under one key's default allowance (600 per minute), 20 of them enough to
# keep two sync workers busy.
LOAD_THINK_SCALE = 0.2
# Planned length beyond the windows: py-spy's start-up, the dumps. The load is stopped as
# soon as the last window has ended; this only bounds it if that never happens.
LOAD_MARGIN_SECONDS = 120
# The frame every request of a gunicorn worker passes through: `SyncWorker.handle_request`,
# `ThreadWorker.handle_request`.
REQUEST_HANDLER = "handle_request"


@contextmanager
def load_keys(count: int) -> Iterator[list[str]]:
    """`count` API keys in the server's database for the load, revoked afterwards.

    None when the database cannot be reached from here (a remote server): then the load
    uses GLASSBOX_API_KEY or the development key, and the summary shows any 401 or 429.
    """
    if os.environ.get("GLASSBOX_API_KEY"):
        yield []
        return
    try:
        from service import create_app
        from service.auth import service as auth
        from service.auth.models import Scope
        from service.extensions import db

        app = create_app({"LOG_LEVEL": "WARNING"})
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
        names = [f"make-profile-{stamp}-{n}" for n in range(count)]
        with app.app_context():
            # Shoppers place orders (customer) and read the sales report (operator).
            scopes = (Scope.CUSTOMER, Scope.OPERATOR)
            tokens = [auth.create_key(name=name, scopes=scopes) for name in names]
    except Exception as exc:  # any reason (no database here): go on with the fallback key
        print(f"profile: no API keys for the load ({exc}); orders may answer 401", file=sys.stderr)
        yield []
        return
    try:
        yield tokens
    finally:
        with app.app_context():
            for name in names:
                auth.revoke_key(name=name)
            db.engine.dispose()  # its pooled connections closed, not left to the collector


def _start_load(
    kind: str, url: str, seconds: float, out: Path, keys: list[str]
) -> subprocess.Popen[bytes] | None:
    if kind == "none":
        return None
    env = dict(os.environ)
    if kind == "locust":
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "loadtests" / "locustfile.py"),
            "--headless",
            "--host",
            url,
            "--shape",
            "steady",
            "--shape-seconds",
            str(seconds),
            "--peak-users",
            str(LOAD_SHOPPERS),
            "--think-scale",
            str(LOAD_THINK_SCALE),
            "--csv",
            str(out / "load"),
            "--html",
            str(out / "load.html"),
            "--only-summary",
        ]
        if keys:
            env["GLASSBOX_API_KEYS"] = ",".join(keys)
    else:
        # wrk's own default timeout (2 s), four connections, the GET mix.
        command = wrk_command(url, script="mix.lua", seconds=seconds, connections=4, timeout="2s")
    with (out / f"load-{kind}.log").open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - our own command line
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_load(process: subprocess.Popen[bytes] | None) -> None:
    # SIGINT (Ctrl+C): a headless Locust shape run only handles it, not SIGTERM, and then
    # writes its CSV and HTML report; wrk prints its summary.
    if process is not None:
        interrupt(process, timeout=30)


# How the locustfile marks a failed request: CatchResponseError('status 429 Too Many …').
_FAILED_STATUS = re.compile(r"\bstatus (\d{3})\b")


@dataclass(frozen=True)
class LoadAnswers:
    """What the Locust load's requests got, from its CSV reports."""

    requests: int
    by_status: dict[int, int]  # failures by HTTP status (0: no answer)


def load_answers(out: Path) -> LoadAnswers | None:
    stats, failures = out / "load_stats.csv", out / "load_failures.csv"
    if not stats.exists():
        return None
    with stats.open(encoding="utf-8") as file:
        total = [row for row in csv.DictReader(file) if row["Name"] == "Aggregated"]
    by_status: dict[int, int] = {}
    if failures.exists():
        with failures.open(encoding="utf-8") as file:
            for row in csv.DictReader(file):
                found = _FAILED_STATUS.search(row["Error"])
                status = int(found.group(1)) if found else 0
                by_status[status] = by_status.get(status, 0) + int(row["Occurrences"])
    return LoadAnswers(int(total[0]["Request Count"]) if total else 0, by_status)


def handling_share(speedscope: Path) -> float:
    """The share of a recording's samples inside a request handler."""
    return pyspy.stack_share(
        speedscope, lambda frame: str(frame.get("name")).endswith(REQUEST_HANDLER)
    )


def limiter_share(speedscope: Path) -> float:
    """The share of a recording's samples in the rate limiter (Flask-Limiter, limits)."""
    places = ("flask_limiter/", "limits/", "service/ratelimit.py")
    return pyspy.stack_share(
        speedscope, lambda frame: any(place in str(frame.get("file")) for place in places)
    )


def _summary(
    args: argparse.Namespace,
    master: int,
    workers: list[int],
    recordings: list[pyspy.Recording],
    dumps: list[Path],
    unloaded: set[str],
) -> str:
    answers = load_answers(recordings[0].svg.parent) if recordings else None
    lines = [
        "# py-spy profile",
        "",
        f"- server: {args.url} (gunicorn master {master}, workers {', '.join(map(str, workers))})",
        f"- load: {args.load}; each recording {args.seconds:g} s at {args.rate} samples/s",
        *_load_lines(args.load, answers),
        f"- taken: {datetime.now(UTC).isoformat(timespec='seconds')}",
        "",
        "Open an `.svg` in a browser (click to zoom, Ctrl+F to search); drop a",
        "`.speedscope.json` on https://www.speedscope.app or open it with the speedscope npm",
        "package offline. `cpu` recordings show what was running; `idle` recordings add the",
        "time spent waiting (sockets, locks, sleeps).",
        "",
    ]
    for recording in recordings:
        samples = pyspy.sample_count(recording.speedscope)
        handling = handling_share(recording.speedscope)
        lines += [f"## worker {recording.pid}, {recording.label} ({samples} samples)", ""]
        if recording.label in unloaded or args.load == "none":
            lines += ["**Recorded without load**: the load had ended before this window did.", ""]
        if handling == 0:
            lines += ["**No request handled in this recording**: it shows an idle worker.", ""]
        lines += [
            f"Handling requests: {handling:.1%} of the samples; in the rate limiter: "
            f"{limiter_share(recording.speedscope):.1%}.",
            "",
            f"[{recording.svg.name}]({recording.svg.name}) · "
            f"[{recording.speedscope.name}]({recording.speedscope.name})",
            "",
            "| self | total | frame | where |",
            "| ---: | ---: | --- | --- |",
        ]
        for frame in pyspy.top_frames(recording.speedscope, 10):
            lines.append(
                f"| {frame.self_share:.1%} | {frame.total_share:.1%} | `{frame.name}` | "
                f"{frame.where.replace(str(ROOT) + '/', '')} |"
            )
        own = pyspy.top_frames(recording.speedscope, 5, by="total", file_contains=PROJECT_FILES)
        if own:
            lines += ["", "glassbox's own functions by total time:", ""]
            lines += [f"- `{f.name}` {f.total_share:.1%}" for f in own]
        lines.append("")
    log = recordings[0].svg.parent / "py-spy.log" if recordings else None
    if log is not None and log.exists():
        lines += ["## py-spy's own account (samples taken, samples it failed to read)", ""]
        lines += ["```", log.read_text(encoding="utf-8").strip(), "```", ""]
    lines += ["## py-spy dump (one per worker, mid-load)", ""]
    lines += [f"- [{path.name}]({path.name})" for path in dumps]
    return "\n".join(lines) + "\n"


def _record_under_load(
    args: argparse.Namespace, workers: list[int], out: Path, keys: list[str]
) -> tuple[list[pyspy.Recording], list[Path], set[str]]:
    """Both recordings (4 windows: SVG and speedscope, each cpu and idle) and the dumps,
    with the load running from before the first window until after the last one; the
    labels of recordings whose window ended after the load had."""
    planned = args.warmup + 4 * args.seconds + LOAD_MARGIN_SECONDS
    load = _start_load(args.load, args.url, planned, out, keys)
    running: Callable[[], bool] = lambda: load is not None and load.poll() is None  # noqa: E731
    recordings: list[pyspy.Recording] = []
    dumps: list[Path] = []
    unloaded: set[str] = set()
    try:
        time.sleep(args.warmup)  # let the load reach its level before sampling
        for idle in (False, True):
            label = "idle" if idle else "cpu"
            print(f"profile: recording {label} for {args.seconds:g} s")
            recordings += pyspy.record_workers(
                workers, out, seconds=args.seconds, idle=idle, rate=args.rate
            )
            if not running():
                unloaded.add(label)
            if not idle:
                for pid in workers:
                    path = out / f"worker-{pid}-dump.txt"
                    path.write_text(pyspy.dump(pid), encoding="utf-8")
                    dumps.append(path)
    finally:
        _stop_load(load)
    return recordings, dumps, unloaded


def _load_lines(kind: str, answers: LoadAnswers | None) -> list[str]:
    if kind != "locust" or answers is None:
        return []
    refused = {status: answers.by_status.get(status, 0) for status in (401, 429)}
    line = (
        f"- the load's answers: {answers.requests} requests, "
        f"{refused[401]} unauthorised (401), {refused[429]} refused by the rate limiter (429)"
    )
    if any(refused.values()):
        line += " — **the profile shows requests being refused, not served**"
    return [line]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        master, workers = _find_workers(args)
    except pyspy.ProfilingError as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out: Path = args.out or RESULTS / stamp
    out.mkdir(parents=True, exist_ok=True)
    print(f"profile: gunicorn master {master}, workers {workers}; writing {out}")

    with load_keys(LOAD_SHOPPERS if args.load == "locust" else 0) as keys:
        try:
            recordings, dumps, unloaded = _record_under_load(args, workers, out, keys)
        except pyspy.ProfilingError as exc:
            print(f"profile: {exc}", file=sys.stderr)
            return 1

    summary = _summary(args, master, workers, recordings, dumps, unloaded)
    (out / "summary.md").write_text(summary, encoding="utf-8")
    if args.out is None:
        latest = RESULTS / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
    print(summary)
    print(f"profile: files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
