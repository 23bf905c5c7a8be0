"""The pod and node status helpers, and the cluster read model's fold of their events, give
exactly what the straightforward helpers they replaced gave: the same dicts, keys in the same
order, the same types, for realistic event sequences and for arbitrary manifests; and the
aggregates, which fold the same events with the same evolve tables, agree with the read model.

``reference_*`` below are those helpers as they were (a datetime per event, formatted with
``strftime``; every container status and condition rebuilt), kept here as the oracle.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.api.catalog import AGGREGATES
from core.meta.aggregate import RecordedEvent, aggregate_id
from core.meta.timestamps import stamp_of
from core.nodes.status import (
    LIFECYCLE_TAINTS,
    NOT_READY_TAINT,
    UNREACHABLE_TAINT,
    with_ready_condition,
    with_unschedulable,
)
from core.pods.lifecycle import backoff_message
from core.pods.status import (
    with_container_exited,
    with_container_restarted,
    with_container_started,
    with_nomination,
    with_pod_readiness,
    with_pod_scheduled,
    with_pod_terminated,
)
from core.workloads.status import with_generation, with_status_update
from projections.cluster import ClusterModel
from streams.envelope import Envelope, StoredEvent

# -- the oracle: the helpers as they were ---------------------------------------------------


def _at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _ref_stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def reference_ready_condition(
    manifest: dict[str, Any], *, status: str, reason: str, message: str, at: datetime
) -> dict[str, Any]:
    stamp = _ref_stamp(at)
    spec = dict(manifest.get("spec", {}))
    taints = [t for t in spec.get("taints") or [] if t.get("key") not in LIFECYCLE_TAINTS]
    key = {"False": NOT_READY_TAINT, "Unknown": UNREACHABLE_TAINT}.get(status)
    if key is not None:
        taints += [
            {"key": key, "effect": effect, "timeAdded": stamp}
            for effect in ("NoSchedule", "NoExecute")
        ]
    if taints:
        spec["taints"] = taints
    else:
        spec.pop("taints", None)
    status_block = dict(manifest.get("status") or {})
    conditions = [c for c in status_block.get("conditions") or [] if c.get("type") != "Ready"]
    conditions.append(
        {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": stamp,
        }
    )
    status_block["conditions"] = conditions
    return {**manifest, "spec": spec, "status": status_block}


def reference_pod_scheduled(
    manifest: dict[str, Any], *, node: str | None, reason: str, message: str, at: datetime
) -> dict[str, Any]:
    stamp = _ref_stamp(at)
    spec = dict(manifest.get("spec", {}))
    if node is not None:
        spec["nodeName"] = node
    status = dict(manifest.get("status") or {})
    if node is not None:
        status.pop("nominatedNodeName", None)
    status.setdefault("phase", "Pending")
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    condition = {
        "type": "PodScheduled",
        "status": "True" if node else "False",
        "lastTransitionTime": stamp,
    }
    if node is None:
        condition.update(reason=reason, message=message)
    status["conditions"] = [*conditions, condition]
    return {**manifest, "spec": spec, "status": status}


def _ref_with_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: str,
    stamp: str,
    reason: str = "",
    message: str = "",
) -> list[dict[str, Any]]:
    out, found = [], False
    for condition in conditions:
        if condition.get("type") != kind:
            out.append(condition)
            continue
        found = True
        changed = condition.get("status") != status
        updated = {"type": kind, "status": status}
        updated["lastTransitionTime"] = (
            stamp if changed else condition.get("lastTransitionTime", stamp)
        )
        if reason:
            updated.update(reason=reason, message=message)
        out.append(updated)
    if not found:
        added = {"type": kind, "status": status, "lastTransitionTime": stamp}
        if reason:
            added.update(reason=reason, message=message)
        out.append(added)
    return out


def _ref_container_statuses(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    known = {
        c.get("name"): c for c in (manifest.get("status") or {}).get("containerStatuses") or []
    }
    return [
        known.get(c["name"])
        or {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }
        for c in manifest.get("spec", {}).get("containers") or []
    ]


def _ref_with_readiness(
    status: dict[str, Any], *, ready: bool, reason: str, stamp: str
) -> dict[str, Any]:
    statuses = [{**c, "ready": ready} for c in status.get("containerStatuses") or []]
    unready = [c["name"] for c in statuses if not c["ready"]]
    message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    conditions = list(status.get("conditions") or [])
    for kind in ("Ready", "ContainersReady"):
        conditions = _ref_with_condition(
            conditions, kind, "True" if ready else "False", stamp,
            "" if ready else (reason or "ContainersNotReady"), message,
        )  # fmt: skip
    return {**status, "containerStatuses": statuses, "conditions": conditions}


def reference_container_started(
    manifest: dict[str, Any], *, container: str, restart_count: int, at: datetime
) -> dict[str, Any]:
    stamp = _ref_stamp(at)
    statuses = [
        {
            **c,
            "ready": False,
            "started": True,
            "restartCount": restart_count,
            "state": {"running": {"startedAt": stamp}},
        }
        if c["name"] == container
        else c
        for c in _ref_container_statuses(manifest)
    ]
    status = dict(manifest.get("status") or {})
    status.setdefault("startTime", stamp)
    if statuses and all(c.get("started") for c in statuses):
        if status.get("phase") in (None, "Pending"):
            status["phase"] = "Running"
    else:
        status.setdefault("phase", "Pending")
    status["containerStatuses"] = statuses
    status["conditions"] = _ref_with_condition(
        list(status.get("conditions") or []), "Initialized", "True", stamp
    )
    status = _ref_with_readiness(status, ready=False, reason="ContainersNotReady", stamp=stamp)
    return {**manifest, "status": status}


def reference_pod_readiness(
    manifest: dict[str, Any], *, ready: bool, reason: str, at: datetime
) -> dict[str, Any]:
    stamp = _ref_stamp(at)
    status = dict(manifest.get("status") or {})
    status["containerStatuses"] = _ref_container_statuses(manifest)
    return {
        **manifest,
        "status": _ref_with_readiness(status, ready=ready, reason=reason, stamp=stamp),
    }


def _ref_with_readiness_of_containers(status: dict[str, Any], stamp: str) -> dict[str, Any]:
    statuses = status.get("containerStatuses") or []
    unready = [c["name"] for c in statuses if not c.get("ready")]
    ready = not unready
    message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    conditions = list(status.get("conditions") or [])
    for kind in ("Ready", "ContainersReady"):
        conditions = _ref_with_condition(
            conditions, kind, "True" if ready else "False", stamp,
            "" if ready else "ContainersNotReady", message,
        )  # fmt: skip
    return {**status, "conditions": conditions}


def reference_container_exited(
    manifest: dict[str, Any],
    *,
    container: str,
    exit_code: int,
    signal: int | None,
    reason: str,
    message: str,
    restart_count: int,
    started_at_ns: int | None,
    finished_at_ns: int | None,
    at: datetime,
) -> dict[str, Any]:
    stamp = _ref_stamp(at)
    statuses = []
    for c in _ref_container_statuses(manifest):
        if c["name"] != container:
            statuses.append(c)
            continue
        running = (c.get("state") or {}).get("running") or {}
        terminated: dict[str, Any] = {"exitCode": exit_code}
        if signal:
            terminated["signal"] = signal
        terminated["reason"] = reason
        if message:
            terminated["message"] = message
        started = (
            _ref_stamp(_at(started_at_ns))
            if started_at_ns is not None
            else running.get("startedAt")
        )
        if started:
            terminated["startedAt"] = started
        terminated["finishedAt"] = (
            _ref_stamp(_at(finished_at_ns)) if finished_at_ns is not None else stamp
        )
        statuses.append(
            {
                **c,
                "ready": False,
                "started": False,
                "restartCount": restart_count,
                "state": {"terminated": terminated},
            }
        )
    status = {**(manifest.get("status") or {}), "containerStatuses": statuses}
    return {**manifest, "status": _ref_with_readiness_of_containers(status, stamp)}


def reference_container_restarted(
    manifest: dict[str, Any],
    *,
    container: str,
    restart_count: int,
    backoff_seconds: float,
    namespace: str,
    name: str,
    uid: str,
    at: datetime,
) -> dict[str, Any]:
    stamp = _ref_stamp(at)
    if backoff_seconds > 0:
        waiting = {
            "reason": "CrashLoopBackOff",
            "message": backoff_message(backoff_seconds, container, name, namespace, uid),
        }
    else:
        waiting = {"reason": "ContainerCreating"}
    statuses = []
    for c in _ref_container_statuses(manifest):
        if c["name"] != container:
            statuses.append(c)
            continue
        updated = {
            **c,
            "ready": False,
            "started": False,
            "restartCount": restart_count,
            "state": {"waiting": waiting},
        }
        state = c.get("state") or {}
        if "terminated" in state:
            updated["lastState"] = {"terminated": state["terminated"]}
        statuses.append(updated)
    status = {**(manifest.get("status") or {}), "containerStatuses": statuses}
    return {**manifest, "status": _ref_with_readiness_of_containers(status, stamp)}


def reference_pod_terminated(
    manifest: dict[str, Any], *, phase: str, reason: str, message: str, at: datetime
) -> dict[str, Any]:
    stamp = _ref_stamp(at)
    status = dict(manifest.get("status") or {})
    status["phase"] = phase
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    status["containerStatuses"] = [{**c, "ready": False} for c in _ref_container_statuses(manifest)]
    conditions = list(status.get("conditions") or [])
    for kind in ("Ready", "ContainersReady"):
        conditions = _ref_with_condition(conditions, kind, "False", stamp, "PodCompleted", "")
    status["conditions"] = conditions
    return {**manifest, "status": status}


def reference_fold(manifest: dict[str, Any] | None, e: Envelope, uid: str) -> Any:
    """The manifest the cluster model held after ``e``, as it folded it with the helpers
    above (None: the event leaves the manifest alone or the object is gone)."""
    p, at = e.payload, _at(e.timestamp_ns)
    if e.type == "PodCreated":
        # kube-apiserver's create: Pending, and the QoS class (these pods request nothing).
        assert not any(c.get("resources") for c in p["manifest"]["spec"]["containers"])
        status = {"phase": "Pending", "qosClass": "BestEffort"}
        return {**p["manifest"], "status": {**status, **(p["manifest"].get("status") or {})}}
    if e.type.endswith("Created"):
        return p["manifest"]
    if e.type.endswith("Deleted") or manifest is None:
        return None
    if e.type in ("PodBound", "PodUnschedulable"):
        return reference_pod_scheduled(
            manifest, node=p.get("node"), reason="Unschedulable",
            message=p.get("message", ""), at=at,
        )  # fmt: skip
    if e.type in ("NodeReady", "NodeNotReady"):
        return reference_ready_condition(
            manifest, status=p["status"], reason=p["reason"],
            message=p.get("message", ""), at=at,
        )  # fmt: skip
    if e.type == "ContainerStarted":
        return reference_container_started(
            manifest, container=p["container"], restart_count=p.get("restart_count", 0), at=at
        )
    if e.type == "ContainerExited":
        return reference_container_exited(
            manifest, container=p["container"], exit_code=p["exit_code"],
            signal=p.get("signal"), reason=p["reason"], message=p.get("message", ""),
            restart_count=p.get("restart_count", 0), started_at_ns=p.get("started_at_ns"),
            finished_at_ns=p.get("finished_at_ns"), at=at,
        )  # fmt: skip
    if e.type == "ContainerRestarted":
        return reference_container_restarted(
            manifest, container=p["container"], restart_count=p["restart_count"],
            backoff_seconds=p.get("backoff_seconds", 0.0), namespace=e.namespace,
            name=e.name, uid=uid, at=at,
        )  # fmt: skip
    if e.type in ("PodSucceeded", "PodFailed"):
        return reference_pod_terminated(
            manifest, phase="Succeeded" if e.type == "PodSucceeded" else "Failed",
            reason=p.get("reason", ""), message=p.get("message", ""), at=at,
        )  # fmt: skip
    if e.type in ("PodReady", "PodNotReady"):
        return reference_pod_readiness(
            manifest, ready=e.type == "PodReady", reason=p.get("reason", ""), at=at
        )
    if e.type == "PodNominated":
        return with_nomination(manifest, p["node"])
    if e.type in ("NodeCordoned", "NodeUncordoned"):
        return with_unschedulable(manifest, e.type == "NodeCordoned")
    if e.type == "ScaledTo":
        out = copy.copy(manifest)
        out["spec"] = {**out.get("spec", {}), "replicas": p["replicas"]}
        generation = (out.get("metadata") or {}).get("generation")
        return out if generation is None else with_generation(out, generation + 1)
    if e.type.endswith("StatusUpdated"):
        return with_status_update(manifest, p["status"], p.get("annotations") or {})
    return manifest


def canonical(value: Any) -> Any:
    """``value`` with its types and every dict's key order made comparable."""
    if isinstance(value, dict):
        return ("dict", [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [canonical(v) for v in value])
    return (type(value).__name__, value)


# -- a realistic history, folded both ways -----------------------------------------------------

S = 1_795_664_444 * 1_000_000_000  # 2026-11-26T03:40:44Z


def _history() -> list[tuple[str, str, str, dict[str, Any], int]]:
    """(type, kind, name, payload, ns) of a node and three pods living their lives."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "app", "image": "nginx:1"}, {"name": "log", "image": "x"}],
            "restartPolicy": "Always",
        },
    }
    single = {**pod, "spec": {"containers": [{"name": "main", "image": "y"}]}}
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}]},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"replicas": 1},
    }
    return [
        ("NodeCreated", "Node", "n1", {"manifest": node, "uid": "n"}, S),
        ("NodeReady", "Node", "n1", {"status": "True", "reason": "Up"}, S + 1),
        ("NodeNotReady", "Node", "n1", {"status": "Unknown", "reason": "Gone"}, S + 10**9),
        ("NodeCordoned", "Node", "n1", {"reason": "drain"}, S + 2 * 10**9),
        ("NodeReady", "Node", "n1", {"status": "True", "reason": "Back", "message": "m"}, S + 3),
        ("NodeUncordoned", "Node", "n1", {"reason": ""}, S + 4),
        ("PodCreated", "Pod", "web", {"manifest": pod, "uid": "u1"}, S + 5),
        ("PodUnschedulable", "Pod", "web", {"message": "0/1 nodes", "reasons": {}}, S + 6),
        ("PodNominated", "Pod", "web", {"node": "n1", "victims": []}, S + 7),
        ("PodUnschedulable", "Pod", "web", {"message": "still not", "reasons": {}}, S + 8),
        ("PodBound", "Pod", "web", {"node": "n1"}, S + 999_999_700),  # rounds up a second
        ("ContainerStarted", "Pod", "web", {"container": "app", "restart_count": 0}, S + 9),
        ("PodReady", "Pod", "web", {"reason": "too early"}, S + 3 * 10**9),
        ("ContainerStarted", "Pod", "web", {"container": "log", "restart_count": 0}, S + 11),
        ("PodReady", "Pod", "web", {"reason": "all ready"}, S + 4 * 10**9),
        ("PodReady", "Pod", "web", {}, S + 5 * 10**9),
        (
            "ContainerExited",
            "Pod",
            "web",
            {
                "container": "app",
                "exit_code": 137,
                "signal": 9,
                "reason": "OOMKilled",
                "message": "out of memory",
                "restart_count": 0,
                "started_at_ns": S + 12,
                "finished_at_ns": S + 6 * 10**9 + 999_999_999,
            },
            S + 6 * 10**9,
        ),
        ("PodNotReady", "Pod", "web", {"reason": "ContainersNotReady"}, S + 6 * 10**9 + 1),
        (
            "ContainerRestarted",
            "Pod",
            "web",
            {"container": "app", "restart_count": 1, "backoff_seconds": 10.0},
            S + 7 * 10**9,
        ),
        ("ContainerStarted", "Pod", "web", {"container": "app", "restart_count": 1}, S + 8 * 10**9),
        ("PodReady", "Pod", "web", {"reason": ""}, S + 9 * 10**9),
        (
            "ContainerExited",
            "Pod",
            "web",
            {"container": "app", "exit_code": 0, "reason": "Completed", "restart_count": 1},
            S + 10 * 10**9,
        ),
        (
            "ContainerRestarted",
            "Pod",
            "web",
            {"container": "app", "restart_count": 2, "backoff_seconds": 0.0},
            S + 10 * 10**9 + 5,
        ),
        (
            "ContainerExited",
            "Pod",
            "web",
            {"container": "log", "exit_code": 0, "reason": "Completed", "finished_at_ns": S},
            S + 11 * 10**9,
        ),
        ("PodSucceeded", "Pod", "web", {"reason": "done"}, S + 12 * 10**9),
        ("PodCreated", "Pod", "db", {"manifest": {**single}, "uid": "u2"}, S + 13),
        ("PodBound", "Pod", "db", {"node": "n1"}, S + 14),
        ("ContainerStarted", "Pod", "db", {"container": "main"}, S + 15),
        ("PodReady", "Pod", "db", {"reason": "ok"}, S + 16),
        ("PodNotReady", "Pod", "db", {"reason": ""}, S + 17),
        ("PodFailed", "Pod", "db", {"reason": "DeadlineExceeded", "message": "late"}, S + 18),
        ("PodDeleted", "Pod", "db", {"reason": "gc"}, S + 19),
        ("PodCreated", "Pod", "db", {"manifest": single, "uid": "u3"}, S + 20),
        ("PodBound", "Pod", "db", {"node": "n1"}, S + 21),
        ("ContainerExited", "Pod", "db", {"container": "main", "exit_code": 1, "reason": "E"}, S),
        ("ContainerStarted", "Pod", "db", {"container": "main", "restart_count": 0}, S + 22),
        ("DeploymentCreated", "Deployment", "web", {"manifest": deployment, "uid": "d"}, S),
        ("ScaledTo", "Deployment", "web", {"replicas": 3, "previous": 1}, S + 23),
        (
            "DeploymentStatusUpdated",
            "Deployment",
            "web",
            {"status": {"replicas": 3}, "annotations": {"deployment.kubernetes.io/revision": "1"}},
            S + 24,
        ),
    ]


def test_the_fold_of_a_realistic_history_is_what_the_original_helpers_gave() -> None:
    model = ClusterModel()
    expected: dict[str, Any] = {}
    uids: dict[str, str] = {}
    for seq, (event_type, kind, name, payload, ns) in enumerate(_history(), 1):
        namespace = "" if kind == "Node" else "default"
        envelope = Envelope(
            f"e{seq}", event_type, 1, kind, namespace, name, seq, int(ns), "test", "", "",
            copy.deepcopy(payload), bytes([seq]) * 32,
        )  # fmt: skip
        if event_type.endswith("Created"):
            uids[name] = payload["uid"]
        expected[kind + name] = reference_fold(expected.get(kind + name), envelope, uids[name])
        before = model.get(kind, namespace, name)
        held = before.manifest if before is not None else None
        held_then = canonical(held)
        model.apply(StoredEvent(seq, f"fleet.evt.{kind}.{name}", int(ns), envelope))
        # Copy-on-write: the manifest the model held before (someone may hold it too) is intact.
        assert canonical(held) == held_then, event_type
        record = model.get(kind, namespace, name)
        if expected[kind + name] is None:
            assert record is None, event_type
            continue
        assert record is not None
        assert canonical(record.manifest) == canonical(expected[kind + name]), event_type
        assert record.last_event == event_type and record.version == seq


_QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "q", "namespace": "default"},
    "spec": {"hard": {"pods": "2", "requests.cpu": "1"}},
}
_CHARGE = {"pods": 1, "requests.cpu": 100, "requests.memory": 0, "limits.cpu": 0}


def _quota_history() -> list[tuple[str, str, str, dict[str, Any], int]]:
    """(type, kind, name, payload, ns) of a quota charged and released."""
    used = {**_CHARGE, "limits.memory": 0}
    after = {"pods": 2, "requests.cpu": 300, "requests.memory": 0, "limits.cpu": 0}
    wider = {**_QUOTA, "spec": {"hard": {"pods": "5", "requests.cpu": "1"}}}
    return [
        ("ResourceQuotaCreated", "ResourceQuota", "q", {"manifest": _QUOTA, "uid": "q"}, S),
        ("QuotaCharged", "ResourceQuota", "q", {"pod": "default/a", "amounts": used,
                                                 "used": used}, S + 1),
        ("QuotaCharged", "ResourceQuota", "q", {"pod": "default/b", "amounts": {
            **used, "requests.cpu": 200}, "used": {**after, "limits.memory": 0}}, S + 2),
        ("ResourceQuotaUpdated", "ResourceQuota", "q", {
            "manifest": {**wider, "status": {"hard": {"pods": "5", "requests.cpu": "1"},
                                             "used": {"pods": "2", "requests.cpu": "300m"}}},
            "changed": ["spec.hard.pods"]}, S + 3),
        ("QuotaReleased", "ResourceQuota", "q", {"pod": "default/a", "used": {
            **used, "requests.cpu": 200}}, S + 4),
    ]  # fmt: skip


_REQUIRED_ELSEWHERE = {
    # Fields the payload models require that no evolve reads (the history above leaves
    # them out): filled in for the aggregates, which validate every event they fold.
    "ContainerStarted": {"node": "n1"},
    "ContainerExited": {"node": "n1"},
    "ContainerRestarted": {"node": "n1", "reason": "Error"},
}


def _network_history() -> list[tuple[str, str, str, dict[str, Any], int]]:
    """A node refused a range, then given one with its range's object; a pod's addresses."""
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}
    block = {
        "apiVersion": "networking.fleetlog.dev/v1alpha1",
        "kind": "PodCIDR",
        "metadata": {"name": "100.96.0.0-24"},
        "spec": {"cidr": "100.96.0.0/24", "nodeName": "n2", "nodeUID": "n2"},
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ip", "namespace": "default"},
           "spec": {"containers": [{"name": "main", "image": "x"}]}}  # fmt: skip
    refused = {"pod_cidr": None, "reason": "CIDRNotAvailable", "message": "full"}
    assigned = {"pod_cidr": "100.96.0.0/24", "cluster_cidr": "100.96.0.0/12"}
    address = {"node": "n2", "pod_ips": ["100.96.0.2"], "host_ip": "100.96.0.1"}
    return [
        ("NodeCreated", "Node", "n2", {"manifest": node, "uid": "n2"}, S),
        ("NodePodCIDRRefused", "Node", "n2", refused, S + 1),
        ("PodCIDRCreated", "PodCIDR", "100.96.0.0-24", {"manifest": block, "uid": "b"}, S + 2),
        ("NodePodCIDRAssigned", "Node", "n2", assigned, S + 10**9),
        ("PodCIDRDeleted", "PodCIDR", "100.96.0.0-24", {"reason": "node n2 deleted"}, S + 3),
        ("PodCreated", "Pod", "ip", {"manifest": pod, "uid": "u9"}, S + 4),
        ("PodBound", "Pod", "ip", {"node": "n2"}, S + 5),
        ("PodIPAssigned", "Pod", "ip", address, S + 6),
        ("ContainerStarted", "Pod", "ip", {"container": "main"}, S + 7),
        ("PodIPAssigned", "Pod", "ip", {**address, "pod_ips": ["100.96.0.3"]}, S + 8),
    ]


def test_the_aggregates_and_the_read_model_fold_every_event_to_the_same_manifest() -> None:
    """One evolve per kind: replaying an object's events into its aggregate gives, after every
    event, exactly the manifest the cluster model holds."""
    model = ClusterModel()
    histories: dict[tuple[str, str], list[RecordedEvent]] = {}
    for seq, (event_type, kind, name, payload, ns) in enumerate(
        [*_history(), *_quota_history(), *_network_history()], 1
    ):
        namespace = "" if kind in ("Node", "PodCIDR") else "default"
        envelope = Envelope(
            f"e{seq}", event_type, 1, kind, namespace, name, seq, int(ns), "test", "", "",
            copy.deepcopy(payload), bytes([seq]) * 32,
        )  # fmt: skip
        model.apply(StoredEvent(seq, f"fleet.evt.{kind}.{name}", int(ns), envelope))
        history = histories.setdefault((kind, name), [])
        version = len(history) + 1
        filled = {**_REQUIRED_ELSEWHERE.get(event_type, {}), **copy.deepcopy(payload)}
        if event_type == "ScaledTo":
            filled.setdefault("previous", 1)
        history.append(RecordedEvent(type=event_type, version=version, timestamp=_at(int(ns)),
                                     payload=filled))  # fmt: skip
        aggregate = AGGREGATES[kind].from_history(aggregate_id(kind, namespace, name), history)
        assert aggregate is not None
        record = model.get(kind, namespace, name)
        if not aggregate.exists:
            assert record is None, event_type
            continue
        assert record is not None, event_type
        assert canonical(aggregate.manifest) == canonical(record.manifest), event_type


def test_a_stamp_a_hair_before_the_next_second_is_that_second_as_datetime_rounds_it() -> None:
    model = ClusterModel()
    manifest = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    for seq, (event_type, payload, ns) in enumerate(
        [
            ("PodCreated", {"manifest": manifest, "uid": "u"}, S),
            ("PodBound", {"node": "n"}, S + 999_999_999),
        ],
        1,
    ):
        envelope = Envelope(
            str(seq), event_type, 1, "Pod", "default", "p", seq, ns, "a", "", "", payload
        )
        model.apply(StoredEvent(seq, "s", ns, envelope))
    record = model.get("Pod", "default", "p")
    assert record is not None
    condition = record.manifest["status"]["conditions"][0]
    assert condition["lastTransitionTime"] == "2026-11-26T03:40:45Z" == _ref_stamp(_at(S + 10**9))


# -- arbitrary manifests, helper by helper ------------------------------------------------------

NAMES = st.sampled_from(["app", "log", "db"])
TYPES = st.sampled_from(["PodScheduled", "Initialized", "Ready", "ContainersReady", "Other"])
STATUSES = st.sampled_from(["True", "False", "Unknown"])
STAMPS = st.sampled_from(["2026-11-26T03:40:40Z", "2026-11-26T03:40:44Z"])


@st.composite
def shuffled(draw: st.DrawFn, items: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """A dict of some of ``items``, in any order (key order is part of what is compared)."""
    keys = draw(st.permutations(list(items)))
    present = [k for k in keys if draw(st.booleans())]
    return {k: draw(items[k]) for k in present}


@st.composite
def conditions(draw: st.DrawFn) -> list[dict[str, Any]]:
    canonical_order = draw(st.booleans())
    if canonical_order:  # as the helpers leave them (the fast path)
        kinds = ["PodScheduled", "Initialized", "Ready", "ContainersReady"]
    else:
        kinds = draw(st.lists(TYPES, max_size=5))
    out = []
    for kind in kinds:
        if canonical_order and draw(st.booleans()):
            condition = {"type": kind, "status": draw(STATUSES), "lastTransitionTime": draw(STAMPS)}
        else:
            condition = draw(
                shuffled(
                    {
                        "status": STATUSES,
                        "lastTransitionTime": STAMPS,
                        "reason": st.sampled_from(["", "ContainersNotReady", "Why"]),
                        "message": st.sampled_from(["", "m"]),
                    }
                )
            )
            if draw(st.booleans()):
                condition = {"type": kind, **condition}
            else:  # the type last
                condition = {**condition, "type": kind}
        out.append(condition)
    return out


STATES = st.one_of(
    st.just({"waiting": {"reason": "ContainerCreating"}}),
    st.just({"running": {"startedAt": "2026-11-26T03:40:41Z"}}),
    st.just({"running": {}}),
    st.just({"terminated": {"exitCode": 1, "reason": "Error"}}),
    st.just({}),
)


@st.composite
def container_statuses(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [
        {
            "name": draw(NAMES),
            **draw(
                shuffled(
                    {
                        "image": st.just("img"),
                        "ready": st.sampled_from([True, False, 0, 1, None]),
                        "started": st.booleans(),
                        "restartCount": st.integers(0, 3),
                        "state": STATES,
                        "lastState": STATES,
                    }
                )
            ),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    containers = [
        {"name": name, "image": "i"} if draw(st.booleans()) else {"name": name}
        for name in draw(st.lists(NAMES, max_size=3))
    ]
    manifest: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {"containers": containers}}
    if draw(st.booleans()):
        if draw(st.booleans()):  # statuses in spec order, one per container
            statuses = [
                {"name": c["name"], "ready": draw(st.booleans()), "state": draw(STATES)}
                for c in containers
            ]
        else:
            statuses = draw(container_statuses())
        manifest["status"] = draw(
            shuffled(
                {
                    "phase": st.sampled_from(["Pending", "Running", "Succeeded", None]),
                    "startTime": STAMPS,
                    "conditions": conditions(),
                    "containerStatuses": st.just(statuses),
                    "nominatedNodeName": st.just("n2"),
                }
            )
        )
    return manifest


INSTANTS = st.sampled_from(
    [S, S + 1, S + 999_999_999, S + 999_990_000, S + 10_000, S - 1, S + 123_456_789]
)


def same(expected: Any, actual: Any) -> None:
    assert canonical(actual) == canonical(expected)


@settings(max_examples=300, deadline=None)
@given(pods(), INSTANTS, st.data())
def test_each_helper_gives_what_the_original_gave(
    manifest: dict[str, Any], ns: int, data: st.DataObject
) -> None:
    names = [c["name"] for c in manifest["spec"]["containers"]] or ["app"]
    container = data.draw(st.sampled_from([*names, "absent"]))
    at = _at(ns)
    stamp = stamp_of(at)
    before = canonical(manifest)
    node = data.draw(st.sampled_from(["n1", None, ""]))
    same(
        reference_pod_scheduled(manifest, node=node, reason="Unschedulable", message="m", at=at),
        with_pod_scheduled(manifest, node=node, reason="Unschedulable", message="m", stamp=stamp),
    )
    restart_count = data.draw(st.integers(0, 2))
    same(
        reference_container_started(
            manifest, container=container, restart_count=restart_count, at=at
        ),
        with_container_started(
            manifest, container=container, restart_count=restart_count, stamp=stamp
        ),
    )
    ready = data.draw(st.booleans())
    reason = data.draw(st.sampled_from(["", "why"]))
    same(
        reference_pod_readiness(manifest, ready=ready, reason=reason, at=at),
        with_pod_readiness(manifest, ready=ready, reason=reason, stamp=stamp),
    )
    exited = {
        "container": container,
        "exit_code": data.draw(st.sampled_from([0, 1, 137])),
        "signal": data.draw(st.sampled_from([None, 0, 9])),
        "reason": "Error",
        "message": data.draw(st.sampled_from(["", "boom"])),
        "restart_count": restart_count,
        "started_at_ns": data.draw(st.one_of(st.none(), INSTANTS)),
        "finished_at_ns": data.draw(st.one_of(st.none(), INSTANTS)),
    }
    same(
        reference_container_exited(manifest, **exited, at=at),
        with_container_exited(manifest, **exited, stamp=stamp),
    )
    restarted = {
        "container": container,
        "restart_count": restart_count + 1,
        "backoff_seconds": data.draw(st.sampled_from([0.0, 10.0, 300.0])),
        "namespace": "default",
        "name": "p",
        "uid": "u",
    }
    same(
        reference_container_restarted(manifest, **restarted, at=at),
        with_container_restarted(manifest, **restarted, stamp=stamp),
    )
    phase = data.draw(st.sampled_from(["Succeeded", "Failed"]))
    same(
        reference_pod_terminated(manifest, phase=phase, reason=reason, message="x", at=at),
        with_pod_terminated(manifest, phase=phase, reason=reason, message="x", stamp=stamp),
    )
    assert canonical(manifest) == before, "a helper changed the manifest it was given"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({"key": st.sampled_from([*LIFECYCLE_TAINTS, "other"])}),
        max_size=3,
    ),
    conditions(),
    STATUSES,
    INSTANTS,
)
def test_the_node_ready_condition_is_what_the_original_gave(
    taints: list[dict[str, Any]], node_conditions: list[dict[str, Any]], status: str, ns: int
) -> None:
    manifest = {"metadata": {"name": "n"}, "spec": {"taints": taints}}
    manifest["status"] = {"conditions": node_conditions}
    at = _at(ns)
    expected = reference_ready_condition(manifest, status=status, reason="r", message="m", at=at)
    same(
        expected,
        with_ready_condition(manifest, status=status, reason="r", message="m", stamp=stamp_of(at)),
    )
