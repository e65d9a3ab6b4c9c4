"""Dump reads through their marshmallow schema without marshmallow's per-field machinery.

`compile_dump(schema)` gives a function that returns what `schema.dump(obj)` returns: the
schema's dump fields are read once into a plan (key, attribute, how to convert), and each
dump runs the plan. Marshmallow stays the schema, the validation and the OpenAPI document;
only the dump of reads goes this way. Kept our own (no maintained library compiles
marshmallow 4 schemas): marshmallow's dump of a 20-product page cost ≈ 350 µs here and 14%
of an uncached first page in py-spy; the plan's costs ≈ 170 µs (docs/measurement.md).

What the plan does not know it leaves to marshmallow, so the result is the same for any
schema: a field of a class it does not recognise converts through the field's own
`_serialize` (or `serialize` if the field overrides it), and a schema with dump hooks, a
custom `get_attribute` or `many=True` is dumped by `schema.dump` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import marshmallow as ma
from marshmallow import missing
from marshmallow.decorators import POST_DUMP, PRE_DUMP
from marshmallow.utils import get_value

Dump = Callable[[Any], Any]
# (output key, attribute read, field, convert(value, obj) or None: the field's own serialize)
_Step = tuple[str, str, ma.fields.Field, Callable[[Any, Any], Any] | None]


def compile_dump(schema: ma.Schema) -> Dump:
    """A function giving `schema.dump(obj)` for one object."""
    plain = (
        not schema.many
        and not schema._hooks[PRE_DUMP]
        and not schema._hooks[POST_DUMP]
        and type(schema).get_attribute is ma.Schema.get_attribute
        and schema.dict_class is dict
    )
    if not plain:
        return schema.dump
    steps = [_step(name, field) for name, field in schema.dump_fields.items()]

    def dump(obj: Any) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, attribute, field, convert in steps:
            if convert is None:  # the field reads and converts in its own way
                value = field.serialize(attribute, obj, accessor=get_value)
                if value is not missing:
                    result[key] = value
                continue
            value = _read(obj, attribute)
            if value is missing:
                default = field.dump_default
                value = default() if callable(default) else default
                if value is missing:
                    continue
            result[key] = convert(value, obj)
        return result

    return dump


def _read(obj: Any, attribute: str) -> Any:
    # marshmallow's own accessor, with a shortcut for the common case: a dict holding the key
    # (a dotted name is a path to marshmallow, not a key).
    if type(obj) is dict and attribute in obj and "." not in attribute:
        return obj[attribute]
    return get_value(obj, attribute, missing)


def _step(name: str, field: ma.fields.Field) -> _Step:
    key = field.data_key if field.data_key is not None else name
    if (
        _overrides(field, ma.fields.Field, "serialize")
        or _overrides(field, ma.fields.Field, "get_value")
        or not field._CHECK_ATTRIBUTE
    ):
        return key, name, field, None
    attribute = field.attribute if field.attribute is not None else name
    return key, attribute, field, _converter(name, field)


def _overrides(field: ma.fields.Field, base: type[ma.fields.Field], method: str) -> bool:
    return getattr(type(field), method) is not getattr(base, method)


def _converter(name: str, field: ma.fields.Field) -> Callable[[Any, Any], Any]:
    """How a value read from the object becomes its dumped form, as `field._serialize`."""
    if (
        isinstance(field, ma.fields.Integer)
        and not field.as_string
        and not _overrides(field, ma.fields.Integer, "_serialize")
        and not _overrides(field, ma.fields.Integer, "_format_num")
    ):
        return lambda value, _obj: None if value is None else int(value)
    if (
        isinstance(field, ma.fields.DateTime)
        and not _overrides(field, ma.fields.DateTime, "_serialize")
        and (field.format or field.DEFAULT_FORMAT) == "iso"
    ):
        iso = field.SERIALIZATION_FUNCS["iso"]
        return lambda value, _obj: None if value is None else iso(value)
    if isinstance(field, ma.fields.Nested) and not _overrides(
        field, ma.fields.Nested, "_serialize"
    ):
        nested = _nested_dump(field)
        if nested is not None:
            return lambda value, _obj: None if value is None else nested(value)
    if isinstance(field, ma.fields.List) and not _overrides(field, ma.fields.List, "_serialize"):
        inner = field.inner
        if isinstance(inner, ma.fields.Nested) and not _overrides(
            inner, ma.fields.Nested, "_serialize"
        ):
            each = _nested_dump(inner)
            if each is not None:
                return lambda value, _obj: (
                    None if value is None else [None if v is None else each(v) for v in value]
                )
    convert = field._serialize
    return lambda value, obj: convert(value, name, obj)


def _nested_dump(field: ma.fields.Nested) -> Dump | None:
    """The compiled dump of a Nested field's schema, when it dumps one object at a time."""
    schema = field.schema
    if field.many or schema.many:
        return None
    return compile_dump(schema)
