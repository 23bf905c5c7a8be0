"""The events ``fleetlog describe`` shows, as Kubernetes' components would have recorded them:
``Scheduled``, ``Created``/``Started``, ``BackOff`` on a pod; ``ScalingReplicaSet`` on a
deployment; ``SuccessfulCreate``/``SuccessfulDelete`` on a replica set; ``NodeReady``,
``NodeNotReady``, ``NodeNotSchedulable`` on a node — with kubectl's TYPE, REASON, AGE, FROM and
MESSAGE columns, identical ones counted (``3m (x5 over 10m)``) as the API server's event
correlator counts them.

Why this exists: fleetlog's log records every fact (a deployment's status, a pod's allocation on
its node …) and ``fleetlog history`` shows all of them; a describe page listing them all drowned
the few a person looks for (one deployment's page once held ~80 ``DeploymentStatusUpdated``
lines after three minutes). Kubernetes records far fewer events, and on the object a person
describes: a deployment's page shows the scaling of its replica sets, a replica set's the pods
it created and deleted. This module derives those from the log (the object's own events, and
for a deployment or replica set the events of its dependents) as pure functions: no I/O, the
caller reads the events.

Not derived (fleetlog does not record what they say): ``Pulled`` (no image is pulled: containers
are processes), ``Unhealthy`` (probe output is not kept; the restart a failed liveness probe
causes is shown as ``Killing``), the kubelet's node conditions (``NodeHasSufficientMemory`` …).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.envelope import StoredEvent

NORMAL, WARNING = "Normal", "Warning"
DEPLOYMENT_CONTROLLER = "system:deployment-controller"
REPLICASET_CONTROLLER = "system:replicaset-controller"


@dataclass(frozen=True, slots=True)
class KubeEvent:
    """One event as a Kubernetes component records it (``core/v1`` Event's type, reason,
    source component and message), at the time and log position of the fact it comes from."""

    type: str
    reason: str
    source: str
    message: str
    at_ns: int
    seq: int


@dataclass(frozen=True, slots=True)
class Shown:
    """Identical events counted into one line, as the event correlator does."""

    type: str
    reason: str
    source: str
    message: str
    first_ns: int
    last_ns: int
    last_seq: int
    count: int


def component(actor: str) -> str:
    """The FROM of an event: the Kubernetes component that plays the actor's part
    (``default-scheduler``, ``kubelet``, ``node-controller``, ``deployment-controller`` …); a
    person's own actions name the person."""
    if actor.startswith("system:scheduler/"):
        return actor.split("/", 1)[1]
    if actor.startswith("system:node/") or actor == "system:sim":
        return "kubelet"
    if actor == "system:node-lifecycle-controller":
        return "node-controller"
    return actor.removeprefix("system:")


def _event(
    source: StoredEvent, kind: str, reason: str, message: str, *, by: str | None = None
) -> KubeEvent:
    e = source.envelope
    return KubeEvent(
        type=kind,
        reason=reason,
        source=by if by is not None else component(e.actor),
        message=message,
        at_ns=e.timestamp_ns,
        seq=source.seq,
    )


# -- pods -------------------------------------------------------------------------------------


