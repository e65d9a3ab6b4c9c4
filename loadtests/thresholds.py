"""Read loadtests/thresholds.toml and judge a finished run's statistics against it."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.toml")


class Entry(Protocol):
    """The part of locust's `StatsEntry` the verdict needs."""

    num_requests: int
    num_failures: int

    def get_response_time_percentile(self, percent: float) -> float: ...


@dataclass(frozen=True)
class Thresholds:
    max_failure_ratio: float
    max_p95_ms: float
    p95_ms_by_request: dict[str, float] = field(default_factory=dict)


def load_thresholds(shape: str, path: Path = THRESHOLDS_FILE) -> Thresholds:
    """The limits for `shape`: [default], overridden by [shape.<shape>]."""
    data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    merged = {**data.get("default", {}), **data.get("shape", {}).get(shape, {})}
    unknown = set(merged) - {"max_failure_ratio", "max_p95_ms"}
    if unknown:
        raise ValueError(f"{path}: unknown threshold(s) {sorted(unknown)}")
    by_request = {
        name: float(limits["max_p95_ms"]) for name, limits in data.get("requests", {}).items()
    }
    return Thresholds(
        max_failure_ratio=float(merged["max_failure_ratio"]),
        max_p95_ms=float(merged["max_p95_ms"]),
        p95_ms_by_request=by_request,
    )


def violations(
    thresholds: Thresholds, total: Entry, by_name: Mapping[str, Entry] | None = None
) -> list[str]:
    """Messages for every limit the run exceeded; empty when it passed."""
    problems: list[str] = []
    if total.num_requests == 0:
        return ["no request was made"]
    ratio = total.num_failures / total.num_requests
    if ratio > thresholds.max_failure_ratio:
        problems.append(
            f"failure ratio {ratio:.2%} > {thresholds.max_failure_ratio:.2%} "
            f"({total.num_failures} of {total.num_requests} requests)"
        )
    p95 = total.get_response_time_percentile(0.95)
    if p95 > thresholds.max_p95_ms:
        problems.append(f"p95 {p95:.0f} ms > {thresholds.max_p95_ms:.0f} ms (all requests)")
    for name, limit in thresholds.p95_ms_by_request.items():
        entry = (by_name or {}).get(name)
        if entry is None or entry.num_requests == 0:
            continue  # a request a shape did not make has no latency to judge
        p95 = entry.get_response_time_percentile(0.95)
        if p95 > limit:
            problems.append(f"p95 {p95:.0f} ms > {limit:.0f} ms ({name})")
    return problems
