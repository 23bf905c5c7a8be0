"""Turning read-model records and events into what a person reads: kubectl-like tables, YAML,
JSON, ages ("5m", "3d"), describe pages, and refusals (one line per problem)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.api.summaries import summarize
from ops.cliargs import API_GROUPS

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


def human_duration(seconds: int) -> str:
    """kubectl's ``HumanDuration`` (what its AGE columns and "… ago" show): seconds up to two
    minutes, then minutes with seconds below ten minutes (``2m30s``), minutes below three
    hours, hours with minutes below eight hours (``5h4m``), hours below two days, days with
    hours below eight days (``3d4h``), days below two years, years with days below eight
    years."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y{rest}d" if rest else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(since_ns: int | None, now_ns: int) -> str:
    """How long ago ``since_ns`` was, as kubectl writes it (:func:`human_duration`), or
    ``<unknown>`` without a time (kubectl's answer for an object with no creation time)."""
    if since_ns is None:
        return "<unknown>"
    # Truncated towards zero, as Go's Duration.Seconds() converted to int.
    elapsed = now_ns - since_ns
    seconds = elapsed // 1_000_000_000 if elapsed >= 0 else -(-elapsed // 1_000_000_000)
    return human_duration(seconds)


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
    # Printable ASCII only: tabulate drops control characters a plain layout would keep.
    simple = all(
        cell.isascii() and cell.isprintable()
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
    total = len(spec.get("containers") or []) + sum(
        1 for c in init_specs.values() if _restartable(c)
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


def _pod_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
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


def service_discovery(namespace: str, name: str) -> tuple[str, str, str]:
    """The two ways a client finds a service's endpoints: its DNS name (cluster DNS on every
    node) and the NATS subjects answering and publishing them (query, watch)."""
    from core.dns.zone import CLUSTER_DOMAIN
    from projections.endpoints import query_subject, watch_subject

    return (
        f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}",
        query_subject(namespace, name),
        watch_subject(namespace, name),
    )


def _service_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's ``printService``; wide adds SELECTOR and (fleetlog's additions) the ready
    ENDPOINTS, which the caller puts in ``item["endpoints"]`` from the service's slices, and
    the two ways to discover them: the DNS name and the NATS query subject."""
    manifest = item["manifest"]
    spec = manifest.get("spec", {})
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    ports = ",".join(
        f"{p['port']}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        if p.get("nodePort")
        else f"{p['port']}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    )
    row = [
        item["name"],
        spec.get("type", "ClusterIP"),
        ips[0] if ips else "<none>",
        service_external_ip(spec, manifest.get("status") or {}, wide=wide),
        ports or "<none>",
        age(item["created_ns"], now_ns),
    ]
    if wide:
        selector = spec.get("selector") or {}
        row.append(",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>")
        row.append(item.get("endpoints") or "<none>")
        name, query, _ = service_discovery(item.get("namespace") or "default", item["name"])
        row += [name, query]
    return row


def service_external_ip(spec: dict[str, Any], status: dict[str, Any], *, wide: bool) -> str:
    """kubectl's EXTERNAL-IP: external IPs, a load balancer's ingress (``<pending>`` until
    one is recorded), an ExternalName service's name."""
    kind = spec.get("type", "ClusterIP")
    external = list(spec.get("externalIPs") or [])
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "ExternalName":
        return str(spec.get("externalName", ""))
    if kind != "LoadBalancer":
        return "<unknown>"
    ingress = sorted(
        {
            i.get("ip") or i.get("hostname")
            for i in (status.get("loadBalancer") or {}).get("ingress") or []
        }
        - {None, ""}
    )
    shown = ",".join(ingress)
    if not wide and len(shown) > 16:
        shown = shown[:13] + "..."
    return ",".join([*([shown] if shown else []), *external]) or "<pending>"


def _endpoint_slice_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's ``printEndpointSlice``: ports and addresses, three of each at most."""
    manifest = item["manifest"]
    ports = [
        str(p["port"]) if p.get("port") is not None else (p.get("name") or "*")
        for p in manifest.get("ports") or []
    ]
    addresses = [a for e in manifest.get("endpoints") or [] for a in e.get("addresses") or []]
    return [
        item["name"],
        str(manifest.get("addressType", "")),
        _three(ports),
        _three(addresses),
        age(item["created_ns"], now_ns),
    ]


def _three(values: list[str]) -> str:
    """``listWithMoreString``: the first three, then ``+ N more...``; ``<unset>`` if none."""
    if not values:
        return "<unset>"
    text = ",".join(values[:3])
    return f"{text} + {len(values) - 3} more..." if len(values) > 3 else text


def _endpoints_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """The legacy Endpoints view (``item["manifest"]`` from ``legacy_endpoints``)."""
    from core.services.slices import endpoints_text

    return [item["name"], endpoints_text(item["manifest"]), age(item["created_ns"], now_ns)]


def _allocation_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """An IPAddress or NodePortAllocation: the value and the service holding it."""
    parent = (item["manifest"].get("spec") or {}).get("parentRef") or {}
    holder = f"{parent.get('resource', '')}/{parent.get('namespace', '')}/{parent.get('name', '')}"
    return [item["name"], holder, age(item["created_ns"], now_ns)]


