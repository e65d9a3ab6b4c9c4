"""The lab's output: the side-by-side text per experiment, lab-report.md and summary.json."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from profiling import collapsed
from profiling.lab_results import WORKERS, Recording, Result, Settings, shorten
from service.config import database_url as parse_database_url

SERVICE_FILE = re.compile(r"^service/")


def _is_service(file: str) -> bool:
    return bool(SERVICE_FILE.match(file))


def frame_lines(recording: Recording, top: int) -> list[str]:
    lines = ["  self  function (file)"]
    for frame in recording.profile.top_self(top):
        where = f"{frame.file}:{frame.hottest_line}" if frame.hottest_line else frame.file
        lines.append(f"{frame.share:6.1%}  {frame.name} ({where})")
    return lines


def service_lines(recording: Recording, top: int) -> list[str]:
    lines = ["  total  glassbox function (file)"]
    for frame in recording.profile.top_total(top, _is_service):
        lines.append(f"{frame.share:7.1%}  {frame.name} ({frame.file})")
    return lines or ["  (no glassbox function sampled)"]


def span_lines(result: Result, top: int) -> list[str]:
    lines = ["  self   count  mean self  span (service)"]
    for stat in result.spans[:top]:
        mean_ms = 1000 * stat.self_s / stat.count
        service = stat.service.removeprefix("glassbox-")
        lines.append(
            f"{stat.share:6.1%}  {stat.count:6d}  {mean_ms:7.1f} ms  {stat.label} ({service})"
        )
    return lines


def side_by_side(left_title: str, left: list[str], right_title: str, right: list[str]) -> str:
    width = 62
    rows = [f"{left_title:<{width}} | {right_title}"]
    for index in range(max(len(left), len(right))):
        a = left[index] if index < len(left) else ""
        b = right[index] if index < len(right) else ""
        a = a if len(a) <= width else a[: width - 1] + "…"
        rows.append(f"{a:<{width}} | {b}")
    return "\n".join(rows)


def _load_line(result: Result) -> str:
    load = result.load
    errors = sum(
        load[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    ) + int(load["status_errors"])
    return (
        f"load: wrk, {result.load_seconds:.0f} s, {load['requests']} requests "
        f"({load['requests'] / max(result.load_seconds, 1):.1f}/s), {errors} errors, "
        f"p50 {load['p50_us'] / 1000:.0f} ms, p99 {load['p99_us'] / 1000:.0f} ms; "
        f"traces received: {result.traces} ({result.span_count} spans)"
    )


def format_summary(result: Result, top: int) -> str:
    cpu, idle = result.recordings["cpu"], result.recordings["idle"]
    head = [
        f"== {result.experiment.name}: {result.experiment.title}",
        f"   {result.experiment.description}",
        f"   {_load_line(result)}",
        f"   py-spy: {cpu.profile.samples} on-CPU samples of the workers' request threads "
        f"(on CPU {cpu.busy_share:.0%} of the time), {idle.profile.samples} with --idle",
        "",
    ]
    first = side_by_side(
        "py-spy, default (on-CPU): top frames by self time",
        frame_lines(cpu, top),
        "traces: top spans by self time",
        span_lines(result, top),
    )
    second = side_by_side(
        "py-spy --idle: top frames by self time",
        frame_lines(idle, top),
        "py-spy, default: glassbox functions by total time",
        service_lines(cpu, top),
    )
    return "\n".join(head) + first + "\n\n" + second + "\n"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def report_markdown(
    results: Sequence[Result], settings: Settings, data: dict[str, int], base: Path
) -> str:
    url = parse_database_url(settings.database_url).render_as_string(hide_password=True)
    lines = [
        "# The lab: what a profiler sees versus what tracing sees",
        "",
        f"- run: {datetime.now(UTC).isoformat(timespec='seconds')}, `make lab`",
        f"- database: `{url}` with {data['products']} products, {data['orders']} orders "
        f"({data['paid_orders']} paid)",
        f"- servers: the API and the payments service under gunicorn, {WORKERS} workers "
        "each (the threaded worker), every span sampled and exported over OTLP/HTTP to "
        "the lab's receiver",
        f"- py-spy: every API worker, {settings.rate} samples/s, windows of "
        f"{settings.seconds:g} s: raw stacks (the tables), then the SVG (the pictures), "
        "default and `--idle`",
        '- how to read it: docs/measurement.md, "The lab"',
        "",
    ]
    for result in results:
        lines += _experiment_header(result)
        lines += _flame_graphs(result, base)
        lines += _profile_tables(result, settings.top)
        lines += ["", "### Traces: top spans by self time", ""]
        lines += _span_table(result, settings.top)
        lines.append("")
    return "\n".join(lines)


def _experiment_header(result: Result) -> list[str]:
    experiment = result.experiment
    cpu, idle = result.recordings["cpu"], result.recordings["idle"]
    return [
        f"## {experiment.name}: {experiment.title}",
        "",
        f"- load: {_md(experiment.description)}",
        f"- {_md(_load_line(result))}",
        f"- knobs: API {experiment.api_env or 'defaults'}, "
        f"payments {experiment.payments_env or 'defaults'}",
        f"- py-spy default: {cpu.profile.samples} samples of the workers' request threads, on "
        f"CPU {cpu.busy_share:.0%} of the time; `--idle`: {idle.profile.samples} "
        f"(+{idle.background_samples} of background threads)",
        "",
    ]


def _flame_graphs(result: Result, base: Path) -> list[str]:
    """Every SVG, linked relative to the report's folder."""
    lines = []
    for recording in (result.recordings["cpu"], result.recordings["idle"]):
        title = "default (on-CPU)" if recording.label == "cpu" else "`--idle`"
        lines += [f"### Flame graphs, {title}", ""]
        for svg in recording.svgs:
            pid = svg.stem.split("-")[1]
            lines += [f"![worker {pid}, {recording.label}]({os.path.relpath(svg, base)})", ""]
    return lines


