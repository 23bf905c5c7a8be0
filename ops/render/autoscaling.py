"""How an autoscaler's decision reads to a person: the why record a ``ScaledTo`` carries.

Why this exists: the HPA controller stores, in each ``ScaledTo`` it causes, what it decided
from (``core.autoscaling.horizontal``'s why record: each metric's figures, the recommendation
before limits, the window or policy that held it), and the same record in the HPA's status
event when an evaluation changed no count but changed its reason (the recorded "no change",
with each condition's status and reason). ``fleetlog why deployment/web`` and
``fleetlog describe hpa`` print it from the log alone, without the metrics stream (which
forgets in an hour).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _metric_line(metric: Mapping[str, Any]) -> list[str]:
    name = metric.get("name") or metric.get("type", "metric")
    if metric.get("error"):
        return [f"{name}: no reading: {metric['error']}"]
    usage = (
        f"utilization {metric['utilization']}% of requests"
        if metric.get("utilization") is not None
        else f"value {metric.get('usage')}m"
    )
    counts = (
        f"ready {metric.get('readyPods', 0)}, unready {len(metric.get('unreadyPods') or [])}, "
        f"missing {len(metric.get('missingPods') or [])}, "
        f"ignored {len(metric.get('ignoredPods') or [])}"
    )
    ratio = metric.get("ratio")
    ratio_text = f"ratio {ratio:.2f}, " if isinstance(ratio, int | float) else ""
    lines = [
        f"{name}: {usage} ({ratio_text}{counts}) -> {metric.get('replicas')} replicas "
        f"[{metric.get('outcome', '')}]"
    ]
    per_pod = metric.get("perPod") or {}
    if per_pod:
        shown = list(per_pod.items())[:10]
        more = f" (+{len(per_pod) - 10} more)" if len(per_pod) > 10 else ""
        lines.append("  per pod: " + ", ".join(f"{k}={v}" for k, v in shown) + more)
    return lines


def why_lines(why: Mapping[str, Any]) -> list[str]:
    """The decision, one fact a line: replicas, recommendation, each metric, what limited it."""
    head = f"{why.get('currentReplicas')} -> {why.get('desiredReplicas')} replicas"
    if why.get("hpa"):
        head = f"horizontal pod autoscaler {why['hpa']}: {head}"
    if why.get("recommendation") is not None:
        head += f" (recommended {why['recommendation']} before limits"
        head += f" by {why['metric']})" if why.get("metric") else ")"
    lines = [head]
    if why.get("reason"):
        lines.append(f"reason: {why['reason']}")
    for metric in why.get("metrics") or []:
        lines += _metric_line(metric)
    window = why.get("stabilization")
    if window:
        lines.append(
            f"stabilization: {window.get('reason')}: {window.get('from')} held at "
            f"{window.get('to')} by the {window.get('windowSeconds')}s window"
        )
    limit = why.get("limit") or {}
    if limit.get("limited") or limit.get("policies"):
        text = (
            f"limits: {limit.get('reason')}: {limit.get('from')} -> {limit.get('to')} "
            f"(min {limit.get('lowest')}, max {limit.get('highest')})"
        )
        lines.append(text)
        for policy in limit.get("policies") or []:
            lines.append(
                f"  policy {policy.get('type')} {policy.get('value')} per "
                f"{policy.get('periodSeconds')}s: from {policy.get('periodStartReplicas')} "
                f"allows {policy.get('allowed')} ({limit.get('selectPolicy')} chosen)"
            )
    if why.get("error"):
        lines.append(f"error: {why['error']}")
    conditions = why.get("conditions") or {}
    if conditions:
        lines.append(
            "conditions: " + ", ".join(f"{kind} {state}" for kind, state in conditions.items())
        )
    return lines


def condition_lines(status: Mapping[str, Any]) -> list[str]:
    """kubectl describe hpa's Conditions table."""
    conditions = status.get("conditions") or []
    if not conditions:
        return []
    rows = [("Type", "Status", "Reason", "Message"), ("----", "------", "------", "-------")]
    rows += [
        (c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", ""))
        for c in conditions
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return ["Conditions:"] + [
        "  " + "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows
    ]
