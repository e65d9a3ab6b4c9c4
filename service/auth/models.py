from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String, false
from sqlalchemy.orm import Mapped, mapped_column

from service.database import Base, UTCDateTime, utcnow


class Scope(StrEnum):
    """What a key may do; a key holds one or more."""

    CUSTOMER = "customer"  # place orders; read and cancel its own
    OPERATOR = "operator"  # catalog writes, the sales report, read and cancel every order


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    # SHA-256 of the token: tokens are 256-bit random, so a fast hash is enough.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Space-separated `Scope` values, as in an OAuth scope string ("customer operator").
    scopes: Mapped[str] = mapped_column(String(200), server_default=Scope.CUSTOMER.value)
    # Created from DEV_API_KEY by `api-keys ensure-dev`: refused in production whatever its token.
    is_development: Mapped[bool] = mapped_column(default=False, server_default=false())

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())
