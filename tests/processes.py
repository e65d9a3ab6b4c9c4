"""Start the API or the payments service under gunicorn, and run the project's `flask`
commands, as users run them, for a test."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.reliability.servers import PROJECT_ROOT, GunicornServer, wait_until

PAYMENTS_APP = "service.payments:create_app()"

Process = GunicornServer


def flask_cli(
    env: dict[str, str], *args: str, tree: Path = PROJECT_ROOT, timeout: float = 120
) -> str:
    """`flask --app service ARGS` in `tree` with its `.venv`, as a user runs it; its standard
    output (a failure shows both outputs)."""
    done = subprocess.run(
        [str(tree / ".venv" / "bin" / "flask"), "--app", "service", *args],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def start_gunicorn(name: str, env: dict[str, str], log: Path, app: str | None = None) -> Process:
    """Start `app` (the API by default) with `env` and wait until it answers and every worker is up.

    `name` is for the reader of the test; the server's output is in `log`.
    """
    return GunicornServer(env, log, app=app).start()


def search_until_every_worker_answered(
    base_url: str, records: Callable[[], list[dict[str, Any]]], *, term: str, workers: int
) -> Counter[int]:
    """Searches for `term`, four at a time on fresh connections, until the server's access
    log (`records`) shows each of its `workers` serving one; the statuses they got.

    Each answered page must hold only names with `term`. Sent before anything else, each
    worker's first request is a search.
    """
    statuses: Counter[int] = Counter()

    def search(n: int) -> None:
        response = requests.get(
            f"{base_url}/api/v1/products?q={term}&limit={n % 4 + 1}",
            headers={"Connection": "close"},
            timeout=30,
        )
        statuses[response.status_code] += 1
        if response.status_code == 200:
            items = response.json()["items"]
            assert items
            assert all(term in item["name"].lower() for item in items)

    def every_worker_searched() -> bool:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(search, range(4)))
        searched = {
            record["pid"]
            for record in records()
            if record.get("logger") == "glassbox.access"
            and record.get("path") == "/api/v1/products"
        }
        return len(searched) == workers

    wait_until(every_worker_searched, timeout=60, what="a search served by every worker")
    return statuses
