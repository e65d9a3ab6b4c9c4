"""The `make bench` harness: paired ratios, targets, the OTLP sink, and a short real run."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from gunicorn.config import Config

from profiling import bench, bench_report
from profiling.bench_report import Run
from profiling.bench_variants import HOT_IDS, LEVERS, SYNC, VARIANTS, expand
from profiling.harness.git_tree import commit_of, extracted_tree, tree_env
from profiling.harness.otlp import otlp_sink
from profiling.harness.processes import free_port


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


def test_round_ratios_are_listed_in_round_order() -> None:
    runs = [run("a", 1, 100), run("b", 1, 70), run("b", 0, 50), run("a", 0, 100)]
    assert bench_report.round_ratios(runs, "b", "a", "rps") == pytest.approx([0.5, 0.7])


def test_the_lever_table_prints_each_lever_with_and_without_per_round() -> None:
    runs = []
    for round_, limited in enumerate((50, 60, 70)):
        runs += [run("product_cached", round_, 100), run("product_cached_limited", round_, limited)]
        runs += [run("product_cached_sync", round_, 125)]
    rows = bench_report.lever_rows(runs)
    # Only the levers whose two variants ran; the ratio is with / without.
    assert [(r["lever"], r["with"], r["without"]) for r in rows] == [
        ("reads whole, keep-alive / sync worker", "product_cached", "product_cached_sync"),
        ("rate limiter (Redis)", "product_cached_limited", "product_cached"),
    ]
    assert rows[1]["ratios"] == pytest.approx([0.5, 0.6, 0.7])
    assert rows[1]["median"] == pytest.approx(0.6)

    printed = bench_report.format_report({}, runs, [], [])
    assert re.search(
        r"^  rate limiter \(Redis\) +product_cached_limited +product_cached +0\.50 0\.60 0\.70 "
        r"+0\.60$",
        printed,
        re.MULTILINE,
    )
    assert re.search(
        r"^  reads whole, keep-alive / sync worker .* 0\.80 0\.80 0\.80 +0\.80$", printed, re.M
    )


def test_every_lever_names_two_variants_that_exist() -> None:
    names = {v.name for v in VARIANTS}
    for lever in LEVERS:
        assert {lever.on, lever.off} <= names, lever
        assert lever.on != lever.off


def test_the_sync_lever_is_gunicorns_sync_worker() -> None:
    # As gunicorn applies GUNICORN_CMD_ARGS over a config file (BaseApplication.load_config).
    config = Config()
    config.set("worker_class", "service.gunicorn_worker.DrainingThreadWorker")
    args = config.parser().parse_args(shlex.split(SYNC["GUNICORN_CMD_ARGS"]))
    for name, value in vars(args).items():
        if value is not None and name != "args":
            config.set(name.lower(), value)
    assert config.worker_class_str == "sync"
    assert config.threads == 1  # more would make gunicorn run gthread instead


def test_groups_expand_to_their_variants_once_each() -> None:
    names = expand(["levers", "product_cached", "before"])
    assert len(names) == len(set(names))
    assert {"product_cached_limited", "product_uncached_pooler_tx", "before_list_first"} <= set(
        names
    )
    assert {"peer_product", "peer_list_first"} <= set(names)  # the before/after table's / peer


def test_the_before_after_table_pairs_each_goal_read_with_its_baseline() -> None:
    kinds = [v for v in VARIANTS if v.name in {"peer_product", "product_cached"}]
    kinds += [v for v in VARIANTS if v.name == "before_product_cached"]
    runs = []
    for round_, after in enumerate((900, 1100)):
        runs += [run("peer_product", round_, 1000), run("before_product_cached", round_, 300)]
        runs += [run("product_cached", round_, after)]
    table = bench_report.summarise(runs, kinds)
    rows = bench_report.before_after_rows(runs, table, kinds)

    assert len(rows) == 1  # the uncached read and the first page did not run
    row = rows[0]
    assert row["before_to_peer"] == pytest.approx(0.3)
    assert row["after_to_peer"] == pytest.approx(1.0)
    assert row["goal_to_peer"] == 1.0
    assert row["after_over_before_per_round"] == pytest.approx([3.0, 1100 / 300])
    printed = bench_report.format_report(
        table, runs, [], kinds, before_after=rows, baseline="v0 (abc)"
    )
    assert "before → after (before: glassbox at v0 (abc)" in printed
    assert re.search(
        r"^  cached read +300 +0\.30 +1000 +1\.00 +1\.00 +3\.33$", printed, re.MULTILINE
    )


def test_a_commit_is_extracted_importable_and_removed(tmp_path: Path) -> None:
    commit = commit_of("HEAD")
    assert commit is not None
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    with extracted_tree(commit) as tree:
        assert (tree / "service" / "gunicorn_conf.py").is_file()
        assert (tree / "profiling" / "bench_apps.py").is_file()
        # Run as the bench runs a before_* server: its `service` is the extracted one.
        found = subprocess.run(
            [sys.executable, "-c", "import service, profiling.bench_apps; print(service.__file__)"],
            cwd=tmp_path,
            env={**tree_env(tree), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert Path(found.stdout.strip()) == tree / "service" / "__init__.py"
    assert not tree.exists()


def test_a_missing_baseline_ref_skips_the_before_variants_and_says_so(
    wrk: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "no-such-ref-for-the-bench"
    assert commit_of(missing) is None
    asked = ["--variants", "bare_wsgi,before_product_cached", "--baseline-ref", missing]
    short = ["--seconds", "1", "--rounds", "1", "--warmup", "1", "--out", str(tmp_path)]
    assert bench.main([*asked, *short]) == 0

    printed = capsys.readouterr().out
    assert f"the baseline ref '{missing}' is not a commit of this repository" in printed
    assert "skipping before_product_cached" in printed
    result = json.loads((tmp_path / "bench-latest.json").read_text())
    assert list(result["summary"]) == ["bare_wsgi"]
    assert result["baseline"]["commit"] is None
    assert result["before_after"] == []
    assert not (tmp_path / "bench-latest-before-after.png").exists()


class _CountingServer:
    """A stand-in bench server that answers every GET with {} and remembers the paths."""

    def __init__(self) -> None:
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.seen = seen
        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{path}"

    def worker_pids(self) -> set[int]:
        return set()

    def stop(self, timeout: float = 30) -> None:
        self.http.shutdown()
        self.http.server_close()


def test_a_cached_variant_reads_each_hot_id_once_before_its_run() -> None:
    server = _CountingServer()
    catalog = bench.Catalog(min_id=5, max_id=900, count=896, deep_cursor="", deep_first_id=0)
    by_name = {v.name: v for v in VARIANTS}
    try:
        bench.prime_cache(by_name["before_product_cached"], server, catalog)
        assert server.seen == [f"/api/v1/products/{i}" for i in range(5, 5 + HOT_IDS)]
        server.seen.clear()
        bench.prime_cache(by_name["product_uncached"], server, catalog)  # ids over all: none
        assert server.seen == []
    finally:
        server.stop()


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
    # A lever, and the cached read before: this checkout's own commit stands for the baseline
    # (any clone has it; the default ref may be missing from a shallow one).
    asked += ["product_cached_limited", "before_product_cached"]
    settings = ["--products", "300", "--seconds", "1", "--rounds", "2", "--warmup", "1"]
    services = ["--database-url", postgres_url, "--redis-url", redis_url]
    baseline = ["--baseline-ref", "HEAD"]
    code = bench.main(
        ["--variants", ",".join(asked), *settings, *services, *baseline, "--out", str(tmp_path)]
    )

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
    # The lever table: with / without in each of the two rounds, then the median.
    ratio = r"\d+\.\d\d"
    for lever, on in (
        ("rate limiter", "product_cached_limited"),
        ("continuous profiling", "product_cached_profiled"),
    ):
        assert re.search(
            rf"^  {lever}.* {on} +product_cached +{ratio} {ratio} +{ratio}$", printed, re.M
        ), lever
    levers = {(r["with"], r["without"]): r for r in result["levers"]}
    assert len(levers["product_cached_limited", "product_cached"]["ratios"]) == 2
    # Before and after: the baseline commit served beside this checkout, from a removed copy.
    assert re.fullmatch(r"[0-9a-f]{40}", result["baseline"]["commit"])
    assert result["variants"]["before_product_cached"]["before"] is True
    assert len(result["memory_mb"]["before_product_cached"]) == 2
    assert re.search(
        rf"^  cached read +\d+ +{ratio} +\d+ +{ratio} +1\.00 +{ratio}$", printed, re.MULTILINE
    )
    [row] = result["before_after"]
    assert (row["before"], row["after"], row["peer"]) == (
        "before_product_cached",
        "product_cached",
        "peer_product",
    )
    assert row["after_over_before"] > 0
    assert len(row["after_over_before_per_round"]) == 2
    assert (tmp_path / "bench-latest-before-after.png").read_bytes()[:4] == b"\x89PNG"
