"""How recorded facts change a pod's manifest: scheduling, container starts, exits and
restarts, readiness and termination (``with_container_started``, ``with_pod_readiness`` …).

Why this exists: this is the pod's *evolve* (``core.meta.evolve``). :data:`EVOLVE` maps each of
a pod's events to the function that folds it, and both folds use it: the pod aggregate, when a
handler decides, and the cluster read model (``projections.cluster``), when the log is
replayed (``tests/unit/test_status_fold_equivalence.py`` holds both to the same bytes). The
helpers are pure functions of plain dicts, so a reader that folds the log loads neither
eventsourcing nor the pydantic models. They take the event's condition stamp, which a replay
formats once per second (``core.meta.timestamps.format_stamp``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from core.meta.evolve import Evolve, Evolving
from core.meta.timestamps import format_stamp
from core.pods.lifecycle import backoff_message
from core.pods.qos import pod_qos_class

MESH_SIDECAR: Final = "istio-proxy"
"""The one container a node runs for a pod without its spec naming it: a meshed pod's Envoy
(Istio's name; ``core.mesh.injection``). Istio's injector adds it to the spec at admission;
fleetlog's node agent starts it instead, so its status follows the spec's containers'."""


def with_pod_scheduled(
    manifest: dict[str, Any], *, node: str | None, reason: str, message: str, stamp: str
) -> dict[str, Any]:
    """A pod manifest after a scheduling decision: bound (``spec.nodeName`` and PodScheduled
    True) or not (PodScheduled False, reason Unschedulable, with the scheduler's message)."""
    spec = dict(manifest.get("spec", {}))
    condition = {
        "type": "PodScheduled",
        "status": "True" if node else "False",
        "lastTransitionTime": stamp,
    }
    if node is None:
        condition["reason"] = reason
        condition["message"] = message
    else:
        spec["nodeName"] = node
    old = manifest.get("status")
    if not old:  # the pod's first scheduling decision: no status to carry
        return {**manifest, "spec": spec, "status": {"phase": "Pending", "conditions": [condition]}}
    status = dict(old)
    if node is not None:
        status.pop("nominatedNodeName", None)  # bound: the nomination has served its purpose
    status.setdefault("phase", "Pending")
    conditions = []
    for kept in status.get("conditions") or []:
        if kept.get("type") != "PodScheduled":
            conditions.append(kept)
    conditions.append(condition)
    status["conditions"] = conditions
    return {**manifest, "spec": spec, "status": status}


# The pod status helpers below run for nearly every event a replay folds: they are written as
# plain loops (a comprehension is a function call of its own) and keep what did not change.


def _condition(kind: str, status: str, stamp: str, reason: str, message: str) -> dict[str, Any]:
    """A pod condition as Kubernetes spells it (``reason`` and ``message`` only with a reason)."""
    if reason:
        return {
            "type": kind,
            "status": status,
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }
    return {"type": kind, "status": status, "lastTransitionTime": stamp}


def _with_readiness_conditions(
    conditions: list[dict[str, Any]],
    stamp: str,
    status: str,
    reason: str,
    message: str,
    initialized: bool = False,
) -> list[dict[str, Any]]:
    """``conditions`` with Ready and ContainersReady set to ``status`` (and first, if
    ``initialized``, Initialized to True), in one pass.

    Every condition of one of these types is replaced; a missing one is added at the end, in
    that order. Its lastTransitionTime moves only when the status changes, as Kubernetes keeps
    it; ``reason`` and ``message`` are there only with a reason."""
    if len(conditions) == 4:
        scheduled, init, ready, containers_ready = conditions
        if (
            scheduled.get("type") == "PodScheduled"
            and init.get("type") == "Initialized"
            and ready.get("type") == "Ready"
            and containers_ready.get("type") == "ContainersReady"
        ):
            # A pod's conditions once a container started (nearly every call): no search.
            if initialized:
                since = (
                    stamp if init.get("status") != "True" else init.get("lastTransitionTime", stamp)
                )
                init = {"type": "Initialized", "status": "True", "lastTransitionTime": since}
            since = (
                stamp if ready.get("status") != status else ready.get("lastTransitionTime", stamp)
            )
            since_containers = (
                stamp
                if containers_ready.get("status") != status
                else containers_ready.get("lastTransitionTime", stamp)
            )
            if reason:
                return [
                    scheduled,
                    init,
                    {
                        "type": "Ready",
                        "status": status,
                        "lastTransitionTime": since,
                        "reason": reason,
                        "message": message,
                    },
                    {
                        "type": "ContainersReady",
                        "status": status,
                        "lastTransitionTime": since_containers,
                        "reason": reason,
                        "message": message,
                    },
                ]
            return [
                scheduled,
                init,
                {"type": "Ready", "status": status, "lastTransitionTime": since},
                {
                    "type": "ContainersReady",
                    "status": status,
                    "lastTransitionTime": since_containers,
                },
            ]
    out = []
    no_ready = no_containers_ready = True
    no_initialized = initialized
    for condition in conditions:
        kind = condition.get("type")
        if kind == "Ready":
            no_ready = False
        elif kind == "ContainersReady":
            no_containers_ready = False
        elif initialized and kind == "Initialized":
            no_initialized = False
            since = (
                stamp
                if condition.get("status") != "True"
                else condition.get("lastTransitionTime", stamp)
            )
            out.append({"type": "Initialized", "status": "True", "lastTransitionTime": since})
            continue
        else:
            out.append(condition)
            continue
        since = (
            stamp
            if condition.get("status") != status
            else condition.get("lastTransitionTime", stamp)
        )
        out.append(_condition(kind, status, since, reason, message))
    if no_initialized:
        out.append({"type": "Initialized", "status": "True", "lastTransitionTime": stamp})
    if no_ready:
        out.append(_condition("Ready", status, stamp, reason, message))
    if no_containers_ready:
        out.append(_condition("ContainersReady", status, stamp, reason, message))
    return out


def _unready_message(names: list[str]) -> str:
    return f"containers with unready status: [{' '.join(names)}]" if names else ""


def _container_statuses(manifest: dict[str, Any], status: dict[str, Any]) -> list[dict[str, Any]]:
    """One status per container of the spec, in spec order (waiting until first started);
    ``status`` is the manifest's.

    Usually the stored list already is exactly that and is returned as it is: the result is
    read-only, like the manifest it comes from."""
    containers = manifest.get("spec", {}).get("containers") or []
    stored = status.get("containerStatuses") or []
    if len(stored) == len(containers):
        if len(stored) == 1:  # most pods: no loop, no call
            first = stored[0]
            if first and first.get("name") == containers[0]["name"]:
                return stored
        elif _in_spec_order(stored, containers):
            return stored
    known = {}
    for c in stored:  # (later duplicates win, as they always have)
        known[c.get("name")] = c
    out = []
    in_spec = False
    for c in containers:
        name = c["name"]
        out.append(known.get(name) or _waiting_status(c))
        in_spec = in_spec or name == MESH_SIDECAR
    sidecar = known.get(MESH_SIDECAR)
    if sidecar is not None and not in_spec:
        out.append(sidecar)  # the node's sidecar, after the spec's containers (Istio's place)
    return out


def _running_status(name: str, image: str, restart_count: int, stamp: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": False,
        "started": True,
        "restartCount": restart_count,
        "state": {"running": {"startedAt": stamp}},
    }


def _waiting_status(container: dict[str, Any]) -> dict[str, Any]:
    """The status of a container of the spec that has not started yet."""
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": "ContainerCreating"}},
    }


