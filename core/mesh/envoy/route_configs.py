"""Virtual hosts and route configurations (RDS): each service's virtual host on an HTTP port
(its domains, the VirtualServices' routes or the default one), recorded with what it read so a
later build can take it over, and the route configurations that hold them.

Why this exists: sidecars share one route configuration per HTTP port and the shared build
keeps their virtual hosts between pushes; what a host depends on (``_VirtualHost.still``) sits
next to how it is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.mesh.envoy.model import MeshService, MeshState
from core.mesh.envoy.names import DIRECT_RESPONSE_BODY_MAX, DOMAIN, ROUTE_TYPE
from core.mesh.envoy.routes import _Context, _default_route, envoy_routes
from core.mesh.kinds.objects import VirtualService


def _domains(service: MeshService, port: int | None) -> list[str]:
    """Every name a client may use for the service (Istio's list: FQDN, short names within the
    namespace, the ClusterIP), with and without the port (none: without; a sidecar's route
    configuration ignores the port when matching, :func:`_sidecar_route_configuration`)."""
    names = [service.host]
    if service.host.endswith(f".svc.{DOMAIN}"):
        short = service.host.removesuffix(f".svc.{DOMAIN}")
        names += [f"{short}.svc", short, short.split(".", 1)[0]]
    if service.address:
        names.append(service.address)
    if port is None:
        return names
    return [d for name in names for d in (name, f"{name}:{port}")]


def _virtual_hosts_for_port(
    port: int,
    services: Sequence[MeshService],
    state: MeshState,
    ctx_services: Mapping[str, MeshService],
) -> list[dict[str, Any]]:
    return [
        _virtual_host(service, port, state, ctx_services).host
        for service in services
        if _serves_http(service, port)
    ]


def _serves_http(service: MeshService, port: int) -> bool:
    return any(p.number == port and p.protocol in ("http", "auto") for p in service.ports)


class _Seen(Mapping[str, Any]):
    """A mapping that remembers which keys were looked up (what a virtual host read of the
    state's DestinationRules and services), so a later build can tell whether it is still
    what that state gives."""

    def __init__(self, base: Mapping[str, Any]) -> None:
        self.base = base
        self.seen: dict[str, Any] = {}
        self.whole = False

    def __getitem__(self, key: str) -> Any:
        value = self.base[key]
        self.seen[key] = value
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self.base.get(key)
        self.seen[key] = value
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        found = key in self.base
        if isinstance(key, str):
            self.seen[key] = self.base.get(key)
        return found

    def __iter__(self) -> Any:
        self.whole = True
        return iter(self.base)

    def __len__(self) -> int:
        self.whole = True
        return len(self.base)


@dataclass(frozen=True)
class _VirtualHost:
    """One service's virtual host on a port and everything of the state it was made from: a
    later state giving it the same service, VirtualService and looked-up rules and services
    gives it the same host (a VirtualService change rebuilds only its hosts')."""

    host: dict[str, Any]
    service: MeshService
    virtual_service: VirtualService | None
    rules: Mapping[str, Any]
    services: Mapping[str, Any]
    whole: bool
    direct: bool
    """Whether a route of the host answers directly (its configuration then allows the
    bodies' size): recorded, not looked for in 1,000 hosts' routes on every push."""

    def still(self, service: MeshService, state: MeshState, by_host: Mapping[str, Any]) -> bool:
        # Asked of every host (1,000) on every push that takes hosts over: loops, not
        # generators (each all() made one per host).
        if self.whole or not _same(self.service, service):
            return False
        if not _same(self.virtual_service, state.mesh_virtual_services.get(service.host)):
            return False
        rules = state.rules_by_host
        for key, value in self.rules.items():
            if not _same(value, rules.get(key)):
                return False
        for key, value in self.services.items():  # noqa: SIM110 (see above)
            if not _same(value, by_host.get(key)):
                return False
        return True


def _same(a: Any, b: Any) -> bool:
    # The read model parses an object once per version: identity is the usual answer.
    return a is b or a == b


def _virtual_host(
    service: MeshService,
    port: int,
    state: MeshState,
    ctx_services: Mapping[str, MeshService],
) -> _VirtualHost:
    rules, services = _Seen(state.rules_by_host), _Seen(ctx_services)
    routes: list[dict[str, Any]] = []
    vs = state.mesh_virtual_services.get(service.host)
    if vs is not None:
        vs_ctx = _Context(namespace=vs.metadata.namespace or "default", port=port,
                          services=services, rules=rules)  # fmt: skip
        for index, route in enumerate(vs.spec.http):
            if any(m.port and m.port != port for m in route.match):
                continue
            routes += envoy_routes(route, vs_ctx, index)
    if not routes:
        ctx = _Context(namespace=service.namespace, port=port, services=services, rules=rules)
        routes = [_default_route(service, port, ctx)]
    host = {"name": f"{service.host}:{port}", "domains": _domains(service, None), "routes": routes}
    return _VirtualHost(host, service, vs, rules.seen, services.seen,
                        rules.whole or services.whole,
                        any("direct_response" in r for r in routes))  # fmt: skip


def _route_configuration(
    name: str, virtual_hosts: list[dict[str, Any]], *, direct: bool | None = None
) -> dict[str, Any]:
    """``direct``: whether a route of ``virtual_hosts`` answers directly, when the caller
    knows (None: looked for in every route)."""
    config = {
        "@type": ROUTE_TYPE,
        "name": name,
        "virtual_hosts": virtual_hosts,
        "validate_clusters": False,
    }
    if direct is None:
        _allow_direct_bodies(config)
    elif direct:
        config["max_direct_response_body_size_bytes"] = DIRECT_RESPONSE_BODY_MAX
    return config


def _sidecar_route_configuration(
    name: str, virtual_hosts: list[dict[str, Any]], *, direct: bool | None = None
) -> dict[str, Any]:
    """A sidecar's route configuration for one port: its listener serves only that port, so
    the port of a ``Host: web:8080`` says nothing and Envoy ignores it when picking the virtual
    host (``ignore_port_in_host_matching``; the header goes upstream unchanged, unlike the
    connection manager's ``strip_any_host_port``). Each host then lists each name once, not
    with its ``:port`` twin: half the domains Envoy indexes on every route push."""
    config = _route_configuration(name, virtual_hosts, direct=direct)
    return {**config, "ignore_port_in_host_matching": True}


def _allow_direct_bodies(config: dict[str, Any]) -> None:
    if any("direct_response" in r for vh in config["virtual_hosts"] for r in vh["routes"]):
        config["max_direct_response_body_size_bytes"] = DIRECT_RESPONSE_BODY_MAX
