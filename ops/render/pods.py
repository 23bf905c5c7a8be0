"""kubectl's pod columns (``printPod``): STATUS from the pod's and its containers' states
(``CrashLoopBackOff``, ``Init:1/2``, ``Completed``, ``Terminating`` …), READY and RESTARTS
(``2 (9m15s ago)``), over fleetlog's stored status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.pods.status import MESH_SIDECAR
from ops.render.text import age

if TYPE_CHECKING:
    pass


# -- columns per kind ------------------------------------------------------------------------


_SUCCEEDED_OR_FAILED = ("Succeeded", "Failed")


def _restartable(container: dict[str, Any] | None) -> bool:
    """An init container with ``restartPolicy: Always``: a sidecar, counted with the pod's
    containers."""
    return bool(container) and container.get("restartPolicy") == "Always"  # type: ignore[union-attr]


def _finished_ns(status: dict[str, Any]) -> int | None:
    """When a container's previous instance ended (``lastState.terminated.finishedAt``)."""
    from core.meta.timestamps import parse_stamp

    terminated = (status.get("lastState") or {}).get("terminated") or {}
    return parse_stamp(terminated.get("finishedAt")) if terminated.get("finishedAt") else None


def _terminated_reason(terminated: dict[str, Any], prefix: str = "") -> str:
    if terminated.get("reason"):
        return prefix + str(terminated["reason"])
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def pod_columns(manifest: dict[str, Any], now_ns: int) -> tuple[str, str, str]:
    """kubectl's READY, STATUS and RESTARTS of a pod (``printPod``), from its stored status.

    STATUS starts from the phase (or ``status.reason``, e.g. Evicted), then: an init container
    that has not completed says ``Init:<reason>`` (waiting or terminated) or ``Init:N/M``; once
    initialised, the last container (in spec order) that is waiting or terminated gives its
    reason (``CrashLoopBackOff``, ``ContainerCreating``, ``ErrImagePull``, ``Completed``,
    ``Error``, ``OOMKilled``, or ``ExitCode:N`` / ``Signal:N`` without one); ``Completed``
    while another container still runs reads ``Running`` (``NotReady`` when the pod is not
    Ready). A pod being deleted reads ``Terminating`` (``Unknown`` when its node was lost).
    RESTARTS sums the restart counts, with how long ago the latest restart was."""
    spec, status = manifest.get("spec") or {}, manifest.get("status") or {}
    phase = status.get("phase") or "Pending"
    reason = status.get("reason") or phase
    conditions = status.get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    names = {c.get("name") for c in spec.get("containers") or []}
    total = len(names) + sum(1 for c in init_specs.values() if _restartable(c))
    # A meshed pod's sidecar, started by its node without a spec entry, counts as Istio's
    # injected one does (2/2).
    total += sum(
        1
        for c in status.get("containerStatuses") or []
        if c.get("name") == MESH_SIDECAR and MESH_SIDECAR not in names
    )
    ready = restarts = sidecar_restarts = 0
    last_restart: int | None = None
    last_sidecar_restart: int | None = None

    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for index, container in enumerate(init_statuses):
        count = int(container.get("restartCount") or 0)
        finished = _finished_ns(container)
        restarts += count
        if finished is not None and (last_restart is None or finished > last_restart):
            last_restart = finished
        sidecar = _restartable(init_specs.get(container.get("name")))
        if sidecar:
            sidecar_restarts += count
            if finished is not None and (
                last_sidecar_restart is None or finished > last_sidecar_restart
            ):
                last_sidecar_restart = finished
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and int(terminated.get("exitCode") or 0) == 0:
            continue
        if sidecar and container.get("started"):
            if container.get("ready"):
                ready += 1
            continue
        if terminated is not None:
            reason = _terminated_reason(terminated, "Init:")
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{index}/{len(init_specs)}"
        initializing = True
        break

    initialized = any(
        c.get("type") == "Initialized" and c.get("status") == "True" for c in conditions
    )
    if not initializing or initialized:
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for container in reversed(status.get("containerStatuses") or []):
            restarts += int(container.get("restartCount") or 0)
            finished = _finished_ns(container)
            if finished is not None and (last_restart is None or finished > last_restart):
                last_restart = finished
            state = container.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                # A terminal pod's container that never ran still reads "waiting" in the
                # stored status (the kubelet would have marked it terminated): its reason is
                # stale, and the pod's own (ImagePullUnsupported, say) says more.
                if phase not in _SUCCEEDED_OR_FAILED:
                    reason = str(waiting["reason"])
            elif terminated is not None:
                reason = _terminated_reason(terminated)
            elif container.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
            )
            reason = "Running" if pod_ready else "NotReady"

    if (manifest.get("metadata") or {}).get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in _SUCCEEDED_OR_FAILED:
            reason = "Terminating"

    shown_restarts = str(restarts)
    if restarts and last_restart is not None:
        shown_restarts = f"{restarts} ({age(last_restart, now_ns)} ago)"
    return f"{ready}/{total}", reason, shown_restarts


def pod_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    manifest = item["manifest"]
    ready, reason, restarts = pod_columns(manifest, now_ns)
    row = [item["name"], ready, reason, restarts, age(item["created_ns"], now_ns)]
    if wide:
        spec, status = manifest.get("spec") or {}, manifest.get("status") or {}
        ips = status.get("podIPs") or []
        pod_ip = (ips[0].get("ip") if ips else None) or status.get("podIP")
        gates = spec.get("readinessGates") or []
        if gates:
            conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            met = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
            readiness_gates = f"{met}/{len(gates)}"
        else:
            readiness_gates = "<none>"
        row += [
            pod_ip or "<none>",
            spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>",
            readiness_gates,
        ]
    return row
