"""``fleetlog get``'s table for every kind: the columns kubectl prints per kind (nodes,
workloads, namespaces, policies, node ranges …), and the table itself (``object_table``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.meta.timestamps import parse_stamp
from ops.render.pods import pod_row
from ops.render.services import allocation_row, endpoint_slice_row, endpoints_row, service_row
from ops.render.text import age, iso, table

if TYPE_CHECKING:
    pass


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


def _namespace_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    phase = (item["manifest"].get("status") or {}).get("phase") or "Active"
    return [item["name"], phase, age(item["created_ns"], now_ns)]


def _created_at_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
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


def _binding_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's ROLE (``ClusterRole/edit``) and, wide, the subjects by kind."""
    manifest = item["manifest"]
    ref = manifest.get("roleRef") or {}
    row = [
        item["name"],
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        age(item["created_ns"], now_ns),
    ]
    if wide:
        subjects = manifest.get("subjects") or []
        for kind in ("User", "Group"):
            row.append(", ".join(s.get("name", "") for s in subjects if s.get("kind") == kind))
        accounts = [
            f"{s.get('namespace') or item.get('namespace') or ''}/{s.get('name', '')}"
            for s in subjects
            if s.get("kind") == "ServiceAccount"
        ]
        row.append(", ".join(accounts))
    return row


def _event_row(event: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """A core/v1 Event's row (the Kubernetes door's derived events: the Event object itself,
    not a read-model item), as kube's printer writes it."""
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = event.get("source") or {}
    where = ", ".join(str(s) for s in (source.get("component"), source.get("host")) if s)
    return [
        age(parse_stamp(event.get("lastTimestamp")), now_ns),
        str(event.get("type") or ""),
        str(event.get("reason") or ""),
        target,
        str(event.get("message") or "").strip(),
        str(involved.get("fieldPath") or ""),
        where,
        age(parse_stamp(event.get("firstTimestamp")), now_ns),
        str(event.get("count") or 0),
        str((event.get("metadata") or {}).get("name") or ""),
    ]


_SUBJECT_COLUMNS = ["USERS", "GROUPS", "SERVICEACCOUNTS"]


def _config_map_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's DATA: how many keys, ``data`` and ``binaryData`` together."""
    manifest = item["manifest"]
    count = len(manifest.get("data") or {}) + len(manifest.get("binaryData") or {})
    return [item["name"], str(count), age(item["created_ns"], now_ns)]


def _secret_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    manifest = item["manifest"]
    return [
        item["name"],
        str(manifest.get("type") or "Opaque"),
        str(len(manifest.get("data") or {})),
        age(item["created_ns"], now_ns),
    ]


def _user_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    spec = item["manifest"].get("spec") or {}
    row = [
        item["name"],
        ",".join(spec.get("groups") or []) or "<none>",
        "true" if spec.get("revoked") else "false",
        age(item["created_ns"], now_ns),
    ]
    return [*row, str(spec.get("publicKey", ""))] if wide else row


def _flow_schema_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's PRIORITYLEVEL, MATCHINGPRECEDENCE, DISTINGUISHERMETHOD."""
    spec = item["manifest"].get("spec") or {}
    return [
        item["name"],
        str((spec.get("priorityLevelConfiguration") or {}).get("name", "")),
        str(spec.get("matchingPrecedence", 1000)),
        str((spec.get("distinguisherMethod") or {}).get("type") or "<none>"),
        age(item["created_ns"], now_ns),
    ]


def _priority_level_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's TYPE, NOMINALCONCURRENCYSHARES and the queuing numbers (``<none>`` when the
    level does not queue)."""
    spec = item["manifest"].get("spec") or {}
    limited = spec.get("limited") or {}
    queuing = (limited.get("limitResponse") or {}).get("queuing") or {}
    shares = limited.get("nominalConcurrencyShares", (spec.get("exempt") or {}).get(
        "nominalConcurrencyShares", 0))  # fmt: skip
    numbers = [str(queuing[k]) if k in queuing else "<none>"
               for k in ("queues", "handSize", "queueLengthLimit")]  # fmt: skip
    return [item["name"], str(spec.get("type", "")), str(shares), *numbers,
            age(item["created_ns"], now_ns)]  # fmt: skip


_METRIC_SOURCES = {"Resource": "resource", "ContainerResource": "containerResource",
                   "Pods": "pods", "Object": "object", "External": "external"}  # fmt: skip


def _hpa_target(spec: dict[str, Any], current: dict[str, Any] | None) -> str:
    """One metric of kubectl's TARGETS: ``current/target``, the resource named first for
    Resource and ContainerResource metrics (``cpu: 85%/50%``), `` (avg)`` after an Object or
    External AverageValue target, ``<unknown>`` before a reading."""
    kind = spec.get("type", "")
    source_key = _METRIC_SOURCES.get(kind, "")
    source = spec.get(source_key) or {}
    target = source.get("target") or {}
    now = ((current or {}).get(source_key) or {}).get("current") or {}
    if target.get("type") == "Utilization":
        value = now.get("averageUtilization")
        text = (
            f"{'<unknown>' if value is None else f'{value}%'}/{target.get('averageUtilization')}%"
        )
    elif target.get("type") == "AverageValue":
        text = f"{now.get('averageValue', '<unknown>')}/{target.get('averageValue')}"
        if kind in ("Object", "External"):
            text += " (avg)"  # kubectl marks a per-pod target of one object's or series' value
    else:
        text = f"{now.get('value', '<unknown>')}/{target.get('value')}"
    if kind in ("Resource", "ContainerResource"):
        return f"{source.get('name', '')}: {text}"
    return text


def hpa_targets(manifest: dict[str, Any]) -> str:
    """kubectl's TARGETS: the first two metrics, then ``+ N more...``."""
    specs = (manifest.get("spec") or {}).get("metrics") or []
    if not specs:
        return "<none>"
    currents = (manifest.get("status") or {}).get("currentMetrics") or []
    shown = [
        _hpa_target(spec, currents[i] if i < len(currents) and
                    currents[i].get("type") == spec.get("type") else None)
        for i, spec in enumerate(specs[:2])
    ]  # fmt: skip
    text = ", ".join(shown)
    return f"{text} + {len(specs) - 2} more..." if len(specs) > 2 else text


