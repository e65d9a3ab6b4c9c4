"""The HTTP side of API keys: read the bearer token, document the security scheme."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from service.auth import service as auth

F = TypeVar("F", bound=Callable[..., Any])

SECURITY_SCHEME = "bearerAuth"


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_api_key(blp: Any) -> Callable[[F], F]:
    """Refuse the request with 401 unless it carries a valid, unrevoked API key."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if g.get("api_key") is None:  # the rate limiter may have checked it already
                g.api_key = auth.authenticate(token=bearer_token())
            return view(*args, **kwargs)

        documented = blp.alt_response(401, response="UNAUTHORIZED")(wrapper)
        return blp.doc(security=[{SECURITY_SCHEME: []}])(documented)

    return decorator


def owner_scope() -> int | None:
    """Whose orders this request may see: its API key's id, or None (all) for an operator key."""
    key = g.api_key
    return None if key.is_admin else int(key.id)


def rate_limit_key() -> str:
    """Limit per API key when a valid one is presented, else per client address.

    The token is checked, not just read: otherwise a client could dodge its address
    limit by sending a fresh made-up token with every read.
    """
    token = bearer_token()
    if token:
        try:
            key = auth.authenticate(token=token)
        except Exception:  # invalid key or database trouble: fall back to the address
            key = None
        if key is not None:
            g.api_key = key
            return f"key:{key.id}"
    return "addr:" + (request.remote_addr or "unknown")
