"""The deployment controller's decisions, pure: which replica set is new, how far to scale each,
what to clean up, and what the deployment's status says.

Why this exists: a rollout is a sequence of small decisions (create the new replica set, scale
it up within the surge, scale old ones down within the unavailability budget, report progress
or a stalled rollout, keep ``revisionHistoryLimit`` old sets) whose correctness is all in the
arithmetic and the order — Kubernetes' ``pkg/controller/deployment`` (sync.go, rolling.go,
recreate.go, progress.go, util/deployment_util.go). Here they are functions of what the
controller sees (the deployment, the replica sets it controls with their pod counts, and the
time); the handler carries out the returned actions as commands and asks again when the log
moves. Everything the plan does is recorded by those commands (``ScaledTo`` with the reason,
``ReplicaSetCreated``, ``DeploymentStatusUpdated``), so a rollout can be replayed step by step.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.meta.timestamps import format_stamp, parse_stamp
from core.workloads.replicaset import PodCounts
from core.workloads.rollout import (
    ReplicaSetView,
    max_surge,
    max_unavailable,
    new_replica_set_replicas,
    plan_rolling_step,
)

__all__ = [
    "DESIRED_REPLICAS_ANNOTATION",
    "MAX_REPLICAS_ANNOTATION",
    "NOT_COPIED_ANNOTATIONS",
    "POD_TEMPLATE_HASH_LABEL",
    "REVISION_ANNOTATION",
    "TIMED_OUT_REASON",
    "AnnotateReplicaSet",
    "CopyAnnotations",
    "CreateReplicaSet",
    "DeleteReplicaSet",
    "DeploymentPlan",
    "OwnedReplicaSet",
    "ScaleReplicaSet",
    "plan_deployment",
    "pod_template_hash",
    "revision_of",
    "template_without_hash",
]

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
# Annotations a deployment does not hand down to its replica sets (``skipCopyAnnotation``),
# and that a rollback leaves as they are on the deployment (kubectl's ``annotationsToSkip``).
NOT_COPIED_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION_ANNOTATION,
        "deployment.kubernetes.io/revision-history",
        DESIRED_REPLICAS_ANNOTATION,
        MAX_REPLICAS_ANNOTATION,
        "deprecated.deployment.rollback.to",
    }
)
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery rand.SafeEncodeString

NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT_REASON = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"


@dataclass(frozen=True)
class OwnedReplicaSet:
    """A replica set the deployment controls, with the counts of its pods."""

    name: str
    uid: str
    manifest: Mapping[str, Any]
    created_ns: int
    pods: PodCounts = field(default_factory=PodCounts)

    @property
    def replicas(self) -> int:
        return int((self.manifest.get("spec") or {}).get("replicas", 1))

    @property
    def annotations(self) -> Mapping[str, str]:
        return (self.manifest.get("metadata") or {}).get("annotations") or {}

    @property
    def revision(self) -> int:
        return revision_of(self.manifest)

    def view(self) -> ReplicaSetView:
        return ReplicaSetView(self.name, self.replicas, self.pods.available, self.created_ns)


@dataclass(frozen=True)
class CreateReplicaSet:
    manifest: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class ScaleReplicaSet:
    """Scale to ``replicas`` and record the deployment's size it was scaled for."""

    name: str
    replicas: int
    reason: str
    annotations: dict[str, str]


@dataclass(frozen=True)
class AnnotateReplicaSet:
    """A replica set becomes the new one again (a rollback): it takes the next revision."""

    name: str
    annotations: dict[str, str]


@dataclass(frozen=True)
class CopyAnnotations:
    """The deployment's own annotations (``kubernetes.io/change-cause`` …) set on its new
    replica set, as kube copies them on every sync (``SetNewReplicaSetAnnotations``): an
    annotation added after the replica set was made is where ``kubectl rollout history``
    reads it."""

    name: str
    annotations: dict[str, str]


@dataclass(frozen=True)
class DeleteReplicaSet:
    name: str
    uid: str
    reason: str


Action = (
    CreateReplicaSet | ScaleReplicaSet | AnnotateReplicaSet | CopyAnnotations | DeleteReplicaSet
)
Scaler = Callable[[OwnedReplicaSet, int, str], None]


