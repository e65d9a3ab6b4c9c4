"""Check a running stack end to end through each backend's HTTP API (`make stack-check`).

After some traffic (`make load`), every signal must have arrived and be joined:
1. Jaeger: a trace of glassbox-api that includes a glassbox-payments span (the payments hop);
2. Prometheus: the request-duration histogram of glassbox-api, with an exemplar (trace_id);
3. Loki: a log line of glassbox-api carrying that Jaeger trace's id (else the exemplar's);
4. Pyroscope: a CPU profile of glassbox-api with samples.
Each check polls until it passes or the deadline passes (data arrives in batches). Standard
library only, so it runs anywhere Python does. Exit status 0 when all pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

API_SERVICE = "glassbox-api"
PAYMENTS_SERVICE = "glassbox-payments"
HISTOGRAM = "http_server_request_duration_seconds_bucket"
CPU_PROFILE = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"


class CheckFailed(AssertionError):
    """A backend answered, but without what the check needs (yet)."""


@dataclass(frozen=True)
class Stack:
    jaeger: str = "http://127.0.0.1:16686"
    prometheus: str = "http://127.0.0.1:9090"
    loki: str = "http://127.0.0.1:3100"
    pyroscope: str = "http://127.0.0.1:4040"


def _get(url: str, params: dict[str, Any] | None = None) -> Any:
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (http(s) URLs given)
        return json.load(response)


def _post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310 (http(s) URLs given)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.load(response)


def trace_with_payments_hop(stack: Stack) -> str:
    """The id of a glassbox-api trace in Jaeger that has a glassbox-payments span."""
    found = _get(
        f"{stack.jaeger}/api/traces",
        {"service": API_SERVICE, "operation": "POST /api/v1/orders", "limit": 50, "lookback": "1h"},
    )
    for trace in found.get("data") or []:
        services = {p["serviceName"] for p in trace.get("processes", {}).values()}
        if PAYMENTS_SERVICE in services and API_SERVICE in services:
            return str(trace["traceID"])
    raise CheckFailed(f"Jaeger: no {API_SERVICE} trace with a {PAYMENTS_SERVICE} span yet")


def histogram_with_exemplar(stack: Stack) -> str:
    """A trace id from an exemplar of the request-duration histogram in Prometheus."""
    selector = f'{HISTOGRAM}{{job="{API_SERVICE}"}}'
    series = _get(f"{stack.prometheus}/api/v1/query", {"query": selector})
    if not series.get("data", {}).get("result"):
        raise CheckFailed(f"Prometheus: no {selector} series yet")
    now = time.time()
    exemplars = _get(
        f"{stack.prometheus}/api/v1/query_exemplars",
        {"query": selector, "start": now - 3600, "end": now},
    )
    for group in exemplars.get("data") or []:
        for exemplar in group.get("exemplars", []):
            trace_id = exemplar.get("labels", {}).get("trace_id")
            if trace_id:
                return str(trace_id)
    raise CheckFailed(f"Prometheus: {selector} has no exemplar with a trace_id yet")


def log_line_of_trace(stack: Stack, trace_id: str) -> str:
    """A glassbox-api log line in Loki that carries `trace_id`."""
    now_ns = time.time_ns()
    found = _get(
        f"{stack.loki}/loki/api/v1/query_range",
        {
            "query": f'{{service_name="{API_SERVICE}"}} | trace_id="{trace_id}"',
            "start": now_ns - 3600 * 10**9,
            "end": now_ns,
            "limit": 10,
        },
    )
    for stream in found.get("data", {}).get("result", []):
        for _, line in stream.get("values", []):
            return str(line)
    raise CheckFailed(f"Loki: no {API_SERVICE} log line with trace_id {trace_id} yet")


def cpu_profile(stack: Stack) -> int:
    """Total samples of glassbox-api's CPU profile over the last hour in Pyroscope."""
    now_ms = int(time.time() * 1000)
    merged = _post_json(
        f"{stack.pyroscope}/querier.v1.QuerierService/SelectMergeStacktraces",
        {
            "profileTypeID": CPU_PROFILE,
            "labelSelector": f'{{service_name="{API_SERVICE}"}}',
            "start": now_ms - 3_600_000,
            "end": now_ms,
        },
    )
    total = int((merged.get("flamegraph") or {}).get("total") or 0)
    if total <= 0:
        raise CheckFailed(f"Pyroscope: no {CPU_PROFILE} samples of {API_SERVICE} yet")
    return total


def poll(name: str, check: Callable[[], Any], deadline: float, interval: float) -> Any:
    """`check()` until it passes or `deadline` (time.monotonic()) passes."""
    while True:
        try:
            return check()
        except (CheckFailed, OSError, ValueError, KeyError) as problem:
            if time.monotonic() >= deadline:
                raise CheckFailed(f"{name}: {problem}") from problem
        time.sleep(interval)


def check_stack(stack: Stack, *, timeout: float = 180.0, interval: float = 5.0) -> list[str]:
    """Run every check; the list of failures (empty when the stack is joined up)."""
    deadline = time.monotonic() + timeout
    failures = []
    trace_id = None
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("trace with the payments hop", lambda: trace_with_payments_hop(stack)),
        ("histogram with an exemplar", lambda: histogram_with_exemplar(stack)),
        ("profile", lambda: cpu_profile(stack)),
    ]
    for name, step in steps:
        try:
            result = poll(name, step, deadline, interval)
        except CheckFailed as failure:
            failures.append(str(failure))
            continue
        print(f"ok  {name}: {result}")
        # The log check looks for the Jaeger trace's id, else for the exemplar's.
        if name.startswith(("trace", "histogram")) and trace_id is None:
            trace_id = result
    if trace_id is None:
        failures.append("log line of the trace: no trace id to look for")
    else:
        try:
            line = poll(
                "log line of the trace",
                lambda: log_line_of_trace(stack, trace_id),
                deadline,
                interval,
            )
            print(f"ok  log line of trace {trace_id}: {line[:120]}")
        except CheckFailed as failure:
            failures.append(str(failure))
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Stack()
    for backend in ("jaeger", "prometheus", "loki", "pyroscope"):
        variable = f"STACK_{backend.upper()}_URL"
        parser.add_argument(
            f"--{backend}",
            default=os.environ.get(variable, getattr(defaults, backend)),
            help=f"base URL (env {variable})",
        )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for all checks")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    args = parser.parse_args(argv)
    stack = Stack(args.jaeger, args.prometheus, args.loki, args.pyroscope)
    failures = check_stack(stack, timeout=args.timeout, interval=args.interval)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
