"""`make bench`'s results: per-variant medians, ratios paired within a round, the targets'
verdicts, the printed table, the chart and the JSON document.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from profiling.bench_variants import (
    BEFORE_AFTER,
    COMPARISONS,
    LEVERS,
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


def round_ratios(runs: list[Run], numerator: str, denominator: str, metric: str) -> list[float]:
    """numerator/denominator measured in the same round, one per round in round order.

    metric "tail" is the numerator's own p99 / p50 in each round (denominator unused).
    """
    by_round: dict[int, dict[str, Run]] = {}
    for run in runs:
        by_round.setdefault(run.round, {})[run.variant] = run
    ratios = []
    for _, pair in sorted(by_round.items()):
        if metric == "tail" and numerator in pair and pair[numerator].p50_ms > 0:
            ratios.append(pair[numerator].p99_ms / pair[numerator].p50_ms)
        elif numerator in pair and denominator in pair:
            top, bottom = pair[numerator], pair[denominator]
            if metric == "rps" and bottom.rps > 0:
                ratios.append(top.rps / bottom.rps)
            elif metric == "p50" and bottom.p50_ms > 0:
                ratios.append(top.p50_ms / bottom.p50_ms)
    return ratios


def paired_ratio(runs: list[Run], numerator: str, denominator: str, metric: str) -> float | None:
    """Median over rounds of numerator/denominator measured in the same round."""
    ratios = round_ratios(runs, numerator, denominator, metric)
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


def lever_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Every lever whose two variants ran: req/s with / without, per round and the median."""
    rows = []
    for lever in LEVERS:
        ratios = round_ratios(runs, lever.on, lever.off, "rps")
        if ratios:
            rows.append(
                {
                    "lever": lever.name,
                    "with": lever.on,
                    "without": lever.off,
                    "ratios": ratios,
                    "median": statistics.median(ratios),
                }
            )
    return rows


def _goal(numerator: str, denominator: str) -> float | None:
    """The bound of the req/s target of `numerator` over `denominator`, if there is one."""
    found = (t.bound for t in TARGETS if (t.numerator, t.denominator) == (numerator, denominator))
    return next(found, None)


def before_after_rows(
    runs: list[Run], table: dict[str, dict[str, float]], variants: Sequence[Variant]
) -> list[dict[str, Any]]:
    """Each goal read whose before and after variants ran: req/s, share of the peer, after /
    before (per round and the median)."""
    kinds = {v.name: v for v in variants}
    rows = []
    for read, before, after in BEFORE_AFTER:
        if before not in table or after not in table:
            continue
        peer = peer_reference(kinds[after])
        rows.append(
            {
                "read": read,
                "before": before,
                "after": after,
                "peer": peer,
                "before_rps": table[before]["rps"],
                "after_rps": table[after]["rps"],
                "before_to_peer": paired_ratio(runs, before, peer, "rps"),
                "after_to_peer": paired_ratio(runs, after, peer, "rps"),
                "goal_to_peer": _goal(after, peer),
                "after_over_before_per_round": round_ratios(runs, after, before, "rps"),
                "after_over_before": paired_ratio(runs, after, before, "rps"),
            }
        )
    return rows


def format_before_after(rows: list[dict[str, Any]], baseline: str) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        f"before → after (before: glassbox at {baseline}, served beside this checkout in the "
        "same rounds; / peer and after / before: same round, median):",
        f"  {'read':<14} {'before req/s':>12} {'/ peer':>7} {'after req/s':>12} {'/ peer':>7}"
        f" {'goal':>6} {'after / before':>15}",
    ]
    for row in rows:
        goal = "" if row["goal_to_peer"] is None else f"{row['goal_to_peer']:.2f}"
        lines.append(
            f"  {row['read']:<14} {row['before_rps']:>12.0f} {_shown(row['before_to_peer'])}"
            f" {row['after_rps']:>12.0f} {_shown(row['after_to_peer'])} {goal:>6}"
            f" {_shown(row['after_over_before'], 15)}"
        )
    return lines


