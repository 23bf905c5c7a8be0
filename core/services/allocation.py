"""What writing or deleting a service does to the ranges: the ClusterIP and node ports it gets,
keeps or gives back, decided at once with the service itself.

Why this exists: kube-apiserver's service registry allocates after validation
(``pkg/registry/core/service/storage``: ``patchAllocatedValues``, ``initIPFamilyFields``,
``allocClusterIPs``, ``allocNodePorts``) and releases on delete or on a type change. fleetlog
does the same in two pure steps the gateway's service path calls (``handlers/gateway/
services.py``):

1. :func:`plan_service` reads the service as it is stored (if it is) and as it is sent, and
   says what the stored manifest will be and which addresses and ports that takes or gives
   back: an update keeps what the service already holds (a re-applied manifest without
   ``clusterIP`` or ``nodePort`` keeps them, matched by port name as Kubernetes matches them),
   a requested value must lie in its range, anything else is picked from what the caller's
   read model says is free. The IP families are defaulted for a single-stack IPv4 cluster.
2. :func:`write_service` / :func:`delete_service` record the events on the service and on the
   allocation records (``IPAddress``, ``NodePortAllocation``, by name) loaded for the plan:
   created for what it takes, deleted for what it gives back. The caller appends them in one
   atomic write with "must be new" (or the record's last sequence) on every record, so two
   services racing for one value can never both get it. A value asked for by the user and held
   by another service is refused in Kubernetes' words ("provided IP is already allocated"); a
   value the plan picked that turns out to be taken (the read model lagged) raises
   :class:`PickedValueTaken`, and the caller plans again without it.

Nothing here reads a clock, the log or a random source: ``at`` and the picking ``seed`` come
from the caller (the seed from the service's uid, so a decision taken again picks the same).
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.errors import FleetError, InvalidTransition, ValidationFailed
from core.meta.aggregate import Resource
from core.services.aggregate import IPAddress, NodePortAllocation, Service
from core.services.ipaddress import IP_ALLOCATOR, IP_FAMILY_LABEL, MANAGED_BY_LABEL
from core.services.model import CLUSTER_IP_NONE
from core.services.ranges import ServiceRanges

RECORD_UID_NAMESPACE = uuid.UUID("5d0c7a4e-2f59-4d57-9a0e-3c5b1e7f6a21")


class PickedValueTaken(FleetError):
    """An address or port the plan picked as free was held after all (the read model of
    allocations trailed the log): plan again without it."""

    code = "conflict"

    def __init__(self, *, ip: str | None = None, port: int | None = None) -> None:
        what = f"address {ip}" if ip is not None else f"node port {port}"
        super().__init__(f"the {what} picked for this service was allocated meanwhile; try again")
        self.ip = ip
        self.port = port


class RangeFull(FleetError):
    """No address or port of the range is free."""

    code = "range_full"


@dataclass(frozen=True, kw_only=True)
class ServicePlan:
    """A service's write as the ranges see it: the manifest to store and what it takes and
    gives back. ``requested``: taken because the user asked for that value (a clash is then
    the user's to resolve, not the allocator's)."""

    manifest: dict[str, Any] | None
    take_ips: tuple[str, ...] = ()
    release_ips: tuple[str, ...] = ()
    take_ports: tuple[int, ...] = ()
    release_ports: tuple[int, ...] = ()
    requested_ips: frozenset[str] = field(default_factory=frozenset)
    requested_ports: frozenset[int] = field(default_factory=frozenset)

    @property
    def ips(self) -> tuple[str, ...]:
        """Every address record the write touches."""
        return (*self.take_ips, *self.release_ips)

    @property
    def ports(self) -> tuple[int, ...]:
        """Every node-port record the write touches."""
        return (*self.take_ports, *self.release_ports)


def seed_of(uid: str) -> int:
    """A picking seed from a service's uid: the same service picks the same values again."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big")


# -- which fields a type needs (the registry's needsClusterIP, needsNodePort, needsHCNodePort) --


def needs_cluster_ip(spec: Mapping[str, Any]) -> bool:
    return spec.get("type", "ClusterIP") != "ExternalName"


def needs_node_ports(spec: Mapping[str, Any]) -> bool:
    kind = spec.get("type", "ClusterIP")
    return kind == "NodePort" or (
        kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False
    )


