"""Turning read-model records and events into what a person reads: kubectl-like tables, YAML,
JSON, ages ("5m", "3d"), describe pages, and refusals (one line per problem)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.api.summaries import summarize

if TYPE_CHECKING:
    from core.errors import FleetError
    from streams.envelope import StoredEvent


def error_lines(subject: str, error: FleetError) -> list[str]:
    """How a refusal of ``subject`` (``pod/web``, a file) reads: ``error: …`` and, when the input
    had several problems, one indented line per problem (``path: message``), as kubectl lists
    every field error of an invalid object."""
    text = error_text(subject, error)
    return [f"error: {text[0]}", *text[1:]]


def error_text(subject: str, error: FleetError) -> list[str]:
    """:func:`error_lines` without the ``error:`` prefix (for a message that gets it later)."""
    if len(error.errors) <= 1:
        return [f"{subject}: {error}"]
    return [f"{subject} is invalid ({len(error.errors)} errors):"] + [
        f"  {problem}" for problem in error.errors
    ]


def age(since_ns: int | None, now_ns: int) -> str:
    """kubectl's short human durations: 45s, 12m, 5h, 3d, 2y (``<unknown>`` without a time,
    as kubectl shows an object that has no creation timestamp)."""
    if since_ns is None:
        return "<unknown>"
    seconds = max(0, (now_ns - since_ns) // 1_000_000_000)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    return f"{days}d" if days < 730 else f"{days // 365}y"


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tabulate(*args: Any, **kwargs: Any) -> str:
    """``tabulate.tabulate``, imported on first use: it takes longer to import than most
    commands take to run, and :func:`table` rarely needs it."""
    from tabulate import tabulate

    return tabulate(*args, **kwargs)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """kubectl-style columns: upper-case headers, left-aligned, no borders.

    tabulate's ``plain`` format, laid out directly when every cell is one line of ASCII (the
    usual case): tabulate spends ~50 µs a row, which made the table of a 1,000-event history
    cost more than reading it. The result is the same text (a property test compares them);
    anything else (wide characters, several lines) goes to tabulate itself."""
    materialised = [["" if cell is None else str(cell) for cell in row] for row in rows]
    header_cells = [str(h) for h in headers]
    simple = all(
        cell.isascii() and "\n" not in cell and "\r" not in cell and "\t" not in cell
        for row in [header_cells, *materialised]
        for cell in row
    )
    if not simple or any(len(row) != len(header_cells) for row in materialised):
        return _tabulate(
            materialised,
            headers=header_cells,
            tablefmt="plain",
            disable_numparse=True,
            stralign="left",
        )
    stripped = [[cell.strip() for cell in row] for row in materialised]
    widths = [len(h) + 2 for h in header_cells]
    for row in stripped:
        for column, cell in enumerate(row):
            if len(cell) > widths[column]:
                widths[column] = len(cell)
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header_cells, *stripped]
    )


def full_manifest(item: dict[str, Any]) -> dict[str, Any]:
    """The stored manifest with the server-managed metadata filled in, as kubectl shows it
    (a built-in object that was never stored, such as a system PriorityClass, has none)."""
    manifest = dict(item["manifest"])
    metadata = dict(manifest.get("metadata", {}))
    if item.get("uid"):
        metadata.update(
            uid=item["uid"],
            resourceVersion=str(item["last_seq"]),
            creationTimestamp=iso(item["created_ns"]),
        )
    manifest["metadata"] = metadata
    return manifest


def to_yaml(documents: Sequence[dict[str, Any]]) -> str:
    import yaml  # loaded by the outputs that print YAML, not by every command

    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str)


# -- columns per kind ------------------------------------------------------------------------


def _pod_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    manifest = item["manifest"]
    spec, status = manifest.get("spec", {}), manifest.get("status") or {}
    containers = spec.get("containers", [])
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    row = [
        item["name"],
        f"{ready}/{len(containers)}",
        status.get("reason") or status.get("phase") or "Pending",
        str(restarts),
        age(item["created_ns"], now_ns),
    ]
    if wide:
        row += [status.get("podIP") or "<none>", spec.get("nodeName") or "<none>"]
    return row


def node_status(manifest: dict[str, Any]) -> str:
    """kubectl's node STATUS: ``Ready`` when the Ready condition is True, ``NotReady`` when it
    is anything else (False, or Unknown: the node stopped sending heartbeats), ``Unknown`` only
    when the node has no Ready condition at all; ``,SchedulingDisabled`` when cordoned."""
    conditions = (manifest.get("status") or {}).get("conditions") or []
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
    status = "Unknown" if ready is None else "Ready" if ready == "True" else "NotReady"
    if (manifest.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    return status


def node_roles(labels: dict[str, str]) -> str:
    """kubectl's ROLES: the ``node-role.kubernetes.io/<role>`` labels and the value of
    ``kubernetes.io/role``, sorted."""
    roles = {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    return ",".join(sorted(role for role in roles if role)) or "<none>"


def _node_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    manifest = item["manifest"]
    status = manifest.get("status") or {}
    labels = manifest.get("metadata", {}).get("labels") or {}
    info = status.get("nodeInfo") or {}
    row = [
        item["name"],
        node_status(manifest),
        node_roles(labels),
        age(item["created_ns"], now_ns),
        info.get("kubeletVersion", ""),
    ]
    if wide:
        allocatable = status.get("allocatable") or {}
        row += [
            allocatable.get("cpu", ""),
            allocatable.get("memory", ""),
            allocatable.get("pods", ""),
        ]
    return row


def _deployment_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    manifest = item["manifest"]
    spec, status = manifest.get("spec", {}), manifest.get("status") or {}
    desired = spec.get("replicas", 1)
    row = [
        item["name"],
        f"{status.get('readyReplicas', 0)}/{desired}",
        str(status.get("updatedReplicas", 0)),
        str(status.get("availableReplicas", 0)),
        age(item["created_ns"], now_ns),
    ]
    if wide:
        containers = spec.get("template", {}).get("spec", {}).get("containers", [])
        selector = spec.get("selector", {}).get("matchLabels") or {}
        row += [
            ",".join(c["name"] for c in containers),
            ",".join(c.get("image", "") for c in containers),
            ",".join(f"{k}={v}" for k, v in selector.items()),
        ]
    return row


def selector_text(selector: dict[str, Any]) -> str:
    """A label selector as kubectl prints it, by key: ``app=web,!legacy,tier in (a,b)``."""
    parts = [(k, f"{k}={v}") for k, v in (selector.get("matchLabels") or {}).items()]
    for req in selector.get("matchExpressions") or []:
        key, operator, values = req.get("key", ""), req.get("operator"), req.get("values") or []
        if operator == "Exists":
            parts.append((key, key))
        elif operator == "DoesNotExist":
            parts.append((key, f"!{key}"))
        else:
            parts.append((key, f"{key} {str(operator).lower()} ({','.join(sorted(values))})"))
    return ",".join(text for _, text in sorted(parts)) or "<none>"


def _replica_set_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's DESIRED (spec), CURRENT and READY (the controller's last count)."""
    manifest = item["manifest"]
    spec, status = manifest.get("spec", {}), manifest.get("status") or {}
    row = [
        item["name"],
        str(spec.get("replicas", 1)),
        str(status.get("replicas", 0)),
        str(status.get("readyReplicas", 0)),
        age(item["created_ns"], now_ns),
    ]
    if wide:
        containers = spec.get("template", {}).get("spec", {}).get("containers", [])
        row += [
            ",".join(c["name"] for c in containers),
            ",".join(c.get("image", "") for c in containers),
            selector_text(spec.get("selector") or {}),
        ]
    return row


