"""What each telemetry choice costs: worker CPU per uncached read, side by side.

    python -m profiling.levers

One gunicorn worker per configuration (telemetry off; glassbox's lean spans and the
contrib instrumentors, each at 10% and 100% sampling), all exporting to an OTLP sink in
this process, against the bench database (`make bench` seeds it; BENCH_DATABASE_URL,
BENCH_REDIS_URL). wrk drives each in turn, the order alternating over 3 rounds; the
worker's own CPU time (from /proc) divided by the requests it served is steadier than
req/s on a shared machine. Prints the median per configuration.
"""

from __future__ import annotations

import os
import re
import subprocess
from contextlib import ExitStack

from profiling.harness.gunicorn import GunicornServer, measured_env
from profiling.harness.otlp import otlp_sink
from profiling.harness.processes import ROOT, cpu_seconds
from profiling.harness.wrk import wrk_binary

CONFIGURATIONS: dict[str, dict[str, str]] = {
    "off": {"OTEL_SDK_DISABLED": "true"},
    "lean_10": {},
    "contrib_10": {"TELEMETRY_INSTRUMENTATION": "contrib"},
    "lean_100": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    "contrib_100": {
        "TELEMETRY_INSTRUMENTATION": "contrib",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    },
}
ROUNDS = 3
SECONDS = 6
PRODUCT = "/api/v1/products/7"


def _common_env(sink_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/glassbox_bench"
        ),
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "RATELIMIT_ENABLED": "false",
        "GLASSBOX_ENV": "development",
        "LOG_LEVEL": "INFO",
        "BENCH_CACHE_TYPE": "NullCache",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
    }


def _worker_ms_per_request(wrk: str, server: GunicornServer) -> float:
    """Worker CPU per request of one wrk run against the only worker of `server`."""
    (worker,) = server.worker_pids()
    before = cpu_seconds(worker)
    out = subprocess.run(  # noqa: S603 - wrk with our arguments
        [wrk, "-t1", "-c2", f"-d{SECONDS}s", server.url(PRODUCT)], capture_output=True, text=True
    ).stdout
    spent = cpu_seconds(worker) - before
    match = re.search(r"(\d+) requests in", out)
    assert match, out
    return 1000 * spent / int(match.group(1))


def main() -> None:
    wrk = wrk_binary()
    with otlp_sink() as sink, ExitStack() as stack:
        servers: dict[str, GunicornServer] = {}
        for name, settings in CONFIGURATIONS.items():
            env = {
                **_common_env(sink.url),
                **settings,
                "PROMETHEUS_MULTIPROC_DIR": str(ROOT / "var" / "levers" / name),
            }
            server = GunicornServer(
                measured_env(env, workers=1),
                ROOT / "var" / "levers" / f"{name}.log",
                "profiling.bench_apps:glassbox_app()",
            )
            stack.callback(server.stop)
            servers[name] = server.start(ready_path=PRODUCT)
            warm_up = [wrk, "-t1", "-c2", "-d2s", server.url(PRODUCT)]
            subprocess.run(warm_up, capture_output=True, check=True)  # noqa: S603
        results: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
        order = list(CONFIGURATIONS)
        for round_ in range(ROUNDS):
            for name in order if round_ % 2 == 0 else order[::-1]:
                results[name].append(_worker_ms_per_request(wrk, servers[name]))
    off = sorted(results["off"])[ROUNDS // 2]
    for name, values in results.items():
        median = sorted(values)[ROUNDS // 2]
        print(f"{name:12s} worker CPU {median:.3f} ms/request  (+{median - off:.3f} over off)")


if __name__ == "__main__":
    main()
