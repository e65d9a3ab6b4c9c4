"""The `make bench` harness: paired ratios, targets, the OTLP sink, and a short real run."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from flask import Flask

from profiling import bench, bench_report
from profiling.bench_report import Run
from profiling.harness.otlp import otlp_sink


def run(variant: str, round_: int, rps: float, p50: float = 1.0) -> Run:
    return Run(variant, round_, rps, p50, p50, p50, 100, 0, 0)


def test_ratios_pair_runs_of_the_same_round() -> None:
    runs = [
        run("a", 0, 100), run("b", 0, 50),  # 0.5
        run("a", 1, 200), run("b", 1, 120),  # 0.6
        run("a", 2, 100), run("b", 2, 90),  # 0.9
    ]  # fmt: skip
    assert bench_report.paired_ratio(runs, "b", "a", "rps") == pytest.approx(0.6)
    assert bench_report.paired_ratio(runs, "c", "a", "rps") is None


def test_targets_pass_fail_and_skip() -> None:
    runs = [
        run("bare_wsgi", 0, 1000),
        run("product_cached", 0, 750),
        run("product_uncached", 0, 200),
        run("list_first", 0, 100, p50=10),
        run("list_deep", 0, 90, p50=16),
    ]
    verdicts = {v["name"]: v["verdict"] for v in bench_report.evaluate(runs)}
    assert verdicts["cached read / bare WSGI, telemetry on"] == "PASS"
    assert verdicts["uncached read / bare WSGI, telemetry on"] == "FAIL"
    assert verdicts["deep page / first page, p50 latency"] == "FAIL"
    assert verdicts["uncached read: telemetry default / off"] == "SKIP"


def test_otlp_sink_accepts_and_counts_exports() -> None:
    with otlp_sink() as sink:
        request = urllib.request.Request(  # noqa: S310 - the local sink
            sink.url + "/v1/traces",
            data=b"\x0a\x00",
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            assert response.status == 200
    assert sink.counts == {"/v1/traces": 1}


def test_a_short_bench_alternates_variants_and_writes_json_and_png(
    wrk: str, pg_app: Flask, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    names = ["bare_wsgi", "list_first", "list_deep"]
    settings = ["--products", "300", "--seconds", "1", "--rounds", "2", "--warmup", "1"]
    services = ["--database-url", postgres_url, "--redis-url", redis_url]
    code = bench.main(["--variants", ",".join(names), *settings, *services, "--out", str(tmp_path)])

    assert code == 0
    result = json.loads((tmp_path / "bench-latest.json").read_text())
    order = [(r["round"], r["variant"]) for r in result["runs"]]
    assert order == [(0, n) for n in names] + [(1, n) for n in reversed(names)]
    for name in names:
        row = result["summary"][name]
        assert row["rps"] > 0
        assert row["bad_status"] == 0, name
    verdicts = {t["name"]: t["verdict"] for t in result["targets"]}
    assert verdicts["deep page / first page, p50 latency"] in ("PASS", "FAIL")
    assert verdicts["cached read / bare WSGI, telemetry on"] == "SKIP"  # not among the variants
    # The deep page really was deep: the harness checked its first id before measuring.
    assert "&cursor=" in result["variants"]["list_deep"]["path"]
    assert (tmp_path / "bench-latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
