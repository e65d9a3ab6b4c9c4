"""service/profiles.py: with PYROSCOPE_SERVER_ADDRESS set, the real pyroscope-io agent pushes
profiles labelled with the request's route, and sampled root spans carry their profile id.

The Pyroscope server is a small local HTTP receiver of the push API pyroscope-io 1.4 uses
(`POST /push.v1.PusherService/Push`, a gzipped protobuf PushRequest: series of labels and
pprof samples, as in Pyroscope's api/push/v1/push.proto): Pyroscope itself cannot run here.
The agent is process-wide native code, so the payments service runs in a child process."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service import profiles
from service.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, os, sys, time
from pathlib import Path
from typing import Any
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import pyroscope
from service.payments import create_app

app = create_app()
spans = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))
client = app.test_client()
stop = Path(sys.argv[1])
deadline = time.monotonic() + 45
order = 0
# Requests until the parent has received a labelled profile (the agent uploads every 10 s).
# No pyroscope.shutdown(): it may wait on the agent's thread; exiting ends it.
while not stop.exists() and time.monotonic() < deadline:
    order += 1
    client.post("/api/v1/authorizations", json={"order_id": order, "amount": "12.50"})
print(json.dumps([
    {"name": s.name, "span_id": format(s.context.span_id, "016x"),
     "root": s.parent is None, "attributes": dict(s.attributes or {})}
    for s in spans.get_finished_spans()
]))
"""


def _fields(message: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of a protobuf message: varints and length-delimited fields."""
    position = 0

    def varint() -> int:
        nonlocal position
        value = shift = 0
        while True:
            byte = message[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while position < len(message):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            yield number, varint()
        elif wire_type == 2:
            length = varint()
            yield number, message[position : position + length]
            position += length
        else:
            raise ValueError(f"unexpected wire type {wire_type}")


def pprof_sample_labels(profile: bytes) -> list[dict[str, str]]:
    """The string labels of each sample of a pprof Profile (profile.proto: sample = 2,
    string_table = 6; Sample.label = 3; Label.key = 1, Label.str = 2, string indexes)."""
    if profile[:2] == b"\x1f\x8b":
        profile = gzip.decompress(profile)
    strings: list[str] = []
    samples: list[list[tuple[int, int]]] = []
    for number, value in _fields(profile):
        if number == 6 and isinstance(value, bytes):
            strings.append(value.decode())
        elif number == 2 and isinstance(value, bytes):
            pairs = []
            for field, label in _fields(value):
                if field == 3 and isinstance(label, bytes):
                    parts = dict(_fields(label))
                    key, text = parts.get(1, 0), parts.get(2, 0)
                    assert isinstance(key, int)
                    assert isinstance(text, int)
                    pairs.append((key, text))
            samples.append(pairs)
    return [{strings[k]: strings[s] for k, s in pairs} for pairs in samples]


def push_series(body: bytes) -> list[dict[str, Any]]:
    """PushRequest.series (push.proto: series = 1; labels = 1 of name = 1, value = 2;
    samples = 2 of raw_profile = 1) as {"labels": {...}, "samples": [labels per sample]}."""
    series = []
    for number, raw in _fields(gzip.decompress(body)):
        if number != 1 or not isinstance(raw, bytes):
            continue
        labels: dict[str, str] = {}
        samples: list[dict[str, str]] = []
        for field, value in _fields(raw):
            if field == 1 and isinstance(value, bytes):
                pair = {n: v for n, v in _fields(value) if isinstance(v, bytes)}
                labels[pair.get(1, b"").decode()] = pair.get(2, b"").decode()
            elif field == 2 and isinstance(value, bytes):
                for n, profile in _fields(value):
                    if n == 1 and isinstance(profile, bytes):
                        samples += pprof_sample_labels(profile)
        series.append({"labels": labels, "samples": samples})
    return series


class Receiver(ThreadingHTTPServer):
    uploads: list[dict[str, Any]]


class IngestHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/push.v1.PusherService/Push":
            self.server.uploads += push_series(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), IngestHandler)
    server.uploads = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _labelled(upload: dict[str, Any]) -> bool:
    """A CPU profile of the payments service with samples of one route's requests."""
    return upload["labels"].get("service_name") == "glassbox-payments" and any(
        sample.get("http_route") == "/api/v1/authorizations" for sample in upload["samples"]
    )


def test_profiles_arrive_labelled_by_route_and_spans_carry_their_profile_id(
    receiver: Receiver, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    env = {
        **os.environ,
        "PYROSCOPE_SERVER_ADDRESS": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_SERVICE_NAME": "glassbox-payments",
        "OTEL_TRACES_SAMPLER": "always_on",
        "GLASSBOX_ENV": "test",
        "LOG_LEVEL": "WARNING",
    }
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"):
        env.pop(name, None)
    errors = tmp_path / "child.err"
    with errors.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(stop)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            # Poll with a deadline: the child stops when told or after 45 s by itself.
            while child.poll() is None and not any(map(_labelled, receiver.uploads)):
                threading.Event().wait(0.2)
            stop.touch()
            out, _ = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
    err = errors.read_text()
    assert child.returncode == 0, err
    assert any(map(_labelled, receiver.uploads)), receiver.uploads
    samples = [s for u in filter(_labelled, receiver.uploads) for s in u["samples"]]
    # pyroscope-otel's span id label rides on the same samples: the trace-to-profile link.
    assert any("span_id" in s and "http_route" in s for s in samples), samples[:5]

    roots = [s for s in json.loads(out) if s["root"]]
    assert roots, "no server span was recorded"
    for span in roots:
        assert span["attributes"]["pyroscope.profile.id"] == span["span_id"], span


def test_profiling_is_off_by_default() -> None:
    assert profiles.settings({})["PYROSCOPE_SERVER_ADDRESS"] == ""


def test_invalid_settings_are_refused_by_name() -> None:
    with pytest.raises(ConfigError) as error:
        profiles.settings(
            {"PYROSCOPE_SERVER_ADDRESS": "pyroscope:4040", "PYROSCOPE_SAMPLE_RATE": "0"}
        )
    assert "PYROSCOPE_SERVER_ADDRESS" in str(error.value)
    assert "PYROSCOPE_SAMPLE_RATE" in str(error.value)
