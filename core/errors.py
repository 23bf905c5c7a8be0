"""Errors the domain raises, shaped so the gateway can answer a caller with something actionable.

Every rejection carries a stable machine-readable ``code``, a sentence a person can act on, and,
where the problem is in one place of the input, the ``field`` path (``spec.containers[0].image``).
Input with several problems (a manifest with a typo'd field name and two bad values) carries all
of them in ``errors``, as the API server lists every field error at once: fixing one problem at
a time, one round trip each, is the experience this avoids. ``message``/``field`` are the first
of them (unknown fields come first: a misspelt field is what a user most needs to see). The
gateway turns these into structured replies; the CLI prints one line per problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

MAX_REPORTED_ERRORS: Final = 100
"""At most this many field errors travel in a reply (a hostile manifest could have thousands;
the answer must stay well under the server's message limit)."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem of the input: where (``spec.containers[0].image``; None for the whole input)
    and what, in the API server's words."""

    field: str | None
    message: str

    def as_dict(self) -> dict[str, str]:
        return (
            {"field": self.field, "message": self.message}
            if self.field
            else {"message": self.message}
        )

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class FleetError(Exception):
    """Base of every error fleetlog reports to a caller."""

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        errors: Iterable[FieldError] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors: tuple[FieldError, ...] = tuple(errors)
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.errors:
            shown = self.errors[:MAX_REPORTED_ERRORS]
            out["errors"] = [error.as_dict() for error in shown]
            if len(self.errors) > len(shown):
                out["errors_omitted"] = len(self.errors) - len(shown)
        return out

    def __str__(self) -> str:
        if len(self.errors) > 1:
            lines = [f"{len(self.errors)} errors:"]
            lines += [f"  {error}" for error in self.errors]
            return "\n".join(lines)
        return f"{self.message} (at {self.field})" if self.field else self.message


class ValidationFailed(FleetError):
    """Input that does not match the schema: unknown field, wrong type, invalid value."""

    code = "invalid"


class InvalidQuantity(ValidationFailed):
    """A resource quantity that Kubernetes would not parse either."""

    code = "invalid_quantity"


class UnknownKind(FleetError):
    """A manifest or command names a kind fleetlog does not know."""

    code = "unknown_kind"


class InvalidTransition(FleetError):
    """A command that is well-formed but not allowed in the aggregate's current state."""

    code = "invalid_transition"


class NotFound(FleetError):
    """The command targets an object that does not exist (or was deleted)."""

    code = "not_found"


class AlreadyExists(FleetError):
    """A create for an object that already exists."""

    code = "already_exists"


class Conflict(FleetError):
    """The caller's expected version is not the object's current version."""

    code = "conflict"
