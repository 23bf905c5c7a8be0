"""What ``fleetlog rollout`` decides, as kubectl decides it: the status message of a deployment's
rollout, its revision history, the target and the manifest of an undo, pause and resume.

Why this exists: kubectl's rollout commands are client-side logic over what the cluster
stores (``pkg/cmd/rollout`` and ``polymorphichelpers``: rollout_status.go, history.go,
rollback.go). The deployment controller records a revision on each replica set it creates
(``deployment.kubernetes.io/revision``) and its progress in the deployment's ``status``; these
functions read the query service's items (``fleetlog get``'s records: ``manifest``, ``uid``,
``version``) and return messages or the manifest to apply, so they are tested without a
server. Writes are a read-modify-apply with the version read as ``expected_version``: a change
that lands in between is refused rather than overwritten (:func:`apply_deployment`).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import FleetError, NotFound, ValidationFailed
from core.workloads.deployment import (
    NOT_COPIED_ANNOTATIONS,
    REVISION_ANNOTATION,
    TIMED_OUT_REASON,
    template_without_hash,
)
from ops.cliargs import split_ref

if TYPE_CHECKING:
    from streams.commandbus import CommandClient, Outcome

T = TypeVar("T")

CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
# rollback.go ``annotationsToSkip``: an undo keeps the deployment's own values of these and
# takes every other annotation from the replica set it rolls back to.
ROLLBACK_KEPT_ANNOTATIONS = NOT_COPIED_ANNOTATIONS


def deployment_name(ref: str) -> str:
    """``deployment/web``, ``deploy/web`` or ``deployment.apps/web`` → ``web``; rollouts are
    a deployment's, so any other kind is refused."""
    kind, name = split_ref(ref)
    if kind != "Deployment":
        raise ValidationFailed(
            f"fleetlog rollout works on deployments only, not on a {kind.lower()} "
            "(use deployment/NAME)",
            code="unsupported",
        )
    return name


def not_found(name: str) -> NotFound:
    return NotFound(f'deployments.apps "{name}" not found')


