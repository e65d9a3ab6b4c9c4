"""Flask-Limiter with glassbox's promises (README, Rate limiting)."""

from __future__ import annotations

import logging

import flask_limiter
from flask import Flask, request

from service.auth.decorators import rate_limit_key
from service.edge import set_aside_retry_after, unobserved_path
from service.logs import OncePerInterval


class Limiter(flask_limiter.Limiter):
    """Flask-Limiter with glassbox's promises (README, Rate limiting).

    * RATELIMIT_DEFAULT is one allowance per API key (or address) across every route.
      Flask-Limiter applies its default limits to each route separately; its application
      limit is the one shared by all routes, so the setting becomes that.
    * Requests that match no route (404, and 405) are counted too: Flask-Limiter exempts
      requests without an endpoint, so they are identified as "unmatched".
    * The limiter sets Retry-After on every response, to the later of the window's reset
      and any value already there (a 503's "5" became 55 s). Only a 429 is the limiter's;
      another status keeps the service's own value (service/edge.py puts it back).
    """

    def init_app(self, app: Flask) -> None:
        config = app.config
        config.setdefault("RATELIMIT_APPLICATION", config.pop("RATELIMIT_DEFAULT", None))
        super().init_app(app)
        # After the limiter's own hook, so it runs first (Flask runs them in reverse order).
        app.after_request(set_aside_retry_after)


def _request_identifier() -> str:
    return request.endpoint or "unmatched"


def make_limiter() -> Limiter:
    """A limiter per app: Flask-Limiter keeps the first app's limits on a shared instance."""
    # With its storage down the limiter lets requests through (RATELIMIT_SWALLOW_ERRORS)
    # and logs a stack trace for each one; once per 30 s says the same, like the cache does.
    limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(f, OncePerInterval) for f in limiter_log.filters):
        limiter_log.addFilter(OncePerInterval())
    limiter = Limiter(key_func=rate_limit_key, request_identifier=_request_identifier)
    # Probes, metrics, docs and the spec must answer even when a client is over its limit.
    limiter.request_filter(lambda: unobserved_path(request.path))
    return limiter