def endpoint_slice_items(
    services: Sequence[dict[str, Any]], slices: Sequence[dict[str, Any]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Slice items by the (namespace, service) their ``kubernetes.io/service-name`` names."""
    by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
    wanted = {(s["namespace"], s["name"]) for s in services} if services else None
    for found in slices:
        labels = (found["manifest"].get("metadata") or {}).get("labels") or {}
        key = (found["namespace"], labels.get("kubernetes.io/service-name", ""))
        if key[1] and (wanted is None or key in wanted):
            by_service.setdefault(key, []).append(found)
    return by_service


def endpoints_items(slices: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``get endpoints``: one legacy Endpoints item per service that has slices, as old as its
    oldest slice."""
    from core.services.slices import legacy_endpoints

    items = []
    for (namespace, service), found in sorted(endpoint_slice_items((), slices).items()):
        items.append(
            {
                "kind": "Endpoints",
                "namespace": namespace,
                "name": service,
                "uid": "",
                "manifest": legacy_endpoints(namespace, service, [f["manifest"] for f in found]),
                "version": max(f["version"] for f in found),
                "last_seq": max(f["last_seq"] for f in found),
                "created_ns": min(f["created_ns"] for f in found),
            }
        )
    return items


def ready_endpoints_text(slices: Sequence[dict[str, Any]], port_name: str | None = None) -> str:
    """The ready ``ip:port`` endpoints of one service's slices, as kubectl prints them."""
    from core.services.slices import endpoints_text, legacy_endpoints

    endpoints = legacy_endpoints("", "", [f["manifest"] for f in slices])
    return endpoints_text(endpoints, port_names=None if port_name is None else {port_name})


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


def _pod_cidr_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    spec = item["manifest"].get("spec", {})
    holder = spec.get("nodeName") or "<reserved>"
    return [item["name"], spec.get("cidr", ""), holder, age(item["created_ns"], now_ns)]


COLUMNS: dict[str, tuple[list[str], list[str], Any]] = {
    "Pod": (
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        _pod_row,
    ),
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
        ["SELECTOR", "ENDPOINTS", "DNS", "NATS"],
        _service_row,
    ),
    "EndpointSlice": (
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        [],
        _endpoint_slice_row,
    ),
    "Endpoints": (["NAME", "ENDPOINTS", "AGE"], [], _endpoints_row),
    "IPAddress": (["NAME", "PARENTREF", "AGE"], [], _allocation_row),
    "NodePortAllocation": (["NAME", "PARENTREF", "AGE"], [], _allocation_row),
    "Namespace": (["NAME", "STATUS", "AGE"], [], _namespace_row),
    "LimitRange": (["NAME", "CREATED AT"], [], _limit_range_row),
    "ResourceQuota": (["NAME", "AGE", "REQUEST", "LIMIT"], [], _quota_row),
    "PriorityClass": (
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        [],
        _priority_class_row,
    ),
    "PodCIDR": (["NAME", "CIDR", "NODE", "AGE"], [], _pod_cidr_row),
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


def resource_name(kind: str, name: str) -> str:
    """kubectl's ``-o name``: ``pod/web-x2x5k``, ``deployment.apps/web``,
    ``priorityclass.scheduling.k8s.io/high``."""
    group = API_GROUPS.get(kind)
    return f"{kind.lower()}{'.' + group if group else ''}/{name}"


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


class RowPrinter:
    """A table printed a row at a time (``events --follow``), where :func:`table` cannot
    measure the rows first: every column but the last starts at a fixed width, wide enough
    for the usual cell, and only widens (for the rows after) when a longer cell comes, so the
    columns of consecutive rows line up."""

    def __init__(self, headers: Sequence[str], widths: Sequence[int]) -> None:
        self._headers = list(headers)
        self._widths = [max(w, len(h)) for w, h in zip(widths, headers, strict=False)]

    def line(self, cells: Sequence[str]) -> str:
        for column, cell in enumerate(cells[:-1]):
            self._widths[column] = max(self._widths[column], len(cell))
        padded = [cell.ljust(width) for cell, width in zip(cells, self._widths, strict=False)]
        return "  ".join([*padded, *cells[len(padded) :]]).rstrip()

    def header(self) -> str:
        return self.line(self._headers)


def event_row_printer() -> RowPrinter:
    """``events --follow``'s columns: a sequence, an instant, the longest event type of the
    catalog, an object and an actor of the usual lengths, then the summary."""
    from core.api.events import CATALOG

    type_width = max(len(name) for name in CATALOG)
    return RowPrinter(EVENT_HEADERS, [7, len("2026-01-01T00:00:00Z"), type_width, 40, 32])


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
    endpoint_slices: Sequence[dict[str, Any]] = (),
    related: Sequence[StoredEvent] = (),
) -> str:
    """A kubectl-describe-like page: identity, labels, the manifest's spec, then the events
    as Kubernetes' components would have recorded them (``ops.kube_events``: from the object's
    own ``events``, this incarnation's, and for a deployment or replica set the ``related``
    events of its replica sets or pods; every event is in ``fleetlog history``). A deployment
    shows its counts and replica sets first, as kubectl does; a service its addresses, ports
    and the ready endpoints of ``endpoint_slices``."""
    import yaml

    from ops import kube_events

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
    if item["kind"] == "Service":
        lines += service_lines(manifest, endpoint_slices)
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
    shown = kube_events.correlate(kube_events.events_of(item, events, related))
    lines += event_lines(shown, now_ns)
    return "\n".join(lines)


EVENT_COLUMNS = ("Type", "Reason", "Age", "From", "Message")
EVENT_RULES = ("----", "------", "----", "----", "-------")
"""kubectl's underlines (Age's is four dashes long, as kubectl writes it)."""


def event_lines(shown: Sequence[Any], now_ns: int) -> list[str]:
    """kubectl describe's Events section: ``Events:  <none>``, or a table of TYPE, REASON,
    AGE (``5m``, or ``2m (x4 over 10m)`` for a repeated event), FROM and MESSAGE, its columns
    as wide as their longest cell plus two spaces (kubectl's tabwriter), each row indented by
    two. ``shown`` are :class:`ops.kube_events.Shown`."""
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