def needs_health_check_port(spec: Mapping[str, Any]) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def held_ips(spec: Mapping[str, Any]) -> list[str]:
    """The addresses a stored service holds."""
    if not needs_cluster_ip(spec):
        return []
    return [ip for ip in spec.get("clusterIPs") or () if ip and ip != CLUSTER_IP_NONE]


def held_ports(spec: Mapping[str, Any]) -> list[int]:
    """The node ports a stored service holds (its health-check port included), each once."""
    ports = [int(p["nodePort"]) for p in spec.get("ports") or () if p.get("nodePort")]
    if spec.get("healthCheckNodePort"):
        ports.append(int(spec["healthCheckNodePort"]))
    return list(dict.fromkeys(ports))


# -- planning ------------------------------------------------------------------------------------


def plan_service(
    stored: Mapping[str, Any] | None,
    sent: Mapping[str, Any],
    *,
    ranges: ServiceRanges,
    taken_ips: Container[str],
    taken_ports: Container[int],
    seed: int,
) -> ServicePlan:
    """The manifest ``sent`` will be stored as, given the live service's ``stored`` manifest
    (None for a create), and what that takes and gives back. ``taken_*`` say which values are
    held (by any service, this one included); a value is picked from the rest. Raises
    ``ValidationFailed`` for a value out of its range or a family the cluster lacks,
    ``InvalidTransition`` for a change of an allocated address, :class:`RangeFull`."""
    manifest = copy.deepcopy(dict(sent))
    spec: dict[str, Any] = manifest.setdefault("spec", {})
    old: Mapping[str, Any] = (stored or {}).get("spec") or {}
    if stored is not None:
        _patch_allocated(spec, old)
        _check_unchanged_addresses(spec, old)
    old_ips, old_ports = held_ips(old), held_ports(old)
    take_ips: list[str] = []
    requested_ips: set[str] = set()
    if needs_cluster_ip(spec):
        _default_families(spec)
        ip = spec.get("clusterIP")
        if not ip:
            picked = ranges.cluster_ips.pick(taken_ips, seed=seed)
            if picked is None:
                raise RangeFull("failed to allocate a serviceIP: range is full")
            spec["clusterIP"], spec["clusterIPs"] = picked, [picked]
            take_ips.append(picked)
        elif ip != CLUSTER_IP_NONE and ip not in old_ips:
            if not ranges.cluster_ips.contains(ip):
                raise ValidationFailed(
                    f"Invalid value: {json.dumps([ip])}: failed to allocate IP {ip}: provided IP "
                    f"is not in the valid range. The range of valid IPs is {ranges.cluster_ips}",
                    field="spec.clusterIPs",
                )
            take_ips.append(ip)
            requested_ips.add(ip)
    take_ports, requested_ports = _node_ports(spec, old_ports, ranges, taken_ports, seed)
    new_ips, new_ports = held_ips(spec), held_ports(spec)
    return ServicePlan(
        manifest=manifest,
        take_ips=tuple(take_ips),
        release_ips=tuple(ip for ip in old_ips if ip not in new_ips),
        take_ports=tuple(take_ports),
        release_ports=tuple(port for port in old_ports if port not in new_ports),
        requested_ips=frozenset(requested_ips),
        requested_ports=frozenset(requested_ports),
    )


def plan_deletion(stored: Mapping[str, Any]) -> ServicePlan:
    """What deleting the service gives back: every address and port it holds."""
    spec = stored.get("spec") or {}
    return ServicePlan(
        manifest=None,
        release_ips=tuple(held_ips(spec)),
        release_ports=tuple(held_ports(spec)),
    )


