"""Which endpoints stand behind a service, and how its EndpointSlices change to show them: the
decisions of Kubernetes' endpoint-slice controller (``pkg/controller/endpointslice``), pure.

Why this exists: the controller (``handlers/endpointslice_controller.py``) only loads the
service, its pods and its slices from the read model and writes what this module decides:

* :func:`desired_endpoints`: one endpoint per pod the selector matches that has an IP and is
  not finished (Succeeded/Failed), with ``ready`` (the pod's Ready condition, or always with
  ``publishNotReadyAddresses``, never while terminating), ``serving`` (Ready, terminating or
  not), ``terminating`` (the pod has a ``deletionTimestamp``), its node and its node's zone
  (``topology.kubernetes.io/zone``), its hostname when its ``subdomain`` is the service.
  Endpoints are grouped by the ports they resolve to: a named ``targetPort`` is looked up among
  the pod's container ports (same name and protocol), and a pod that does not declare it is an
  endpoint of the other ports only (``podutil.FindPort`` failing: the port is skipped for that
  pod; the service itself is never refused for it).
* :func:`plan_slices`: the creates, updates and deletes that bring the service's slices to
  those groups with the least churn: an endpoint stays in the slice it is in, an unchanged
  slice is not written, new endpoints fill the slices being written anyway first, then one
  slice with room for all of them, then new slices of at most 100 endpoints
  (``--max-endpoints-per-slice``); a slice that would be deleted while another is created is
  reused instead; a service with no endpoints keeps one empty placeholder slice.

Light: plain dicts in, plain dicts out, no pydantic (the controller runs beside the read model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
"""kube-controller-manager's ``--max-endpoints-per-slice`` default."""

Ports = tuple[tuple[str, int, str, str | None], ...]
"""A slice's ports as a key: (name, port, protocol, appProtocol) in the service's order."""


@dataclass(frozen=True)
class PodState:
    """A pod as the read model holds it."""

    namespace: str
    name: str
    uid: str
    manifest: Mapping[str, Any]


@dataclass
class EndpointGroup:
    """Endpoints that resolve to the same ports, by pod (``namespace/name``)."""

    ports: list[dict[str, Any]]
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)


# -- what a pod contributes -----------------------------------------------------------------


