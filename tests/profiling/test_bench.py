"""The `make bench` harness: paired ratios, targets, the OTLP sink, and a short real run."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from profiling import bench, bench_report
from profiling.bench_report import Run
from profiling.bench_variants import VARIANTS
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
        run("peer_product", 0, 1000),
        run("peer_list_first", 0, 400),
        run("product_cached", 0, 1100),
        run("product_uncached", 0, 300),
        run("list_first", 0, 100, p50=10),
        run("list_deep", 0, 90, p50=16),
    ]
    verdicts = {v["name"]: v["verdict"] for v in bench_report.evaluate(runs)}
    assert verdicts["cached read / peer's uncached read, telemetry default"] == "PASS"
    assert verdicts["uncached read / peer, telemetry default"] == "FAIL"
    assert verdicts["first page / peer's first page, telemetry default"] == "FAIL"
    assert verdicts["deep page / first page, p50 latency"] == "FAIL"
    assert verdicts["uncached read: telemetry default / off"] == "SKIP"


def test_the_tail_target_is_p99_over_p50_of_one_variant() -> None:
    calm = Run("product_cached_half_rate", 0, 500, 2.0, 3.0, 5.0, 100, 0, 0)  # 2.5
    spiky = Run("product_uncached_half_rate", 0, 300, 2.0, 3.0, 9.0, 100, 0, 0)  # 4.5
    verdicts = {v["name"]: v for v in bench_report.evaluate([calm, spiky])}

    assert verdicts["cached read at about half rate: p99 / p50"]["ratio"] == pytest.approx(2.5)
    assert verdicts["cached read at about half rate: p99 / p50"]["verdict"] == "PASS"
    assert verdicts["uncached read at about half rate: p99 / p50"]["verdict"] == "FAIL"


def test_the_memory_target_compares_the_largest_worker_with_the_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench_report, "MEMORY_BASELINE_MB", 100.0)
    name = "RSS per worker (cached read's server) / baseline"

    def verdict(workers: list[float]) -> dict[str, Any]:
        found = bench_report.evaluate([], {"product_cached": workers})
        return next(v for v in found if v["name"] == name)

    assert verdict([90.0, 120.0])["ratio"] == pytest.approx(1.2)
    assert verdict([90.0, 120.0])["verdict"] == "PASS"
    assert verdict([90.0, 160.0])["verdict"] == "FAIL"
    assert verdict([])["verdict"] == "SKIP"


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
    wrk: str,
    pg_app: Flask,
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The half-rate variant is measured on product_cached's server: asking for it starts that.
    asked = ["peer_product", "peer_list_first", "product_cached_half_rate", "list_first"]
    asked += ["list_deep", "product_cached_granian", "product_cached_profiled"]
    settings = ["--products", "300", "--seconds", "1", "--rounds", "2", "--warmup", "1"]
    services = ["--database-url", postgres_url, "--redis-url", redis_url]
    code = bench.main(["--variants", ",".join(asked), *settings, *services, "--out", str(tmp_path)])

    assert code == 0
    names = [v.name for v in VARIANTS if v.name in {*asked, "product_cached"}]
    result = json.loads((tmp_path / "bench-latest.json").read_text())
    order = [(r["round"], r["variant"]) for r in result["runs"]]
    assert order == [(0, n) for n in names] + [(1, n) for n in reversed(names)]
    for name in names:
        row = result["summary"][name]
        assert row["rps"] > 0
        assert row["bad_status"] == 0, name
    verdicts = {t["name"]: t["verdict"] for t in result["targets"]}
    assert verdicts["first page / peer's first page, telemetry default"] in ("PASS", "FAIL")
    assert verdicts["cached read / peer's uncached read, telemetry default"] in ("PASS", "FAIL")
    assert verdicts["cached read at about half rate: p99 / p50"] in ("PASS", "FAIL")
    assert verdicts["deep page / first page, p50 latency"] in ("PASS", "FAIL")
    assert verdicts["cached read: continuous profiling on / off"] in ("PASS", "FAIL")
    assert verdicts["uncached read / peer, telemetry default"] == "SKIP"  # not among the variants
    assert result["peer_ratios"]["list_first"] > 0  # over the peer's first page
    assert result["peer_ratios"]["product_cached"] > 0  # over the peer's product read
    # Every server's workers, measured after the run; none for a variant on another's server.
    for name in ("peer_product", "product_cached", "list_first", "product_cached_granian"):
        assert len(result["memory_mb"][name]) == 2, name
        assert all(mb > 10 for mb in result["memory_mb"][name])
    assert "product_cached_half_rate" not in result["memory_mb"]
    # The deep page really was deep: the harness checked its first id before measuring.
    assert "&cursor=" in result["variants"]["list_deep"]["path"]
    assert (tmp_path / "bench-latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert re.search(r"^  (PASS|FAIL) .* first page / peer's first page", printed, re.MULTILINE)
    assert re.search(r"^list_first +\d+ .*\d\.\d\d", printed, re.MULTILINE)
