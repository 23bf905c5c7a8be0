"""The decisions that span a pod and what accounts for it: its node's allocation ledger and its
namespace's quotas.

Why this exists: creating, binding, finishing and deleting a pod each change more than the pod.
A create charges every ResourceQuota of the namespace; a binding reserves the pod's requests on
its node; a pod that finishes, or is deleted, gives its reservation (and its charges) back. Each
is decided here at once, on the aggregates' current state, as one pure function that records
every event the decision needs on the aggregates it is given, or raises. The handlers load the
aggregates, call one of these and append whatever was recorded in one atomic write, with an
expectation on every subject (``streams.decide``), so racing writers can never over-commit a
node or a quota. A refused decision's aggregates are dropped by the caller (a refused create
may have recorded the pod before its quota refused it); a binding is refused before either
aggregate records anything, because the scheduler appends the other bindings of its batch.

Nothing here reads a clock or the log: ``at`` is the instant of the decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from core.errors import InvalidTransition, NotFound
from core.meta.aggregate import Resource, describe_aggregate
from core.nodes.aggregate import Node
from core.pods.aggregate import Pod
from core.pods.resize import ResizeChange
from core.policy.aggregates import ResourceQuota
from core.policy.quota import pod_usage


def pod_key(pod: Resource) -> str:
    """``namespace/name``: how a node's ledger and a quota's charges name a pod."""
    return f"{pod.namespace}/{pod.name}"


def create_pod(
    current: Resource | None,
    *,
    agg_id: str,
    manifest: dict[str, object],
    uid: str,
    quotas: Sequence[Resource | None],
    at: datetime,
    replace: bool = False,
) -> Pod:
    """Create the pod (``replace``: apply its manifest, creating it or replacing the live one)
    and, when this brings it to life, charge its usage to each live quota of its namespace.

    A quota the charge would exceed refuses (``forbidden``, Kubernetes' "exceeded quota"
    message), and so does one limiting a resource a container does not state: the pod is then
    not created either. An apply that only replaces a live pod's manifest charges nothing, and
    neither does a pod apply that changes nothing."""
    was_live = current is not None and current.exists
    decide = Pod.apply_manifest if replace else Pod.create
    pod = decide(current, agg_id=agg_id, manifest=manifest, uid=uid, at=at)
    assert isinstance(pod, Pod)
    if was_live or not pod.exists:
        return pod
    live = [quota for quota in quotas if isinstance(quota, ResourceQuota) and quota.exists]
    if live:  # most namespaces have no quota: the usage (quantities parsed) is not needed
        usage = pod_usage(pod.manifest)
        for quota in live:
            quota.charge(pod=pod_key(pod), usage=usage, pod_manifest=pod.manifest, at=at)
    return pod


def delete_pod(
    pod: Resource,
    *,
    node: Resource | None,
    quotas: Sequence[Resource | None],
    reason: str,
    propagation_policy: str,
    deleted_by: str,
    at: datetime,
) -> None:
    """Delete the pod, give its reservation on ``node`` (the node it is bound to, if it still
    exists) back, and release its charge on each quota: so the node's ledger and the quotas
    never keep resources of a pod that is gone, and a racing scheduler sees the capacity free
    only once the pod really is. A pod already deleted is not found; a node or quota holding
    nothing of the pod changes nothing."""
    key = pod_key(pod)
    pod.delete(reason=reason, at=at, propagation_policy=propagation_policy)
    why = f"pod deleted by {deleted_by}"
    if isinstance(node, Node) and node.exists:
        node.release(pod=key, reason=why, at=at)
    for quota in quotas:
        if isinstance(quota, ResourceQuota) and quota.exists:
            quota.release(pod=key, reason=why, at=at)


def bind_pod(
    pod: Resource | None,
    node: Resource | None,
    *,
    requests: Mapping[str, int],
    score: int | None,
    feasible_nodes: int | None,
    evaluated_nodes: int | None,
    plugin_scores: Mapping[str, int],
    weights: Mapping[str, int],
    at: datetime,
) -> None:
    """Bind the pod to ``node`` and reserve its ``requests`` (base units) there: both or neither.

    Refused when the pod or the node is gone (``not_found``), when the pod is already bound
    (binding is not a move), and when the node cannot fit the requests beside what it has
    reserved (``insufficient_resources``): the guard that keeps schedulers racing on shared
    state from over-committing a node. On a refusal neither aggregate has recorded anything.
    The score breakdown goes into ``PodBound`` so ``describe`` can say why this node."""
    if not isinstance(pod, Pod) or not isinstance(node, Node):
        what = describe_aggregate(pod.id) if pod is not None else "the pod"
        where = describe_aggregate(node.id) if node is not None else "its node"
        raise NotFound(f"{what} or {where} no longer exists")
    pod.require_unbound()
    node.allocate(pod=pod_key(pod), requests=dict(requests), at=at)
    pod.bind(
        node=node.name, score=score, feasible_nodes=feasible_nodes, at=at,
        evaluated_nodes=evaluated_nodes, plugin_scores=dict(plugin_scores),
        weights=dict(weights),
    )  # fmt: skip


def finish_pod(
    pod: Pod,
    node: Resource | None,
    *,
    finish: Callable[[Pod, datetime], None],
    at: datetime,
) -> None:
    """Take the pod to its terminal phase with ``finish`` (``Pod.succeed`` or ``Pod.fail``,
    with the kubelet's reason) and give its reservation on ``node`` back in the same decision:
    a Succeeded or Failed pod holds no resources (Kubernetes frees them for scheduling).

    A pod already in that phase changes nothing and its reservation, if any is left, is still
    given back; ``finish`` refusing (a Succeeded pod cannot fail) refuses it all. ``finish``
    must leave the pod terminal."""
    finish(pod, at)
    if not pod.terminal:
        raise InvalidTransition(
            f"{describe_aggregate(pod.id)} is {pod.phase}, not finished: its node keeps its "
            "reservation"
        )
    if isinstance(node, Node):
        node.release(pod=pod_key(pod), reason=f"pod {pod.phase}", at=at)


def resize_pod(
    pod: Resource,
    *,
    change: ResizeChange,
    quotas: Sequence[Resource | None],
    at: datetime,
) -> None:
    """Record the pod's new desired resources (``change``, validated by
    ``core.pods.resize.validate_resize``) and charge each live quota of its namespace the pod's
    usage with them, as kube's ResourceQuota admission evaluates a resize: a charge beyond
    ``hard`` refuses the resize and nothing is recorded. The node's reservation changes only
    when the pod's agent admits the resize (``PodResizeAllocated``)."""
    if not isinstance(pod, Pod):
        raise NotFound(f"{describe_aggregate(pod.id)} is not a pod")
    pod.resize(before=change.before, after=change.after, at=at)
    if change.empty:
        return
    live = [quota for quota in quotas if isinstance(quota, ResourceQuota) and quota.exists]
    if live:
        usage = pod_usage(pod.manifest)
        for quota in live:
            quota.charge(pod=pod_key(pod), usage=usage, pod_manifest=pod.manifest, at=at)


def allocate_resize(
    pod: Pod,
    node: Resource | None,
    *,
    requests: Mapping[str, int],
    allocated: dict[str, dict[str, object]],
    restarts: list[str],
    at: datetime,
) -> None:
    """The node's agent admits the pod's resize: its reservation on ``node`` becomes the new
    ``requests`` (given back and taken again, refused with ``insufficient_resources`` when the
    node cannot fit them: the ledger is the guard against a scheduler binding meanwhile) and
    the pod records what was allocated, in one append."""
    if not isinstance(node, Node) or not node.exists:
        raise NotFound(f"the node of {describe_aggregate(pod.id)} no longer exists")
    key = pod_key(pod)
    node.release(pod=key, reason="pod resized", at=at)
    node.allocate(pod=key, requests=dict(requests), at=at)
    pod.allocate_resize(node=node.name, allocated=allocated, restarts=restarts, at=at)
