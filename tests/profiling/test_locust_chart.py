"""profiling/locust_chart.py: a PNG from Locust's stats history CSV."""

from __future__ import annotations

from pathlib import Path

from profiling import locust_chart

HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,"
    "99.9%,99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,"
    "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
    "Total Average Content Size\n"
)


def _row(stamp: int, users: int, name: str, rps: float, p50: str, p95: str) -> str:
    return (
        f"{stamp},{users},,{name},{rps},0.0,{p50},0,0,0,0,{p95},0,0,0,0,0,10,0,10,10.0,1,90,100\n"
    )


def test_history_becomes_a_chart_and_says_which_percentiles(tmp_path: Path) -> None:
    history = tmp_path / "spike_stats_history.csv"
    history.write_text(
        HEADER
        + _row(100, 0, "Aggregated", 0.0, "N/A", "N/A")
        + _row(101, 10, "Aggregated", 5.0, "12", "40")
        + _row(103, 60, "Aggregated", 20.0, "15", "300")
    )
    points, windowed = locust_chart.read_history(history)
    assert [(p.seconds, p.users, p.p95_ms) for p in points] == [
        (0.0, 0, None),
        (1.0, 10, 40.0),
        (3.0, 60, 300.0),
    ]
    assert windowed is False

    with history.open("a") as handle:
        handle.write(_row(104, 60, "/api/v1/products", 3.0, "10", "20"))
    assert locust_chart.read_history(history)[1] is True

    output = tmp_path / "chart.png"
    assert locust_chart.main([str(history), "-o", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
