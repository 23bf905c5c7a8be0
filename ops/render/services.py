"""Services and their endpoints as kubectl prints them: TYPE, CLUSTER-IP, EXTERNAL-IP and
PORT(S), EndpointSlices, the legacy Endpoints view computed from the slices, and the two ways
of discovery (a DNS name, NATS subjects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ops.render.text import age

if TYPE_CHECKING:
    pass


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


def service_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
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


def endpoint_slice_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
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


def endpoints_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    """The legacy Endpoints view (``item["manifest"]`` from ``legacy_endpoints``)."""
    from core.services.slices import endpoints_text

    return [item["name"], endpoints_text(item["manifest"]), age(item["created_ns"], now_ns)]


def allocation_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
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
