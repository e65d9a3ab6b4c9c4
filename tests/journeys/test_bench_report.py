"""`make bench-report` as docs/measurement.md runs it, on a small shop: every request it
times is answered (a refused report would time a 401, not the report)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.journeys.conftest import make, user_env


def test_make_bench_report_times_answered_reports_and_searches(
    tree: Path, journey_database: str
) -> None:
    env = user_env(
        BENCH_SCALE_DATABASE_URL=journey_database,
        BENCH_SCALE_ORDERS="3000",
        BENCH_SCALE_PRODUCTS="3000",
    )
    out = make(tree, "bench-report", env=env, timeout=600)

    result = json.loads((tree / "profiling" / "results" / "bench-scale.json").read_text())
    assert (result["orders"], result["products"]) == (3000, 3000), out
    goals = {goal["name"]: goal for goal in result["goals"]}
    assert len(goals) == 8, out
    for name, goal in goals.items():
        assert goal["measured"] is not None, (name, out)
        assert goal["note"] == "", (name, goal["note"])  # what failed, if anything did
    for goal in result["goals"]:
        assert f"{goal['name']:<40}" in out
