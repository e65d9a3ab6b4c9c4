"""The profiling lab (`make lab`): a very short run end to end on SQLite, and its parsers.

The end-to-end test starts the real API and payments service under gunicorn, the lab's
OTLP receiver, wrk and py-spy (root here, as in CI), with tiny data and one-second
recordings, and checks the structure of what comes out: flame graphs and span summaries
for both experiments, and in each the place where the time went.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from profiling import collapsed, lab
from profiling.harness.otlp import Span, self_times


def _span(span_id: str, parent: str, start: int, end: int, service: str = "api") -> Span:
    return Span(
        trace_id="t",
        span_id=span_id,
        parent_span_id=parent,
        name=span_id,
        kind=1,
        status_code=0,
        attributes={},
        resource={"service.name": service},
        events=[],
        start_ns=start,
        end_ns=end,
    )


def test_self_time_is_duration_minus_direct_children_across_services() -> None:
    spans = [
        _span("server", "", 0, 100),
        _span("place", "server", 5, 95),
        _span("sql", "place", 10, 20),
        _span("client", "place", 30, 90),
        _span("payments", "client", 32, 88, service="payments"),
        _span("risk", "payments", 33, 87, service="payments"),
    ]
    assert self_times(spans) == {
        "server": 10,
        "place": 20,  # 90 minus the SQL (10) and the client call (60)
        "sql": 10,
        "client": 4,  # the wire: 60 minus the payments server span (56)
        "payments": 2,
        "risk": 54,
    }


def test_span_stats_group_sql_spans_by_statement() -> None:
    spans = [_span("server", "", 0, 100), _span("a", "server", 0, 30), _span("b", "server", 30, 90)]
    spans[1].name = spans[2].name = "SELECT"
    spans[1].attributes = {"db.query.text": "SELECT pg_sleep(?)"}
    spans[2].attributes = {"db.query.text": "SELECT  orders.id\n FROM orders"}
    stats = lab.span_stats(spans)
    assert [(s.name, s.statement, round(s.share, 2)) for s in stats] == [
        ("SELECT", "SELECT orders.id FROM orders", 0.6),
        ("SELECT", "SELECT pg_sleep(?)", 0.3),
        ("server", "", 0.1),
    ]


def test_collapsed_stacks_rank_functions_by_self_and_total(tmp_path: Path) -> None:
    raw = tmp_path / "worker.txt"
    raw.write_text(
        "main (app.py:1);handle (service/x.py:5);query (db.py:9) 6\n"
        "main (app.py:1);handle (service/x.py:7) 3\n"
        "main (app.py:1);handle (service/x.py:5);handle (service/x.py:6) 1\n"
        "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);wait (t.py:3) 50\n"
        'process 12:"gunicorn: worker";main (app.py:1) 2\n'
    )
    stacks = collapsed.read_stacks([raw])
    main = collapsed.profile(stacks, lambda s: not collapsed.is_background_thread(s))
    assert main.samples == 12
    top = main.top_self(2)
    assert [(f.name, f.file, f.samples) for f in top] == [
        ("query", "db.py", 6),
        ("handle", "service/x.py", 4),
    ]
    assert top[1].hottest_line == 7
    # Recursion counts once per stack.
    totals = {f.name: f.samples for f in main.top_total(5)}
    assert totals == {"main": 12, "handle": 10, "query": 6, 'process 12:"gunicorn: worker"': 2}
    assert [f.name for f in main.top_total(5, lambda file: file.startswith("service/"))] == [
        "handle"
    ]
    assert collapsed.profile(stacks, collapsed.is_background_thread).samples == 50


def test_a_short_lab_shows_what_each_tool_sees(wrk: str, tmp_path: Path) -> None:
    settings = lab._parse(
        [
            "--database-url",
            f"sqlite:///{tmp_path / 'lab.db'}",
            "--orders",
            "1000",
            "--products",
            "50",
            "--seconds",
            "1",
            "--warmup",
            "0.5",
            "--out",
            str(tmp_path),
        ]
    )
    results, report = lab.run(settings)
    by_name = {result.experiment.name: result for result in results}
    assert set(by_name) == {"cpu", "io"}

    for result in results:
        assert result.load["requests"] > 0
        assert result.load["status_errors"] == 0, result.load
        for label in ("cpu", "idle"):
            recording = result.recordings[label]
            assert len(recording.svgs) == 2  # one per gunicorn worker
            for svg in recording.svgs:
                assert "<svg" in svg.read_text()
            assert recording.profile.samples > 0
        assert result.spans, "no span arrived over OTLP"

    # CPU-bound: the report's own span holds the time, py-spy names the report's code.
    cpu = by_name["cpu"]
    assert cpu.spans[0].name == "reports.sales_in_python", cpu.spans[:3]
    assert cpu.spans[0].share > 0.5
    on_cpu = cpu.recordings["cpu"].profile
    hot = on_cpu.top_self(10) + on_cpu.top_total(10, lambda file: file.startswith("service/"))
    assert any(frame.file == "service/reports/reference.py" for frame in hot), hot

    # IO-bound: the traces name the slow dependency call or statement; the on-CPU profile
    # holds far fewer samples than the one that counts waiting threads.
    io = by_name["io"]
    top = io.spans[0]
    assert (top.name, top.service) == ("payments.risk_check", "glassbox-payments") or (
        "pg_sleep" in top.statement
    ), io.spans[:3]
    names = {(stat.name, stat.service) for stat in io.spans}
    assert ("payments.risk_check", "glassbox-payments") in names
    assert any("pg_sleep" in stat.statement for stat in io.spans)
    assert io.recordings["cpu"].profile.samples < io.recordings["idle"].profile.samples

    # The report embeds every flame graph by a relative link that resolves.
    text = report.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.svg)\)", text)
    assert len(links) == 8
    assert all((report.parent / link).is_file() for link in links)
    assert "payments.risk_check" in text
    assert "reports.sales_in_python" in text
    summaries = list((tmp_path / "lab").glob("*/summary.json"))
    assert len(summaries) == 1
    assert set(json.loads(summaries[0].read_text())) == {"cpu", "io"}


def test_request_threads_of_the_threaded_worker_are_not_background(tmp_path: Path) -> None:
    # The threaded worker runs requests in a pool thread; its main thread only polls.
    raw = tmp_path / "worker.txt"
    pool = "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);"
    pool += "_worker (concurrent/futures/thread.py:83);"
    pool += "_WorkItem.run (concurrent/futures/thread.py:58)"
    raw.write_text(
        "<module> (gunicorn/__main__.py:10);EpollSelector.select (selectors.py:468) 3\n"
        f"{pool};sales (service/reports/reference.py:40) 40\n"
        "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);wait (t.py:3) 50\n"
    )
    stacks = collapsed.read_stacks([raw])
    main = collapsed.profile(stacks, lambda s: not collapsed.is_background_thread(s))
    assert main.samples == 43
    assert main.top_self(1)[0].file == "service/reports/reference.py"
    assert collapsed.profile(stacks, collapsed.is_background_thread).samples == 50