def _in_spec_order(stored: list[dict[str, Any]], containers: list[dict[str, Any]]) -> bool:
    """Whether ``stored`` (as long as ``containers``) holds one status per container, in spec
    order: what matching them by name would give."""
    for status, container in zip(stored, containers, strict=False):
        if not status or status.get("name") != container["name"]:
            return False
    return len(containers) < 2 or len({c["name"] for c in containers}) == len(containers)


_UNSET: Any = object()


def _with_ready(statuses: list[dict[str, Any]], ready: bool) -> list[dict[str, Any]]:
    """``statuses`` with every container's ``ready`` flag set (one already set is kept)."""
    out = []
    for c in statuses:
        out.append(c if c.get("ready", _UNSET) is ready else {**c, "ready": ready})
    return out


def with_container_started(
    manifest: dict[str, Any], *, container: str, restart_count: int, stamp: str
) -> dict[str, Any]:
    """A pod manifest after one of its containers started: the container's status is running
    (started, not yet ready), ``startTime`` is set on the first start, and the phase is Running
    once every container has started, as the kubelet reports it."""
    old = manifest.get("status") or {}
    statuses = []
    names = []
    all_started = True
    if not old.get("containerStatuses"):
        # The first start of the pod (the common case): built from the spec at once, as
        # below from the waiting statuses _container_statuses would give.
        for spec in manifest.get("spec", {}).get("containers") or []:
            name = spec["name"]
            if name == container:
                c = _running_status(name, spec.get("image", ""), restart_count, stamp)
            else:
                c = _waiting_status(spec)
                all_started = False
            statuses.append(c)
            names.append(name)
    else:
        for c in _container_statuses(manifest, old):
            if c["name"] == container:
                c = {
                    **c,
                    "ready": False,
                    "started": True,
                    "restartCount": restart_count,
                    "state": {"running": {"startedAt": stamp}},
                }
            else:
                if not c.get("started"):
                    all_started = False
                if c.get("ready", _UNSET) is not False:
                    c = {**c, "ready": False}
            statuses.append(c)
            names.append(c["name"])
    if container == MESH_SIDECAR and container not in names:
        # The node's sidecar has no spec entry: its status is added when it first starts.
        statuses.append(_running_status(container, "", restart_count, stamp))
        names.append(container)
    status = dict(old)
    status.setdefault("startTime", stamp)
    if statuses and all_started:
        if status.get("phase") in (None, "Pending"):
            status["phase"] = "Running"
    else:
        status.setdefault("phase", "Pending")
    status["containerStatuses"] = statuses
    status["conditions"] = _with_readiness_conditions(
        status.get("conditions") or [],
        stamp,
        "False",
        "ContainersNotReady",
        _unready_message(names),
        True,
    )
    return {**manifest, "status": status}