def pod_ready(manifest: Mapping[str, Any]) -> bool:
    """``podutil.IsPodReady``: the Ready condition is True."""
    for condition in (manifest.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def pod_address(manifest: Mapping[str, Any]) -> str | None:
    """The pod's IPv4 address (``status.podIPs``, else ``status.podIP``), if it has one."""
    status = manifest.get("status") or {}
    for entry in status.get("podIPs") or ():
        ip = entry.get("ip") if isinstance(entry, Mapping) else None
        if ip and ":" not in ip:
            return str(ip)
    ip = status.get("podIP")
    return str(ip) if ip and ":" not in ip else None


def is_endpoint(manifest: Mapping[str, Any]) -> bool:
    """``ShouldPodBeInEndpoints`` (terminating pods included, as the slice controller has
    them): the pod has an address and has not finished."""
    phase = (manifest.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and pod_address(manifest) is not None


def find_port(manifest: Mapping[str, Any], service_port: Mapping[str, Any]) -> int | None:
    """``podutil.FindPort``: a numeric ``targetPort`` as it is; a named one is the container
    port of that name and protocol, or None when no container of the pod declares it."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    protocol = service_port.get("protocol", "TCP")
    for container in (manifest.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
    return None


def endpoint_ports(pod: Mapping[str, Any], service_ports: Sequence[Mapping[str, Any]]) -> Ports:
    """The ports a pod serves the service on (service ports it cannot resolve left out)."""
    resolved = []
    for port in service_ports:
        number = find_port(pod, port)
        if number is not None:
            resolved.append(
                (
                    port.get("name") or "",
                    number,
                    port.get("protocol", "TCP"),
                    port.get("appProtocol"),
                )
            )
    return tuple(resolved)


def port_dicts(ports: Ports) -> list[dict[str, Any]]:
    """A slice's ``ports`` as stored (``v1.SetDefaults_EndpointPort``: name "", TCP)."""
    out = []
    for name, number, protocol, app_protocol in ports:
        entry: dict[str, Any] = {"name": name, "protocol": protocol, "port": number}
        if app_protocol:
            entry["appProtocol"] = app_protocol
        out.append(entry)
    return out


def ports_key(ports: Iterable[Mapping[str, Any]] | None) -> Ports:
    return tuple(
        (
            p.get("name") or "",
            int(p.get("port") or 0),
            p.get("protocol", "TCP"),
            p.get("appProtocol"),
        )
        for p in ports or ()
    )


def endpoint_of(
    pod: PodState,
    *,
    service_name: str,
    publish_not_ready: bool,
    zones: Mapping[str, str],
) -> dict[str, Any]:
    """``podToEndpoint``: the pod as an endpoint of the service."""
    manifest, spec = pod.manifest, pod.manifest.get("spec") or {}
    serving = pod_ready(manifest)
    terminating = bool((manifest.get("metadata") or {}).get("deletionTimestamp"))
    ready = publish_not_ready or (serving and not terminating)
    endpoint: dict[str, Any] = {
        "addresses": [pod_address(manifest)],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid},
    }
    node = spec.get("nodeName")
    if node:
        endpoint["nodeName"] = node
        if zones.get(node):
            endpoint["zone"] = zones[node]
    if spec.get("hostname") and spec.get("subdomain") == service_name:
        endpoint["hostname"] = spec["hostname"]
    return endpoint


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A service's selector (a plain map; empty selects nothing) matches the labels."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(key) == value for key, value in selector.items())


def desired_endpoints(
    service: Mapping[str, Any],
    pods: Iterable[PodState],
    zones: Mapping[str, str],
) -> dict[Ports, EndpointGroup]:
    """The service's endpoints grouped by the ports they resolve to (``pods``: the pods of its
    namespace; those its selector does not match are ignored)."""
    spec = service.get("spec") or {}
    name = (service.get("metadata") or {}).get("name", "")
    selector = spec.get("selector")
    publish = bool(spec.get("publishNotReadyAddresses"))
    service_ports = spec.get("ports") or []
    groups: dict[Ports, EndpointGroup] = {}
    for pod in sorted(pods, key=lambda p: p.name):
        labels = (pod.manifest.get("metadata") or {}).get("labels")
        if not selects(selector, labels) or not is_endpoint(pod.manifest):
            continue
        key = endpoint_ports(pod.manifest, service_ports)
        group = groups.get(key)
        if group is None:
            group = groups[key] = EndpointGroup(port_dicts(key))
        group.endpoints[f"{pod.namespace}/{pod.name}"] = endpoint_of(
            pod, service_name=name, publish_not_ready=publish, zones=zones
        )
    return groups


# -- how the slices change -----------------------------------------------------------------------


@dataclass
class SlicePlan:
    """What to write: whole slice manifests to create and to update, names to delete."""

    create: list[dict[str, Any]] = field(default_factory=list)
    update: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


def slice_labels(service: Mapping[str, Any]) -> dict[str, str]:
    """``setEndpointSliceLabels``: the service's labels (but the two the controller owns),
    the service's name, the managing controller, and the headless mark."""
    metadata = service.get("metadata") or {}
    labels = {
        key: value
        for key, value in (metadata.get("labels") or {}).items()
        if key not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL)
    }
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = metadata.get("name", "")
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return labels


