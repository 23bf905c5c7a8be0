"""The command catalog: what a caller may ask fleetlog to do, and how each request is shaped.

A command arrives on ``fleet.cmd.<kind>.<verb>`` as a msgpack map: ``{"v": schema version,
"id": idempotency key, "actor": who asks, "body": {...}}``. The verb selects the body schema
below; the kind comes from the subject. Commands are versioned like events, with upcasters, so
an older client keeps working after the body shape changes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.api.events import Upcasters
from core.errors import ValidationFailed

VERBS = (
    "create", "apply", "delete", "scale", "cordon", "uncordon", "status", "bind", "evict",
    "resize",
)  # fmt: skip
_COMMAND_FIELDS = frozenset(
    {"v", "id", "actor", "body", "expected_version", "correlation_id", "causation_id", "source",
     # The impersonated actor's groups, read by authentication (only from the control plane's
     # Kubernetes door: ``streams.commandbus.ACTOR_GROUPS``), never by a decision.
     "actor_groups", "dry_run"}
)  # fmt: skip
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{8,128}")


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestBody(CommandBody):
    """create / apply: the Kubernetes-shaped manifest (validated by ``core.api.manifests``)."""

    manifest: dict[str, Any]


PropagationPolicy = Literal["Background", "Foreground", "Orphan"]


class DeleteBody(CommandBody):
    """delete: which object; ``namespace`` is ignored for cluster-scoped kinds.

    ``propagationPolicy`` is Kubernetes' DeleteOptions field: what becomes of the object's
    dependents (those whose ``metadata.ownerReferences`` name its uid). ``Background`` (the
    default, as kubectl's) and ``Foreground`` let the garbage collector delete them; ``Orphan``
    keeps them and removes their reference to this owner. An older command without the field
    means Background, so no upcaster is needed."""

    name: str
    namespace: str = "default"
    reason: str = ""
    propagationPolicy: PropagationPolicy = "Background"


class EvictBody(CommandBody):
    """evict: delete a pod unless a PodDisruptionBudget forbids it (kube's ``pods/eviction``).

    The one way fleetlog evicts honouring budgets: ``fleetlog drain``, ``kubectl drain``
    through the HTTP door and autoscalers send it. Decided with the pod's budget in one append
    (``core.disruption.eviction.evict_pod``): refused with kube's 429 when the budget allows no
    disruption, else the pod is deleted and the budget records it in ``disruptedPods``."""

    name: str
    namespace: str = "default"
    reason: str = ""
    propagationPolicy: PropagationPolicy = "Background"


class ScaleBody(CommandBody):
    """scale: set the desired replica count of a scalable workload."""

    name: str
    namespace: str = "default"
    replicas: int = Field(ge=0, le=2**31 - 1)  # Kubernetes' int32 spec.replicas
    reason: str = ""
    why: dict[str, Any] | None = None
    """An autoscaler's why record, carried into the ``ScaledTo`` event (absent: a manual
    scale). An older command without it needs no upcaster."""


class StatusBody(CommandBody):
    """status: a controller records what it observed of a workload (Kubernetes' status
    subresource), with the annotations it owns (``deployment.kubernetes.io/…``); no ``status``
    keeps the recorded one (an annotation-only update)."""

    name: str
    namespace: str = "default"
    status: dict[str, Any] | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    why: dict[str, Any] | None = None
    """An autoscaler's why record, carried into the status event: an HPA's evaluation that
    changed no replica count but changed its reason, a VPA recommender's inputs. An older
    command without it needs no upcaster."""


class BindBody(CommandBody):
    """bind: put a pending pod on a node (Kubernetes' ``pods/binding``, what a scheduler of
    its own asks). Decided as the scheduler's binding is: the pod must be unbound and the node
    must fit its requests, both recorded in one append."""

    name: str
    namespace: str = "default"
    node: str = Field(min_length=1, max_length=253)


class ContainerResources(CommandBody):
    """One container's new ``resources`` (``requests`` and ``limits``, as in a manifest)."""

    name: str = Field(min_length=1, max_length=63)
    resources: dict[str, Any] = Field(default_factory=dict)


class ResizeBody(CommandBody):
    """resize: new resources for some of a pod's containers, in place (Kubernetes'
    ``pods/resize`` subresource, ``kubectl patch pod NAME --subresource resize``). Each entry
    names a regular container or a sidecar and gives its whole new ``resources``; containers
    not named keep theirs. Validated as kube's ``ValidatePodResize`` (``core.pods.resize``),
    charged to the namespace's quotas, recorded as ``PodResized``; the pod's node applies it."""

    name: str
    namespace: str = "default"
    containers: list[ContainerResources] = Field(min_length=1, max_length=64)
    reason: str = ""


class NodeBody(CommandBody):
    """cordon / uncordon: which node (nodes are cluster-scoped)."""

    name: str
    reason: str = ""


BODIES: dict[str, type[CommandBody]] = {
    "create": ManifestBody,
    "apply": ManifestBody,
    "delete": DeleteBody,
    "scale": ScaleBody,
    "cordon": NodeBody,
    "uncordon": NodeBody,
    "status": StatusBody,
    "bind": BindBody,
    "evict": EvictBody,
    "resize": ResizeBody,
}
COMMAND_SCHEMA_VERSION = 1
COMMAND_UPCASTERS = Upcasters({f"cmd:{verb}": COMMAND_SCHEMA_VERSION for verb in VERBS})


class Command(BaseModel):
    """A decoded, validated command."""

    model_config = ConfigDict(frozen=True)

    kind: str
    verb: Literal[
        "create",
        "apply",
        "delete",
        "scale",
        "cordon",
        "uncordon",
        "status",
        "bind",
        "evict",
        "resize",
    ]
    idempotency_key: str
    actor: str
    body: CommandBody
    expected_version: int | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    source: str | None = None
    """Where the command came from, as the client says (host and process): for the audit."""
    dry_run: bool = False
    """Decide (authentication, authorization, admission, the aggregate's rules) and answer
    with the object as it would be, appending nothing: kube's ``dryRun=All``."""


def parse_command(kind: str, verb: str, raw: object) -> Command:
    """Validate a decoded command map for ``kind``/``verb``; raise ValidationFailed with a path."""
    if verb not in BODIES:
        raise ValidationFailed(
            f"unknown verb {verb!r}: use one of {', '.join(VERBS)}", code="unknown_verb"
        )
    if not isinstance(raw, dict):
        raise ValidationFailed("a command must be a map with v, id, actor and body")
    unknown = sorted(set(raw) - _COMMAND_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown field {unknown[0]!r} in command", field=unknown[0])
    version = raw.get("v", COMMAND_SCHEMA_VERSION)
    if not isinstance(version, int):
        raise ValidationFailed("v must be an integer schema version", field="v")
    key = raw.get("id")
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationFailed(
            "id (the idempotency key) must be 8-128 characters of letters, digits, . _ : -",
            field="id",
        )
    actor = raw.get("actor")
    if not isinstance(actor, str) or not actor or len(actor) > 256:
        raise ValidationFailed(
            "actor must be a non-empty string of at most 256 chars", field="actor"
        )
    body = raw.get("body")
    if not isinstance(body, dict):
        raise ValidationFailed("body must be a map", field="body")
    expected = raw.get("expected_version")
    if expected is not None and (not isinstance(expected, int) or expected < 0):
        raise ValidationFailed(
            "expected_version must be a non-negative integer", field="expected_version"
        )
    chain: dict[str, str] = {}
    for link in ("correlation_id", "causation_id"):
        value = raw.get(link)
        if value is not None:
            if not isinstance(value, str) or not 0 < len(value) <= 128:
                raise ValidationFailed(f"{link} must be a string of 1-128 characters", field=link)
            chain[link] = value
    source = raw.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > 256):
        raise ValidationFailed("source must be a string of at most 256 characters", field="source")
    dry_run = raw.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ValidationFailed("dry_run must be true or false", field="dry_run")
    _, body = COMMAND_UPCASTERS.upcast(f"cmd:{verb}", version, body)
    try:
        parsed = BODIES[verb].model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in ("body", *first["loc"]))
        message = first["msg"] if first["type"] != "extra_forbidden" else "unknown field"
        raise ValidationFailed(f"{message}: {path}", field=path) from exc
    return Command(
        kind=kind,
        verb=verb,  # type: ignore[arg-type]
        idempotency_key=key,
        actor=actor,
        body=parsed,
        expected_version=expected,
        source=source,
        dry_run=dry_run,
        **chain,
    )


def command_message(
    *,
    idempotency_key: str,
    actor: str,
    body: dict[str, Any],
    expected_version: int | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    source: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The map a client sends for a command (before msgpack)."""
    msg: dict[str, Any] = {
        "v": COMMAND_SCHEMA_VERSION,
        "id": idempotency_key,
        "actor": actor,
        "body": body,
    }
    if expected_version is not None:
        msg["expected_version"] = expected_version
    if correlation_id is not None:
        msg["correlation_id"] = correlation_id
    if causation_id is not None:
        msg["causation_id"] = causation_id
    if source is not None:
        msg["source"] = source
    if dry_run:
        msg["dry_run"] = True
    return msg
