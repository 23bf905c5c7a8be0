"""A sidecar's listeners: the virtual listeners per port (HTTP by route configuration, TCP by
``tcp_proxy``, sniffed ports with both chains, TLS ports by SNI), and, once the pod's traffic is
captured, ``virtualOutbound`` / ``virtualInbound`` (inbound mTLS per PeerAuthentication) with
the pass-through and black-hole clusters.

Why this exists: the capture design (Istio's ports 15001/15006, original destination,
pass-through) is the sidecar's alone; the injector and the agent read its ports from here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from core.mesh.envoy.listeners import (
    _address,
    _distinct,
    _http_listener,
    _tcp_listener,
    _tcp_proxy,
    _tls_inspector,
)
from core.mesh.envoy.model import MeshService, MeshState, Proxy, _bound_to, _vs_hosts
from core.mesh.envoy.names import (
    BLACKHOLE_CLUSTER,
    CLUSTER_TYPE,
    HCM_TYPE,
    HTTP_INSPECTOR_FILTER,
    HTTP_INSPECTOR_TYPE,
    INBOUND_PASSTHROUGH_CLUSTER,
    LISTENER_TYPE,
    MESH_ALPN,
    ORIGINAL_DST_FILTER,
    ORIGINAL_DST_TYPE,
    PASSTHROUGH_CLUSTER,
    TCP_PROXY_TYPE,
    TLS_INSPECTOR_TYPE,
    cluster_name,
)
from core.mesh.envoy.route_configs import _sidecar_route_configuration, _virtual_hosts_for_port
from core.mesh.envoy.routes import _Context, _route_targets
from core.mesh.envoy.tls import downstream_mtls
from core.mesh.peerauth import InboundMtls, Mode
from core.mesh.vhds import ON_DEMAND_FILTER, ON_DEMAND_TYPE

OUTBOUND_PORT: Final = 15001
"""Where a captured pod's outbound TCP is redirected (Istio's ``virtualOutbound``)."""
OUTBOUND_LISTENER: Final = "virtualOutbound"
INBOUND_PORT: Final = 15006
"""Where a captured pod's inbound TCP is redirected (Istio's ``virtualInbound``)."""
INBOUND_LISTENER: Final = "virtualInbound"
SNIFFED: Final = ["http/1.1", "h2c"]
"""What Envoy's ``http_inspector`` reports for a connection that speaks HTTP in clear."""


def _tcp_targets(
    service: MeshService, port: int, state: MeshState, services: Mapping[str, MeshService]
) -> list[tuple[str, int]]:
    for vs in state.virtual_services:
        if not _bound_to(vs, None) or service.host not in _vs_hosts(vs):
            continue
        ctx = _Context(namespace=vs.metadata.namespace or "default", port=port,
                       services=services, rules=state.rules_by_host)  # fmt: skip
        for tcp in vs.spec.tcp:
            if tcp.match and not any(not m.port or m.port == port for m in tcp.match):
                continue
            return _route_targets(tcp.route, ctx)
    return [(cluster_name(service.host, port), 1)]


def _ask_on_demand(listeners: list[dict[str, Any]]) -> None:
    """Each HTTP connection manager of an on-demand sidecar's listeners (made for this proxy:
    changed in place) runs Envoy's ``on_demand`` filter first: a request no held virtual host
    matches asks for its host over VHDS and goes on once it came (the stream is created
    again, so CORS and fault injection see its route)."""
    for listener in listeners:
        for chain in listener.get("filter_chains") or ():
            for network in chain.get("filters") or ():
                manager = network.get("typed_config") or {}
                if manager.get("@type") != HCM_TYPE or "rds" not in manager:
                    continue
                if manager["http_filters"][0]["name"] == ON_DEMAND_FILTER:
                    continue  # a chain shared by sniffed services' chains: done once
                manager["http_filters"] = [
                    {"name": ON_DEMAND_FILTER, "typed_config": {"@type": ON_DEMAND_TYPE}},
                    *manager["http_filters"],
                ]


def _outbound_listener() -> dict[str, Any]:
    """Istio's ``virtualOutbound``: the one port a captured pod's outbound TCP is redirected
    to. ``use_original_dst`` hands each connection to the listener of the address it was
    sent to (``<clusterIP>_<port>`` for TCP, else the port's ``0.0.0.0_<port>`` virtual
    listener, which binds no port); a connection none takes goes on unchanged."""
    return {
        "@type": LISTENER_TYPE,
        "name": OUTBOUND_LISTENER,
        "address": _address("0.0.0.0", OUTBOUND_PORT),
        "use_original_dst": True,
        "filter_chains": [_tcp_chain(BLACKHOLE_CLUSTER, port=OUTBOUND_PORT)],
        "default_filter_chain": _tcp_chain(PASSTHROUGH_CLUSTER),
    }


