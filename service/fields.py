"""Marshmallow fields and limits shared by every domain's schemas."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import marshmallow as ma

from service.database import CENT

MAX_ID = 2**31 - 1  # PostgreSQL `integer`
MAX_AMOUNT = Decimal("9999999999.99")  # NUMERIC(12, 2)
# A product's price: low enough that the largest order (50 lines of 100 units) still fits
# an order total's NUMERIC(12, 2) column.
MAX_PRICE = Decimal("999999.99")
# Sums over many orders (report revenue) outgrow one order's column; they are computed.
MAX_SUM = Decimal("999999999999999.99")


def amount_pattern(maximum: Decimal) -> str:
    """What an amount up to `maximum` (all nines, e.g. 999999.99) looks like as a string.

    ASCII digits only ([0-9], not \\d, which in Python also matches other scripts' digits).
    """
    digits = len(str(int(maximum)))
    if maximum != 10**digits - CENT:
        raise ValueError("the maximum must be all nines, e.g. 999999.99")
    return rf"^[0-9]{{1,{digits}}}(\.[0-9]{{1,2}})?$"


class MoneyField(ma.fields.Decimal):
    """A non-negative amount with at most two decimals, sent and received as a string.

    Numbers are accepted on input; more than two decimals is refused, never rounded. A
    string must look like ``12.50``: no exponent, sign, spaces or digit separators, which
    Python's Decimal would otherwise read.
    """

    default_error_messages = {
        "format": "Use a decimal number such as 12.50 (at most two decimal places).",
        "range": "Must be from 0 to {maximum}.",
    }

    def __init__(self, *, maximum: Decimal = MAX_AMOUNT, **kwargs: Any) -> None:
        self.maximum = maximum
        self.pattern = amount_pattern(maximum)
        metadata = {
            # The OpenAPI type: a string like "12.50" or a JSON number (the field is
            # registered without a type of its own, see service/api.py).
            "anyOf": [
                {"type": "string", "pattern": self.pattern},
                {
                    "type": "number",
                    "minimum": 0,
                    "maximum": float(maximum),
                    "multipleOf": 0.01,
                },
            ],
            "example": "19.99",
            **kwargs.pop("metadata", {}),
        }
        super().__init__(as_string=True, metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, str) and not re.fullmatch(self.pattern, value):
            raise self.make_error("format")
        amount = super()._deserialize(value, attr, data, **kwargs)
        # Range first: quantizing a number of 40 digits to cents is itself an error.
        if not Decimal(0) <= amount <= self.maximum:
            raise self.make_error("range", maximum=self.maximum)
        if amount != amount.quantize(CENT):
            raise self.make_error("format")
        # The JSON number -0.0 passes the range check; an amount has no negative zero.
        return amount.copy_abs()

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        amount = Decimal(value).quantize(CENT)
        return f"{amount.copy_abs() if amount.is_zero() else amount:f}"


class AsciiInteger(ma.fields.Integer):
    """An integer whose text is ASCII digits with an optional minus sign, nothing else.

    Python's int() also reads other scripts' digits ("\u0663" is 3), surrounding spaces,
    "+" and "1_000": a query parameter or id spelled so is refused, not guessed at.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and not _ASCII_INTEGER.fullmatch(value):
            raise self.make_error("invalid")
        result: int = super()._deserialize(value, attr, data, **kwargs)
        return result


_ASCII_INTEGER = re.compile(r"-?[0-9]+")


def Id(**kwargs: Any) -> ma.fields.Integer:
    """A positive database id."""
    kwargs.setdefault("validate", ma.validate.Range(min=1, max=MAX_ID))
    return AsciiInteger(**kwargs)


class StrictSchema(ma.Schema):
    """Unknown fields are an error, not silently dropped."""

    class Meta:
        unknown = ma.RAISE


# The same rule as _no_control_characters, stated in the OpenAPI spec (ECMA-262 syntax).
SINGLE_LINE_PATTERN = r"^[^\u0000-\u001f\u007f]*$"
MULTILINE_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$"
# A character that is neither a control character nor a space. Python's and ECMA-262's \s
# differ by U+0085 and U+FEFF: naming both makes the class the same in each.
_VISIBLE = r"[^\s\u0085\ufeff\u0000-\u001f\u007f]"
# Single line, and not blank: at least one visible character.
NON_BLANK_PATTERN = rf"^[^\u0000-\u001f\u007f]*{_VISIBLE}[^\u0000-\u001f\u007f]*$"
_HAS_VISIBLE = re.compile(_VISIBLE)


def _not_blank(value: str) -> None:
    if _HAS_VISIBLE.search(value) is None:
        raise ma.ValidationError("Must contain a character other than spaces.")


def _no_control_characters(allow_newlines: bool) -> Any:
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()

    def validate(value: str) -> None:
        if any((ord(ch) < 32 or ord(ch) == 127) and ch not in allowed for ch in value):
            raise ma.ValidationError("Control characters are not allowed.")

    return validate


def Text(
    *, min: int = 0, max: int, multiline: bool = False, blank: bool = True, **kwargs: Any
) -> ma.fields.String:
    """A string with a length limit and no control characters (newlines only if multiline).

    `blank=False`: spaces alone (any Unicode space) are refused, as for a name.
    """
    validators = [ma.validate.Length(min=min, max=max), _no_control_characters(multiline)]
    pattern = MULTILINE_PATTERN if multiline else SINGLE_LINE_PATTERN
    if not blank:
        if multiline:
            raise ValueError("blank=False is for single-line text")
        validators.append(_not_blank)
        pattern = NON_BLANK_PATTERN
    metadata = {
        "pattern": pattern,
        **kwargs.pop("metadata", {}),
    }
    return ma.fields.String(validate=validators, metadata=metadata, **kwargs)
