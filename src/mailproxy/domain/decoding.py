"""msgspec's validation errors as the API's reasons: :func:`convert_error` names the field
by its path, and an enumerated field (a ``Literal`` or an ``Enum``) lists the values it
allows (:func:`allowed_values`, :func:`enum_reason`), so a client sees what it should
have sent."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import inspect

from mailproxy.domain.errors import InvalidInput

_MSGSPEC_PATH = re.compile(r"at `\$\.?(?P<path>[^`]*)`")
#: The field names and list indexes of a path such as ``attachments[0].fetch_mode``.
_PATH_SEGMENT = re.compile(r"[^.\[\]]+")
#: How msgspec starts the message for a value outside a ``Literal`` or an ``Enum``.
INVALID_ENUM = "Invalid enum value "
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(?P<name>[^`]*)`")
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<name>[^`]*)`")
_SEQUENCES = (inspect.ListType, inspect.SetType, inspect.FrozenSetType, inspect.VarTupleType)


def _members(info: inspect.Type) -> tuple[inspect.Type, ...]:
    return info.types if isinstance(info, inspect.UnionType) else (info,)


def _step(info: inspect.Type, segment: str) -> list[inspect.Type]:
    if isinstance(info, inspect.StructType):
        return [f.type for f in info.fields if segment in (f.encode_name, f.name)]
    if isinstance(info, _SEQUENCES) and segment.isdigit():
        return [info.item_type]
    if isinstance(info, inspect.DictType):
        return [info.value_type]
    return []


def allowed_values(model: Any, path: str) -> list[str]:
    """The values the enumerated field at ``path`` of ``model`` allows; empty when that
    field is not enumerated. ``path`` is written as msgspec and
    Litestar write it (``client_auth.method``, ``attachments[0].fetch_mode``; ``""`` for
    ``model`` itself); a list of enumerated items allows what its items allow."""
    found = [inspect.type_info(model)]
    for segment in _PATH_SEGMENT.findall(path):
        found = [
            step for info in found for member in _members(info) for step in _step(member, segment)
        ]
    values: list[str] = []
    for info in found:
        for member in _members(info):
            items = _members(member.item_type) if isinstance(member, _SEQUENCES) else (member,)
            for item in items:
                if isinstance(item, inspect.LiteralType):
                    values += [str(v) for v in item.values]
                elif isinstance(item, inspect.EnumType):
                    values += [str(m.value) for m in item.cls]
    return list(dict.fromkeys(values))


def one_of(values: list[str]) -> str:
    """How a reason lists the values allowed: ``(expected one of: capture, smtp)``."""
    return f"(expected one of: {', '.join(values)})"


def enum_reason(field: str, given: str, values: list[str]) -> str:
    """The reason for a value outside an enumeration: ``invalid kind: 'smtpx' (expected
    one of: capture, smtp)``."""
    return f"invalid {field}: {given} {one_of(values)}"


def explained(message: str, model: Any, path: str, name: str = "") -> InvalidInput | None:
    """msgspec's ``message`` about the field at ``path`` of ``model`` (itself called
    ``name``, if it has a name) as the API says it, when it is about an unknown field
    (``unknown field: rate_limits.per_week``, as for the fields of a message), a missing
    one (``missing messages``) or a value outside an enumeration whose values can be
    named; None for the other errors."""
    where = ".".join(part for part in (name, path) if part)
    unknown = _UNKNOWN_FIELD.fullmatch(message)
    if unknown is not None:
        field = f"{where}.{unknown['name']}" if where else unknown["name"]
        return InvalidInput(field, f"unknown field: {field}")
    missing = _MISSING_FIELD.fullmatch(message)
    if missing is not None:
        field = f"{where}.{missing['name']}" if where else missing["name"]
        return InvalidInput(field, f"missing {field}")
    if message.startswith(INVALID_ENUM):
        values = allowed_values(model, path)
        if values:
            field = where or "body"
            return InvalidInput(field, enum_reason(field, message[len(INVALID_ENUM) :], values))
    return None


def convert_error(exc: msgspec.ValidationError, model: Any, whole: str = "message") -> InvalidInput:
    """``exc``, raised converting input to ``model``, as :class:`InvalidInput` naming the
    field by its path (``whole`` when the error is about the input as a whole)."""
    text = str(exc)
    match = _MSGSPEC_PATH.search(text)
    path = match["path"] if match and match["path"] else ""
    message = text.split(" - at ")[0]
    named = explained(message, model, path)
    if named is not None:
        return named
    field = path or whole
    detail = message.replace("`", "")
    return InvalidInput(field, f"invalid {field}: {detail[0].lower()}{detail[1:]}")
