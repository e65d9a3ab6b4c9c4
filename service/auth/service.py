"""Create, revoke and check API keys. Tokens are shown once and stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from flask import current_app
from sqlalchemy import select

from service.auth.models import ApiKey, Scope
from service.database import utcnow
from service.errors import Conflict, InsufficientScope, InvalidRequest, NotFound, Unauthorized
from service.extensions import db

TOKEN_PREFIX = "gbx_"  # noqa: S105 - a prefix, not a secret


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_fingerprint(token: str) -> str:
    """Short, non-reversible id of a token, for rate-limit keys and logs."""
    return hash_token(token)[:16]


# The development key serves every example in the README (catalog writes, orders, the
# report), and production refuses it whatever its scopes.
DEVELOPMENT_SCOPES = (Scope.CUSTOMER, Scope.OPERATOR)


def scope_string(scopes: Iterable[str]) -> str:
    """The stored form of `scopes`: known names, each once, sorted, space-separated."""
    chosen = set(scopes)
    unknown = sorted(chosen - set(Scope))
    if unknown or not chosen:
        known = ", ".join(Scope)
        raise InvalidRequest(f"Give one or more scopes out of {known}; unknown: {unknown}.")
    return " ".join(sorted(chosen))


def create_key(
    *,
    name: str,
    scopes: Iterable[str],
    token: str | None = None,
    development: bool = False,
) -> str:
    """Store a new key with `scopes` and return its token (the only time it is visible).

    `development` keys are refused in production.
    """
    stored_scopes = scope_string(scopes)
    token = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
    if db.session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise Conflict(f"An API key named {name!r} already exists.")
    db.session.add(
        ApiKey(
            name=name,
            token_hash=hash_token(token),
            scopes=stored_scopes,
            is_development=development,
        )
    )
    db.session.commit()
    return token


def ensure_dev_key(*, name: str, token: str) -> bool:
    """Create the development key unless one with this name exists; True when created."""
    if db.session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        return False
    create_key(name=name, token=token, scopes=DEVELOPMENT_SCOPES, development=True)
    return True


def revoke_key(*, name: str) -> None:
    key = db.session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None:
        raise NotFound(f"No API key named {name!r}.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        db.session.commit()


def authenticate(*, token: str | None) -> ApiKey:
    """Return the active key for `token` or raise Unauthorized."""
    if not token:
        raise Unauthorized("This operation needs an API key: send 'Authorization: Bearer <token>'.")
    config = current_app.config
    if config["GLASSBOX_ENV"] == "production" and hmac.compare_digest(
        token.encode("utf-8", "surrogatepass"),
        str(config["DEV_API_KEY"]).encode("utf-8", "surrogatepass"),
    ):
        raise Unauthorized("The development API key is not accepted in production.")
    digest = hash_token(token)
    key = db.session.scalar(select(ApiKey).where(ApiKey.token_hash == digest))
    # The lookup is by hash; compare again in constant time so timing reveals nothing.
    if key is None or not hmac.compare_digest(key.token_hash, digest):
        raise Unauthorized("The API key is not valid.")
    if key.revoked:
        raise Unauthorized("The API key has been revoked.")
    if key.is_development and config["GLASSBOX_ENV"] == "production":
        raise Unauthorized("The development API key is not accepted in production.")
    return key


def require_scope(key: ApiKey, *, any_of: Iterable[Scope]) -> None:
    """Raise InsufficientScope unless `key` holds at least one of `any_of`."""
    wanted = [str(scope) for scope in any_of]
    if key.scope_set.isdisjoint(wanted):
        names = " or ".join(repr(scope) for scope in wanted)
        raise InsufficientScope(
            f"This operation needs an API key with the {names} scope; this key has {key.scopes!r}.",
            required_scopes=wanted,
        )
