"""One-line, human summaries of events: what ``history``, ``describe``, ``events`` and ``why``
print in their SUMMARY column.

Why this exists: a summary is a pure function of an event's type and plain payload; it needs
none of the catalog's pydantic payload models (``core.api.payloads``), and the command line, which
prints summaries, should not load them to show its help.
"""

from __future__ import annotations

from typing import Any

from core.policy.quota import format_amount

Payload = dict[str, Any]


def _status_summary(payload: Payload) -> str:
    """``status: 3 replicas, 3 updated, 2 available; Progressing=True (ReplicaSetUpdated)``."""
    status = payload.get("status") or {}
    counts = [
        f"{status[key]} {label}"
        for key, label in (
            ("replicas", "replicas"),
            ("updatedReplicas", "updated"),
            ("readyReplicas", "ready"),
            ("availableReplicas", "available"),
        )
        if key in status
    ]
    conditions = [
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
        for c in status.get("conditions") or []
    ]
    line = "status: " + (", ".join(counts) or "recorded")
    if conditions:
        line += "; " + ", ".join(conditions)
    revision = (payload.get("annotations") or {}).get("deployment.kubernetes.io/revision")
    return line + (f"; revision {revision}" if revision else "")


def summarize(type_name: str, payload: Payload) -> str:
    """A one-line, human summary of an event for history, describe and event listings."""
    if type_name == "ScaledTo":
        line = f"scaled from {payload.get('previous')} to {payload.get('replicas')} replicas"
        return f"{line}: {payload['reason']}" if payload.get("reason") else line
    if type_name == "PodBound":
        line = f"bound to {payload.get('node')}"
        if payload.get("score") is not None:
            line += f" (score {payload['score']}"
            if payload.get("feasible_nodes") is not None:
                line += f", best of {payload['feasible_nodes']} feasible nodes"
            line += ")"
        return line
    if type_name == "PodNominated":
        victims = payload.get("victims") or []
        return f"nominated to {payload.get('node')}, preempting {len(victims)} pod(s)" + (
            f": {', '.join(victims)}" if victims else ""
        )
    if type_name == "PodUnschedulable":
        return str(payload.get("message", "unschedulable"))
    if type_name == "ContainerStarted":
        restarts = payload.get("restart_count") or 0
        return f"container {payload.get('container')} started on {payload.get('node')}" + (
            f" (restart {restarts})" if restarts else ""
        )
    if type_name == "ContainerExited":
        line = f"container {payload.get('container')} exited with code {payload.get('exit_code')}"
        if payload.get("signal"):
            line += f" (signal {payload['signal']})"
        line += f": {payload.get('reason')}"
        return f"{line}: {payload['message']}" if payload.get("message") else line
    if type_name == "ContainerWaiting":
        line = f"container {payload.get('container')} waiting: {payload.get('reason')}"
        return f"{line}: {payload['message']}" if payload.get("message") else line
    if type_name == "ContainerRestarted":
        backoff = payload.get("backoff_seconds") or 0
        line = f"container {payload.get('container')} restarting"
        line += f" (restart {payload.get('restart_count')}"
        line += f", back-off {backoff:g}s)" if backoff else ")"
        return f"{line} after {payload.get('reason')}"
    if type_name in ("PodSucceeded", "PodFailed"):
        line = "succeeded" if type_name == "PodSucceeded" else "failed"
        if payload.get("reason"):
            line += f": {payload['reason']}"
        return f"{line}: {payload['message']}" if payload.get("message") else line
    if type_name in ("PodReady", "PodNotReady"):
        line = "ready" if type_name == "PodReady" else "not ready"
        return f"{line}: {payload['reason']}" if payload.get("reason") else line
    if type_name in ("PodAllocated", "PodReleased"):
        verb = "reserved for" if type_name == "PodAllocated" else "released by"
        return f"resources {verb} {payload.get('pod')}"
    if type_name == "QuotaCharged":
        amounts = payload.get("amounts") or {}
        shown = ", ".join(
            f"{k}={format_amount(k, v)}" for k, v in sorted(amounts.items()) if k != "pods"
        )
        line = f"charged {payload.get('pod')}" + (f" ({shown})" if shown else "")
        return f"{line}: {payload['reason']}" if payload.get("reason") else line
    if type_name == "QuotaReleased":
        line = f"released {payload.get('pod')}"
        return f"{line}: {payload['reason']}" if payload.get("reason") else line
    if type_name in ("NodeReady", "NodeNotReady"):
        line = f"Ready={payload.get('status')} ({payload.get('reason')})"
        return f"{line}: {payload['message']}" if payload.get("message") else line
    if type_name in ("NodeCordoned", "NodeUncordoned"):
        line = "cordoned (unschedulable)" if type_name == "NodeCordoned" else "uncordoned"
        return f"{line}: {payload['reason']}" if payload.get("reason") else line
    if type_name == "NodePodCIDRAssigned":
        return f"podCIDR {payload.get('pod_cidr')} assigned from {payload.get('cluster_cidr')}"
    if type_name == "NodePodCIDRRefused":
        return f"no podCIDR ({payload.get('reason')}): {payload.get('message')}"
    if type_name == "PodResized":
        after = payload.get("after") or {}
        return "resized " + ", ".join(
            f"{name} to {_resources_line(resources)}" for name, resources in sorted(after.items())
        )
    if type_name == "PodResizeAllocated":
        restarts = payload.get("restarts") or []
        line = f"resize admitted on {payload.get('node')}"
        return line + (f", restarting {', '.join(restarts)}" if restarts else "")
    if type_name == "PodResizePending":
        return f"resize {payload.get('reason')}: {payload.get('message', '')}"
    if type_name == "PodResizeActuated":
        line = "resize applied"
        return f"{line} in part: {payload['error']}" if payload.get("error") else line
    if type_name == "PodIPAssigned":
        ips = ", ".join(payload.get("pod_ips") or []) or "none"
        line = f"IP {ips} on {payload.get('node')}"
        line += " (host network)" if payload.get("host_network") else ""
        return f"{line}: {payload['message']}" if payload.get("message") else line
    if type_name.endswith("StatusUpdated"):
        return _status_summary(payload)
    if type_name.endswith("Created"):
        return "created"
    if type_name.endswith("Updated"):
        changed = payload.get("changed") or []
        shown = ", ".join(changed[:4]) + (
            f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        )
        return f"changed {shown}" if shown else "updated"
    if type_name.endswith("Deleted"):
        return f"deleted: {payload['reason']}" if payload.get("reason") else "deleted"
    return ", ".join(f"{key}={value}" for key, value in sorted(payload.items()))[:120]


def _resources_line(resources: Payload) -> str:
    """``requests cpu=200m,memory=64Mi limits memory=128Mi``."""
    parts = []
    for section in ("requests", "limits"):
        values = resources.get(section) or {}
        if values:
            parts.append(section + " " + ",".join(f"{k}={v}" for k, v in sorted(values.items())))
    return " ".join(parts) or "no requests or limits"