def _metadata(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    return manifest.get("metadata") or {}


def revision_of(manifest: Mapping[str, Any]) -> int | None:
    """``deploymentutil.Revision``: the revision annotation, 0 without one, ``None`` if it is
    not a number (kubectl skips such replica sets)."""
    value = (_metadata(manifest).get("annotations") or {}).get(REVISION_ANNOTATION)
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def controlled_by(replica_sets: Iterable[dict[str, Any]], owner_uid: str) -> list[dict[str, Any]]:
    """The replica sets (query items) whose controller reference is the deployment with
    ``owner_uid`` (``metav1.IsControlledBy``: a replica set of an earlier deployment of the
    same name is not this one's)."""
    return [
        item
        for item in replica_sets
        if any(
            ref.get("controller") and ref.get("uid") == owner_uid
            for ref in _metadata(item["manifest"]).get("ownerReferences") or []
        )
    ]


def _template(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy((manifest.get("spec") or {}).get("template") or {})


# -- history -----------------------------------------------------------------------------------


def revision_history(replica_sets: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """history.go ``ViewHistory``: revision → that replica set's pod template, with the
    replica set's change-cause copied into the template's annotations."""
    history: dict[int, dict[str, Any]] = {}
    for item in replica_sets:
        manifest = item["manifest"]
        revision = revision_of(manifest)
        if revision is None:
            continue
        template = _template(manifest)
        cause = (_metadata(manifest).get("annotations") or {}).get(CHANGE_CAUSE_ANNOTATION)
        if cause:
            metadata = template.setdefault("metadata", {})
            metadata["annotations"] = {
                **(metadata.get("annotations") or {}),
                CHANGE_CAUSE_ANNOTATION: cause,
            }
        history[revision] = template
    return history


def history_rows(history: Mapping[int, Mapping[str, Any]]) -> list[list[str]]:
    """The REVISION / CHANGE-CAUSE rows, oldest revision first (``<none>`` without a cause)."""
    rows = []
    for revision in sorted(history):
        annotations = _metadata(history[revision]).get("annotations") or {}
        rows.append([str(revision), annotations.get(CHANGE_CAUSE_ANNOTATION) or "<none>"])
    return rows


def revision_template(history: Mapping[int, dict[str, Any]], revision: int) -> dict[str, Any]:
    """``--revision N``: that revision's pod template."""
    if revision not in history:
        raise NotFound("unable to find the specified revision")
    return history[revision]


# -- undo --------------------------------------------------------------------------------------


def rollback_target(
    replica_sets: Iterable[dict[str, Any]], to_revision: int, name: str
) -> tuple[int, dict[str, Any]]:
    """rollback.go ``deploymentRevision``: the replica set of revision ``to_revision``, or
    with 0 the one of the second-highest revision; ``(revision, item)``."""
    if to_revision < 0:
        raise NotFound(f"unable to find specified revision {to_revision} in history")
    latest: tuple[int, dict[str, Any]] | None = None
    previous: tuple[int, dict[str, Any]] | None = None
    for item in replica_sets:
        revision = revision_of(item["manifest"])
        if revision is None:
            continue
        if to_revision:
            if revision == to_revision:
                return revision, item
        elif latest is None or latest[0] < revision:
            previous, latest = latest, (revision, item)
        elif previous is None or previous[0] < revision:
            previous = (revision, item)
    if to_revision:
        raise NotFound(f"unable to find specified revision {to_revision} in history")
    if previous is None:
        raise NotFound(f'no rollout history found for deployment "{name}"')
    return previous


def stored_manifest(item: Mapping[str, Any]) -> dict[str, Any]:
    """What to send back in an ``apply``: the stored manifest without ``status`` (the server
    keeps it, with ``metadata.generation`` and the controller's annotations)."""
    return {k: copy.deepcopy(v) for k, v in item["manifest"].items() if k != "status"}


def _paused(manifest: Mapping[str, Any]) -> bool:
    return bool((manifest.get("spec") or {}).get("paused"))


@dataclass(frozen=True)
class Undo:
    """An undo's decision: the revision rolled back to, and the manifest to apply (``None``
    when the deployment's template already is that revision's)."""

    revision: int
    manifest: dict[str, Any] | None

    def message(self, name: str) -> str:
        if self.manifest is None:
            return (
                f"deployment.apps/{name} skipped rollback "
                f"(current template already matches revision {self.revision})"
            )
        return f"deployment.apps/{name} rolled back"


def plan_undo(
    deployment: Mapping[str, Any], replica_sets: Iterable[dict[str, Any]], to_revision: int
) -> Undo:
    """rollback.go ``Rollback``, in its order: find the revision, refuse a paused deployment,
    skip when the template already matches, else the deployment with the replica set's
    template (without ``pod-template-hash``) and its annotations."""
    name = deployment["name"]
    owned = controlled_by(replica_sets, deployment["uid"])
    revision, target = rollback_target(owned, to_revision, name)
    manifest = stored_manifest(deployment)
    if _paused(manifest):
        raise FleetError(
            "you cannot rollback a paused deployment; resume it first with "
            f"'fleetlog rollout resume deployment/{name}' and try again",
            code="invalid_transition",
        )
    template = template_without_hash(_template(target["manifest"]))
    if template == template_without_hash(_template(manifest)):
        return Undo(revision, None)
    metadata = dict(_metadata(manifest))
    own = metadata.get("annotations") or {}
    annotations = {k: v for k, v in own.items() if k in ROLLBACK_KEPT_ANNOTATIONS}
    annotations |= {
        k: v
        for k, v in (_metadata(target["manifest"]).get("annotations") or {}).items()
        if k not in ROLLBACK_KEPT_ANNOTATIONS
    }
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    manifest["metadata"] = metadata
    manifest["spec"] = {**manifest.get("spec", {}), "template": template}
    return Undo(revision, manifest)


# -- pause and resume --------------------------------------------------------------------------


def with_paused(deployment: Mapping[str, Any], paused: bool) -> dict[str, Any]:
    """The manifest to apply to pause (or resume) the deployment; kubectl's error if it
    already is."""
    manifest = stored_manifest(deployment)
    if _paused(manifest) == paused:
        state = "is already paused" if paused else "is not paused"
        raise FleetError(
            f'deployments.apps "{deployment["name"]}" {state}', code="invalid_transition"
        )
    manifest["spec"] = {**manifest.get("spec", {}), "paused": paused}
    return manifest


async def apply_deployment(
    commands: CommandClient, deployment: Mapping[str, Any], manifest: dict[str, Any]
) -> Outcome:
    """Apply ``manifest`` only if the deployment is still at the version it was read at."""
    try:
        return await commands.send(
            "Deployment", "apply", {"manifest": manifest}, expected_version=deployment["version"]
        )
    except FleetError as exc:
        if exc.code != "conflict":
            raise
        name = deployment["name"]
        raise FleetError(
            f'Operation cannot be fulfilled on deployments.apps "{name}": the object has been '
            "modified since it was read; please run the command again",
            code="conflict",
        ) from exc


CONFLICT_ATTEMPTS = 5


async def retry_on_conflict(
    attempt: Callable[[], Awaitable[T]], *, attempts: int = CONFLICT_ATTEMPTS
) -> T:
    """Run ``attempt`` (read the deployment, decide, :func:`apply_deployment` at the version
    read) again when the deployment changed in between, up to ``attempts`` times.

    kubectl sends undo, pause and resume as patches, which its controller's status updates
    during a rollout never conflict with; fleetlog applies the whole manifest at the version it
    read, so it reads and decides again on the fresh one instead (as kubectl's own
    read-modify-write commands retry on a conflict). Any other refusal is raised at once."""
    for number in range(1, attempts + 1):
        try:
            return await attempt()
        except FleetError as exc:
            if exc.code != "conflict" or number == attempts:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


# -- status ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutStatus:
    message: str
    done: bool


def rollout_status(manifest: Mapping[str, Any], name: str) -> RolloutStatus:
    """rollout_status.go ``DeploymentStatusViewer.Status``: where the rollout stands; a
    rollout past its progress deadline is an error."""
    generation = int(_metadata(manifest).get("generation") or 0)
    status = manifest.get("status") or {}
    if generation > int(status.get("observedGeneration") or 0):
        return RolloutStatus("Waiting for deployment spec update to be observed...", False)
    progressing = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None
    )
    if progressing is not None and progressing.get("reason") == TIMED_OUT_REASON:
        raise FleetError(f'deployment "{name}" exceeded its progress deadline', code="timeout")
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    desired = int((manifest.get("spec") or {}).get("replicas", 1))
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < desired:
        message = f"{updated} out of {desired} new replicas have been updated..."
        return RolloutStatus(waiting + message, False)
    if replicas > updated:
        message = f"{replicas - updated} old replicas are pending termination..."
        return RolloutStatus(waiting + message, False)
    if available < updated:
        message = f"{available} of {updated} updated replicas are available..."
        return RolloutStatus(waiting + message, False)
    return RolloutStatus(f'deployment "{name}" successfully rolled out', True)
