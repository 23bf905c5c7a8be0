"""``Status`` objects: how the Kubernetes API answers a refusal, and how fleetlog's refusals map
onto it.

Why this exists: kubectl prints ``Error from server (NotFound): pods "web" not found`` from the
``reason`` and ``message`` of a ``Status``, client libraries branch on ``code`` and ``reason``
(``IsNotFound``, ``IsConflict``), and ``kubectl apply`` lists an invalid object's field errors
from ``details.causes``. The gateway refuses with fleetlog's codes (``core.errors``); this is the
one table from those codes to Kubernetes' (``k8s.io/apimachinery/pkg/api/errors``' reasons and
HTTP codes, and their messages' shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import FieldError, FleetError

MAX_BODY_BYTES = 3 * 1024 * 1024
"""kube-apiserver's limit on a request body (``MaxRequestBodyBytes``, 3 MiB)."""


@dataclass(frozen=True)
class Target:
    """What a request was about, for the ``details`` of its Status: the resource's plural
    (``pods``), its group, and the object's name when there is one; ``kind`` is the kind's
    name, for Invalid's ``Pod "web" is invalid``."""

    resource: str = ""
    group: str = ""
    name: str = ""
    kind: str = ""

    @property
    def qualified_resource(self) -> str:
        """``pods``, ``deployments.apps``: how kube names a resource in its messages."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


@dataclass(frozen=True)
class APIError(Exception):
    """A refusal the HTTP door answers with a ``Status`` (``code`` is the HTTP status)."""

    code: int
    reason: str
    message: str
    target: Target = field(default_factory=Target)
    causes: tuple[dict[str, str], ...] = ()
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> dict[str, Any]:
        return failure(
            code=self.code,
            reason=self.reason,
            message=self.message,
            target=self.target,
            causes=self.causes,
            retry_after=self.retry_after,
        )


def failure(
    *,
    code: int,
    reason: str,
    message: str,
    target: Target | None = None,
    causes: tuple[dict[str, str], ...] = (),
    retry_after: int | None = None,
) -> dict[str, Any]:
    """A ``Status`` of a failed request, as kube-apiserver writes it."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    details: dict[str, Any] = {}
    if target is not None:
        if target.name:
            details["name"] = target.name
        if target.group:
            details["group"] = target.group
        if target.resource:
            details["kind"] = target.kind if reason == "Invalid" else target.resource
    if causes:
        details["causes"] = list(causes)
    if retry_after is not None:
        details["retryAfterSeconds"] = retry_after
    if details:
        status["details"] = details
    return status


def success(*, target: Target, uid: str = "") -> dict[str, Any]:
    """The ``Status`` of a delete that removed the object at once."""
    details: dict[str, Any] = {"name": target.name, "kind": target.resource}
    if target.group:
        details["group"] = target.group
    if uid:
        details["uid"] = uid
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def not_found(target: Target) -> APIError:
    return APIError(
        404, "NotFound", f'{target.qualified_resource} "{target.name}" not found', target
    )


def already_exists(target: Target) -> APIError:
    return APIError(
        409, "AlreadyExists", f'{target.qualified_resource} "{target.name}" already exists', target
    )


def conflict(target: Target, why: str) -> APIError:
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {target.qualified_resource} "{target.name}": {why}',
        target,
    )


MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def bad_request(message: str, target: Target | None = None) -> APIError:
    return APIError(400, "BadRequest", message, target or Target())


def method_not_allowed(target: Target | None = None) -> APIError:
    return APIError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        target or Target(),
    )


def not_acceptable(offered: str) -> APIError:
    return APIError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: {offered}",
    )


def unsupported_media_type(
    content_type: str, accepted: tuple[str, ...] = ("application/json",)
) -> APIError:
    return APIError(
        415,
        "UnsupportedMediaType",
        f'the body of the request was in an unknown format "{content_type}" - accepted media '
        f"types include: {', '.join(accepted)}",
    )


def too_large(limit: int = MAX_BODY_BYTES) -> APIError:
    return APIError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def gone(requested: int, oldest: int) -> APIError:
    """A watch from before the log's first event (kube's ``Expired``)."""
    return APIError(410, "Expired", f"too old resource version: {requested} ({oldest})")


def too_large_resource_version(requested: int, current: int) -> APIError:
    """A read that asked for a resourceVersion the server has not reached in time."""
    return APIError(
        504,
        "Timeout",
        f"Too large resource version: {requested}, current: {current}",
        causes=({"reason": "ResourceVersionTooLarge", "message": "Too large resource version"},),
        retry_after=1,
    )


def invalid(target: Target, errors: tuple[FieldError, ...]) -> APIError:
    """kube's ``Invalid`` (422): ``Pod "web" is invalid: spec…: …``, every field error a cause."""
    texts = [str(error) for error in errors]
    listed = texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"
    causes = tuple(
        {"reason": "FieldValueInvalid", "message": error.message, "field": error.field or ""}
        for error in errors
    )
    return APIError(
        422, "Invalid", f'{target.qualified_kind} "{target.name}" is invalid: {listed}', target,
        causes,
    )  # fmt: skip


_INVALID_CODES = frozenset(
    {"invalid", "invalid_quantity", "invalid_transition", "malformed", "range_full",
     "cidr_not_available", "unknown_verb"}
)  # fmt: skip


def from_fleet_error(error: FleetError, target: Target) -> APIError:
    """The Kubernetes refusal of a refusal by fleetlog's gateway (or domain)."""
    code = error.code
    if code == "not_found":
        return not_found(target)
    if code == "already_exists":
        return already_exists(target)
    if code == "conflict":
        return conflict(target, MODIFIED)
    if code == "forbidden":
        prefix = f'{target.qualified_resource} "{target.name}" is forbidden: '
        # Admission's refusals (LimitRanger, PodSecurity) already name the object, in kube's
        # words: named once, not twice.
        message = error.message if error.message.startswith(prefix) else prefix + error.message
        return APIError(403, "Forbidden", message, target)
    if code == "too_many_requests":
        # API Priority and Fairness refused it (the gateway's, after the client's retries).
        return APIError(429, "TooManyRequests", error.message, target, retry_after=1)
    if code == "payload_too_large":
        return APIError(413, "RequestEntityTooLarge", error.message, target)
    if code == "unavailable":
        return APIError(503, "ServiceUnavailable", error.message, target)
    if code == "timeout":
        return APIError(504, "Timeout", error.message, target, retry_after=1)
    if code == "unknown_kind":
        return bad_request(error.message, target)
    if code == "unsupported":
        return method_not_allowed(target)
    if code in _INVALID_CODES or error.field or error.errors:
        errors = error.errors or (FieldError(error.field, error.message),)
        return invalid(target, errors)
    return APIError(500, "InternalError", f"Internal error occurred: {error.message}", target)