def _inbound_listener(mtls: InboundMtls | None = None) -> dict[str, Any]:
    """Istio's ``virtualInbound``: where a captured pod's inbound TCP is redirected. Its
    original destination (the pod's address and the application's port) is restored by the
    ``original_dst`` listener filter and the connection is passed on there, from Envoy, once
    the workload's PeerAuthentication (``mtls``) is satisfied: the ``tls_inspector`` tells
    mesh TLS (ALPN ``istio``) from anything else; STRICT has chains for mesh TLS only (a
    plain-text connection matches none and is closed), PERMISSIVE for both, DISABLE a plain
    pass-through. Port-level modes get chains of their own (Envoy matches the destination
    port first)."""
    mtls = mtls or InboundMtls()
    chains = [_tcp_chain(BLACKHOLE_CLUSTER, port=INBOUND_PORT)]
    for port, mode in sorted(mtls.ports.items()):
        chains += _inbound_chains(mode, port=port)
    chains += _inbound_chains(mtls.mode)
    return {
        "@type": LISTENER_TYPE,
        "name": INBOUND_LISTENER,
        "address": _address("0.0.0.0", INBOUND_PORT),
        "listener_filters": [
            {"name": ORIGINAL_DST_FILTER, "typed_config": {"@type": ORIGINAL_DST_TYPE}},
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": TLS_INSPECTOR_TYPE},
            },
        ],
        # A server-first protocol's client sends nothing for the inspector to read.
        "continue_on_listener_filters_timeout": True,
        "filter_chains": chains,
    }


def _inbound_chains(mode: Mode, *, port: int | None = None) -> list[dict[str, Any]]:
    suffix = f"_{port}" if port is not None else ""
    chains: list[dict[str, Any]] = []
    if mode in ("STRICT", "PERMISSIVE"):
        secured = _tcp_chain(INBOUND_PASSTHROUGH_CLUSTER, port=port)
        secured["name"] = f"inbound-mtls{suffix}"
        secured.setdefault("filter_chain_match", {}).update(
            {"transport_protocol": "tls", "application_protocols": [MESH_ALPN]}
        )
        secured["transport_socket"] = downstream_mtls()
        chains.append(secured)
    if mode in ("PERMISSIVE", "DISABLE"):
        plain = _tcp_chain(INBOUND_PASSTHROUGH_CLUSTER, port=port)
        plain["name"] = f"inbound-plaintext{suffix}"
        chains.append(plain)
    return chains


def _tcp_chain(cluster: str, *, port: int | None = None) -> dict[str, Any]:
    """A filter chain proxying to ``cluster``; with ``port``, only for connections to it."""
    proxy = {"@type": TCP_PROXY_TYPE, "stat_prefix": cluster, "cluster": cluster}
    chain: dict[str, Any] = {
        "name": cluster,
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}],
    }
    if port is not None:
        chain["filter_chain_match"] = {"destination_port": port}
    return chain


def _allow_any() -> dict[str, Any]:
    """Istio's ``allow_any`` virtual host (outbound traffic policy ALLOW_ANY): an HTTP request
    for a host no service has goes on to the address the application connected to."""
    return {
        "name": "allow_any",
        "domains": ["*"],
        "routes": [{"name": "allow_any", "match": {"prefix": "/"},
                    "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s"}}],
    }  # fmt: skip


def _passthrough_cluster(name: str) -> dict[str, Any]:
    return {
        "@type": CLUSTER_TYPE,
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "10s",
    }


def _http_ports(services: Sequence[MeshService]) -> list[int]:
    return sorted({p.number for s in services for p in s.ports if p.protocol in ("http", "auto")})


def _sidecar_routes(
    state: MeshState, services: Sequence[MeshService], by_host: Mapping[str, MeshService]
) -> list[dict[str, Any]]:
    """A sidecar's route configurations, one per HTTP port (named by it): the same for every
    sidecar (:class:`MeshBuild` makes them once)."""
    return [
        _sidecar_route_configuration(
            str(port), _virtual_hosts_for_port(port, services, state, by_host)
        )
        for port in _http_ports(services)
    ]