def pod_events(
    history: Iterable[StoredEvent], *, namespace: str, name: str, uid: str
) -> list[KubeEvent]:
    """The scheduler's and the kubelet's events of one pod, from the pod's own history."""
    out: list[KubeEvent] = []
    for ev in history:
        kind, payload = ev.envelope.type, ev.envelope.payload
        if kind == "PodBound":
            message = f"Successfully assigned {namespace}/{name} to {payload.get('node')}"
            out.append(_event(ev, NORMAL, "Scheduled", message))
        elif kind in ("PodUnschedulable", "PodNominated"):
            # A nominated pod still failed this scheduling attempt (preemption makes room).
            message = str(payload.get("message") or "")
            out.append(_event(ev, WARNING, "FailedScheduling", message))
        elif kind == "ContainerStarted":
            container = payload.get("container")
            out.append(_event(ev, NORMAL, "Created", f"Created container {container}"))
            out.append(_event(ev, NORMAL, "Started", f"Started container {container}"))
        elif kind == "ContainerExited":
            if payload.get("reason") == "StartError":
                detail = payload.get("message") or f"exit code {payload.get('exit_code')}"
                out.append(_event(ev, WARNING, "Failed", f"Error: {detail}"))
        elif kind == "ContainerRestarted":
            container = payload.get("container")
            probe = {"LivenessProbeFailed": "liveness", "StartupProbeFailed": "startup"}.get(
                str(payload.get("reason"))
            )
            if probe:
                message = f"Container {container} failed {probe} probe, will be restarted"
                out.append(_event(ev, NORMAL, "Killing", message))
            if (payload.get("backoff_seconds") or 0) > 0:
                message = (
                    f"Back-off restarting failed container {container} in pod "
                    f"{name}_{namespace}({uid})"
                )
                out.append(_event(ev, WARNING, "BackOff", message))
        elif kind == "ContainerWaiting":
            message = str(payload.get("message") or "")
            out.append(_event(ev, WARNING, "Failed", message))
            out.append(_event(ev, NORMAL, "BackOff", f"Back-off pulling image: {message}"))
        elif kind == "PodFailed":
            reason = str(payload.get("reason") or "")
            if reason == "ImagePullUnsupported":
                out.append(_event(ev, WARNING, "Failed", str(payload.get("message") or reason)))
            elif reason not in ("", "Error", "Completed"):
                out.append(_event(ev, WARNING, reason, str(payload.get("message") or "")))
    return out


# -- nodes ------------------------------------------------------------------------------------


def node_events(history: Iterable[StoredEvent], *, name: str) -> list[KubeEvent]:
    """The node controller's and the kubelet's events of one node."""
    out: list[KubeEvent] = []
    for ev in history:
        kind = ev.envelope.type
        if kind == "NodeCreated":
            message = f"Node {name} event: Registered Node {name} in Controller"
            out.append(_event(ev, NORMAL, "RegisteredNode", message, by="node-controller"))
            continue
        status = {
            "NodeReady": "NodeReady",
            "NodeNotReady": "NodeNotReady",
            "NodeCordoned": "NodeNotSchedulable",
            "NodeUncordoned": "NodeSchedulable",
        }.get(kind)
        if status is not None:
            out.append(_event(ev, NORMAL, status, f"Node {name} status is now: {status}"))
    return out


# -- workloads --------------------------------------------------------------------------------