def _service_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    spec = item["manifest"].get("spec", {})
    ports = ",".join(
        f"{p['port']}{':' + str(p['nodePort']) if p.get('nodePort') else ''}"
        f"/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    )
    row = [
        item["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        "<none>",
        ports or "<none>",
        age(item["created_ns"], now_ns),
    ]
    if wide:
        row.append(
            ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()) or "<none>"
        )
    return row


def _namespace_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    phase = (item["manifest"].get("status") or {}).get("phase") or "Active"
    return [item["name"], phase, age(item["created_ns"], now_ns)]


def _limit_range_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    return [item["name"], iso(item["created_ns"])]


def _priority_class_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's VALUE, GLOBAL-DEFAULT and PREEMPTIONPOLICY (the API's default when unset)."""
    manifest = item["manifest"]
    return [
        item["name"],
        str(manifest.get("value", 0)),
        "true" if manifest.get("globalDefault") else "false",
        age(item.get("created_ns"), now_ns),
        str(manifest.get("preemptionPolicy") or "PreemptLowerPriority"),
    ]


def _default_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    return [item["name"], age(item.get("created_ns"), now_ns)]


def _quota_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's REQUEST and LIMIT columns: ``used/hard`` of each resource the quota names."""
    status = item["manifest"].get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}

    def cell(names: list[str]) -> str:
        return ", ".join(f"{n}: {used.get(n, '0')}/{hard[n]}" for n in names)

    limits = sorted(n for n in hard if n.startswith("limits."))
    requests = sorted(n for n in hard if not n.startswith("limits."))
    return [item["name"], age(item["created_ns"], now_ns), cell(requests), cell(limits)]


