"""Marshmallow fields and limits shared by every domain's schemas."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import marshmallow as ma

from service.database import CENT

MAX_ID = 2**31 - 1  # PostgreSQL `integer`
MAX_AMOUNT = Decimal("9999999999.99")  # NUMERIC(12, 2)


class Money(ma.fields.Decimal):
    """A non-negative amount with at most two decimals, sent and received as a string.

    Numbers are accepted on input; more than two decimals is refused, never rounded.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("validate", ma.validate.Range(min=Decimal(0), max=MAX_AMOUNT))
        metadata = {"example": "19.99", **kwargs.pop("metadata", {})}
        super().__init__(as_string=True, metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        amount = super()._deserialize(value, attr, data, **kwargs)
        if amount != amount.quantize(CENT):
            raise ma.ValidationError("Use at most two decimal places.")
        return amount

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return f"{Decimal(value).quantize(CENT):f}"


def Id(**kwargs: Any) -> ma.fields.Integer:
    """A positive database id."""
    kwargs.setdefault("validate", ma.validate.Range(min=1, max=MAX_ID))
    return ma.fields.Integer(**kwargs)


class StrictSchema(ma.Schema):
    """Unknown fields are an error, not silently dropped."""

    class Meta:
        unknown = ma.RAISE


def _no_control_characters(allow_newlines: bool) -> Any:
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()

    def validate(value: str) -> None:
        if any((ord(ch) < 32 or ord(ch) == 127) and ch not in allowed for ch in value):
            raise ma.ValidationError("Control characters are not allowed.")

    return validate


def Text(*, min: int = 0, max: int, multiline: bool = False, **kwargs: Any) -> ma.fields.String:
    """A string with a length limit and no control characters (newlines only if multiline)."""
    validators = [ma.validate.Length(min=min, max=max), _no_control_characters(multiline)]
    return ma.fields.String(validate=validators, **kwargs)
