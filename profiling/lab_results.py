"""What the lab works with and finds: its settings, an experiment, a recording, a result,
and the spans it received grouped by self time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiling import collapsed
from profiling.harness.otlp import Span, self_times

WORKERS = 2  # gunicorn workers of the API and of the payments service


@dataclass(frozen=True)
class Settings:
    database_url: str
    orders: int
    products: int
    seconds: float  # length of each py-spy window
    warmup: float
    rate: int
    connections: int
    payments_latency_ms: int
    sql_delay_ms: int
    order_share: int
    experiments: tuple[str, ...]
    out: Path
    top: int = 8


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    api_env: dict[str, str]
    payments_env: dict[str, str]
    report_path: str
    order_share: int  # percent of requests that place an order, the rest GET report_path

    @property
    def description(self) -> str:
        if self.order_share == 0:
            return f"GET {self.report_path}"
        return (
            f"{self.order_share}% POST /api/v1/orders, "
            f"{100 - self.order_share}% GET {self.report_path}"
        )


@dataclass(frozen=True)
class SpanStat:
    service: str
    name: str
    statement: str  # db.query.text of SQL spans, else empty
    count: int
    self_s: float
    duration_s: float
    share: float  # of all self time received

    @property
    def label(self) -> str:
        # A SQL span's name is the statement's start: its text says which statement it was.
        return f"SQL {shorten(self.statement, 44)!r}" if self.statement else self.name


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def span_stats(spans: Sequence[Span]) -> list[SpanStat]:
    """Spans grouped by service, name and SQL text, by total self time, largest first."""
    own = self_times(spans)
    total_self = sum(own.values()) or 1
    groups: dict[tuple[str, str, str], list[Span]] = defaultdict(list)
    for span in spans:
        statement = " ".join(str(span.attributes.get("db.query.text", "")).split())
        groups[(span.service, span.name, statement)].append(span)
    stats = [
        SpanStat(
            service=service,
            name=name,
            statement=statement,
            count=len(members),
            self_s=sum(own[s.span_id] for s in members) / 1e9,
            duration_s=sum(s.duration_ns for s in members) / 1e9,
            share=sum(own[s.span_id] for s in members) / total_self,
        )
        for (service, name, statement), members in groups.items()
    ]
    return sorted(stats, key=lambda stat: stat.self_s, reverse=True)


@dataclass
class Recording:
    label: str  # "cpu": py-spy's default (on-CPU); "idle": --idle (waiting threads too)
    svgs: list[Path]
    raws: list[Path]
    window_s: float
    rate: int
    profile: collapsed.Profile  # the workers' request threads (event loop and pool)
    background_samples: int  # OpenTelemetry's export threads and other helper threads
    py_spy: list[str] = field(default_factory=list)  # py-spy's "Samples: N Errors: E" lines

    @property
    def busy_share(self) -> float:
        """Request-thread samples per sampling tick: the share of time the workers were sampled
        running (on-CPU) or, with --idle, present at all (one per thread: the event loop
        and each of the WEB_THREADS pool threads)."""
        ticks = self.window_s * self.rate * len(self.raws)
        return self.profile.samples / ticks if ticks else 0.0


@dataclass
class Result:
    experiment: Experiment
    load: dict[str, Any]
    load_seconds: float
    recordings: dict[str, Recording]
    spans: list[SpanStat]
    span_count: int
    traces: int
