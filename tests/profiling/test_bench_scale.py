"""`make bench-report`'s verdicts and table (profiling/bench_scale.py); the run itself is
minutes of seeding and is not part of the suite."""

from __future__ import annotations

from profiling.bench_scale import Goal, p99, table


def test_a_goal_passes_at_or_under_its_target_and_says_when_unmeasured() -> None:
    assert Goal("report", 0.5, "s", 0.5).verdict == "PASS"
    assert Goal("report", 0.5, "s", 0.51).verdict == "FAIL"
    assert Goal("seeding", 180, "s", None).verdict == "n/a"


def test_p99_interpolates_and_takes_a_single_sample_as_it_is() -> None:
    assert p99([0.2]) == 0.2
    assert p99([float(n) for n in range(1, 102)]) == 100.0


def test_the_table_prints_each_goal_with_its_verdict() -> None:
    goals = [
        {**vars(Goal("report, 30 days, p99 uncached", 0.5, "s", 0.123)), "verdict": "PASS"},
        {**vars(Goal("worker RSS growth", 10, "MB", 12.0)), "verdict": "FAIL"},
    ]
    result = {"products": 10, "orders": 20, "reports": 3, "cached_reports": 5, "searches": 4}
    text = table({**result, "goals": goals})
    lines = text.splitlines()
    assert lines[0].startswith("10 products, 20 orders")
    assert lines[2].split()[-3:] == ["123.0", "ms", "PASS"]
    assert lines[3].endswith("12.0 MB  FAIL")