@dataclass
class DeploymentPlan:
    """The actions to carry out (in order), then the status to record with the deployment's
    revision annotation; ``recheck_at_ns``: when to look again even if nothing happens (the
    progress deadline)."""

    actions: list[Action]
    status: dict[str, Any]
    annotations: dict[str, str]
    recheck_at_ns: int | None = None
    complete: bool = False


# -- hashing and revisions ---------------------------------------------------------------------


def _fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def pod_template_hash(template: Mapping[str, Any], collision_count: int = 0) -> str:
    """``ComputeHash``: FNV-32a of the template (and the collision count), spelt in the
    alphabet Kubernetes uses for names (no vowels, no look-alike characters)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    if collision_count:
        text += str(collision_count)
    return "".join(
        _SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in str(_fnv32a(text.encode()))
    )


_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def template_without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """The template with its ``pod-template-hash`` label removed (``EqualIgnoreHash``), and
    without the empty values a Go client writes for fields it does not set (a container's
    ``resources: {}``, ``metadata.creationTimestamp: null``): kube compares typed templates,
    in which those are the same as absent, so ``kubectl rollout undo`` (which sends the
    replica set's template as its typed client decoded it) finds the old replica set again."""
    out = copy.deepcopy(dict(template))
    metadata = dict(out.get("metadata") or {})
    if metadata.get("creationTimestamp", "") is None:
        del metadata["creationTimestamp"]
    spec = out.get("spec")
    if isinstance(spec, dict):
        for field in _CONTAINER_LISTS:
            for container in spec.get(field) or ():
                if isinstance(container, dict) and container.get("resources") == {}:
                    del container["resources"]
    labels = {
        k: v for k, v in (metadata.get("labels") or {}).items() if k != POD_TEMPLATE_HASH_LABEL
    }
    if labels:
        metadata["labels"] = labels
    else:
        metadata.pop("labels", None)
    out["metadata"] = metadata
    if not metadata:
        out.pop("metadata")
    return out


def revision_of(manifest: Mapping[str, Any]) -> int:
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    try:
        return int(annotations.get(REVISION_ANNOTATION, 0))
    except (TypeError, ValueError):
        return 0


def _same_template(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return template_without_hash(a) == template_without_hash(b)


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    name: str
    namespace: str
    uid: str
    manifest: Mapping[str, Any]

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.manifest.get("spec") or {}

    @property
    def replicas(self) -> int:
        return int(self.spec.get("replicas", 1))

    @property
    def rolling(self) -> bool:
        return (self.spec.get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"

    @property
    def fenceposts(self) -> tuple[int | str, int | str]:
        rolling = (self.spec.get("strategy") or {}).get("rollingUpdate") or {}
        return rolling.get("maxSurge", "25%"), rolling.get("maxUnavailable", "25%")

    def max_surge(self) -> int:
        return max_surge(*self.fenceposts, self.replicas) if self.rolling else 0

    def max_unavailable(self) -> int:
        if not self.rolling or self.replicas == 0:
            return 0
        return max_unavailable(*self.fenceposts, self.replicas)

    @property
    def generation(self) -> int:
        return int((self.manifest.get("metadata") or {}).get("generation") or 1)

    @property
    def status(self) -> Mapping[str, Any]:
        return self.manifest.get("status") or {}


def plan_deployment(
    name: str,
    namespace: str,
    uid: str,
    manifest: Mapping[str, Any],
    replica_sets: Sequence[OwnedReplicaSet],
    now_ns: int,
    *,
    names_taken: frozenset[str] = frozenset(),
) -> DeploymentPlan:
    """One ``syncDeployment`` for the deployment (``manifest`` as stored, with its status)
    and the replica sets it controls; ``names_taken`` are replica-set names in the namespace
    that are not its own (a new replica set's name must avoid them)."""
    d = _Spec(name, namespace, uid, manifest)
    ordered = sorted(replica_sets, key=lambda rs: (rs.created_ns, rs.name))
    template = d.spec.get("template") or {}
    new = next(
        (rs for rs in ordered if _same_template(rs.manifest["spec"]["template"], template)), None
    )
    old = [rs for rs in ordered if rs is not new]
    new_revision = max((rs.revision for rs in old), default=0) + 1
    actions: list[Action] = []
    messages: list[tuple[str, str]] = []  # (Progressing reason, message) of what was done
    views = {rs.name: rs for rs in ordered}
    collision_count = int(d.status.get("collisionCount") or 0)

    def scale(rs: OwnedReplicaSet, replicas: int, reason: str) -> None:
        if rs.replicas == replicas and _replica_annotations(d) == _owned(rs.annotations):
            return
        actions.append(ScaleReplicaSet(rs.name, replicas, reason, _replica_annotations(d)))
        updated = replace(
            rs, manifest={**rs.manifest, "spec": {**rs.manifest["spec"], "replicas": replicas}}
        )
        views[rs.name] = updated
        if rs.replicas != replicas:
            messages.append(("ReplicaSetUpdated", f'ReplicaSet "{rs.name}" is progressing.'))

    if new is not None and new.revision < new_revision:
        actions.append(AnnotateReplicaSet(new.name, {REVISION_ANNOTATION: str(new_revision)}))
    revision = str(
        new.revision if new is not None and new.revision >= new_revision else new_revision
    )
    paused = bool(d.spec.get("paused"))

    def create_new(replicas: int) -> OwnedReplicaSet | None:
        nonlocal collision_count
        pod_hash = pod_template_hash(template, collision_count)
        rs_name = f"{name}-{pod_hash}"
        taken = rs_name in names_taken or any(rs.name == rs_name for rs in ordered)
        if taken:
            # Same name, other template (a hash collision): another hash next time.
            collision_count += 1
            return None
        manifest = _new_replica_set(d, template, pod_hash, replicas, new_revision)
        actions.append(CreateReplicaSet(manifest, f"new pod template (revision {new_revision})"))
        messages.append(("NewReplicaSetCreated", f'Created new replica set "{rs_name}"'))
        created = OwnedReplicaSet(rs_name, "", manifest, now_ns)
        views[rs_name] = created
        return created

    if paused or _is_scaling_event(d, new, old):
        _scale_proportionally(d, new, old, scale)
    elif d.rolling:
        if new is None:
            all_replicas = sum(max(rs.replicas, rs.pods.replicas) for rs in old)
            target = new_replica_set_replicas(d.replicas, *d.fenceposts, all_replicas, 0)
            new = create_new(target)
        elif not actions:
            step = plan_rolling_step(
                d.replicas,
                *d.fenceposts,
                views[new.name].view(),
                [views[rs.name].view() for rs in old],
                present=sum(max(rs.replicas, rs.pods.replicas) for rs in views.values()),
            )
            if step.new_replicas is not None:
                scale(views[new.name], step.new_replicas, step.reason)
            for rs_name, target in step.old_replicas.items():
                scale(views[rs_name], target, step.reason)
    else:
        _plan_recreate(d, new, old, views, scale, create_new)

    if new is not None and new.name in views:
        copied = _copied_annotations(d)
        current = views[new.name].annotations
        if any(current.get(k) != v for k, v in copied.items()):
            actions.append(CopyAnnotations(new.name, copied))
    new_view = views.get(new.name) if new is not None else None
    old_views = [views[rs.name] for rs in old]
    status = _status(d, new_view, old_views, now_ns)
    complete = _complete(d, status)
    if complete or paused:
        actions += _clean_up(d, old_views)
    if collision_count != int(d.status.get("collisionCount") or 0):
        status["collisionCount"] = collision_count
    status["conditions"], recheck = _conditions(
        d, status, new_view, old_views, messages, complete, now_ns
    )
    if not status["conditions"]:
        del status["conditions"]
    return DeploymentPlan(actions, status, {REVISION_ANNOTATION: revision}, recheck, complete)


def _owned(annotations: Mapping[str, str]) -> dict[str, str]:
    return {
        k: annotations[k]
        for k in (DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION)
        if k in annotations
    }


def _replica_annotations(d: _Spec) -> dict[str, str]:
    return {
        DESIRED_REPLICAS_ANNOTATION: str(d.replicas),
        MAX_REPLICAS_ANNOTATION: str(d.replicas + d.max_surge()),
    }


def _copied_annotations(d: _Spec) -> dict[str, str]:
    """The deployment's annotations its replica sets carry (kube's
    ``copyDeploymentAnnotationsToReplicaSet``)."""
    return {
        k: v
        for k, v in ((d.manifest.get("metadata") or {}).get("annotations") or {}).items()
        if k not in NOT_COPIED_ANNOTATIONS
    }


def _new_replica_set(
    d: _Spec, template: Mapping[str, Any], pod_hash: str, replicas: int, revision: int
) -> dict[str, Any]:
    labels = {
        **((template.get("metadata") or {}).get("labels") or {}),
        POD_TEMPLATE_HASH_LABEL: pod_hash,
    }
    rs_template = copy.deepcopy(dict(template))
    rs_template["metadata"] = {**(rs_template.get("metadata") or {}), "labels": labels}
    selector = copy.deepcopy(dict(d.spec.get("selector") or {}))
    selector["matchLabels"] = {
        **(selector.get("matchLabels") or {}),
        POD_TEMPLATE_HASH_LABEL: pod_hash,
    }
    annotations = _copied_annotations(d)
    annotations.update(_replica_annotations(d))
    annotations[REVISION_ANNOTATION] = str(revision)
    spec: dict[str, Any] = {"replicas": replicas, "selector": selector, "template": rs_template}
    if d.spec.get("minReadySeconds"):
        spec["minReadySeconds"] = d.spec["minReadySeconds"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{d.name}-{pod_hash}",
            "namespace": d.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": d.name,
                    "uid": d.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def _is_scaling_event(
    d: _Spec, new: OwnedReplicaSet | None, old: Sequence[OwnedReplicaSet]
) -> bool:
    """``isScalingEvent``: an active replica set was sized for another replica count."""
    for rs in ([new] if new is not None else []) + list(old):
        if rs.replicas == 0:
            continue
        desired = rs.annotations.get(DESIRED_REPLICAS_ANNOTATION)
        if desired is not None and desired != str(d.replicas):
            return True
    return False


def _scale_proportionally(
    d: _Spec, new: OwnedReplicaSet | None, old: Sequence[OwnedReplicaSet], scale: Scaler
) -> None:
    """``scale``: one active replica set takes the whole count; a saturated new one leaves old
    ones nothing; with several active (a rollout under way) the change is shared in proportion
    to their sizes, leftovers to the largest, as Kubernetes does."""
    all_sets = ([new] if new is not None else []) + list(old)
    active = [rs for rs in all_sets if rs.replicas > 0]
    if len(active) <= 1:
        latest = max(old, key=lambda rs: (rs.created_ns, rs.name)) if old else None
        target = active[0] if active else (new if new is not None else latest)
        if target is not None:
            scale(target, d.replicas, f"scaled to the deployment's {d.replicas} replicas")
        return
    if (
        new is not None
        and new.replicas == d.replicas
        and new.annotations.get(DESIRED_REPLICAS_ANNOTATION) == str(d.replicas)
        and new.pods.available == d.replicas
    ):
        for rs in old:
            if rs.replicas:
                scale(rs, 0, "new replica set saturated")
        return
    if not d.rolling:
        return
    allowed = d.replicas + d.max_surge() if d.replicas > 0 else 0
    to_add = allowed - sum(rs.replicas for rs in active)
    if to_add >= 0:  # newest (and largest) first
        order = sorted(active, key=lambda rs: (-rs.replicas, -rs.created_ns, rs.name))
    else:  # largest and oldest first
        order = sorted(active, key=lambda rs: (-rs.replicas, rs.created_ns, rs.name))
    targets: dict[str, int] = {}
    added = 0
    for rs in order:
        proportion = _proportion(d, rs, to_add, added)
        targets[rs.name] = rs.replicas + proportion
        added += proportion
    if to_add:
        first = order[0].name
        targets[first] = max(0, targets[first] + to_add - added)
    direction = "up" if to_add > 0 else "down"
    for rs in order:
        scale(rs, targets[rs.name], f"proportional scaling {direction} to {d.replicas} replicas")


def _proportion(d: _Spec, rs: OwnedReplicaSet, to_add: int, added: int) -> int:
    """``GetProportion``: this replica set's share of the change, within what is left."""
    if rs.replicas == 0 or to_add == 0 or to_add == added:
        return 0
    if d.replicas == 0:
        fraction = -rs.replicas
    else:
        before = rs.annotations.get(MAX_REPLICAS_ANNOTATION)
        try:
            max_before = int(before) if before is not None else 0
        except ValueError:
            max_before = 0
        if max_before == 0:
            max_before = int(d.status.get("replicas") or 0)
        if max_before == 0:
            return 0
        fraction = _round(rs.replicas * (d.replicas + d.max_surge()) / max_before) - rs.replicas
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def _round(value: float) -> int:
    """``integer.RoundToInt32``: halves away from zero."""
    return int(value + 0.5) if value >= 0 else -int(-value + 0.5)


def _plan_recreate(
    d: _Spec,
    new: OwnedReplicaSet | None,
    old: Sequence[OwnedReplicaSet],
    views: dict[str, OwnedReplicaSet],
    scale: Scaler,
    create_new: Callable[[int], OwnedReplicaSet | None],
) -> None:
    """``rolloutRecreate``: every old pod goes first; the new replica set starts only when no
    old pod is left."""
    scaled_down = False
    for rs in old:
        if rs.replicas:
            scale(rs, 0, "recreate: scaled down old replica set")
            scaled_down = True
    if scaled_down:
        return
    if any(rs.pods.replicas for rs in old):
        return  # wait for the old pods to be gone
    if new is None:
        create_new(d.replicas)
        return
    if views[new.name].replicas != d.replicas:
        scale(views[new.name], d.replicas, "recreate: scaled up new replica set")


def _status(
    d: _Spec, new: OwnedReplicaSet | None, old: Sequence[OwnedReplicaSet], now_ns: int
) -> dict[str, Any]:
    """``calculateStatus``."""
    all_sets = ([new] if new is not None else []) + list(old)
    available = sum(rs.pods.available for rs in all_sets)
    total = sum(rs.replicas for rs in all_sets)
    return {
        "observedGeneration": d.generation,
        "replicas": sum(rs.pods.replicas for rs in all_sets),
        "updatedReplicas": new.pods.replicas if new is not None else 0,
        "readyReplicas": sum(rs.pods.ready for rs in all_sets),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total - available),
    }


def _complete(d: _Spec, status: Mapping[str, Any]) -> bool:
    """``DeploymentComplete``."""
    return (
        status["updatedReplicas"] == d.replicas
        and status["replicas"] == d.replicas
        and status["availableReplicas"] == d.replicas
        and status["observedGeneration"] >= d.generation
    )


def _progressing(d: _Spec, status: Mapping[str, Any]) -> bool:
    """``DeploymentProgressing``: more updated, ready or available pods, or fewer old ones."""
    before = d.status
    old_before = int(before.get("replicas") or 0) - int(before.get("updatedReplicas") or 0)
    old_now = status["replicas"] - status["updatedReplicas"]
    return (
        status["updatedReplicas"] > int(before.get("updatedReplicas") or 0)
        or old_now < old_before
        or status["readyReplicas"] > int(before.get("readyReplicas") or 0)
        or status["availableReplicas"] > int(before.get("availableReplicas") or 0)
    )


def _condition(
    previous: Mapping[str, Any] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    stamp: str,
) -> dict[str, Any]:
    """A condition keeps its ``lastTransitionTime`` while its status stays the same."""
    transition = (
        previous.get("lastTransitionTime")
        if previous and previous.get("status") == status
        else None
    )
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": stamp,
        "lastTransitionTime": transition or stamp,
    }


def _conditions(
    d: _Spec,
    status: Mapping[str, Any],
    new: OwnedReplicaSet | None,
    old: Sequence[OwnedReplicaSet],
    messages: Sequence[tuple[str, str]],
    complete: bool,
    now_ns: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """Available, Progressing (with the progress deadline) and ReplicaFailure, and when the
    deadline would pass."""
    stamp = format_stamp(now_ns)
    previous = {c["type"]: c for c in d.status.get("conditions") or []}
    out: dict[str, dict[str, Any]] = {}
    recheck: int | None = None

    def keep_or(type_: str, status_: str, reason: str, message: str) -> dict[str, Any]:
        before = previous.get(type_)
        if before and (before.get("status"), before.get("reason"), before.get("message")) == (
            status_,
            reason,
            message,
        ):
            return dict(before)  # unchanged: no new timestamps, so no new event
        return _condition(before, type_, status_, reason, message, stamp)

    if status["availableReplicas"] >= d.replicas - d.max_unavailable():
        out["Available"] = keep_or(
            "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
        )
    else:
        out["Available"] = keep_or(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )

    progressing = previous.get("Progressing")
    if d.spec.get("paused"):
        out["Progressing"] = keep_or("Progressing", "Unknown", PAUSED, "Deployment is paused")
    elif progressing and progressing.get("reason") == PAUSED:
        out["Progressing"] = keep_or("Progressing", "Unknown", RESUMED, "Deployment is resumed")
    elif progressing and progressing.get("reason") == TIMED_OUT_REASON and not messages:
        out["Progressing"] = dict(progressing)  # stays timed out until the template changes
    else:
        rs_name = new.name if new is not None else d.name
        if complete:
            out["Progressing"] = keep_or(
                "Progressing",
                "True",
                NEW_RS_AVAILABLE,
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif messages:
            created = [m for m in messages if m[0] == "NewReplicaSetCreated"]
            reason, message = (created or messages)[-1]
            out["Progressing"] = _condition(
                progressing, "Progressing", "True", reason, message, stamp
            )
        elif (
            _progressing(d, status)
            or progressing is None
            or progressing.get("reason") in (NEW_RS_AVAILABLE, RESUMED)
        ):
            if progressing is None and new is not None:
                out["Progressing"] = _condition(
                    None,
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    f'Found new replica set "{rs_name}"',
                    stamp,
                )
            else:
                out["Progressing"] = _condition(
                    progressing,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    f'ReplicaSet "{rs_name}" is progressing.',
                    stamp,
                )
        else:
            out["Progressing"] = dict(progressing)
        current = out["Progressing"]
        deadline = d.spec.get("progressDeadlineSeconds", 600)
        if not complete and current.get("reason") != TIMED_OUT_REASON:
            since = parse_stamp(current.get("lastUpdateTime"))
            if since is not None:
                due = since + int(deadline) * 1_000_000_000
                if due < now_ns:
                    out["Progressing"] = _condition(
                        current,
                        "Progressing",
                        "False",
                        TIMED_OUT_REASON,
                        f'ReplicaSet "{rs_name}" has timed out progressing.',
                        stamp,
                    )
                else:
                    recheck = due + 1_000_000_000
    failure = next(
        (
            c
            for rs in ([new] if new is not None else []) + list(old)
            for c in (rs.manifest.get("status") or {}).get("conditions") or []
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
        ),
        None,
    )
    if failure is not None:
        out["ReplicaFailure"] = keep_or(
            "ReplicaFailure",
            "True",
            failure.get("reason", "FailedCreate"),
            failure.get("message", ""),
        )
    order = ["Available", "Progressing", "ReplicaFailure"]
    return [out[t] for t in order if t in out], recheck


def _clean_up(d: _Spec, old: Sequence[OwnedReplicaSet]) -> list[Action]:
    """``cleanupDeployment``: keep at most ``revisionHistoryLimit`` old replica sets that have
    no pods left, deleting the lowest revisions first."""
    limit = int(d.spec.get("revisionHistoryLimit", 10))
    cleanable = [rs for rs in old if rs.replicas == 0 and rs.pods.replicas == 0 and rs.uid]
    surplus = len(cleanable) - limit
    if surplus <= 0:
        return []
    cleanable.sort(key=lambda rs: (rs.revision, rs.created_ns, rs.name))
    return [
        DeleteReplicaSet(
            rs.name, rs.uid, f"revision history limit {limit}: revision {rs.revision} removed"
        )
        for rs in cleanable[:surplus]
    ]