def _controller_uid(manifest: dict[str, Any]) -> str | None:
    for ref in (manifest.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def deployment_events(replica_set_events: Iterable[StoredEvent], *, uid: str) -> list[KubeEvent]:
    """The deployment controller's ``ScalingReplicaSet`` events for the deployment ``uid``,
    from the events of its namespace's replica sets (those it controls when they happened,
    deleted ones included): a replica set it created with replicas, and each scale it made."""
    owned: set[str] = set()
    out: list[KubeEvent] = []
    for ev in replica_set_events:
        e = ev.envelope
        if e.kind != "ReplicaSet":
            continue
        if e.type in ("ReplicaSetCreated", "ReplicaSetUpdated"):
            manifest = e.payload.get("manifest") or {}
            if _controller_uid(manifest) == uid:
                owned.add(e.name)
            else:
                owned.discard(e.name)
            replicas = int((manifest.get("spec") or {}).get("replicas", 1))
            if (
                e.type == "ReplicaSetCreated"
                and e.name in owned
                and e.actor == DEPLOYMENT_CONTROLLER
                and replicas > 0
            ):
                message = f"Scaled up replica set {e.name} from 0 to {replicas}"
                out.append(_event(ev, NORMAL, "ScalingReplicaSet", message))
        elif e.type == "ScaledTo" and e.name in owned and e.actor == DEPLOYMENT_CONTROLLER:
            before, after = int(e.payload.get("previous", 0)), int(e.payload.get("replicas", 0))
            if before != after:
                direction = "up" if after > before else "down"
                message = f"Scaled {direction} replica set {e.name} from {before} to {after}"
                out.append(_event(ev, NORMAL, "ScalingReplicaSet", message))
        elif e.type == "ReplicaSetDeleted":
            owned.discard(e.name)
    return out


def replica_set_events(
    history: Iterable[StoredEvent], pod_events_of_namespace: Iterable[StoredEvent], *, uid: str
) -> list[KubeEvent]:
    """The replica-set controller's events for the replica set ``uid``: ``SuccessfulCreate``
    and ``SuccessfulDelete`` of the pods it made and removed (from its namespace's pod events),
    and ``FailedCreate`` when a create was refused (its ReplicaFailure condition)."""
    out: list[KubeEvent] = []
    failure = ""
    for ev in history:
        if ev.envelope.type != "ReplicaSetStatusUpdated":
            continue
        conditions = (ev.envelope.payload.get("status") or {}).get("conditions") or []
        message = next(
            (
                str(c.get("message") or "")
                for c in conditions
                if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
            ),
            "",
        )
        if message and message != failure:
            out.append(_event(ev, WARNING, "FailedCreate", f"Error creating: {message}"))
        failure = message
    owned: set[str] = set()
    for ev in pod_events_of_namespace:
        e = ev.envelope
        if e.kind != "Pod":
            continue
        if e.type in ("PodCreated", "PodUpdated"):
            mine = _controller_uid(e.payload.get("manifest") or {}) == uid
            if mine:
                owned.add(e.name)
            else:
                owned.discard(e.name)
            if e.type == "PodCreated" and mine and e.actor == REPLICASET_CONTROLLER:
                out.append(_event(ev, NORMAL, "SuccessfulCreate", f"Created pod: {e.name}"))
        elif e.type == "PodDeleted" and e.name in owned:
            owned.discard(e.name)
            if e.actor == REPLICASET_CONTROLLER:
                out.append(_event(ev, NORMAL, "SuccessfulDelete", f"Deleted pod: {e.name}"))
    return out


def events_of(
    item: dict[str, Any], history: Sequence[StoredEvent], related: Sequence[StoredEvent] = ()
) -> list[KubeEvent]:
    """The Kubernetes-style events of a read-model ``item`` from its own ``history`` (this
    incarnation's) and, for a deployment or a replica set, ``related``: the events of its
    namespace's replica sets or pods since it was created. Kinds whose Kubernetes components
    record no events (services, namespaces, policies) have none."""
    kind = item["kind"]
    if kind == "Pod":
        return pod_events(
            history, namespace=item["namespace"], name=item["name"], uid=item.get("uid") or ""
        )
    if kind == "Node":
        return node_events(history, name=item["name"])
    if kind == "Deployment":
        return deployment_events(related, uid=item.get("uid") or "")
    if kind == "ReplicaSet":
        return replica_set_events(history, related, uid=item.get("uid") or "")
    return []


def correlate(events: Iterable[KubeEvent]) -> list[Shown]:
    """Identical events (same type, reason, source and message) as one, with how many there
    were and when the first and the last happened; ordered by the last, as kubectl sorts."""
    merged: dict[tuple[str, str, str, str], Shown] = {}
    for ev in events:
        key = (ev.type, ev.reason, ev.source, ev.message)
        seen = merged.get(key)
        if seen is None:
            merged[key] = Shown(*key, first_ns=ev.at_ns, last_ns=ev.at_ns, last_seq=ev.seq, count=1)
        else:
            merged[key] = Shown(
                *key,
                first_ns=min(seen.first_ns, ev.at_ns),
                last_ns=max(seen.last_ns, ev.at_ns),
                last_seq=max(seen.last_seq, ev.seq),
                count=seen.count + 1,
            )
    order = {key: index for index, key in enumerate(merged)}
    return sorted(
        merged.values(),
        key=lambda s: (s.last_ns, s.last_seq, order[(s.type, s.reason, s.source, s.message)]),
    )