def owner_reference(service: Mapping[str, Any], uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": (service.get("metadata") or {}).get("name", ""),
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def endpoint_key(endpoint: Mapping[str, Any]) -> str:
    """Which pod an endpoint stands for (its address when it names none)."""
    ref = endpoint.get("targetRef") or {}
    if ref.get("name"):
        return f"{ref.get('namespace', '')}/{ref['name']}"
    return ",".join(endpoint.get("addresses") or ())


def is_managed(slice_manifest: Mapping[str, Any], service_name: str) -> bool:
    """A slice of ``service_name`` that this controller keeps (not one a user wrote)."""
    labels = (slice_manifest.get("metadata") or {}).get("labels") or {}
    return (
        labels.get(SERVICE_NAME_LABEL) == service_name
        and labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME
    )


def plan_slices(
    service: Mapping[str, Any],
    *,
    uid: str,
    desired: Mapping[Ports, EndpointGroup],
    existing: Sequence[Mapping[str, Any]],
    new_name: Callable[[], str],
    max_per_slice: int = MAX_ENDPOINTS_PER_SLICE,
) -> SlicePlan:
    """The writes that bring ``existing`` (the service's managed slices) to ``desired``."""
    metadata = service.get("metadata") or {}
    labels, owner = slice_labels(service), owner_reference(service, uid)
    namespace = metadata.get("namespace", "default")

    def manifest(
        base: Mapping[str, Any] | None, ports: list[dict[str, Any]], endpoints: list[dict[str, Any]]
    ) -> dict[str, Any]:
        meta: dict[str, Any] = dict((base or {}).get("metadata") or {})
        if base is None:
            meta = {
                "name": new_name(),
                "generateName": f"{metadata.get('name', '')}-"[:58],
                "namespace": namespace,
            }
        meta["labels"] = labels
        meta["ownerReferences"] = [owner]
        out: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": meta,
            "addressType": "IPv4",
            "endpoints": endpoints,
        }
        if ports:
            out["ports"] = ports
        return out

    by_key: dict[Ports, list[Mapping[str, Any]]] = {}
    for found in sorted(existing, key=lambda s: s["metadata"]["name"]):
        by_key.setdefault(ports_key(found.get("ports")), []).append(found)
    updates: list[tuple[Mapping[str, Any], list[dict[str, Any]], list[dict[str, Any]]]] = []
    creates: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    deletes: list[Mapping[str, Any]] = []
    for key, found in by_key.items():
        if key not in desired:
            deletes.extend(found)
    for key, group in desired.items():
        placed: set[str] = set()
        changed: list[tuple[Mapping[str, Any], list[dict[str, Any]]]] = []
        unchanged: list[tuple[Mapping[str, Any], list[dict[str, Any]]]] = []
        for found in by_key.get(key, ()):
            kept: list[dict[str, Any]] = []
            differs = False
            for endpoint in found.get("endpoints") or ():
                wanted = group.endpoints.get(endpoint_key(endpoint))
                if wanted is None or endpoint_key(endpoint) in placed:
                    differs = True
                    continue
                placed.add(endpoint_key(endpoint))
                kept.append(wanted)
                differs = differs or wanted != endpoint
            if not kept:
                deletes.append(found)
            elif differs or _stale_metadata(found, labels, owner):
                changed.append((found, kept))
            else:
                unchanged.append((found, kept))
        remaining = [e for k, e in group.endpoints.items() if k not in placed]
        for _found, kept in changed:
            room = max_per_slice - len(kept)
            if room > 0 and remaining:
                kept.extend(remaining[:room])
                del remaining[:room]
        if remaining:
            # One slice with room for them all takes them (the fullest such), not a new one.
            fits = [u for u in unchanged if len(u[1]) + len(remaining) <= max_per_slice]
            if fits:
                target = max(fits, key=lambda u: len(u[1]))
                unchanged.remove(target)
                target[1].extend(remaining)
                changed.append(target)
                remaining = []
        updates.extend((found, group.ports, kept) for found, kept in changed)
        for start in range(0, len(remaining), max_per_slice):
            creates.append((group.ports, remaining[start : start + max_per_slice]))
    if not desired:
        # No endpoints at all: one empty placeholder slice stays (or is made).
        placeholders = [d for d in deletes if not d.get("endpoints") and not d.get("ports")]
        if placeholders:
            keep = placeholders[0]
            deletes.remove(keep)
            if _stale_metadata(keep, labels, owner):
                updates.append((keep, [], []))
        else:
            creates.append(([], []))
    plan = SlicePlan()
    # A slice about to be deleted is reused for one about to be created.
    while creates and deletes:
        ports, endpoints = creates.pop()
        updates.append((deletes.pop(), ports, endpoints))
    plan.update = [manifest(found, ports, endpoints) for found, ports, endpoints in updates]
    plan.create = [manifest(None, ports, endpoints) for ports, endpoints in creates]
    plan.delete = [found["metadata"]["name"] for found in deletes]
    return plan