def with_pod_readiness(
    manifest: dict[str, Any], *, ready: bool, reason: str, stamp: str
) -> dict[str, Any]:
    """A pod manifest whose Ready and ContainersReady conditions (and every container's
    ``ready`` flag) are ``ready``."""
    old = manifest.get("status") or {}
    status = dict(old)
    statuses = []
    for c in _container_statuses(manifest, old):
        statuses.append(c if c.get("ready", _UNSET) is ready else {**c, "ready": ready})
    status["containerStatuses"] = statuses
    conditions = status.get("conditions") or []
    if ready:
        status["conditions"] = _with_readiness_conditions(conditions, stamp, "True", "", "")
    else:
        names = []
        for c in statuses:
            names.append(c["name"])
        status["conditions"] = _with_readiness_conditions(
            conditions, stamp, "False", reason or "ContainersNotReady", _unready_message(names)
        )
    return {**manifest, "status": status}


def _readiness_of_containers(
    statuses: list[dict[str, Any]], conditions: list[dict[str, Any]], stamp: str
) -> list[dict[str, Any]]:
    """Ready and ContainersReady follow the containers' own ``ready`` flags (one container
    ending makes the pod not ready without touching the others' flags)."""
    unready = []
    for c in statuses:
        if not c.get("ready"):
            unready.append(c["name"])
    if unready:
        return _with_readiness_conditions(
            conditions, stamp, "False", "ContainersNotReady", _unready_message(unready)
        )
    return _with_readiness_conditions(conditions, stamp, "True", "", "")


