"""A sidecar's listeners kept from one build to the next, with what they were made from.

Why this exists: every proxy has listeners of its own (they name its bind address), so a
push that builds listeners builds them once per proxy — with 1,000 services, ~1-2 ms each
(the sniffed port's chains walk every service). A VirtualService change used to rebuild them
for every proxy although an HTTP-only change alters none: a sidecar's HTTP routes go through
RDS/VHDS, and its listeners read of the VirtualServices only their ``tcp`` and ``tls``
routes (the ``tcp_proxy`` targets of TCP and sniffed ports, the SNI chains of TLS ports).
:class:`~core.mesh.envoy.build.MeshBuild` keeps each proxy's listeners with the inputs they were
made from (:class:`ListenerPart`); a later build takes them over when those inputs are
still what its state gives, so a proxy gets exactly the listeners a build of its own would
make (``tests/unit/test_mesh_listener_parts.py`` compares them on varied changes).

What a sidecar's listeners read (``core.mesh.envoy.sidecar._sidecar_listeners``): the proxy's bind
address, capture and on-demand hosts, and a captured sidecar's inbound mTLS (its workload's
PeerAuthentication) — :func:`listener_key`; the services (their ports, addresses and
protocols, and the hosts routes name); the VirtualServices' TCP and TLS routes
(:func:`listener_routes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from core.mesh.kinds.objects import VirtualService
from core.mesh.peerauth import InboundMtls

LISTENER_ROUNDS_HELD: Final = 32
"""How many builds a proxy's listeners are kept for without being asked for: a proxy gone
(a pod deleted, a new ReplicaSet's labels) leaves its listeners behind, and pushes that
build no listeners (EndpointSlice changes) must not lose the live proxies' ones."""

ListenerRoutes = tuple[tuple[Any, ...], ...]
ListenerKey = tuple[Any, ...]


def listener_key(
    bind_address: str, captured: bool, on_demand: bool, inbound: InboundMtls | None
) -> ListenerKey:
    """What of a sidecar its listeners depend on: the address they bind, whether its traffic
    is captured (``virtualOutbound``, ports not bound) with its inbound mTLS (``inbound``,
    None when not captured), and whether it asks for hosts on demand. Not its namespace,
    labels or locality (those are the handler's :func:`~core.mesh.envoy.build.part_key`, which
    other types need): ten captured sidecars of ten Deployments share one build."""
    mtls = None if inbound is None else (inbound.mode, tuple(sorted(inbound.ports.items())))
    return (bind_address, captured, on_demand, mtls)


def listener_routes(virtual_services: Sequence[VirtualService]) -> ListenerRoutes:
    """What of ``virtual_services`` (delegates merged) a sidecar's listeners can read: each
    one with ``tcp`` or ``tls`` routes, in the state's order (the first whose TCP route
    matches a port wins), with the fields that decide whether and how it applies — its
    namespace and name (destinations' namespace, chains' names and order), gateways (bound
    to the mesh or not), hosts, and the routes themselves. A VirtualService with neither
    applies to no listener (HTTP routes are RDS's), so changing it leaves this equal. Wider
    than what is read (a gateway-only VirtualService is listed too): equal inputs must mean
    equal listeners, unequal ones only cost a rebuild."""
    return tuple(
        (
            vs.metadata.namespace,
            vs.metadata.name,
            tuple(vs.spec.gateways),
            tuple(vs.spec.hosts),
            tuple(vs.spec.tcp),
            tuple(vs.spec.tls),
        )
        for vs in virtual_services
        if vs.spec.tcp or vs.spec.tls
    )


@dataclass(frozen=True)
class ListenerPart:
    """One :func:`listener_key`'s listeners and the inputs of the state they were made from."""

    listeners: list[dict[str, Any]]
    services: object
    """The build's services list they were made from (a build after a Service or
    ServiceEntry change makes its own list; others take the very list over)."""
    routes: ListenerRoutes
    inbound: InboundMtls | None
    """A captured sidecar's inbound mTLS (its ``virtualInbound``), else None."""
    used: int
    """The build round that last made or took them over."""

    def still(self, services: object, routes: ListenerRoutes, inbound: InboundMtls | None) -> bool:
        """Whether a build with these inputs makes these listeners."""
        return self.services is services and self.routes == routes and self.inbound == inbound
