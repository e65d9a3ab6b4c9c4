"""Start the API or the payments service under gunicorn, as users run them, for a test."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.servers import GunicornServer

PAYMENTS_APP = "service.payments:create_app()"

Process = GunicornServer


def start_gunicorn(name: str, env: dict[str, str], log: Path, app: str | None = None) -> Process:
    """Start `app` (the API by default) with `env` and wait until it answers and every worker is up.

    `name` is for the reader of the test; the server's output is in `log`.
    """
    return GunicornServer(env, log, app=app).start()
