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

from profiling.bench_variants import (
    COMPARISONS,
    MEMORY_BASELINE_MB,
    PEER_FIRST_PAGE,
    PEER_PRODUCT,
    TARGETS,
    Target,
    Variant,
)


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
    mean_delay_ms: float = 0.0  # a paced run: each connection's mean wait before a request


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
    """Median over rounds of numerator/denominator measured in the same round.

    metric "tail" is the numerator's own p99 / p50 in each round (denominator unused).
    """
    by_round: dict[int, dict[str, Run]] = {}
    for run in runs:
        by_round.setdefault(run.round, {})[run.variant] = run
    ratios = []
    for pair in by_round.values():
        if metric == "tail" and numerator in pair and pair[numerator].p50_ms > 0:
            ratios.append(pair[numerator].p99_ms / pair[numerator].p50_ms)
        elif numerator in pair and denominator in pair:
            top, bottom = pair[numerator], pair[denominator]
            if metric == "rps" and bottom.rps > 0:
                ratios.append(top.rps / bottom.rps)
            elif metric == "p50" and bottom.p50_ms > 0:
                ratios.append(top.p50_ms / bottom.p50_ms)
    return statistics.median(ratios) if ratios else None


Memory = dict[str, list[float]]  # variant -> resident MB of each of its server's workers


def _target_ratio(target: Target, runs: list[Run], memory: Memory) -> float | None:
    if target.metric != "memory":
        return paired_ratio(runs, target.numerator, target.denominator, target.metric)
    workers = memory.get(target.numerator)
    if not workers or MEMORY_BASELINE_MB <= 0:
        return None
    return max(workers) / MEMORY_BASELINE_MB


def evaluate(runs: list[Run], memory: Memory | None = None) -> list[dict[str, Any]]:
    verdicts = []
    for target in TARGETS:
        ratio = _target_ratio(target, runs, memory or {})
        if ratio is None:
            verdict = "SKIP"
        elif target.at_least:
            verdict = "PASS" if ratio >= target.bound else "FAIL"
        else:
            verdict = "PASS" if ratio <= target.bound else "FAIL"
        verdicts.append({**asdict(target), "ratio": ratio, "verdict": verdict})
    return verdicts


def peer_reference(variant: Variant) -> str:
    """The peer variant a variant is shown against: its first page for lists, else its read."""
    return PEER_FIRST_PAGE if variant.is_list else PEER_PRODUCT


def _shown(ratio: float | None, width: int = 7) -> str:
    return f"{'' if ratio is None else f'{ratio:.2f}':>{width}}"


def format_report(
    table: dict[str, dict[str, float]],
    runs: list[Run],
    verdicts: list[dict[str, Any]],
    variants: Sequence[Variant],
    memory: Memory | None = None,
) -> str:
    kinds = {v.name: v for v in variants}
    lines = [
        f"{'variant':<27} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'/ peer':>7} {'/ bare':>7}"
        "  errors",
        "-" * 78,
    ]
    for name, row in table.items():
        to_peer = paired_ratio(runs, name, peer_reference(kinds[name]), "rps")
        to_bare = paired_ratio(runs, name, "bare_wsgi", "rps")
        problems = int(row["errors"] + row["bad_status"])
        lines.append(
            f"{name:<27} {row['rps']:>8.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{_shown(to_peer)} {_shown(to_bare)}  {problems or ''}"
        )
    lines.append(
        f"(/ peer: req/s over {PEER_PRODUCT}'s, lists over {PEER_FIRST_PAGE}'s, same round)"
    )
    lines += ["", "targets (ratios measured within each round, median over rounds):"]
    for v in verdicts:
        shown = "   n/a" if v["ratio"] is None else f"{v['ratio']:6.2f}"
        sign = ">=" if v["at_least"] else "<="
        lines.append(f"  {v['verdict']:<4}  {shown} {sign} {v['bound']:.2f}  {v['name']}")
    compared = [
        (label, paired_ratio(runs, top, bottom, "rps")) for label, top, bottom in COMPARISONS
    ]
    if any(ratio is not None for _, ratio in compared):
        lines += ["", "beside them (req/s ratios, same round, median):"]
        lines += [f"        {ratio:6.2f}     {label}" for label, ratio in compared if ratio]
    if memory:
        lines += [
            "",
            f"resident memory per worker after the run, MB (baseline {MEMORY_BASELINE_MB:g}):",
        ]
        lines += [
            f"  {name:<27} " + "  ".join(f"{mb:6.1f}" for mb in sorted(workers))
            for name, workers in memory.items()
        ]
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
    colours = ["#c07830" if n.startswith("peer") else "#4878a8" for n in names]
    left.barh(positions, rps, xerr=[low, high], color=colours, capsize=3)
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
    memory: Memory,
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
            v.name: {
                "path": v.path,
                "env": dict(v.env),
                "app": v.app,
                "ids": v.ids,
                "server": v.server,
                "peer_sampling": v.peer_sampling,
                "serves": v.serves,
                "pace": v.pace,
            }
            for v in variants
        },
        "peer_ratios": {
            v.name: paired_ratio(runs, v.name, peer_reference(v), "rps") for v in variants
        },
        "memory_mb": memory,
        "memory_baseline_mb": MEMORY_BASELINE_MB,
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
