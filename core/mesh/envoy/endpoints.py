"""Endpoints (EDS): each cluster's ClusterLoadAssignment from the service's EndpointSlices (or
a ServiceEntry's endpoints), with the mTLS label of meshed pods and, with a
``localityLbSetting``, the locality weights or failover priorities seen from the proxy.

Why this exists: endpoints change far more often than anything else (every pod start and stop)
and depend on the proxy only through its locality; they are built apart from clusters so a
push can rebuild them alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from core.mesh.envoy.model import MeshPort, MeshService, MeshState, _is_entry, _merged, _rule_for
from core.mesh.envoy.names import (
    ENDPOINT_TYPE,
    MESH_ALPN,
    SOCKET_MATCH_KEY,
    TLS_MODE_KEY,
    cluster_name,
)
from core.mesh.kinds.objects import DestinationRule
from core.mesh.kinds.trafficpolicy import LocalityLbSetting
from core.services.slices import SERVICE_NAME_LABEL

LOCALITY_LABELS: Final = (
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
)
"""A node's labels that make the locality of its endpoints (Istio's)."""


@dataclass(frozen=True)
class _Endpoint:
    address: str
    port: int
    labels: Mapping[str, str]
    mtls: bool = False
    """A meshed pod whose port takes mTLS (labelled ``tlsMode: istio`` for auto mTLS)."""
    locality: str = ""


def slices_by_service(
    slices: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """``(namespace, service)`` -> the slices naming it (``kubernetes.io/service-name``): one
    pass over every slice per build, not one per service port."""
    index: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for found in slices:
        meta = found.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service:
            index.setdefault((meta.get("namespace") or "default", service), []).append(found)
    return index


def _service_endpoints(
    service: MeshService,
    port: MeshPort,
    state: MeshState,
    index: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]] | None = None,
) -> list[_Endpoint]:
    """Ready endpoints of a Service port (serving-while-terminating ones when none is ready)."""
    ready: list[_Endpoint] = []
    fallback: list[_Endpoint] = []
    if index is None:
        index = slices_by_service(state.slices)
    for found in index.get((service.namespace, service.name), ()):
        number = next(
            (p.get("port") for p in found.get("ports") or () if (p.get("name") or "") == port.name),
            None,
        )
        if not number:
            continue
        for endpoint in found.get("endpoints") or ():
            conditions = endpoint.get("conditions") or {}
            is_ready = conditions.get("ready") is not False
            serving = conditions.get("serving", is_ready) is not False
            terminating = conditions.get("terminating") is True
            target = endpoint.get("targetRef") or {}
            key = (target.get("namespace") or service.namespace, target.get("name") or "")
            labels = state.pod_labels.get(key, {})
            # Istio's mTLS checker: a meshed pod whose PeerAuthentication DISABLEs the port is
            # reached in plain text even by auto mTLS.
            mtls = key in state.meshed_pods and (
                state.inbound_mtls(key[0], labels).for_port(int(number)) != "DISABLE"
            )
            for address in endpoint.get("addresses") or ():
                locality = state.node_localities.get(str(endpoint.get("nodeName") or ""), "")
                item = _Endpoint(str(address), int(number), labels, mtls, locality)
                if is_ready:
                    ready.append(item)
                elif serving and terminating:
                    fallback.append(item)
    return sorted(ready or fallback, key=lambda e: (e.address, e.port))


def _entry_endpoints(service: MeshService, port: MeshPort, state: MeshState) -> list[_Endpoint]:
    for entry in state.service_entries:
        if service.host not in entry.spec.hosts:
            continue
        endpoints = entry.spec.endpoints
        if not endpoints:
            return [_Endpoint(service.host, port.number, {})]
        return [
            _Endpoint(e.address, e.ports.get(port.name, port.number), e.labels) for e in endpoints
        ]
    return []


def _load_assignment(name: str, endpoints: Iterable[_Endpoint]) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [_lb_endpoint(e) for e in endpoints]}],
    }


def _lb_endpoint(e: _Endpoint) -> dict[str, Any]:
    found: dict[str, Any] = {
        "endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}}
    }
    if e.mtls:
        found["metadata"] = {"filter_metadata": {SOCKET_MATCH_KEY: {TLS_MODE_KEY: MESH_ALPN}}}
    return found


def build_endpoints(
    services: Sequence[MeshService],
    clusters: Sequence[dict[str, Any]],
    state: MeshState,
    *,
    proxy_locality: str = "",
    index: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """A ClusterLoadAssignment per EDS cluster; DNS clusters get theirs inline. Endpoints are
    grouped by locality, weighted or prioritised from ``proxy_locality`` where the cluster's
    DestinationRule sets ``localityLbSetting``. ``index``: the state's slices by service
    (:func:`slices_by_service`), when the caller builds service by service."""
    by_name = {c["name"]: c for c in clusters}
    if index is None:
        index = slices_by_service(state.slices)
    assignments: list[dict[str, Any]] = []
    for service in services:
        rule = _rule_for(service.host, state.rules_by_host)
        subsets = {s.name: s.labels for s in rule.spec.subsets} if rule is not None else {}
        for port in service.ports:
            if port.protocol == "udp":
                continue
            if service.name and service.resolution == "EDS" and not _is_entry(service, state):
                endpoints = _service_endpoints(service, port, state, index)
            else:
                endpoints = _entry_endpoints(service, port, state)
            for subset, labels in [("", {}), *subsets.items()]:
                name = cluster_name(service.host, port.number, subset)
                cluster = by_name.get(name)
                if cluster is None or cluster["type"] == "ORIGINAL_DST":
                    continue
                chosen = [
                    e for e in endpoints if all(e.labels.get(k) == v for k, v in labels.items())
                ]
                assignment = _load_assignment(name, chosen)
                setting = _locality_setting(rule, subset, port.number)
                if setting is not None:
                    _apply_locality(assignment, chosen, setting, proxy_locality)
                if cluster["type"] == "EDS":
                    assignments.append({"@type": ENDPOINT_TYPE, **assignment})
                else:
                    cluster["load_assignment"] = assignment
    return assignments


def locality_of(labels: Mapping[str, str]) -> str:
    """A node's ``region/zone/subzone`` from its topology labels, as Istio reads them (empty
    trailing parts dropped)."""
    parts = [labels.get(key, "") for key in LOCALITY_LABELS]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts)


def _locality_setting(
    rule: DestinationRule | None, subset: str, port: int
) -> tuple[LocalityLbSetting, bool] | None:
    """The cluster's ``localityLbSetting`` (a subset's and a port's over the rule's) and
    whether it has outlier detection (failover needs it), or None when it sets none."""
    if rule is None:
        return None
    policy = rule.spec.traffic_policy
    for candidate in rule.spec.subsets:
        if candidate.name == subset:
            policy = _merged(policy, candidate.traffic_policy)
    if policy is None:
        return None
    chosen = policy.for_port(port)
    lb = chosen.load_balancer
    setting = lb.locality_lb_setting if lb is not None else None
    if setting is None or setting.enabled is False:
        return None
    return setting, chosen.outlier_detection is not None


def _locality_matches(pattern: str, locality: str) -> bool:
    """``region/zone/subzone`` against a pattern whose parts may end in ``*``."""
    have = locality.split("/")
    for index, part in enumerate(pattern.split("/")):
        if part == "*":
            return True
        if index >= len(have) or have[index] != part:
            return False
    return True


def _apply_locality(
    assignment: dict[str, Any],
    endpoints: Sequence[_Endpoint],
    chosen: tuple[LocalityLbSetting, bool],
    proxy_locality: str,
) -> None:
    """Istio's ``ApplyLocalityLoadBalancer``: one group per locality; ``distribute`` weights
    the groups for a proxy in its ``from`` (a group no ``to`` names gets nothing); with outlier
    detection, failover gives the groups priorities — the proxy's own locality 0, then its
    zone, its region, the ``failover`` target region, the rest — so traffic leaves a locality
    only once its endpoints are ejected."""
    setting, outlier = chosen
    groups: dict[str, list[_Endpoint]] = {}
    for endpoint in endpoints:
        groups.setdefault(endpoint.locality, []).append(endpoint)
    entries: list[dict[str, Any]] = []
    rule = next((r for r in setting.distribute if _locality_matches(r.from_, proxy_locality)), None)
    for locality, members in sorted(groups.items()):
        entry: dict[str, Any] = {"lb_endpoints": [_lb_endpoint(e) for e in members]}
        parts = locality.split("/") if locality else []
        if parts:
            entry["locality"] = dict(zip(("region", "zone", "sub_zone"), parts, strict=False))
        if rule is not None:
            weight = 0
            for pattern, share in rule.to.items():
                if _locality_matches(pattern, locality):
                    alike = sum(
                        len(g) for name, g in groups.items() if _locality_matches(pattern, name)
                    )
                    weight = round(share * len(members) / alike * 10) or 1
                    break
            if not weight:
                continue
            entry["load_balancing_weight"] = weight
        elif setting.distribute:
            # The cluster balances by locality weight, so a proxy in no ``from`` still needs
            # weights: each group its share of the endpoints.
            entry["load_balancing_weight"] = len(members) * 10
        elif outlier and proxy_locality:
            entry["priority"] = _failover_priority(setting, proxy_locality, locality)
        entries.append(entry)
    if any("priority" in e for e in entries):
        # Envoy wants priorities from 0 without gaps.
        levels = sorted({e["priority"] for e in entries})
        for entry in entries:
            entry["priority"] = levels.index(entry["priority"])
        entries.sort(key=lambda e: e["priority"])
    assignment["endpoints"] = entries


def _failover_priority(setting: LocalityLbSetting, proxy: str, locality: str) -> int:
    mine, theirs = proxy.split("/"), locality.split("/")
    same = 0
    for a, b in zip(mine, theirs, strict=False):
        if a != b:
            break
        same += 1
    if same == 3 or (same and same == len(mine) == len(theirs)):
        return 0
    if same == 2:
        return 1
    if same == 1:
        return 2
    if any(rule.from_ == mine[0] and rule.to == theirs[0] for rule in setting.failover):
        return 3
    return 4