def with_container_exited(
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
    stamp: str,
) -> dict[str, Any]:
    """A pod manifest after a container instance ended: its state is ``terminated`` (exit code,
    signal, reason, times, message, as the kubelet reports it), it is neither started nor ready,
    and so the pod is not Ready. The phase is left alone: whether the pod is done is decided
    separately (PodSucceeded / PodFailed), as the restart policy may bring the container back."""
    old = manifest.get("status") or {}
    statuses = []
    for c in _container_statuses(manifest, old):
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
            format_stamp(started_at_ns) if started_at_ns is not None else running.get("startedAt")
        )
        if started:
            terminated["startedAt"] = started
        terminated["finishedAt"] = (
            format_stamp(finished_at_ns) if finished_at_ns is not None else stamp
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
    status = dict(old)
    status["containerStatuses"] = statuses
    status["conditions"] = _readiness_of_containers(statuses, status.get("conditions") or [], stamp)
    return {**manifest, "status": status}


def with_container_restarted(
    manifest: dict[str, Any],
    *,
    container: str,
    restart_count: int,
    backoff_seconds: float,
    namespace: str,
    name: str,
    uid: str,
    stamp: str,
) -> dict[str, Any]:
    """A pod manifest after the decision to restart an ended container: the ended instance
    becomes ``lastState``, the restart count is the new instance's, and the container waits:
    in ``CrashLoopBackOff`` (with the kubelet's message) when it backs off, else while it is
    being created. ContainerStarted then makes it running."""
    if backoff_seconds > 0:
        waiting = {
            "reason": "CrashLoopBackOff",
            "message": backoff_message(backoff_seconds, container, name, namespace, uid),
        }
    else:
        waiting = {"reason": "ContainerCreating"}
    old = manifest.get("status") or {}
    statuses = []
    for c in _container_statuses(manifest, old):
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
    status = dict(old)
    status["containerStatuses"] = statuses
    status["conditions"] = _readiness_of_containers(statuses, status.get("conditions") or [], stamp)
    return {**manifest, "status": status}


def with_container_waiting(
    manifest: dict[str, Any], *, container: str, waiting: dict[str, str]
) -> dict[str, Any]:
    """A pod manifest with ``container`` waiting for the given reason (it cannot start)."""
    old = manifest.get("status") or {}
    statuses = [
        {**c, "ready": False, "started": False, "state": {"waiting": waiting}}
        if c["name"] == container
        else c
        for c in _container_statuses(manifest, old)
    ]
    return {**manifest, "status": {**old, "containerStatuses": statuses}}


def with_pod_terminated(
    manifest: dict[str, Any], *, phase: str, reason: str, message: str, stamp: str
) -> dict[str, Any]:
    """A pod manifest in a terminal phase (Succeeded or Failed): not Ready, with the kubelet's
    ``PodCompleted`` reason on Ready and ContainersReady; ``status.reason``/``message`` say why
    when a reason is given."""
    old = manifest.get("status") or {}
    status = dict(old)
    status["phase"] = phase
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    status["containerStatuses"] = _with_ready(_container_statuses(manifest, old), False)
    status["conditions"] = _with_readiness_conditions(
        status.get("conditions") or [], stamp, "False", "PodCompleted", ""
    )
    return {**manifest, "status": status}


def with_nomination(manifest: dict[str, Any], node: str | None) -> dict[str, Any]:
    """A pod manifest with ``status.nominatedNodeName`` set (or cleared)."""
    status = dict(manifest.get("status") or {})
    if node:
        status["nominatedNodeName"] = node
    else:
        status.pop("nominatedNodeName", None)
    return {**manifest, "status": status}


def with_pod_ips(manifest: dict[str, Any], *, pod_ips: list[str], host_ip: str) -> dict[str, Any]:
    """A pod manifest with its addresses: ``status.podIP``/``podIPs`` (the first is
    ``podIP``, as Kubernetes keeps them) and ``status.hostIP``/``hostIPs``."""
    status = dict(manifest.get("status") or {})
    if pod_ips:
        status["podIP"] = pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in pod_ips]
    else:
        status.pop("podIP", None)
        status.pop("podIPs", None)
    status["hostIP"] = host_ip
    status["hostIPs"] = [{"ip": host_ip}]
    return {**manifest, "status": status}


# -- the pod's evolve --------------------------------------------------------------------------
# One function per event type, over the payload as stored (an older event may lack a field
# added since: read with the payload model's default). These run for most events a replay
# folds: each calls its helper directly.