COLUMNS: dict[str, tuple[list[str], list[str], Any]] = {
    "Pod": (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["IP", "NODE"], _pod_row),
    "Node": (["NAME", "STATUS", "ROLES", "AGE", "VERSION"], ["CPU", "MEMORY", "PODS"], _node_row),
    "Deployment": (
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
        _deployment_row,
    ),
    "ReplicaSet": (
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
        _replica_set_row,
    ),
    "Service": (
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        ["SELECTOR"],
        _service_row,
    ),
    "Namespace": (["NAME", "STATUS", "AGE"], [], _namespace_row),
    "LimitRange": (["NAME", "CREATED AT"], [], _limit_range_row),
    "ResourceQuota": (["NAME", "AGE", "REQUEST", "LIMIT"], [], _quota_row),
    "PriorityClass": (
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        [],
        _priority_class_row,
    ),
}
"""Each kind's columns (kubectl's), the extra ``-o wide`` columns, and its row. A kind without
an entry gets kubectl's default columns, NAME and AGE."""
DEFAULT_COLUMNS: tuple[list[str], list[str], Any] = (["NAME", "AGE"], [], _default_row)


def object_table(
    kind: str,
    items: Sequence[dict[str, Any]],
    *,
    now_ns: int,
    wide: bool,
    show_namespace: bool,
) -> str:
    headers, wide_headers, row = COLUMNS.get(kind, DEFAULT_COLUMNS)
    all_headers = (
        (["NAMESPACE"] if show_namespace else []) + headers + (wide_headers if wide else [])
    )
    rows = []
    for item in items:
        cells = row(item, now_ns, wide)
        rows.append(([item["namespace"]] if show_namespace else []) + cells)
    return table(all_headers, rows)


# -- top -------------------------------------------------------------------------------------------


def cores(millicores: int) -> str:
    """kubectl top's CPU column: always millicores (``250m``)."""
    return f"{int(millicores)}m"


def mebibytes(amount: int) -> str:
    """kubectl top's MEMORY column: always whole mebibytes (``64Mi``)."""
    return f"{int(amount) // (1024 * 1024)}Mi"


def _percent(used: int, capacity: int) -> str:
    return f"{used * 100 // capacity}%" if capacity > 0 else "<unknown>"


TOP_NODE_HEADERS = ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
TOP_POD_HEADERS = ["NAME", "CPU(cores)", "MEMORY(bytes)"]


def top_nodes_table(nodes: Sequence[Any]) -> str:
    """``fleetlog top nodes`` from the latest :class:`streams.telemetry.NodeUsage` samples."""
    rows = [
        [
            n.name,
            cores(n.cpu_millicores),
            _percent(n.cpu_millicores, n.cpu_capacity_millicores),
            mebibytes(n.memory_bytes),
            _percent(n.memory_bytes, n.memory_capacity_bytes),
        ]
        for n in nodes
    ]
    return table(TOP_NODE_HEADERS, rows)


def top_pods_table(pods: Sequence[Any], *, show_namespace: bool) -> str:
    """``fleetlog top pods`` from the latest :class:`streams.telemetry.PodUsage` samples."""
    headers = (["NAMESPACE"] if show_namespace else []) + TOP_POD_HEADERS
    rows = [
        ([p.namespace] if show_namespace else [])
        + [p.name, cores(p.cpu_millicores), mebibytes(p.memory_bytes)]
        for p in pods
    ]
    return table(headers, rows)


