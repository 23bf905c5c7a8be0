"""What the node forwards for a service: its frontends (ClusterIP:port, NodePort) and, for each,
the endpoints a new connection may go to.

Why this exists: the node's service proxy (kube-proxy's job, ``handlers/agent/proxy.py``)
turns every Service and its EndpointSlices into listeners and a balancer per service port, and
the rules that decide which endpoints qualify are kube-proxy's, worth having once, pure and
tested, rather than buried in socket code:

* a service is forwarded when it has a cluster IP (not headless, not ExternalName); each TCP
  and each UDP port is a :class:`Frontend` on ``clusterIP:port`` and, for NodePort and
  LoadBalancer services, on ``nodePort`` of every node address (a TCP and a UDP port may share a
  number, DNS' 53 both ways: they are two frontends). For UDP a "connection" is a flow of
  datagrams (``core.services.flows``). SCTP ports are not forwarded — said, not hidden:
  :func:`frontends` returns them as ``skipped`` with the reason, which the node logs once;
* a slice's port belongs to the service port of the same name (and protocol), as kube-proxy
  matches them: a named ``targetPort`` is resolved per pod by the endpoint-slice controller, so
  two pods may serve one service port on different numbers, each endpoint with its slice's;
* new connections go to the **ready** endpoints; when none is ready, to those still
  **serving while terminating** (kube-proxy's ProxyTerminatingEndpoints); with neither the
  frontend has no endpoint and a connection is refused at once (kube-proxy's REJECT);
* the policy is the service's ``fleetlog.dev/load-balancer`` annotation
  (``core.services.balancing``); ``sessionAffinity: ClientIP`` keeps its timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from core.services.balancing import Endpoint, Policy, policy_of

FORWARDED_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer"})
NO_CLUSTER_IP = frozenset({"", "None"})
FORWARDED_PROTOCOLS: Final = frozenset({"TCP", "UDP"})
SCTP_NOT_FORWARDED: Final = (
    "the node does not forward SCTP (no listener on the cluster IP or node port); "
    "clients reach the endpoints at their pod addresses"
)
"""Why an SCTP port is skipped. Kubernetes forwards SCTP; fleetlog's proxy has no SCTP relay
(asyncio has none, and the kernel's SCTP module is often not loaded)."""


@dataclass(frozen=True, kw_only=True)
class Frontend:
    """One TCP or UDP port of one service, as the node forwards it."""

    namespace: str
    service: str
    port_name: str
    cluster_ip: str
    port: int
    protocol: str = "TCP"
    """``TCP`` or ``UDP``."""
    node_port: int | None
    policy: Policy
    affinity_seconds: float | None
    """``sessionAffinity: ClientIP``'s timeout; None without affinity."""
    endpoints: tuple[Endpoint, ...]
    """Where new connections may go (sorted; empty: refuse them)."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.service, self.port_name)

    def __str__(self) -> str:
        port = f":{self.port_name}" if self.port_name else ""
        return f"{self.namespace}/{self.service}{port}"


@dataclass(frozen=True, kw_only=True)
class Skipped:
    """A service port the node does not forward, and why."""

    namespace: str
    service: str
    port: int
    protocol: str
    reason: str


def cluster_ip_of(service: Mapping[str, Any]) -> str | None:
    """The address the node serves the service on (None: headless, ExternalName, none yet)."""
    spec = service.get("spec") or {}
    if spec.get("type", "ClusterIP") not in FORWARDED_TYPES:
        return None
    address = spec.get("clusterIP")
    return None if address in NO_CLUSTER_IP or address is None else str(address)


def _affinity_seconds(spec: Mapping[str, Any]) -> float | None:
    if spec.get("sessionAffinity") != "ClientIP":
        return None
    config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP")) or {}
    return float(config.get("timeoutSeconds") or 10800)


def usable_endpoints(
    slices: Iterable[Mapping[str, Any]], *, port_name: str, protocol: str = "TCP"
) -> tuple[Endpoint, ...]:
    """The endpoints new connections to the service port named ``port_name`` may go to:
    ready ones, or, when none is, those serving while terminating (see the module docstring).
    An unset condition reads as Kubernetes reads it: ``ready`` true, ``serving`` = ready,
    ``terminating`` false."""
    ready: set[Endpoint] = set()
    fallback: set[Endpoint] = set()
    for found in slices:
        number = None
        for port in found.get("ports") or ():
            if (port.get("name") or "") == port_name and port.get("protocol", "TCP") == protocol:
                number = port.get("port")
                break
        if not number:
            continue
        for endpoint in found.get("endpoints") or ():
            conditions = endpoint.get("conditions") or {}
            is_ready = conditions.get("ready") is not False
            serving = conditions.get("serving", is_ready) is not False
            terminating = conditions.get("terminating") is True
            for address in endpoint.get("addresses") or ():
                if is_ready:
                    ready.add(Endpoint(str(address), int(number)))
                elif serving and terminating:
                    fallback.add(Endpoint(str(address), int(number)))
    return tuple(sorted(ready or fallback))


SERVICE_PROXY_NAME_LABEL: Final = "service.kubernetes.io/service-proxy-name"
"""A service carrying this label is another proxy's to serve (kube-dns: the node's own DNS
server): kube-proxy, and this node's proxy, leave it alone."""


def frontends(
    namespace: str, name: str, service: Mapping[str, Any], slices: Iterable[Mapping[str, Any]]
) -> tuple[list[Frontend], list[Skipped]]:
    """The service's frontends with their endpoints, and the ports not forwarded."""
    cluster_ip = cluster_ip_of(service)
    if cluster_ip is None:
        return [], []
    if SERVICE_PROXY_NAME_LABEL in ((service.get("metadata") or {}).get("labels") or {}):
        return [], []
    spec = service.get("spec") or {}
    annotations = (service.get("metadata") or {}).get("annotations")
    policy = policy_of(annotations)
    affinity = _affinity_seconds(spec)
    slices = list(slices)
    found: list[Frontend] = []
    skipped: list[Skipped] = []
    for port in spec.get("ports") or ():
        protocol = port.get("protocol", "TCP")
        if protocol not in FORWARDED_PROTOCOLS:
            reason = f"port {port['port']}/{protocol} is not forwarded: " + (
                SCTP_NOT_FORWARDED
                if protocol == "SCTP"
                else "the node forwards TCP and UDP service ports only"
            )
            skipped.append(
                Skipped(namespace=namespace, service=name, port=int(port["port"]),
                        protocol=protocol, reason=reason)
            )  # fmt: skip
            continue
        port_name = port.get("name") or ""
        endpoints = usable_endpoints(slices, port_name=port_name, protocol=protocol)
        frontend = Frontend(
            namespace=namespace, service=name, port_name=port_name, cluster_ip=cluster_ip,
            port=int(port["port"]), protocol=protocol, node_port=port.get("nodePort"),
            policy=policy, affinity_seconds=affinity, endpoints=endpoints,
        )  # fmt: skip
        found.append(frontend)
    return found, skipped


def passthrough_targets(found: Iterable[Frontend]) -> set[Endpoint]:
    """The endpoint addresses whose TCP connections the node hands to the proxy unchanged
    (PASSTHROUGH services: the connection goes where the client sent it). A PASSTHROUGH UDP
    port's datagrams to its endpoints are not handed to the proxy: they go straight there."""
    return {
        endpoint
        for frontend in found
        if frontend.policy is Policy.PASSTHROUGH and frontend.protocol == "TCP"
        for endpoint in frontend.endpoints
    }