def _bound(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_pod_scheduled(
        state.manifest, node=payload["node"], reason="", message="", stamp=stamp
    )


def _unschedulable(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_pod_scheduled(
        state.manifest,
        node=None,
        reason="Unschedulable",
        message=payload.get("message", ""),
        stamp=stamp,
    )


def _nominated(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_nomination(state.manifest, payload["node"])


def _container_started(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_container_started(
        state.manifest,
        container=payload["container"],
        restart_count=payload.get("restart_count", 0),
        stamp=stamp,
    )


def _container_exited(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_container_exited(
        state.manifest,
        container=payload["container"],
        exit_code=payload["exit_code"],
        signal=payload.get("signal"),
        reason=payload["reason"],
        message=payload.get("message", ""),
        restart_count=payload.get("restart_count", 0),
        started_at_ns=payload.get("started_at_ns"),
        finished_at_ns=payload.get("finished_at_ns"),
        stamp=stamp,
    )


def _container_restarted(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_container_restarted(
        state.manifest,
        container=payload["container"],
        restart_count=payload["restart_count"],
        backoff_seconds=payload.get("backoff_seconds", 0.0),
        namespace=state.namespace,
        name=state.name,
        uid=state.uid,
        stamp=stamp,
    )


def _container_waiting(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_container_waiting(
        state.manifest,
        container=payload["container"],
        waiting={"reason": payload["reason"], "message": payload.get("message", "")},
    )


def _succeeded(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_pod_terminated(
        state.manifest,
        phase="Succeeded",
        reason=payload.get("reason", ""),
        message=payload.get("message", ""),
        stamp=stamp,
    )


def _failed(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_pod_terminated(
        state.manifest,
        phase="Failed",
        reason=payload.get("reason", ""),
        message=payload.get("message", ""),
        stamp=stamp,
    )


def _ready(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_pod_readiness(
        state.manifest, ready=True, reason=payload.get("reason", ""), stamp=stamp
    )


def _not_ready(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_pod_readiness(
        state.manifest, ready=False, reason=payload.get("reason", ""), stamp=stamp
    )


def _ip_assigned(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_pod_ips(
        state.manifest, pod_ips=list(payload["pod_ips"]), host_ip=payload["host_ip"]
    )


def _created(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    """A new pod as kube-apiserver's create leaves it: ``Pending``, with its QoS class (set
    once, here: kube never recomputes it)."""
    manifest: dict[str, Any] = payload["manifest"]
    status = dict(manifest.get("status") or {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", pod_qos_class(manifest.get("spec") or {}))
    return {**manifest, "status": status}


def _with_resize_condition(
    status: dict[str, Any],
    kind: str,
    *,
    present: bool,
    stamp: str,
    reason: str = "",
    message: str = "",
) -> None:
    """``status`` with the condition ``kind`` set True (``present``) or removed: kube's resize
    conditions exist only while they hold."""
    kept = [c for c in status.get("conditions") or [] if c.get("type") not in (kind,)]
    if present:
        kept.append(_condition(kind, "True", stamp, reason, message))
    status["conditions"] = kept


def _with_container_fields(status: dict[str, Any], values: Mapping[str, Any], field: str) -> None:
    """Each container status named in ``values`` (regular or init) with ``field`` set to its
    value; containers without a status yet are left for their first start."""
    for section in ("containerStatuses", "initContainerStatuses"):
        entries = status.get(section)
        if not entries:
            continue
        updated = []
        for entry in entries:
            if entry.get("name") in values:
                entry = {**entry, field: values[entry["name"]]}
            updated.append(entry)
        status[section] = updated


def _resized(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    """New desired resources: ``spec.containers[].resources`` (and sidecars')."""
    manifest = state.manifest
    spec = dict(manifest.get("spec") or {})
    after = payload["after"]
    for section in ("containers", "initContainers"):
        if spec.get(section):
            spec[section] = [
                {**c, "resources": after[c["name"]]} if c.get("name") in after else c
                for c in spec[section]
            ]
    return {**manifest, "spec": spec}


def _resize_allocated(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    manifest = state.manifest
    status = dict(manifest.get("status") or {})
    requests = {name: dict(r.get("requests") or {}) for name, r in payload["allocated"].items()}
    _with_container_fields(status, requests, "allocatedResources")
    _with_resize_condition(status, "PodResizePending", present=False, stamp=stamp)
    _with_resize_condition(status, "PodResizeInProgress", present=True, stamp=stamp)
    return {**manifest, "status": status}


def _resize_pending(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    manifest = state.manifest
    status = dict(manifest.get("status") or {})
    allocated = payload.get("allocated") or {}
    if allocated:
        requests = {name: dict(r.get("requests") or {}) for name, r in allocated.items()}
        _with_container_fields(status, requests, "allocatedResources")
    _with_resize_condition(
        status, "PodResizePending", present=True, stamp=stamp, reason=payload["reason"],
        message=payload.get("message", ""),
    )  # fmt: skip
    return {**manifest, "status": status}


def _resize_actuated(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    manifest = state.manifest
    status = dict(manifest.get("status") or {})
    _with_container_fields(status, payload["resources"], "resources")
    error = payload.get("error") or ""
    _with_resize_condition(
        status, "PodResizeInProgress", present=bool(error), stamp=stamp,
        reason="Error" if error else "", message=error,
    )  # fmt: skip
    return {**manifest, "status": status}


EVOLVE: dict[str, Evolve] = {
    "PodCreated": _created,
    "PodResized": _resized,
    "PodResizeAllocated": _resize_allocated,
    "PodResizePending": _resize_pending,
    "PodResizeActuated": _resize_actuated,
    "PodBound": _bound,
    "PodIPAssigned": _ip_assigned,
    "PodUnschedulable": _unschedulable,
    "PodNominated": _nominated,
    "ContainerStarted": _container_started,
    "ContainerExited": _container_exited,
    "ContainerRestarted": _container_restarted,
    "ContainerWaiting": _container_waiting,
    "PodSucceeded": _succeeded,
    "PodFailed": _failed,
    "PodReady": _ready,
    "PodNotReady": _not_ready,
}
"""How each of a pod's own events changes its manifest (``PodUpdated`` replaces it)."""