def _hpa_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    manifest = item["manifest"]
    spec, status = manifest.get("spec") or {}, manifest.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    minimum = spec.get("minReplicas")
    return [
        item["name"],
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        hpa_targets(manifest),
        "<unset>" if minimum is None else str(minimum),
        str(spec.get("maxReplicas", "")),
        str(status.get("currentReplicas", 0)),
        age(item["created_ns"], now_ns),
    ]


def _pdb_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """kubectl's printPodDisruptionBudget: the bound not set is ``N/A``."""
    manifest = item["manifest"]
    spec, status = manifest.get("spec") or {}, manifest.get("status") or {}
    minimum, maximum = spec.get("minAvailable"), spec.get("maxUnavailable")
    return [
        item["name"],
        "N/A" if minimum is None else str(minimum),
        "N/A" if maximum is None else str(maximum),
        str(status.get("disruptionsAllowed", 0)),
        age(item["created_ns"], now_ns),
    ]


def _vpa_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """The VPA CRD's printer columns as kubectl shows them: the mode as written, the first
    container's target cpu and memory, the RecommendationProvided status (blank cells until
    the recommender has written them, as kubectl prints a CRD column with no value)."""
    manifest = item["manifest"]
    spec, status = manifest.get("spec") or {}, manifest.get("status") or {}
    recommendations = (status.get("recommendation") or {}).get("containerRecommendations") or []
    target = (recommendations[0].get("target") or {}) if recommendations else {}
    provided = next(
        (c.get("status", "") for c in status.get("conditions") or ()
         if c.get("type") == "RecommendationProvided"),
        "",
    )  # fmt: skip
    return [
        item["name"],
        str((spec.get("updatePolicy") or {}).get("updateMode") or ""),
        str(target.get("cpu", "")),
        str(target.get("memory", "")),
        provided,
        age(item["created_ns"], now_ns),
    ]


def _json_cell(value: object) -> str:
    """A CRD printer column of type string over a list: kube prints the JSONPath result as
    compact JSON (``["edge","mesh"]``); an empty or unset value is a blank cell."""
    if value is None or value == [] or value == "":
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _istio_spec(item: dict[str, Any]) -> dict[str, Any]:
    return item["manifest"].get("spec") or {}


def _virtual_service_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """Istio's VirtualService printer columns: ``.spec.gateways``, ``.spec.hosts``."""
    spec = _istio_spec(item)
    return [
        item["name"],
        _json_cell(spec.get("gateways")),
        _json_cell(spec.get("hosts")),
        age(item["created_ns"], now_ns),
    ]