def _patch_allocated(spec: dict[str, Any], old: Mapping[str, Any]) -> None:
    """``patchAllocatedValues``: what the service holds stays when the update does not say
    it (a manifest applied again without its ``clusterIP`` or ``nodePort``)."""
    if needs_cluster_ip(old) and needs_cluster_ip(spec):
        if not spec.get("clusterIP") and old.get("clusterIP"):
            spec["clusterIP"] = old["clusterIP"]
        if not spec.get("clusterIPs") and old.get("clusterIPs"):
            spec["clusterIPs"] = list(old["clusterIPs"])
        for key in ("ipFamilies", "ipFamilyPolicy"):
            if key not in spec and key in old:
                spec[key] = copy.deepcopy(old[key])
    if needs_node_ports(old) and needs_node_ports(spec):
        ports = spec.get("ports") or []
        stated = {int(p["nodePort"]) for p in ports if p.get("nodePort")}
        by_name = {p.get("name", ""): p.get("nodePort") for p in old.get("ports") or ()}
        for port in ports:
            if not port.get("nodePort"):
                previous = by_name.get(port.get("name", ""))
                if previous and previous not in stated:
                    port["nodePort"] = previous
    if (
        needs_health_check_port(old)
        and needs_health_check_port(spec)
        and not spec.get("healthCheckNodePort")
        and old.get("healthCheckNodePort")
    ):
        spec["healthCheckNodePort"] = old["healthCheckNodePort"]


def _check_unchanged_addresses(spec: Mapping[str, Any], old: Mapping[str, Any]) -> None:
    """``ValidateServiceUpdate``: an allocated address (or ``None``) stays, unless the service
    becomes or stops being an ExternalName service."""
    if not (needs_cluster_ip(old) and needs_cluster_ip(spec)):
        return
    before, after = old.get("clusterIPs") or [], spec.get("clusterIPs") or []
    if before and after[:1] != before[:1]:
        raise InvalidTransition(
            f"spec.clusterIPs[0]: Invalid value: {json.dumps(after)}: may not change once set "
            f"(it is {before[0]})",
            field="spec.clusterIPs[0]",
        )
    families_before, families_after = old.get("ipFamilies") or [], spec.get("ipFamilies") or []
    headless = before[:1] == [CLUSTER_IP_NONE]
    if not headless and families_before and families_after[:1] != families_before[:1]:
        raise InvalidTransition(
            f"spec.ipFamilies[0]: Invalid value: {json.dumps(families_after)}: may not change "
            "once set",
            field="spec.ipFamilies[0]",
        )


def _default_families(spec: dict[str, Any]) -> None:
    """``initIPFamilyFields`` for a single-stack IPv4 cluster: ``SingleStack``/``[IPv4]``
    unless said otherwise; a headless service without a selector is ``RequireDualStack`` with
    both families (Kubernetes lets it name families the cluster lacks). IPv6 and a required
    dual stack are refused elsewhere."""
    families: list[str] = list(spec.get("ipFamilies") or [])
    policy = spec.get("ipFamilyPolicy")
    headless = spec.get("clusterIP") == CLUSTER_IP_NONE
    if headless and not spec.get("selector"):
        policy = policy or "RequireDualStack"
        families = families or ["IPv4"]
        if len(families) < 2 and policy != "SingleStack":
            families.append("IPv6" if families[0] == "IPv4" else "IPv4")
        spec["ipFamilies"], spec["ipFamilyPolicy"] = families, policy
        return
    for i, ip in enumerate(spec.get("clusterIPs") or ()):
        if ip != CLUSTER_IP_NONE and ":" in ip:
            raise ValidationFailed(
                f'Invalid value: "IPv6": not configured on this cluster (the address {ip} is IPv6)',
                field=f"spec.ipFamilies[{i}]",
            )
    for i, family in enumerate(families):
        if family != "IPv4":
            raise ValidationFailed(
                f'Invalid value: "{family}": not configured on this cluster',
                field=f"spec.ipFamilies[{i}]",
            )
    policy = policy or "SingleStack"
    if policy == "RequireDualStack":
        raise ValidationFailed(
            'Invalid value: "RequireDualStack": this cluster is not configured for dual-stack '
            "services",
            field="spec.ipFamilyPolicy",
        )
    spec["ipFamilies"], spec["ipFamilyPolicy"] = families or ["IPv4"], policy


