"""The base of every resource model and the Kubernetes-style field errors it raises.

Why this exists: every kind (Pod, Node, Deployment, ...) needs the same model configuration
(unknown fields rejected, camelCase on the wire, snake_case in Python) and the same way of turning
a pydantic error into a ``ValidationFailed`` that names the offending fields with Kubernetes-style
paths (``spec.containers[0].image``), so that messages read like the API server's. Like the API
server, a validator reports every problem it finds, not only the first: :class:`Problems`
collects them and raises them as one pydantic error that :func:`to_validation_failed` unfolds
again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from core.errors import FieldError, InvalidQuantity, ValidationFailed

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
Problem = tuple[Loc, str]
"""``(subpath, message)``: one problem a validator found, below the value it validates."""


def field_error(message: str, *subpath: str | int, kind: str = FIELD_ERROR) -> PydanticCustomError:
    """An error for a validator to raise; ``subpath`` (wire names) is appended to its location."""
    return PydanticCustomError(kind, "{message}", {"message": message, "subpath": subpath})


def field_errors(problems: Sequence[Problem], *, kind: str = FIELD_ERROR) -> PydanticCustomError:
    """Several problems as one error for a validator to raise (a validator can raise only one);
    :func:`to_validation_failed` reports each of them at its own path."""
    (subpath, message), *more = problems
    return PydanticCustomError(
        kind, "{message}", {"message": message, "subpath": subpath, "more": more}
    )


class Problems:
    """What a validator found wrong, collected so that all of it is reported at once (as the API
    server's ``field.ErrorList``), then raised by :meth:`check`."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, message: str, *subpath: str | int) -> None:
        self.items.append((subpath, message))

    def extend(self, problems: Sequence[Problem], *prefix: str | int) -> None:
        self.items.extend((prefix + subpath, message) for subpath, message in problems)

    def __bool__(self) -> bool:
        return bool(self.items)

    def check(self) -> None:
        """Raise everything found, if anything was."""
        if self.items:
            raise field_errors(self.items)


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


_LITERAL_RE: Final = re.compile(r"'((?:[^'\\]|\\.)*)'")


def supported_values(values: Sequence[str]) -> str:
    """``field.NotSupported``'s list: ``"a", "b", "c"``."""
    return ", ".join(json.dumps(v) for v in values)


def unsupported(value: object, values: Sequence[str]) -> str:
    """The Kubernetes-style sentence for a value outside a fixed set (``field.NotSupported``)."""
    return f"Unsupported value {show(value)}: supported values: {supported_values(values)}"


def _describe(error: Mapping[str, Any]) -> Iterator[tuple[Loc, str]]:
    """One pydantic error -> (location in wire names, short human message) for each problem it
    carries (one, except for :func:`field_errors`)."""
    kind: str = error["type"]
    loc: Loc = tuple(error["loc"])
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind in (FIELD_ERROR, QUANTITY_ERROR):
        yield loc + tuple(ctx.get("subpath", ())), str(ctx["message"])
        for subpath, message in ctx.get("more", ()):
            yield loc + tuple(subpath), str(message)
        return
    yield _describe_one(kind, loc, ctx, error)


def _describe_one(
    kind: str, loc: Loc, ctx: Mapping[str, Any], error: Mapping[str, Any]
) -> tuple[Loc, str]:
    value = error.get("input")
    last = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        return loc, f"unknown field {show(str(last))}"
    if kind == "missing":
        return loc, f"missing required field {show(str(last))}"
    if kind == "literal_error":
        expected = _LITERAL_RE.findall(str(ctx.get("expected", "")))
        return loc, unsupported(value, expected)
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
    """Turn a pydantic ``ValidationError`` into one ``ValidationFailed`` (or ``InvalidQuantity``)
    that lists every problem with its Kubernetes-style path.

    Unknown fields come first (a misspelt field name is the error a user most needs to see, and
    often the cause of the others), then the rest in document order; ``message``/``field`` are
    the first of them, and its kind decides the error's class.
    """
    found: list[tuple[bool, str, FieldError]] = []
    for error in err.errors(include_url=False):
        for loc, message in _describe(error):
            path = format_path(prefix + loc) or None
            found.append(
                (error["type"] != "extra_forbidden", error["type"], FieldError(path, message))
            )
    if not found:  # pragma: no cover - pydantic never raises an empty error
        return ValidationFailed("invalid input")
    found.sort(key=lambda item: item[0])  # stable: document order within each group
    _, first_kind, first = found[0]
    errors = [field_error for _, _, field_error in found]
    cls = InvalidQuantity if first_kind == QUANTITY_ERROR else ValidationFailed
    return cls(first.message, field=first.field, errors=errors)
