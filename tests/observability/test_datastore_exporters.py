"""compose's postgres-exporter and redis-exporter, configured as compose configures them (the
same environment variable names), on Debian's real exporters (postgres_exporter 0.11,
redis_exporter 1.45; compose pins newer images that read the same names): each reaches its
server (pg_up / redis_up 1) and, refused by it (a database that does not exist; a password
Redis does not expect), says so (0) while its own scrape still answers: PrometheusScrapeTargetDown
watches the exporter, pg_up / redis_up the server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from profiling.harness.processes import free_port
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, require
from tests.observability.conftest import ROOT, debian_binaries, load_yaml
from tests.observability.test_promql_live import Process, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

EXPORTERS = {
    # compose service: (Debian binary, the gauge that says whether the server answers)
    "postgres-exporter": ("prometheus-postgres-exporter", "pg_up"),
    "redis-exporter": ("prometheus-redis-exporter", "redis_up"),
}


def _environment(service: str, refused: bool) -> dict[str, str]:
    """compose's variable names for `service`, pointed at the test's servers."""
    names = set(load_yaml(ROOT / "compose.yaml")["services"][service]["environment"])
    if service == "postgres-exporter":
        url = make_url(require(TEST_DATABASE_URL, "TEST_DATABASE_URL"))
        if refused:
            url = url.set(database="no_such_database")
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        values = {"DATA_SOURCE_NAME": dsn + "?sslmode=disable"}
    else:
        redis = make_url(require(TEST_REDIS_URL, "TEST_REDIS_URL"))
        values = {
            "REDIS_ADDR": f"redis://{redis.host}:{redis.port or 6379}",
            # The test's Redis has none: AUTH with one is refused.
            "REDIS_PASSWORD": "not-the-password" if refused else "",
        }
    assert set(values) == names, (service, names)
    return values


@pytest.fixture
def exporter(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(metrics URL, up gauge) of the exporter of request.param = (service, refused)."""
    service, refused = request.param
    package, gauge = EXPORTERS[service]
    binary = debian_binaries(package, package)[package]
    port = free_port()
    process = Process(
        service,
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **_environment(service, refused)},
        tmp_path / f"{service}.log",
    )
    process.start()
    try:
        yield f"http://127.0.0.1:{port}/metrics", gauge
    finally:
        process.stop()


def _gauge(url: str, name: str) -> float | None:
    body = requests.get(url, timeout=10).text
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


@pytest.mark.parametrize(
    ("exporter", "up"),
    [
        (("postgres-exporter", False), 1.0),
        (("redis-exporter", False), 1.0),
        (("postgres-exporter", True), 0.0),
        (("redis-exporter", True), 0.0),
    ],
    indirect=["exporter"],
    ids=["postgres", "redis", "postgres-refused", "redis-refused"],
)
def test_the_exporter_says_whether_its_server_answers(exporter: tuple[str, str], up: float) -> None:
    url, gauge = exporter
    wait_for(lambda: _gauge(url, gauge) is not None, f"{gauge} on {url}")
    assert _gauge(url, gauge) == up