def _node_ports(
    spec: dict[str, Any],
    old_ports: Sequence[int],
    ranges: ServiceRanges,
    taken: Container[int],
    seed: int,
) -> tuple[list[int], set[int]]:
    """``allocNodePorts`` and the health-check port: each stated port kept (if the service
    holds it) or taken (if it is in range), each missing one picked. A port number shared by
    ports of different protocols is one allocation."""
    take: list[int] = []
    requested: set[int] = set()
    wanted: list[tuple[int | None, str, str]] = []  # (stated port, field path, key)
    if needs_node_ports(spec):
        for i, port in enumerate(spec.get("ports") or ()):
            wanted.append((port.get("nodePort"), f"spec.ports[{i}].nodePort", f"p{i}"))
    if needs_health_check_port(spec):
        wanted.append((spec.get("healthCheckNodePort"), "spec.healthCheckNodePort", "hc"))
    chosen: set[int] = set()
    node_ports = ranges.node_ports
    picked: dict[str, int] = {}
    for stated, path, key in wanted:
        if stated:
            value = int(stated)
            if value not in old_ports and value not in chosen:
                if not node_ports.contains(value):
                    raise ValidationFailed(
                        f"Invalid value: {value}: provided port is not in the valid range. "
                        f"The range of valid ports is {node_ports}",
                        field=path,
                    )
                take.append(value)
                requested.add(value)
            chosen.add(value)
            continue
        value_or_none = node_ports.pick(_Union(taken, chosen, old_ports), seed=seed + len(picked))
        if value_or_none is None:
            raise RangeFull("failed to allocate a nodePort: range is full")
        picked[key] = value_or_none
        chosen.add(value_or_none)
        take.append(value_or_none)
    for key, value in picked.items():
        if key == "hc":
            spec["healthCheckNodePort"] = value
        else:
            spec["ports"][int(key[1:])]["nodePort"] = value
    return take, requested


class _Union:
    """Values in any of several containers (what a pick must avoid)."""

    __slots__ = ("_parts",)

    def __init__(self, *parts: Container[int]) -> None:
        self._parts = parts

    def __contains__(self, value: object) -> bool:
        return any(value in part for part in self._parts)


# -- deciding -------------------------------------------------------------------------------------


def parent_ref(namespace: str, name: str) -> dict[str, str]:
    """How an allocation record names the service that holds it."""
    return {"group": "", "resource": "services", "namespace": namespace, "name": name}


def address_manifest(ip: str, *, namespace: str, name: str) -> dict[str, Any]:
    """The IPAddress record of ``ip`` held by service ``namespace/name``."""
    family = "IPv6" if ":" in ip else "IPv4"
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "labels": {IP_FAMILY_LABEL: family, MANAGED_BY_LABEL: IP_ALLOCATOR},
        },
        "spec": {"parentRef": parent_ref(namespace, name)},
    }


def node_port_manifest(port: int, *, namespace: str, name: str) -> dict[str, Any]:
    """The NodePortAllocation record of ``port`` held by service ``namespace/name``."""
    return {
        "apiVersion": "networking.fleetlog.dev/v1alpha1",
        "kind": "NodePortAllocation",
        "metadata": {"name": str(port)},
        "spec": {"parentRef": parent_ref(namespace, name)},
    }


def address_id(ip: str) -> str:
    return f"IPAddress//{ip}"


def node_port_id(port: int) -> str:
    return f"NodePortAllocation//{port}"


def _held_by(record: Resource | None, namespace: str, name: str) -> bool | None:
    """Whether a live record is held by the service (None: there is no live record)."""
    if record is None or not record.exists:
        return None
    parent = (record.manifest.get("spec") or {}).get("parentRef") or {}
    return parent.get("namespace") == namespace and parent.get("name") == name


@dataclass(frozen=True)
class ServiceWritten:
    """A decided write: the service, and every record it created or deleted by aggregate id
    (a record that never existed is a new aggregate, which the caller appends)."""

    service: Service
    records: dict[str, Resource]