def format_levers(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    per_round = [" ".join(f"{r:.2f}" for r in row["ratios"]) for row in rows]
    width = max(len("ratio (per round)"), *(len(text) for text in per_round))
    lines = [
        "",
        "levers (req/s with the lever / without it, measured in the same rounds):",
        f"  {'lever':<28} {'variant with':<27} {'variant without':<27} "
        f"{'ratio (per round)':<{width}} {'median':>6}",
    ]
    for row, ratios in zip(rows, per_round, strict=True):
        lines.append(
            f"  {row['lever']:<28} {row['with']:<27} {row['without']:<27} "
            f"{ratios:<{width}} {row['median']:6.2f}"
        )
    return lines


def format_report(
    table: dict[str, dict[str, float]],
    runs: list[Run],
    verdicts: list[dict[str, Any]],
    variants: Sequence[Variant],
    memory: Memory | None = None,
    *,
    before_after: list[dict[str, Any]] | None = None,
    baseline: str = "",
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
    lines += format_before_after(before_after or [], baseline)
    lines += format_levers(lever_rows(runs))
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


PEER_COLOUR, BEFORE_COLOUR, AFTER_COLOUR = "#c07830", "#a0a0a0", "#4878a8"


def _colour(name: str) -> str:
    if name.startswith("peer"):
        return PEER_COLOUR
    return BEFORE_COLOUR if name.startswith("before_") else AFTER_COLOUR


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
    colours = [_colour(n) for n in names]
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


def draw_before_after(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Each goal read as a share of the peer, before and after, with its goal marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), layout="constrained")
    positions = range(len(rows))
    for offset, side, colour in ((-0.2, "before", BEFORE_COLOUR), (0.2, "after", AFTER_COLOUR)):
        shares = [row[f"{side}_to_peer"] or 0.0 for row in rows]
        bars = axes.bar([p + offset for p in positions], shares, 0.4, color=colour, label=side)
        axes.bar_label(bars, labels=[f"{share:.2f}" for share in shares], padding=2)
    for position, row in zip(positions, rows, strict=True):
        if row["goal_to_peer"] is not None:
            goal = row["goal_to_peer"]
            axes.hlines(goal, position - 0.45, position + 0.45, colors="black", linestyles="--")
        if row["after_over_before"] is not None:
            axes.annotate(
                f"after / before {row['after_over_before']:.2f}",
                (position, 0),
                xytext=(0, -28),
                textcoords="offset points",
                ha="center",
            )
    tops = [row[key] or 0.0 for row in rows for key in ("before_to_peer", "after_to_peer")]
    tops += [row["goal_to_peer"] or 0.0 for row in rows]
    axes.set_ylim(0, max(tops, default=1.0) * 1.3)  # room for the legend above the goals
    axes.set_xticks(list(positions), [row["read"] for row in rows])
    axes.set_ylabel("req/s / the peer's (same round, median); dashes: goal")
    axes.legend(loc="upper right")
    # Wrapped: the run's one-line description is wider than this chart.
    wrapped = "\n".join(textwrap.fill(line, 100) for line in title.split("\n"))
    axes.set_title(wrapped, fontsize=9)
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
    before_after: list[dict[str, Any]],
    baseline: Mapping[str, Any],
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
                "before": v.before,
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
        "levers": lever_rows(runs),
        "baseline": dict(baseline),
        "before_after": before_after,
        "otlp_exports": exports,
    }


def write_results(
    out: Path, stamp: str, document: dict[str, Any], chart_title: str
) -> tuple[Path, Path]:
    """bench-<stamp>.json and .png (and -before-after.png when the baseline ran), and copies
    as bench-latest.*."""
    json_path = out / f"bench-{stamp}.json"
    png_path = out / f"bench-{stamp}.png"
    json_path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    draw_chart(document["summary"], png_path, chart_title)
    copies = [(json_path, "bench-latest.json"), (png_path, "bench-latest.png")]
    if document["before_after"]:
        pair_path = out / f"bench-{stamp}-before-after.png"
        baseline = document["baseline"]
        pair_title = (
            f"glassbox before ({baseline['ref']}, {baseline['commit'][:10]}) and after, "
            f"req/s as a share of the peer's\n{chart_title}"
        )
        draw_before_after(document["before_after"], pair_path, pair_title)
        copies.append((pair_path, "bench-latest-before-after.png"))
    for source, alias in copies:
        shutil.copyfile(source, out / alias)
    return json_path, png_path


def telemetry_note(exports: dict[str, int]) -> str:
    if exports:
        return f"OTLP exports received by the bench's sink: {exports}"
    return (
        "no OTLP export reached the sink: telemetry was not exporting, so the "
        "telemetry variants measured the same thing as their _otel_off twins"
    )
