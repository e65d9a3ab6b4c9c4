"""Extension objects, created bare here and bound to an app in `create_app`."""

from __future__ import annotations

import logging
import time

import flask_limiter
from flask import Flask, Response, g, request
from flask_caching import Cache
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


class Limiter(flask_limiter.Limiter):
    """Flask-Limiter with glassbox's promises (README, Rate limiting).

    * RATELIMIT_DEFAULT is one allowance per API key (or address) across every route.
      Flask-Limiter applies its default limits to each route separately; its application
      limit is the one shared by all routes, so the setting becomes that.
    * Requests that match no route (404, and 405) are counted too: Flask-Limiter exempts
      requests without an endpoint, so they are identified as "unmatched".
    * The limiter sets Retry-After on every response, to the later of the window's reset
      and any value already there (a 503's "5" became 55 s). Only a 429 is the limiter's;
      another status keeps the service's own value (`_finalize_headers` puts it back).
    """

    def init_app(self, app: Flask) -> None:
        config = app.config
        config.setdefault("RATELIMIT_APPLICATION", config.pop("RATELIMIT_DEFAULT", None))
        super().init_app(app)
        # After the limiter's own hook, so it runs first (Flask runs them in reverse order).
        app.after_request(_set_aside_retry_after)


def _request_identifier() -> str:
    return request.endpoint or "unmatched"


def _set_aside_retry_after(response: Response) -> Response:
    own = response.headers.get("Retry-After")
    if own is not None:
        del response.headers["Retry-After"]
        g.own_retry_after = own
    return response


def own_retry_after() -> str | None:
    """The Retry-After the service itself set on this response, if any."""
    value: str | None = g.pop("own_retry_after", None)
    return value


def make_limiter() -> Limiter:
    """A limiter per app: Flask-Limiter keeps the first app's limits on a shared instance."""
    # With its storage down the limiter lets requests through (RATELIMIT_SWALLOW_ERRORS)
    # and logs a stack trace for each one; once per 30 s says the same, like the cache does.
    limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(f, OncePerInterval) for f in limiter_log.filters):
        limiter_log.addFilter(OncePerInterval(30.0))
    limiter = Limiter(key_func=_rate_limit_key, request_identifier=_request_identifier)
    limiter.request_filter(_not_rate_limited)
    return limiter