def write_service(
    current: Resource | None,
    *,
    agg_id: str,
    plan: ServicePlan,
    uid: str,
    replace: bool,
    addresses: Mapping[str, Resource | None],
    node_ports: Mapping[int, Resource | None],
    at: datetime,
) -> ServiceWritten:
    """Create the service (``replace``: create it or replace the live one's manifest) as
    ``plan`` says, creating the records of what it takes and deleting those of what it gives
    back, on the aggregates given (``addresses`` and ``node_ports`` hold the loaded record of
    every value the plan names, None where there never was one).

    Refused, recording nothing the caller keeps: a requested value another service holds
    (``provided IP is already allocated``, ``provided port is already allocated``), and
    whatever the service's own create or update refuses. A picked value held after all raises
    :class:`PickedValueTaken`."""
    assert plan.manifest is not None
    _, namespace, name = agg_id.split("/", 2)
    for ip in plan.take_ips:
        if _held_by(addresses.get(ip), namespace, name) is False:
            if ip not in plan.requested_ips:
                raise PickedValueTaken(ip=ip)
            raise ValidationFailed(
                f"Invalid value: {json.dumps([ip])}: failed to allocate IP {ip}: provided IP is "
                "already allocated",
                field="spec.clusterIPs",
            )
    for port in plan.take_ports:
        if _held_by(node_ports.get(port), namespace, name) is False:
            if port not in plan.requested_ports:
                raise PickedValueTaken(port=port)
            raise ValidationFailed(
                f"Invalid value: {port}: provided port is already allocated",
                field=_port_field(plan.manifest, port),
            )
    manifest = dict(plan.manifest)
    live = current is not None and current.exists
    if live:
        assert current is not None
        status = current.manifest.get("status")
        manifest["status"] = status if status is not None else {"loadBalancer": {}}
    else:
        manifest["status"] = {"loadBalancer": {}}
    decide = Service.apply_manifest if replace else Service.create
    service = decide(current, agg_id=agg_id, manifest=manifest, uid=uid, at=at)
    assert isinstance(service, Service)
    records: dict[str, Resource] = {}
    if not service.pending_events:
        return ServiceWritten(service, records)  # nothing changed: nothing taken or given back
    for ip in plan.take_ips:
        record = addresses.get(ip)
        if not _held_by(record, namespace, name):
            records[address_id(ip)] = IPAddress.create(
                record,
                agg_id=address_id(ip),
                manifest=address_manifest(ip, namespace=namespace, name=name),
                uid=_record_uid(service.uid, ip),
                at=at,
            )
    for port in plan.take_ports:
        record = node_ports.get(port)
        if not _held_by(record, namespace, name):
            records[node_port_id(port)] = NodePortAllocation.create(
                record,
                agg_id=node_port_id(port),
                manifest=node_port_manifest(port, namespace=namespace, name=name),
                uid=_record_uid(service.uid, str(port)),
                at=at,
            )
    reason = f"no longer held by service {namespace}/{name}"
    records |= _release(plan, addresses, node_ports, namespace, name, reason=reason, at=at)
    return ServiceWritten(service, records)


def delete_service(
    service: Resource,
    *,
    plan: ServicePlan,
    addresses: Mapping[str, Resource | None],
    node_ports: Mapping[int, Resource | None],
    reason: str,
    propagation_policy: str,
    at: datetime,
) -> dict[str, Resource]:
    """Delete the service and the records of every address and port it holds (a record held
    by another service is left alone); returns the records deleted, by aggregate id."""
    service.delete(reason=reason, at=at, propagation_policy=propagation_policy)
    return _release(
        plan,
        addresses,
        node_ports,
        service.namespace,
        service.name,
        reason=f"service {service.namespace}/{service.name} deleted",
        at=at,
    )


def _release(
    plan: ServicePlan,
    addresses: Mapping[str, Resource | None],
    node_ports: Mapping[int, Resource | None],
    namespace: str,
    name: str,
    *,
    reason: str,
    at: datetime,
) -> dict[str, Resource]:
    released: dict[str, Resource] = {}
    records: list[Resource | None] = [addresses.get(ip) for ip in plan.release_ips]
    records += [node_ports.get(port) for port in plan.release_ports]
    for record in records:
        if record is not None and _held_by(record, namespace, name):
            record.delete(reason=reason, at=at)
            released[record.id] = record
    return released


def _record_uid(service_uid: str, value: str) -> str:
    return str(uuid.uuid5(RECORD_UID_NAMESPACE, f"{service_uid}/{value}"))


def _port_field(manifest: Mapping[str, Any], port: int) -> str:
    spec = manifest.get("spec") or {}
    for i, entry in enumerate(spec.get("ports") or ()):
        if entry.get("nodePort") == port:
            return f"spec.ports[{i}].nodePort"
    return "spec.healthCheckNodePort"