def _profile_tables(result: Result, top: int) -> list[str]:
    cpu, idle = result.recordings["cpu"], result.recordings["idle"]
    rows = [
        [_frame_cell(cpu_frame), _frame_cell(idle_frame)]
        for cpu_frame, idle_frame in zip(
            _padded(cpu.profile.top_self(top), top),
            _padded(idle.profile.top_self(top), top),
            strict=True,
        )
    ]
    lines = ["### py-spy: top frames by self time", ""]
    lines += _table(["default (on-CPU)", "`--idle`"], rows)
    lines += ["", "### py-spy: glassbox functions by total time (default)", ""]
    totals = cpu.profile.top_total(top, _is_service)
    lines += _table(
        ["total", "function", "file"], [[f"{f.share:.1%}", f"`{f.name}`", f.file] for f in totals]
    )
    return lines


def _span_table(result: Result, top: int) -> list[str]:
    return _table(
        ["self time", "share", "count", "mean self", "mean duration", "span", "service"],
        [
            [
                f"{stat.self_s:.2f} s",
                f"{stat.share:.1%}",
                str(stat.count),
                f"{1000 * stat.self_s / stat.count:.1f} ms",
                f"{1000 * stat.duration_s / stat.count:.1f} ms",
                f"`{stat.name}`"
                + (f" `{_md(shorten(stat.statement, 60))}`" if stat.statement else ""),
                stat.service,
            ]
            for stat in result.spans[:top]
        ],
    )


def _padded(frames: list[collapsed.Ranked], size: int) -> list[collapsed.Ranked | None]:
    return [*frames, *([None] * (size - len(frames)))]


def _frame_cell(frame: collapsed.Ranked | None) -> str:
    if frame is None:
        return ""
    return f"{frame.share:.1%} `{frame.name}` ({frame.file})"


def summary_json(results: Sequence[Result]) -> dict[str, Any]:
    """The run's figures, for tests and for comparing runs."""
    out: dict[str, Any] = {}
    for result in results:
        out[result.experiment.name] = {
            "load": result.load,
            "traces": result.traces,
            "spans": [stat.__dict__ for stat in result.spans],
            "recordings": {
                label: {
                    "svgs": [str(p) for p in recording.svgs],
                    "samples": recording.profile.samples,
                    "busy_share": recording.busy_share,
                    "top_self": [f.__dict__ for f in recording.profile.top_self(10)],
                    "service_total": [
                        f.__dict__ for f in recording.profile.top_total(10, _is_service)
                    ],
                    "py_spy": recording.py_spy,
                }
                for label, recording in result.recordings.items()
            },
        }
    return out
