"""`make profile`: py-spy on every gunicorn worker of a running server while load runs.

    python -m profiling.capture [--url URL] [--pid PID | --pid-file FILE] [--seconds N]
                                [--load locust|wrk|none] [--out DIR]

Finds the workers (the children of the gunicorn master listening on the URL's port, or of
--pid / --pid-file), starts a load (a short Locust `steady` run by default), then records
each worker twice — default sampling (what is on the CPU) and `--idle` (waiting threads
too) — as an SVG flame graph and speedscope JSON, and takes a `py-spy dump` of each worker
mid-load. Everything lands in profiling/results/<time>/ with a summary.md; `latest` points
to the newest run. docs/measurement.md explains how to read the files.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
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


def _start_load(kind: str, url: str, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    if kind == "none":
        return None
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
            "10",
            # Shoppers who barely think keep both workers busy, so the flame graphs fill.
            "--think-scale",
            "0.05",
            "--csv",
            str(out / "load"),
            "--html",
            str(out / "load.html"),
            "--only-summary",
        ]
    else:
        # wrk's own default timeout (2 s), four connections, the GET mix.
        command = wrk_command(url, script="mix.lua", seconds=seconds, connections=4, timeout="2s")
    with (out / f"load-{kind}.log").open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - our own command line
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop_load(process: subprocess.Popen[bytes] | None) -> None:
    # SIGINT (Ctrl+C): a headless Locust shape run only handles it, not SIGTERM, and then
    # writes its CSV and HTML report; wrk prints its summary.
    if process is not None:
        interrupt(process, timeout=30)


def _summary(
    args: argparse.Namespace,
    master: int,
    workers: list[int],
    recordings: list[pyspy.Recording],
    dumps: list[Path],
) -> str:
    lines = [
        "# py-spy profile",
        "",
        f"- server: {args.url} (gunicorn master {master}, workers {', '.join(map(str, workers))})",
        f"- load: {args.load}; each recording {args.seconds:g} s at {args.rate} samples/s",
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
        lines += [
            f"## worker {recording.pid}, {recording.label} ({samples} samples)",
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

    # Load long enough for both recordings, the dumps and the warm-up.
    load = _start_load(args.load, args.url, args.warmup + 2 * args.seconds + 15, out)
    recordings: list[pyspy.Recording] = []
    dumps: list[Path] = []
    try:
        time.sleep(args.warmup)  # let the load reach its level before sampling
        for idle in (False, True):
            label = "idle" if idle else "cpu"
            print(f"profile: recording {label} for {args.seconds:g} s")
            recordings += pyspy.record_workers(
                workers, out, seconds=args.seconds, idle=idle, rate=args.rate
            )
            if not idle:
                for pid in workers:
                    path = out / f"worker-{pid}-dump.txt"
                    path.write_text(pyspy.dump(pid), encoding="utf-8")
                    dumps.append(path)
    except pyspy.ProfilingError as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop_load(load)

    summary = _summary(args, master, workers, recordings, dumps)
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