def _destination_rule_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """Istio's DestinationRule printer column: ``.spec.host``."""
    return [
        item["name"],
        _json_cell(_istio_spec(item).get("host")),
        age(item["created_ns"], now_ns),
    ]


def _service_entry_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """Istio's ServiceEntry printer columns: ``.spec.hosts``, ``.spec.location``,
    ``.spec.resolution`` (stored with Istio's defaults, MESH_EXTERNAL and NONE, filled in)."""
    spec = _istio_spec(item)
    return [
        item["name"],
        _json_cell(spec.get("hosts")),
        _json_cell(spec.get("location")),
        _json_cell(spec.get("resolution")),
        age(item["created_ns"], now_ns),
    ]


def _peer_authentication_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """Istio's PeerAuthentication printer column: ``.spec.mtls.mode`` (blank when unset)."""
    mode = (_istio_spec(item).get("mtls") or {}).get("mode")
    return [item["name"], _json_cell(mode), age(item["created_ns"], now_ns)]


COLUMNS: dict[str, tuple[list[str], list[str], Any]] = {
    "Pod": (
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        pod_row,
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
        service_row,
    ),
    "EndpointSlice": (
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        [],
        endpoint_slice_row,
    ),
    "Endpoints": (["NAME", "ENDPOINTS", "AGE"], [], endpoints_row),
    "IPAddress": (["NAME", "PARENTREF", "AGE"], [], allocation_row),
    "NodePortAllocation": (["NAME", "PARENTREF", "AGE"], [], allocation_row),
    "Namespace": (["NAME", "STATUS", "AGE"], [], _namespace_row),
    "LimitRange": (["NAME", "CREATED AT"], [], _created_at_row),
    "ResourceQuota": (["NAME", "AGE", "REQUEST", "LIMIT"], [], _quota_row),
    "PriorityClass": (
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        [],
        _priority_class_row,
    ),
    "PodCIDR": (["NAME", "CIDR", "NODE", "AGE"], [], _pod_cidr_row),
    "HorizontalPodAutoscaler": (
        ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"],
        [],
        _hpa_row,
    ),
    "PodDisruptionBudget": (
        ["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"],
        [],
        _pdb_row,
    ),
    "VerticalPodAutoscaler": (["NAME", "MODE", "CPU", "MEM", "PROVIDED", "AGE"], [], _vpa_row),
    # Istio's CRDs' additionalPrinterColumns (Gateway declares none beyond kube's AGE).
    "VirtualService": (["NAME", "GATEWAYS", "HOSTS", "AGE"], [], _virtual_service_row),
    "DestinationRule": (["NAME", "HOST", "AGE"], [], _destination_rule_row),
    "Gateway": (["NAME", "AGE"], [], _default_row),
    "ServiceEntry": (
        ["NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"],
        [],
        _service_entry_row,
    ),
    "PeerAuthentication": (["NAME", "MODE", "AGE"], [], _peer_authentication_row),
    "Role": (["NAME", "CREATED AT"], [], _created_at_row),
    "ClusterRole": (["NAME", "CREATED AT"], [], _created_at_row),
    "RoleBinding": (["NAME", "ROLE", "AGE"], _SUBJECT_COLUMNS, _binding_row),
    "ClusterRoleBinding": (["NAME", "ROLE", "AGE"], _SUBJECT_COLUMNS, _binding_row),
    "ConfigMap": (["NAME", "DATA", "AGE"], [], _config_map_row),
    "Secret": (["NAME", "TYPE", "DATA", "AGE"], [], _secret_row),
    "User": (["NAME", "GROUPS", "REVOKED", "AGE"], ["PUBLIC-KEY"], _user_row),
    "FlowSchema": (
        ["NAME", "PRIORITYLEVEL", "MATCHINGPRECEDENCE", "DISTINGUISHERMETHOD", "AGE"],
        [],
        _flow_schema_row,
    ),
    "PriorityLevelConfiguration": (
        [
            "NAME",
            "TYPE",
            "NOMINALCONCURRENCYSHARES",
            "QUEUES",
            "HANDSIZE",
            "QUEUELENGTHLIMIT",
            "AGE",
        ],
        [],
        _priority_level_row,
    ),
    # kube lists SUBOBJECT and SOURCE before MESSAGE with -o wide; here the wide columns follow
    "Event": (
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        ["SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"],
        _event_row,
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
