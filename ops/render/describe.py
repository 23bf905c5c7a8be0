"""``fleetlog describe``: the page kubectl describe prints (identity, spec, a kind's own
sections such as a deployment's replica sets or a service's endpoints, the scheduling
decision) and Kubernetes-style events at the bottom.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ops.render.services import ready_endpoints_text, service_discovery, service_external_ip
from ops.render.text import age, iso, tabulated

if TYPE_CHECKING:
    from streams.envelope import StoredEvent


def describe(
    item: dict[str, Any],
    events: Sequence[StoredEvent],
    now_ns: int,
    *,
    replica_sets: Sequence[dict[str, Any]] = (),
    endpoint_slices: Sequence[dict[str, Any]] = (),
    related: Sequence[StoredEvent] = (),
    decision: Mapping[str, Any] | None = None,
    analysis: Sequence[str] | None = None,
) -> str:
    """A kubectl-describe-like page: identity, labels, the manifest's spec, then the events
    as Kubernetes' components would have recorded them (``projections.kube_events``: from the
    object's own ``events``, this incarnation's, and for a deployment or replica set the ``related``
    events of its replica sets or pods; every event is in ``fleetlog history``). A deployment
    shows its counts and replica sets first, as kubectl does; a service its addresses, ports
    and the ready endpoints of ``endpoint_slices``; an HPA its conditions and its last
    ``decision`` (the why of the ``ScaledTo`` it caused: ``{"seq", "at_ns", "why"}``; or of
    its recorded "no change", with ``type``; a "no change" after the scale as ``since``); an
    Istio object the ``analysis`` lines about it (``istioctl analyze``'s messages)."""
    import yaml

    from projections import kube_events

    manifest = item["manifest"]
    metadata = manifest.get("metadata", {})
    lines = [f"Name:         {item['name']}"]
    if item["namespace"]:
        lines.append(f"Namespace:    {item['namespace']}")
    lines.append(f"Kind:         {item['kind']}")
    if item.get("uid"):
        lines.append(f"UID:          {item['uid']}")
        created = item["created_ns"]
        lines.append(f"Created:      {iso(created)} ({age(created, now_ns)} ago)")
        lines.append(f"Version:      {item['version']} (stream sequence {item['last_seq']})")
    else:
        lines.append("Created:      built in (exists without being stored)")
    labels = metadata.get("labels") or {}
    lines.append(
        "Labels:       "
        + (("\n              ").join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>")
    )
    annotations = metadata.get("annotations") or {}
    if item["kind"] == "Secret":
        from core.access.secretdata import LAST_APPLIED

        # As kubectl describe: never the applied configuration (it holds the values).
        annotations = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    lines.append(
        "Annotations:  "
        + (
            ("\n              ").join(f"{k}: {v}" for k, v in sorted(annotations.items()))
            or "<none>"
        )
    )
    if item["kind"] == "Deployment":
        lines += deployment_lines(manifest, replica_sets)
    if item["kind"] == "Service":
        lines += service_lines(manifest, endpoint_slices)
    if item["kind"] == "PriorityClass":  # no spec: its terms are top-level fields
        lines += [
            f"Value:             {manifest.get('value', 0)}",
            f"GlobalDefault:     {'true' if manifest.get('globalDefault') else 'false'}",
            f"PreemptionPolicy:  {manifest.get('preemptionPolicy') or 'PreemptLowerPriority'}",
            f"Description:       {manifest.get('description') or '<none>'}",
        ]
    if item["kind"] == "Secret":
        lines += secret_lines(manifest)
    if item["kind"] == "ConfigMap":
        lines += config_map_lines(manifest)
    for section in ("spec", "status"):
        if manifest.get(section):
            body = yaml.safe_dump(manifest[section], sort_keys=False).rstrip().splitlines()
            lines.append(f"{section.capitalize()}:")
            lines += [f"  {line}" for line in body]
    if item["kind"] == "Pod":
        lines += scheduling_lines(events)
    if item["kind"] == "HorizontalPodAutoscaler":
        from ops.render.autoscaling import condition_lines, why_lines

        lines += condition_lines(manifest.get("status") or {})
        if decision is None:
            lines.append("Last decision:  <none>")
        else:
            what = decision.get("type", "ScaledTo")
            lines.append(f"Last decision:  {what} #{decision['seq']} at {iso(decision['at_ns'])}")
            lines += [f"  {line}" for line in why_lines(decision["why"])]
            since = decision.get("since")
            if since is not None:
                lines.append(
                    f"Since then, no change:  {since['type']} #{since['seq']} at "
                    f"{iso(since['at_ns'])}"
                )
                lines += [f"  {line}" for line in why_lines(since["why"])]
    if analysis is not None:
        lines.append("Analysis:" + ("" if analysis else "     <none>"))
        lines += [f"  {line}" for line in analysis]
    shown = kube_events.correlate(kube_events.events_of(item, events, related))
    lines += event_lines(shown, now_ns)
    return "\n".join(lines)


def secret_lines(manifest: dict[str, Any]) -> list[str]:
    """kubectl's ``describe secret``: the type, and each key with its size, never its value."""
    lines = [f"Type:         {manifest.get('type') or 'Opaque'}", "", "Data", "===="]
    for key, text in sorted((manifest.get("data") or {}).items()):
        lines.append(f"{key}:  {_size_of(text)} bytes")
    return lines


def _size_of(text: str) -> str:
    """A value's size: the decoded base64 of an opened secret, or the sealed value's note."""
    import base64
    import binascii

    match = re.fullmatch(r"<sealed, (\d+) bytes>", text)
    if match:
        return match.group(1)
    try:
        return str(len(base64.b64decode(text, validate=True)))
    except (binascii.Error, ValueError):
        return "?"


def config_map_lines(manifest: dict[str, Any]) -> list[str]:
    """kubectl's ``describe configmap``: each key and its value, then the binary keys' sizes."""
    lines = ["", "Data", "===="]
    for key, value in sorted((manifest.get("data") or {}).items()):
        lines += [f"{key}:", "----", value, ""]
    lines += ["", "BinaryData", "===="]
    for key, text in sorted((manifest.get("binaryData") or {}).items()):
        lines.append(f"{key}: {_size_of(text)} bytes")
    return lines


EVENT_COLUMNS = ("Type", "Reason", "Age", "From", "Message")
EVENT_RULES = ("----", "------", "----", "----", "-------")
"""kubectl's underlines (Age's is four dashes long, as kubectl writes it)."""


def event_lines(shown: Sequence[Any], now_ns: int) -> list[str]:
    """kubectl describe's Events section: ``Events:  <none>``, or a table of TYPE, REASON,
    AGE (``5m``, or ``2m (x4 over 10m)`` for a repeated event), FROM and MESSAGE, its columns
    as wide as their longest cell plus two spaces (kubectl's tabwriter), each row indented by
    two. ``shown`` are :class:`projections.kube_events.Shown`."""
    if not shown:
        return ["Events:       <none>"]
    rows = [list(EVENT_COLUMNS), list(EVENT_RULES)]
    for event in shown:
        when = age(event.first_ns, now_ns)
        if event.count > 1:
            when = f"{age(event.last_ns, now_ns)} (x{event.count} over {when})"
        rows.append([event.type, event.reason, when, event.source, event.message.strip()])
    widths = [max(len(row[column]) for row in rows) + 2 for column in range(4)]
    return ["Events:"] + [
        ("  " + "".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
         + row[4]).rstrip()
        for row in rows
    ]  # fmt: skip


def deployment_lines(manifest: dict[str, Any], replica_sets: Sequence[dict[str, Any]]) -> list[str]:
    """kubectl's ``Replicas:`` line and which replica set is new (same template) or old."""
    # The deployment rules are loaded by the commands that show a deployment, not by every one.
    from core.workloads.deployment import template_without_hash

    spec, status = manifest.get("spec") or {}, manifest.get("status") or {}
    lines = [
        f"Replicas:     {spec.get('replicas', 1)} desired | {status.get('updatedReplicas', 0)} "
        f"updated | {status.get('replicas', 0)} total | {status.get('availableReplicas', 0)} "
        f"available | {status.get('unavailableReplicas', 0)} unavailable",
        f"StrategyType: {(spec.get('strategy') or {}).get('type', 'RollingUpdate')}",
    ]
    template = template_without_hash(spec.get("template") or {})

    def shown(rs: dict[str, Any]) -> str:
        rs_status = rs["manifest"].get("status") or {}
        wanted = (rs["manifest"].get("spec") or {}).get("replicas", 1)
        return f"{rs['name']} ({rs_status.get('replicas', 0)}/{wanted} replicas created)"

    new = [
        rs
        for rs in replica_sets
        if template_without_hash(rs["manifest"]["spec"]["template"]) == template
    ]
    old = [
        rs
        for rs in replica_sets
        if rs not in new and (rs["manifest"].get("spec") or {}).get("replicas", 1)
    ]
    lines.append("OldReplicaSets: " + (", ".join(shown(rs) for rs in old) or "<none>"))
    lines.append("NewReplicaSet:  " + (", ".join(shown(rs) for rs in new) or "<none>"))
    return lines


def service_lines(manifest: dict[str, Any], slices: Sequence[dict[str, Any]]) -> list[str]:
    """kubectl's ``describe service`` lines: selector, type, families, addresses, and per port
    its target, node port and ready endpoints (from the service's EndpointSlices)."""
    spec, status = manifest.get("spec") or {}, manifest.get("status") or {}
    kind = spec.get("type", "ClusterIP")
    selector = spec.get("selector") or {}
    lines = [
        "Selector:     " + (",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"),
        f"Type:         {kind}",
    ]
    if spec.get("ipFamilyPolicy"):
        lines.append(f"IP Family Policy:  {spec['ipFamilyPolicy']}")
    if spec.get("ipFamilies"):
        lines.append(f"IP Families:  {','.join(spec['ipFamilies'])}")
    if spec.get("clusterIP"):
        lines.append(f"IP:           {spec['clusterIP']}")
        lines.append(f"IPs:          {','.join(spec.get('clusterIPs') or [spec['clusterIP']])}")
    if spec.get("externalIPs"):
        lines.append(f"External IPs: {','.join(spec['externalIPs'])}")
    if kind == "ExternalName":
        lines.append(f"External Name: {spec.get('externalName', '')}")
    if kind == "LoadBalancer":
        lines.append(f"LoadBalancer Ingress: {service_external_ip(spec, status, wide=True)}")
    for port in spec.get("ports") or []:
        name = port.get("name") or "<unset>"
        protocol = port.get("protocol", "TCP")
        lines.append(f"Port:         {name}  {port['port']}/{protocol}")
        lines.append(f"TargetPort:   {port.get('targetPort', port['port'])}/{protocol}")
        if port.get("nodePort"):
            lines.append(f"NodePort:     {name}  {port['nodePort']}/{protocol}")
        lines.append(f"Endpoints:    {ready_endpoints_text(slices, port.get('name', ''))}")
    if not spec.get("ports") and kind != "ExternalName":
        lines.append(f"Endpoints:    {ready_endpoints_text(slices)}")
    lines.append(f"Session Affinity: {spec.get('sessionAffinity', 'None')}")
    if spec.get("sessionAffinity") == "ClientIP":
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
            "timeoutSeconds"
        )
        lines.append(f"Session Affinity Timeout: {timeout}s")
    if spec.get("externalTrafficPolicy"):
        lines.append(f"External Traffic Policy: {spec['externalTrafficPolicy']}")
    if spec.get("healthCheckNodePort"):
        lines.append(f"HealthCheck NodePort: {spec['healthCheckNodePort']}")
    if spec.get("internalTrafficPolicy"):
        lines.append(f"Internal Traffic Policy: {spec['internalTrafficPolicy']}")
    metadata = manifest.get("metadata") or {}
    name, query, watch = service_discovery(
        metadata.get("namespace") or "default", metadata.get("name", "")
    )
    lines.append(f"DNS:          {name}")
    lines.append(f"NATS:         {query} (query), {watch} (watch)")
    return lines


def scheduling_lines(events: Sequence[StoredEvent]) -> list[str]:
    """Where the pod went and why (the score of each plugin), or why no node would take it,
    from the scheduler's latest decision in the pod's history."""
    decision = next(
        (
            ev
            for ev in reversed(events)
            if ev.envelope.type in ("PodBound", "PodUnschedulable", "PodNominated")
        ),
        None,
    )
    if decision is None:
        return ["Scheduling:   <no decision yet>"]
    e = decision.envelope
    payload = e.payload
    if e.type == "PodNominated":
        victims = ", ".join(payload.get("victims") or []) or "none"
        return [
            f"Scheduling:   nominated to {payload.get('node')} ({e.actor}, {iso(e.timestamp_ns)})",
            f"  preempting: {victims}",
            f"  {payload.get('message', '')}",
        ]
    if e.type == "PodUnschedulable":
        lines = [f"Scheduling:   unschedulable ({e.actor}, {iso(e.timestamp_ns)})"]
        lines.append(f"  {payload.get('message', '')}")
        reasons = payload.get("reasons") or {}
        if reasons:
            table = tabulated(
                sorted(reasons.items(), key=lambda item: (-item[1], item[0])),
                headers=["REASON", "NODES"], tablefmt="plain",
            )  # fmt: skip
            lines += [f"  {line}" for line in table.splitlines()]
        return lines
    lines = [f"Scheduling:   bound to {payload.get('node')} ({e.actor}, {iso(e.timestamp_ns)})"]
    if payload.get("score") is not None:
        counts = []
        if payload.get("feasible_nodes") is not None:
            counts.append(f"best of {payload['feasible_nodes']} feasible nodes")
        if payload.get("evaluated_nodes") is not None:
            counts.append(f"{payload['evaluated_nodes']} evaluated")
        lines.append(f"  score {payload['score']}" + (f" ({', '.join(counts)})" if counts else ""))
    scores = payload.get("plugin_scores") or {}
    weights = payload.get("weights") or {}
    if scores:
        rows = [
            [name, score, weights.get(name, 0), score * weights.get(name, 0)]
            for name, score in scores.items()
        ]
        table = tabulated(rows, headers=["PLUGIN", "SCORE", "WEIGHT", "WEIGHTED"], tablefmt="plain")
        lines += [f"  {line}" for line in table.splitlines()]
    return lines
