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
import shutil
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from profiling.servers import ROOT

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


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_until_ready(url: str, timeout: float) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - 127.0.0.1
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("levers: wrk is needed (apt-get install wrk)")
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "DATABASE_", "REDIS_", "GLASSBOX_", "TEST_"))
    }
    common = {
        "DATABASE_URL": os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/glassbox_bench"
        ),
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "RATELIMIT_ENABLED": "false",
        "GLASSBOX_ENV": "development",
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "INFO",
        "BENCH_CACHE_TYPE": "NullCache",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
    }
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, settings in CONFIGURATIONS.items():
            port = _free_port()
            env = {
                **inherited,
                **common,
                **settings,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "PROMETHEUS_MULTIPROC_DIR": str(ROOT / "var" / "levers" / name),
            }
            process = subprocess.Popen(  # noqa: S603 - our own gunicorn
                [
                    str(ROOT / ".venv/bin/gunicorn"),
                    "-c",
                    "python:service.gunicorn_conf",
                    "profiling.bench_apps:glassbox_app()",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}/api/v1/products/7"
            servers[name] = (process, url)
            _wait_until_ready(url, timeout=60)
            subprocess.run([wrk, "-t1", "-c2", "-d2s", url], capture_output=True, check=True)  # noqa: S603
        results: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
        order = list(CONFIGURATIONS)
        for round_ in range(ROUNDS):
            for name in order if round_ % 2 == 0 else order[::-1]:
                process, url = servers[name]
                children = subprocess.run(  # noqa: S603
                    ["/usr/bin/pgrep", "-P", str(process.pid)], capture_output=True, text=True
                ).stdout.split()
                worker = int(children[0])
                before = _cpu_seconds(worker)
                out = subprocess.run(  # noqa: S603
                    [wrk, "-t1", "-c2", f"-d{SECONDS}s", url], capture_output=True, text=True
                ).stdout
                spent = _cpu_seconds(worker) - before
                match = re.search(r"(\d+) requests in", out)
                assert match, out
                results[name].append(1000 * spent / int(match.group(1)))
        off = sorted(results["off"])[ROUNDS // 2]
        for name, values in results.items():
            median = sorted(values)[ROUNDS // 2]
            print(f"{name:12s} worker CPU {median:.3f} ms/request  (+{median - off:.3f} over off)")
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in servers.values():
            process.wait(timeout=30)
        sink.shutdown()
        sink.server_close()


if __name__ == "__main__":
    main()
