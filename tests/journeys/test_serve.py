"""`make serve` on PostgreSQL with two workers, as shipped: a search as each worker's first
request, then `make profile` against it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiling import capture
from profiling.harness.processes import wait_until
from tests.journeys.conftest import MakeServer, make, prepared, serving
from tests.processes import search_until_every_worker_answered

WORKERS = 2


@pytest.fixture(scope="module")
def served(
    tree: Path, journey_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MakeServer, dict[str, str]]]:
    env = prepared(tree, journey_database, dev_key=False)  # `make run` makes that key
    log = tmp_path_factory.mktemp("serve") / "make-serve.log"
    with serving(tree, "serve", {**env, "WEB_CONCURRENCY": str(WORKERS)}, log) as server:
        wait_until(lambda: len(server.workers()) == WORKERS, timeout=120, what="both workers up")
        yield server, env


def test_a_search_as_each_workers_first_request_answers(
    served: tuple[MakeServer, dict[str, str]],
) -> None:
    server, _ = served
    statuses = search_until_every_worker_answered(
        server.url, server.records, term="roast", workers=WORKERS
    )
    assert statuses == Counter({200: statuses.total()}), statuses


def test_make_profile_records_request_handling_in_every_recording(
    served: tuple[MakeServer, dict[str, str]], tree: Path
) -> None:
    server, env = served
    out = make(tree, "profile", f"LOAD_URL={server.url}", "PROFILE_SECONDS=3", env=env)
    results = tree / "profiling" / "results" / "latest"

    workers = server.workers()
    for pid in workers:
        for label in ("cpu", "idle"):
            svg = (results / f"worker-{pid}-{label}.svg").read_text()
            assert capture.REQUEST_HANDLER in svg, (pid, label, out)
            speedscope = results / f"worker-{pid}-{label}.speedscope.json"
            assert capture.handling_share(speedscope) > 0, (pid, label)
    answers = capture.load_answers(results)  # from Locust's own CSV reports
    assert answers is not None
    assert answers.requests > 0
    assert answers.by_status.get(401, 0) == 0, answers
    assert answers.by_status.get(429, 0) == 0, answers
    assert not [status for status in answers.by_status if status >= 500], answers
    summary = (results / "summary.md").read_text()
    assert "Recorded without load" not in summary
    assert "No request handled" not in summary
