"""py-spy against real gunicorn workers (root here, as in CI), and reading its output."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from flask import Flask

from profiling import capture, pyspy
from profiling.harness.gunicorn import gunicorn
from service.seed import seed_products


def test_top_frames_counts_self_and_total_time(tmp_path: Path) -> None:
    frames = [{"name": n, "file": f"/app/{n}.py", "line": 1} for n in ("main", "handle", "query")]
    data = {
        "shared": {"frames": frames},
        "profiles": [
            {"type": "sampled", "samples": [[0, 1, 2], [0, 1, 2], [0, 1]], "weights": [1, 1, 1]},
            {"type": "sampled", "samples": [[0]], "weights": [1]},
        ],
    }
    path = tmp_path / "p.speedscope.json"
    path.write_text(json.dumps(data))

    by_self = pyspy.top_frames(path, 2)
    assert [(f.name, f.self_share) for f in by_self] == [("query", 0.5), ("handle", 0.25)]
    by_total = pyspy.top_frames(path, 3, by="total")
    assert [(f.name, f.total_share) for f in by_total] == [
        ("main", 1.0),
        ("handle", 0.75),
        ("query", 0.5),
    ]
    assert [f.name for f in pyspy.top_frames(path, 5, file_contains="query")] == ["query"]
    assert pyspy.sample_count(path) == 4


def test_missing_master_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(pyspy.ProfilingError, match="cannot read a PID"):
        pyspy.master_from_pid_file(tmp_path / "missing.pid")


def test_make_profile_records_every_worker_under_load(
    pg_app: Flask,
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As `make profile` runs beside `make serve`: the load's API keys go to the server's database.
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    with pg_app.app_context():
        seed_products(100, rng=random.Random(7))
    env = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url, "RATELIMIT_ENABLED": "false"}
    out = tmp_path / "profile"
    with gunicorn(env, workers=2, log_path=tmp_path / "gunicorn.log") as server:
        port = server.port
        assert pyspy.master_listening_on(port) == server.pid
        workers = pyspy.workers_of(server.pid)
        assert len(workers) == 2
        args = ["--url", server.base_url, "--seconds", "2", "--warmup", "1", "--load", "locust"]
        code = capture.main([*args, "--out", str(out)])

    assert code == 0
    for pid in workers:
        for label in ("cpu", "idle"):
            svg = (out / f"worker-{pid}-{label}.svg").read_text()
            assert "<svg" in svg
            speedscope = out / f"worker-{pid}-{label}.speedscope.json"
            assert pyspy.sample_count(speedscope) > 0
        dump = (out / f"worker-{pid}-dump.txt").read_text()
        assert f"Process {pid}" in dump
        assert "gunicorn" in dump
    summary = (out / "summary.md").read_text()
    assert f"worker {workers[0]}, idle" in summary
    assert "Recorded without load" not in summary
    assert "No request handled" not in summary
    assert " 0 unauthorised (401), 0 refused by the rate limiter (429)" in summary
    # The load ran and Locust wrote its report on the way out (SIGINT).
    assert (out / "load_stats.csv").exists()
    assert (out / "load.html").exists()


def _speedscope(path: Path, stacks: list[list[str]]) -> Path:
    names = sorted({name for stack in stacks for name in stack})
    frames = [{"name": name, "file": f"/x/{name}.py", "line": 1} for name in names]
    samples = [[names.index(name) for name in stack] for stack in stacks]
    profile = {"type": "sampled", "samples": samples, "weights": [1] * len(samples)}
    path.write_text(json.dumps({"shared": {"frames": frames}, "profiles": [profile]}))
    return path


def test_the_summary_flags_a_recording_without_load_or_requests(tmp_path: Path) -> None:
    busy = [["SyncWorker.run", "SyncWorker.handle_request", "Flask.wsgi_app"]] * 3
    idle = [["SyncWorker.run", "SyncWorker.wait"]] * 4
    recordings = [
        pyspy.Recording(1, label, tmp_path / f"{label}.svg", tmp_path / f"{label}.json")
        for label in ("cpu", "idle")
    ]
    _speedscope(recordings[0].speedscope, busy + idle[:1])
    _speedscope(recordings[1].speedscope, idle)
    (tmp_path / "load_stats.csv").write_text(
        "Type,Name,Request Count\nGET,/api/v1/products,90\n,Aggregated,100\n"
    )
    (tmp_path / "load_failures.csv").write_text(
        "Method,Name,Error,Occurrences\n"
        "POST,/api/v1/orders,CatchResponseError('status 401 Unauthorized'),3\n"
        "GET,/api/v1/products,CatchResponseError('status 429 Too Many Requests'),5\n"
        "GET,/api/v1/products?q=,CatchResponseError('status 429 Too Many Requests'),2\n"
        "GET,/api/v1/products,CatchResponseError('invalid body: no items'),1\n"
    )
    args = capture._parse(["--seconds", "1"])

    summary = capture._summary(args, 9, [1], recordings, [], unloaded={"idle"})

    cpu, idle_part = summary.split("## worker 1, idle")
    assert "Recorded without load" not in cpu
    assert "No request handled" not in cpu
    assert "Handling requests: 75.0% of the samples" in cpu
    assert "Recorded without load" in idle_part
    assert "No request handled" in idle_part
    assert "100 requests, 3 unauthorised (401), 7 refused by the rate limiter (429)" in summary
    assert "the profile shows requests being refused, not served" in summary
