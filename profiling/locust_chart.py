"""A PNG chart of a Locust run from its `<prefix>_stats_history.csv` (what `make load` writes).

    python -m profiling.locust_chart loadtests/results/spike_stats_history.csv -o chart.png

Three panels over the run's time, from the "Aggregated" lines: users, requests and
failures per second, and the median and 95th percentile response time. Locust writes
percentiles of the last 10 seconds only with `--csv-full-history` (LOCUST_CSV_FULL_HISTORY=true
make load): then they follow the load as it changes. Without it they are cumulative since
the start, and the chart says so.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # after choosing the backend


@dataclass(frozen=True)
class Point:
    seconds: float
    users: int
    rps: float
    failures: float
    p50_ms: float | None
    p95_ms: float | None


def _number(text: str) -> float | None:
    return None if text in ("", "N/A") else float(text)


def read_history(path: Path) -> tuple[list[Point], bool]:
    """The Aggregated points, and whether their percentiles are windowed (full history)."""
    points: list[Point] = []
    start: float | None = None
    windowed = False
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] != "Aggregated":
                windowed = True  # per-request lines appear only with --csv-full-history
                continue
            stamp = float(row["Timestamp"])
            start = stamp if start is None else start
            points.append(
                Point(
                    seconds=stamp - start,
                    users=int(row["User Count"]),
                    rps=float(row["Requests/s"]),
                    failures=float(row["Failures/s"]),
                    p50_ms=_number(row["50%"]),
                    p95_ms=_number(row["95%"]),
                )
            )
    return points, windowed


def draw(points: Sequence[Point], output: Path, title: str, *, windowed: bool) -> None:
    if not points:
        raise ValueError("no Aggregated line in the history: did the run record any request?")
    seconds = [p.seconds for p in points]
    figure, (users, rate, latency) = plt.subplots(
        3, 1, figsize=(9, 7), sharex=True, height_ratios=[1, 1.3, 1.6]
    )
    users.plot(seconds, [p.users for p in points], color="tab:gray")
    users.set_ylabel("users")
    rate.plot(seconds, [p.rps for p in points], label="requests/s", color="tab:blue")
    rate.plot(seconds, [p.failures for p in points], label="failures/s", color="tab:red")
    rate.set_ylabel("per second")
    rate.legend(loc="upper left")
    for attribute, label, color in (
        ("p50_ms", "p50", "tab:green"),
        ("p95_ms", "p95", "tab:orange"),
    ):
        values = [getattr(p, attribute) for p in points]
        latency.plot(
            seconds,
            [v if v is not None else float("nan") for v in values],
            label=label,
            color=color,
        )
    latency.set_ylabel("response time (ms)")
    latency.set_title(
        "percentiles of the last 10 s" if windowed else "percentiles since the start",
        fontsize="medium",
    )
    latency.set_xlabel("seconds since start")
    latency.legend(loc="upper left")
    for axis in (users, rate, latency):
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    figure.suptitle(title)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("history", type=Path, help="a Locust <prefix>_stats_history.csv")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="", help="chart title (default: the file name)")
    args = parser.parse_args(argv)
    points, windowed = read_history(args.history)
    draw(points, args.output, args.title or args.history.name, windowed=windowed)
    print(f"locust_chart: {len(points)} points → {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
