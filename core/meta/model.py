"""The base of every resource model and the Kubernetes-style field errors it raises.

Why this exists: every kind (Pod, Node, Deployment, ...) needs the same model configuration
(unknown fields rejected, camelCase on the wire, snake_case in Python) and the same way of turning
a pydantic error into a ``ValidationFailed`` that names the offending field with a
Kubernetes-style path (``spec.containers[0].image``), so that messages read like the API
server's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from core.errors import InvalidQuantity, ValidationFailed

# --------------------------------------------------------------------------------------------
# Model configuration
# --------------------------------------------------------------------------------------------


class K8sModel(BaseModel):
    """Base of every resource model: strict about unknown fields, camelCase on the wire."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )


# --------------------------------------------------------------------------------------------
# Errors with a Kubernetes-style field path
# --------------------------------------------------------------------------------------------

FIELD_ERROR: Final = "fleetlog"
"""pydantic error type for our own checks; ``ctx['subpath']`` extends the error location."""

QUANTITY_ERROR: Final = "fleetlog_quantity"
"""Like :data:`FIELD_ERROR`, for a value that is not a valid quantity."""

Loc = tuple[str | int, ...]


def field_error(message: str, *subpath: str | int, kind: str = FIELD_ERROR) -> PydanticCustomError:
    """An error for a validator to raise; ``subpath`` (wire names) is appended to its location."""
    return PydanticCustomError(kind, "{message}", {"message": message, "subpath": subpath})


def show(value: object) -> str:
    """A short, terminal-safe rendering of a user-supplied value for an error message."""
    if isinstance(value, str):
        if len(value) > 64:
            return json.dumps(value[:61])[:-1] + '..."'
        return json.dumps(value)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


def invalid(value: object, reason: str) -> str:
    """The Kubernetes-style sentence for a bad value: ``Invalid value "x": <reason>``."""
    return f"Invalid value {show(value)}: {reason}"


def duplicate(value: object) -> str:
    return f"Duplicate value {show(value)}"


_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_BRACKET_KEY: Final = re.compile(r"[A-Za-z0-9_./-]+")


def format_path(loc: Loc) -> str:
    """``('spec', 'containers', 0, 'image')`` -> ``spec.containers[0].image``.

    Map keys that are not plain words print in brackets, like Kubernetes' ``field.Path.Key``:
    ``metadata.labels[app.kubernetes.io/name]``.
    """
    out: list[str] = []
    for item in loc:
        if isinstance(item, int):
            out.append(f"[{item}]")
        elif _PLAIN_KEY.fullmatch(item):
            out.append(f".{item}" if out else item)
        elif _BRACKET_KEY.fullmatch(item):
            out.append(f"[{item}]")
        else:
            out.append(f"[{json.dumps(item)}]")
    return "".join(out)


_EXPECTED: Final[dict[str, str]] = {
    "string_type": "a string",
    "string_unicode": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "none_required": "null",
}
_BOUNDS: Final[dict[str, tuple[str, str]]] = {
    "greater_than_equal": ("ge", "greater than or equal to"),
    "greater_than": ("gt", "greater than"),
    "less_than_equal": ("le", "less than or equal to"),
    "less_than": ("lt", "less than"),
}


def _describe(error: Mapping[str, Any]) -> tuple[Loc, str]:
    """One pydantic error -> (location in wire names, short human message)."""
    kind: str = error["type"]
    loc: Loc = tuple(error["loc"])
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    last = loc[-1] if loc else ""
    if kind in (FIELD_ERROR, QUANTITY_ERROR):
        return loc + tuple(ctx.get("subpath", ())), str(ctx["message"])
    if kind == "extra_forbidden":
        return loc, f"unknown field {show(str(last))}"
    if kind == "missing":
        return loc, f"missing required field {show(str(last))}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", '"')
        return loc, f"Unsupported value {show(value)}: supported values: {expected}"
    if kind in _EXPECTED:
        return loc, invalid(value, f"must be {_EXPECTED[kind]}")
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return loc, invalid(value, f"must be {words} {ctx.get(key)}")
    if kind == "too_short":
        n = ctx.get("min_length")
        return loc, f"must have at least {n} item{'s' if n != 1 else ''}"
    if kind == "too_long":
        n = ctx.get("max_length")
        return loc, f"must have at most {n} item{'s' if n != 1 else ''}"
    return loc, invalid(value, str(error.get("msg", "is not valid")).lower())


def to_validation_failed(err: ValidationError, *, prefix: Loc = ()) -> ValidationFailed:
    """Turn a pydantic ``ValidationError`` into one ``ValidationFailed`` (or ``InvalidQuantity``).

    The first error is reported, with its Kubernetes-style path; the message says how many more
    there were.
    """
    errors = err.errors(include_url=False)
    if not errors:  # pragma: no cover - pydantic never raises an empty error
        return ValidationFailed("invalid input")
    first = errors[0]
    loc, message = _describe(first)
    if len(errors) > 1:
        more = len(errors) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    path = format_path(prefix + loc) or None
    if first["type"] == QUANTITY_ERROR:
        return InvalidQuantity(message, field=path)
    return ValidationFailed(message, field=path)