# -- events ------------------------------------------------------------------------------------


def event_dict(event: StoredEvent) -> dict[str, Any]:
    e = event.envelope
    return {
        "seq": event.seq,
        "time": iso(e.timestamp_ns),
        "stored": iso(event.stored_ns) if event.stored_ns else None,
        "type": e.type,
        "schema_version": e.schema_version,
        "kind": e.kind,
        "namespace": e.namespace,
        "name": e.name,
        "version": e.version,
        "actor": e.actor,
        "event_id": e.event_id,
        "correlation_id": e.correlation_id,
        "causation_id": e.causation_id,
        "summary": summarize(e.type, e.payload),
        "payload": e.payload,
    }


def object_name(kind: str, namespace: str, name: str) -> str:
    return f"{kind.lower()}/{namespace + '/' if namespace else ''}{name}"


def event_row(event: StoredEvent) -> list[str]:
    e = event.envelope
    return [
        str(event.seq),
        iso(e.timestamp_ns),
        e.type,
        object_name(e.kind, e.namespace, e.name),
        e.actor,
        summarize(e.type, e.payload),
    ]


EVENT_HEADERS = ["SEQ", "TIME", "TYPE", "OBJECT", "ACTOR", "SUMMARY"]


def history_rows(events: Sequence[StoredEvent]) -> list[list[str]]:
    return [
        [
            str(ev.seq),
            iso(ev.envelope.timestamp_ns),
            str(ev.envelope.version),
            ev.envelope.type,
            ev.envelope.actor,
            summarize(ev.envelope.type, ev.envelope.payload),
        ]
        for ev in events
    ]


HISTORY_HEADERS = ["SEQ", "TIME", "VERSION", "TYPE", "ACTOR", "SUMMARY"]


def describe(
    item: dict[str, Any],
    events: Sequence[StoredEvent],
    now_ns: int,
    *,
    replica_sets: Sequence[dict[str, Any]] = (),
) -> str:
    """A kubectl-describe-like page: identity, labels, the manifest's spec, then the events
    (for a deployment, its counts and replica sets first, as kubectl shows them)."""
    import yaml

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
    lines.append(
        "Annotations:  "
        + (
            ("\n              ").join(f"{k}: {v}" for k, v in sorted(annotations.items()))
            or "<none>"
        )
    )
    if item["kind"] == "Deployment":
        lines += deployment_lines(manifest, replica_sets)
    if item["kind"] == "PriorityClass":  # no spec: its terms are top-level fields
        lines += [
            f"Value:             {manifest.get('value', 0)}",
            f"GlobalDefault:     {'true' if manifest.get('globalDefault') else 'false'}",
            f"PreemptionPolicy:  {manifest.get('preemptionPolicy') or 'PreemptLowerPriority'}",
            f"Description:       {manifest.get('description') or '<none>'}",
        ]
    for section in ("spec", "status"):
        if manifest.get(section):
            body = yaml.safe_dump(manifest[section], sort_keys=False).rstrip().splitlines()
            lines.append(f"{section.capitalize()}:")
            lines += [f"  {line}" for line in body]
    if item["kind"] == "Pod":
        lines += scheduling_lines(events)
    lines.append("Events:")
    if not events:
        lines.append("  <none>")
    else:
        width = max(len(ev.envelope.type) for ev in events)
        lines.append(f"  {'SEQ':>6}  {'AGE':>5}  {'TYPE':<{width}}  {'FROM':<20}  MESSAGE")
        for ev in events:
            e = ev.envelope
            lines.append(
                f"  {ev.seq:>6}  {age(e.timestamp_ns, now_ns):>5}  {e.type:<{width}}  "
                f"{e.actor:<20}  {summarize(e.type, e.payload)}"
            )
    return "\n".join(lines)


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
            table = _tabulate(
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
        table = _tabulate(rows, headers=["PLUGIN", "SCORE", "WEIGHT", "WEIGHTED"], tablefmt="plain")
        lines += [f"  {line}" for line in table.splitlines()]
    return lines
