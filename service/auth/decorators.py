"""The HTTP side of API keys: read the bearer token, document the security scheme."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from service.auth import service as auth
from service.auth.models import Scope

F = TypeVar("F", bound=Callable[..., Any])

SECURITY_SCHEME = "bearerAuth"
SECURITY_SCHEME_DOC = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "token",
    "description": "An API key (`flask api-keys create NAME --scope ...`). Its scopes: "
    + "; ".join(
        f"`{scope}`: {text}"
        for scope, text in (
            (Scope.CUSTOMER, "place orders, read and cancel the key's own orders"),
            (Scope.OPERATOR, "catalog writes, the sales report, read and cancel every order"),
        )
    )
    + ". Each operation names the scopes it accepts (any one of them) in "
    "`x-required-scopes`; a valid key without one of them gets 403 `insufficient-scope`.",
}


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_api_key(blp: Any, *any_of: Scope) -> Callable[[F], F]:
    """Refuse the request with 401 unless it carries a valid, unrevoked API key, and with
    403 unless that key holds one of the scopes `any_of`.

    OpenAPI 3.0 lets only OAuth2 and OpenID Connect schemes list scopes in a security
    requirement, so the bearer scheme's stay in `x-required-scopes`.
    """
    if not any_of:
        raise TypeError("require_api_key needs at least one scope")

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if g.get("api_key") is None:  # the rate limiter may have checked it already
                g.api_key = auth.authenticate(token=bearer_token())
            auth.require_scope(g.api_key, any_of=any_of)
            return view(*args, **kwargs)

        documented = blp.alt_response(401, response="UNAUTHORIZED")(wrapper)
        if set(any_of) != set(Scope):  # a key may lack the scope: 403 can be answered
            documented = blp.alt_response(403, response="FORBIDDEN")(documented)
        return blp.doc(
            security=[{SECURITY_SCHEME: []}],
            **{"x-required-scopes": [str(scope) for scope in any_of]},
        )(documented)

    return decorator


def owner_scope() -> int | None:
    """Whose orders this request may see: its API key's id, or None (all) for an operator key."""
    key = g.api_key
    return None if Scope.OPERATOR in key.scope_set else int(key.id)


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
