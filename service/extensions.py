"""Extension objects, created bare here and bound to an app in `create_app`."""

from __future__ import annotations

import logging
import time

from flask import request
from flask_caching import Cache
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from service.api import Api
from service.database import Base


def _rate_limit_key() -> str:
    from service.auth.decorators import rate_limit_key  # the auth package imports db from here

    return rate_limit_key()


# expire_on_commit=False: a committed row can still be serialised without a reload.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
api = Api()
cache = Cache()


def _not_rate_limited() -> bool:
    # Probes, metrics, docs and the spec must answer even when a client is over its limit.
    return request.path.startswith(("/health/", "/metrics", "/docs", "/openapi.json", "/static/"))


class OncePerInterval(logging.Filter):
    """Let one record through per interval (per process), drop the rest."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self._last = -seconds

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True


def make_limiter() -> Limiter:
    """A limiter per app: Flask-Limiter keeps the first app's limits on a shared instance."""
    # With its storage down the limiter lets requests through (RATELIMIT_SWALLOW_ERRORS)
    # and logs a stack trace for each one; once per 30 s says the same, like the cache does.
    limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(f, OncePerInterval) for f in limiter_log.filters):
        limiter_log.addFilter(OncePerInterval(30.0))
    limiter = Limiter(key_func=_rate_limit_key)
    limiter.request_filter(_not_rate_limited)
    return limiter
