"""`make bench`'s results: per-variant medians, ratios paired within a round, the targets'
verdicts, the printed table, the chart and the JSON document.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from profiling.bench_variants import TARGETS, Variant


@dataclass
class Run:
    variant: str
    round: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors and timeouts
    bad_status: int  # responses that were not 2xx or 3xx


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(runs: list[Run], variants: Sequence[Variant]) -> dict[str, dict[str, float]]:
    table = {}
    for variant in variants:
        mine = [r for r in runs if r.variant == variant.name]
        table[variant.name] = {
            "rps": _median([r.rps for r in mine]),
            "rps_min": min((r.rps for r in mine), default=float("nan")),
            "rps_max": max((r.rps for r in mine), default=float("nan")),
            "p50_ms": _median([r.p50_ms for r in mine]),
            "p99_ms": _median([r.p99_ms for r in mine]),
            "requests": sum(r.requests for r in mine),
            "errors": sum(r.errors for r in mine),
            "bad_status": sum(r.bad_status for r in mine),
        }
    return table


def paired_ratio(runs: list[Run], numerator: str, denominator: str, metric: str) -> float | None:
    """Median over rounds of numerator/denominator measured in the same round."""
    by_round: dict[int, dict[str, Run]] = {}
    for run in runs:
        by_round.setdefault(run.round, {})[run.variant] = run
    ratios = []
    for pair in by_round.values():
        if numerator in pair and denominator in pair:
            top, bottom = pair[numerator], pair[denominator]
            if metric == "rps" and bottom.rps > 0:
                ratios.append(top.rps / bottom.rps)
            elif metric == "p50" and bottom.p50_ms > 0:
                ratios.append(top.p50_ms / bottom.p50_ms)
    return statistics.median(ratios) if ratios else None


def evaluate(runs: list[Run]) -> list[dict[str, Any]]:
    verdicts = []
    for target in TARGETS:
        ratio = paired_ratio(runs, target.numerator, target.denominator, target.metric)
        if ratio is None:
            verdict = "SKIP"
        elif target.at_least:
            verdict = "PASS" if ratio >= target.bound else "FAIL"
        else:
            verdict = "PASS" if ratio <= target.bound else "FAIL"
        verdicts.append({**asdict(target), "ratio": ratio, "verdict": verdict})
    return verdicts


def format_report(
    table: dict[str, dict[str, float]], runs: list[Run], verdicts: list[dict[str, Any]]
) -> str:
    has_bare = any(r.variant == "bare_wsgi" for r in runs)
    lines = [
        f"{'variant':<27} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'/ bare':>7}  errors",
        "-" * 70,
    ]
    for name, row in table.items():
        ratio = paired_ratio(runs, name, "bare_wsgi", "rps") if has_bare else None
        problems = int(row["errors"] + row["bad_status"])
        lines.append(
            f"{name:<27} {row['rps']:>8.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{'' if ratio is None else f'{ratio:.2f}':>7}  {problems or ''}"
        )
    lines += ["", "targets (ratios measured within each round, median over rounds):"]
    for v in verdicts:
        shown = "   n/a" if v["ratio"] is None else f"{v['ratio']:6.2f}"
        sign = ">=" if v["at_least"] else "<="
        lines.append(f"  {v['verdict']:<4}  {shown} {sign} {v['bound']:.2f}  {v['name']}")
    return "\n".join(lines)


def draw_chart(table: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = list(table)
    rps = [table[n]["rps"] for n in names]
    low = [table[n]["rps"] - table[n]["rps_min"] for n in names]
    high = [table[n]["rps_max"] - table[n]["rps"] for n in names]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(13, 0.45 * len(names) + 2), sharey=True, layout="constrained"
    )
    positions = range(len(names))
    left.barh(positions, rps, xerr=[low, high], color="#4878a8", capsize=3)
    left.set_yticks(list(positions), names)
    left.invert_yaxis()
    left.set_xlabel("requests per second (median; bars: min-max over rounds)")
    right.barh([p - 0.2 for p in positions], [table[n]["p50_ms"] for n in names], 0.4, label="p50")
    right.barh([p + 0.2 for p in positions], [table[n]["p99_ms"] for n in names], 0.4, label="p99")
    right.set_xlabel("latency, ms (median over rounds)")
    right.legend(loc="best")
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def result_document(
    *,
    elapsed_s: float,
    settings: Mapping[str, Any],
    variants: Sequence[Variant],
    runs: list[Run],
    table: dict[str, dict[str, float]],
    verdicts: list[dict[str, Any]],
    exports: dict[str, int],
) -> dict[str, Any]:
    """Everything about one run, written as bench-<time>.json."""
    return {
        "taken": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed_s, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()},
        "variants": {
            v.name: {"path": v.path, "env": dict(v.env), "app": v.app, "ids": v.ids}
            for v in variants
        },
        "summary": table,
        "runs": [asdict(r) for r in runs],
        "targets": verdicts,
        "otlp_exports": exports,
    }


def telemetry_note(exports: dict[str, int]) -> str:
    if exports:
        return f"OTLP exports received by the bench's sink: {exports}"
    return (
        "no OTLP export reached the sink: telemetry was not exporting, so the "
        "telemetry variants measured the same thing as their _otel_off twins"
    )