def _sidecar_listeners(
    state: MeshState,
    proxy: Proxy,
    services: Sequence[MeshService],
    by_host: Mapping[str, MeshService],
    *,
    http_ports: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """A sidecar's listeners: one per HTTP port (whose routes are :func:`_sidecar_routes`'
    configuration of that port) and one per TCP service port. ``http_ports``: the services'
    (:func:`_http_ports`), when the caller has them."""
    listeners: list[dict[str, Any]] = []
    if http_ports is None:
        http_ports = _http_ports(services)
    for port in http_ports:
        listener = _http_listener(f"{proxy.bind_address}_{port}", proxy.bind_address, port,
                                  str(port), f"outbound_{proxy.bind_address}_{port}")  # fmt: skip
        _add_sniffing(listener, port, services, state, proxy, by_host)
        listeners.append(listener)
    for service in services:
        for port in service.ports:
            if port.protocol != "tcp" or not service.address:
                continue
            if port.number in http_ports:
                continue  # the port's virtual listener is HTTP; see the module docstring
            address = service.address if proxy.bind_address == "0.0.0.0" else proxy.bind_address
            name = f"{address}_{port.number}"
            if any(existing["name"] == name for existing in listeners):
                continue
            targets = _tcp_targets(service, port.number, state, by_host)
            listener = _tcp_listener(name, address, port.number, targets)
            if port.tls and (chains := _sidecar_tls_chains(service, port.number, state, by_host)):
                # The service's own cluster stays the default for any other name.
                listener["filter_chains"] = [*chains, *listener["filter_chains"]]
                listener["listener_filters"] = [_tls_inspector()]
            listeners.append(listener)
    return listeners


def _sidecar_tls_chains(
    service: MeshService, port: int, state: MeshState, services: Mapping[str, MeshService]
) -> list[dict[str, Any]]:
    """A TLS service port's chains from the ``tls`` routes of the first VirtualService bound
    to the mesh for its host: each match's SNI hosts (on this port) to its destinations."""
    for vs in sorted(
        state.virtual_services, key=lambda v: (v.metadata.namespace or "", v.metadata.name or "")
    ):
        if not _bound_to(vs, None) or service.host not in _vs_hosts(vs) or not vs.spec.tls:
            continue
        ctx = _Context(namespace=vs.metadata.namespace or "default", port=port,
                       services=services, rules=state.rules_by_host)  # fmt: skip
        chains = []
        for index, route in enumerate(vs.spec.tls):
            for number, match in enumerate(route.match):
                if match.port and match.port != port:
                    continue
                name = f"{vs.metadata.namespace}/{vs.metadata.name}.tls.{index}.{number}"
                chains.append({
                    "name": name,
                    "filter_chain_match": {"server_names": sorted(match.sni_hosts),
                                           "transport_protocol": "tls"},
                    "filters": [_tcp_proxy(name, _route_targets(route.route, ctx))],
                })  # fmt: skip
        return _distinct(chains)
    return []


def _add_sniffing(
    listener: dict[str, Any],
    port: int,
    services: Sequence[MeshService],
    state: MeshState,
    proxy: Proxy,
    by_host: Mapping[str, MeshService],
) -> None:
    """Istio's protocol sniffing for the services whose ``port`` names no protocol: Envoy's
    ``http_inspector`` reads the first bytes, and each such service (told apart by the address
    the connection was sent to) gets two filter chains — HTTP/1.1 or h2c to the port's HTTP
    connection manager (its routes), anything else to a ``tcp_proxy`` to its cluster."""
    http_chain = listener["filter_chains"][0]
    chains: list[dict[str, Any]] = []
    seen: set[str] = set()
    for service in services:
        if not service.address or not any(
            p.number == port and p.protocol == "auto" for p in service.ports
        ):
            continue
        address = service.address if proxy.bind_address == "0.0.0.0" else proxy.bind_address
        if address in seen:
            continue  # one pair of chains per address (tests bind every service to loopback)
        seen.add(address)
        ranges = [{"address_prefix": address, "prefix_len": 32}]
        targets = _tcp_targets(service, port, state, by_host)
        tcp = _tcp_listener(f"{address}_{port}", address, port, targets)["filter_chains"][0]
        chains += [
            {"filter_chain_match": {"prefix_ranges": ranges, "application_protocols": SNIFFED},
             "filters": copy.deepcopy(http_chain["filters"])},
            {"filter_chain_match": {"prefix_ranges": ranges}, "filters": tcp["filters"]},
        ]  # fmt: skip
    if not chains:
        return
    listener["filter_chains"] = [*chains, http_chain]
    listener["listener_filters"] = [
        {"name": HTTP_INSPECTOR_FILTER, "typed_config": {"@type": HTTP_INSPECTOR_TYPE}}
    ]
    # A client that waits for the server to speak first (MySQL) is passed on as TCP once the
    # inspector gives up, instead of being closed.
    listener["continue_on_listener_filters_timeout"] = True
