"""Thresholds: one file, per-shape overrides, and the verdict on a run's statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtests.thresholds import THRESHOLDS_FILE, Thresholds, load_thresholds, violations


@dataclass
class FakeEntry:
    """Stands in for locust's StatsEntry (importing locust would gevent-patch pytest)."""

    num_requests: int
    num_failures: int
    p95_ms: float

    def get_response_time_percentile(self, percent: float) -> float:
        assert percent == 0.95
        return self.p95_ms


LIMITS = Thresholds(max_failure_ratio=0.01, max_p95_ms=500, p95_ms_by_request={"/a/{id}": 100})


def test_the_committed_file_loads_for_every_shape() -> None:
    from loadtests.shapes import SHAPES

    for shape in SHAPES:
        limits = load_thresholds(shape, THRESHOLDS_FILE)
        assert 0 <= limits.max_failure_ratio < 1
        assert limits.max_p95_ms > 0


def test_shape_section_overrides_default(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        "[default]\nmax_failure_ratio = 0.01\nmax_p95_ms = 500\n"
        "[shape.smoke]\nmax_p95_ms = 3000\n"
        '[requests."/x"]\nmax_p95_ms = 50\n'
    )
    assert load_thresholds("smoke", path) == Thresholds(0.01, 3000, {"/x": 50})
    assert load_thresholds("steady", path) == Thresholds(0.01, 500, {"/x": 50})


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[default]\nmax_failure_ratio = 0.01\nmax_p95_ms = 500\nmax_p99 = 1\n")
    with pytest.raises(ValueError, match="max_p99"):
        load_thresholds("smoke", path)


def test_a_run_within_limits_passes() -> None:
    total = FakeEntry(1000, 10, 499)
    assert violations(LIMITS, total, {"/a/{id}": FakeEntry(500, 0, 99)}) == []


def test_failure_ratio_and_p95_over_limits_are_reported() -> None:
    problems = violations(LIMITS, FakeEntry(1000, 11, 501))
    assert len(problems) == 2
    assert "failure ratio 1.10%" in problems[0]
    assert "p95 501 ms > 500 ms" in problems[1]


def test_per_request_limit_is_checked_only_when_the_request_ran() -> None:
    total = FakeEntry(1000, 0, 100)
    assert violations(LIMITS, total, {"/a/{id}": FakeEntry(0, 0, 0)}) == []
    problems = violations(LIMITS, total, {"/a/{id}": FakeEntry(10, 0, 150)})
    assert problems == ["p95 150 ms > 100 ms (/a/{id})"]


def test_a_run_without_requests_fails() -> None:
    assert violations(LIMITS, FakeEntry(0, 0, 0)) == ["no request was made"]