def _stale_metadata(
    found: Mapping[str, Any], labels: Mapping[str, str], owner: Mapping[str, Any]
) -> bool:
    metadata = found.get("metadata") or {}
    return metadata.get("labels") != labels or metadata.get("ownerReferences") != [owner]


# -- reading slices -------------------------------------------------------------------------------


def ready_addresses(
    slices: Iterable[Mapping[str, Any]],
) -> list[tuple[str, list[dict[str, Any]]]]:
    """(address, the slice's ports) of every ready endpoint (``ready`` unset reads as ready),
    in slice order: what the legacy Endpoints view and ``describe`` show."""
    out = []
    for found in slices:
        ports = list(found.get("ports") or ())
        for endpoint in found.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or ():
                out.append((address, ports))
    return out


def legacy_endpoints(
    namespace: str, service: str, slices: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The v1 ``Endpoints`` object Kubernetes' endpoints controller would keep for the
    service, computed from its slices: one subset per set of ports, ready addresses in
    ``addresses`` and the others in ``notReadyAddresses``."""
    subsets: dict[Ports, dict[str, Any]] = {}
    for found in slices:
        key = ports_key(found.get("ports"))
        subset = subsets.get(key)
        if subset is None:
            subset = subsets[key] = {"addresses": [], "notReadyAddresses": []}
            ports = [
                {k: p[k] for k in ("name", "port", "protocol", "appProtocol") if p.get(k)}
                for p in found.get("ports") or ()
            ]
            if ports:
                subset["ports"] = ports
        for endpoint in found.get("endpoints") or ():
            ready = (endpoint.get("conditions") or {}).get("ready") is not False
            for address in endpoint.get("addresses") or ():
                entry: dict[str, Any] = {"ip": address}
                for field_name in ("hostname", "nodeName", "targetRef"):
                    if endpoint.get(field_name):
                        entry[field_name] = endpoint[field_name]
                subset["addresses" if ready else "notReadyAddresses"].append(entry)
    kept = []
    for subset in subsets.values():
        for section in ("addresses", "notReadyAddresses"):
            if not subset[section]:
                del subset[section]
            else:
                subset[section].sort(key=lambda a: a["ip"])
        if "addresses" in subset or "notReadyAddresses" in subset:
            kept.append(subset)
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": service, "namespace": namespace},
        "subsets": kept,
    }


def endpoints_text(endpoints: Mapping[str, Any], *, port_names: set[str] | None = None) -> str:
    """kubectl's ENDPOINTS column (``formatEndpoints``): ``ip:port`` of each ready address
    for each port (``port_names``: only those), the first three, then ``+ N more...``;
    ``<none>`` when nothing is ready."""
    shown: list[str] = []
    count = 0
    for subset in endpoints.get("subsets") or ():
        addresses = [a["ip"] for a in subset.get("addresses") or ()]
        ports = subset.get("ports") or []
        if not ports:
            count += len(addresses)
            shown.extend(addresses)
            continue
        for port in ports:
            if port_names is not None and port.get("name", "") not in port_names:
                continue
            count += len(addresses)
            shown.extend(f"{ip}:{port['port']}" for ip in addresses)
    if not shown:
        return "<none>"
    text = ",".join(shown[:3])
    return f"{text} + {count - 3} more..." if count > 3 else text
