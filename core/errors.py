"""Errors the domain raises, shaped so the gateway can answer a caller with something actionable.

Every rejection carries a stable machine-readable ``code``, a sentence a person can act on, and,
where the problem is in one place of the input, the ``field`` path (``spec.containers[0].image``).
The gateway turns these into structured replies; the CLI prints them as one line.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error fleetlog reports to a caller."""

    code: str = "error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out

    def __str__(self) -> str:
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
