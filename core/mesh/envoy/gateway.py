"""A Gateway proxy's listeners: one per server port of the Gateways that select it, servers of
a port merged as Istio merges them; HTTP servers' virtual hosts, terminated TLS chains by SNI,
PASSTHROUGH and AUTO_PASSTHROUGH (SNI-DNAT clusters) servers, and TCP servers.

Why this exists: which VirtualServices bind to which server and for which hosts is the
gateway's own logic, apart from the sidecar's; it builds on the shared routes, TLS and
listener pieces.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from core.mesh import checks
from core.mesh.envoy.listeners import (
    _address,
    _distinct,
    _http_listener,
    _tcp_proxy,
    _tls_inspector,
)
from core.mesh.envoy.model import MeshService, MeshState, Proxy, _bound_to
from core.mesh.envoy.names import (
    BLACKHOLE_CLUSTER,
    LISTENER_TYPE,
    SNI_CLUSTER_FILTER,
    SNI_CLUSTER_TYPE,
)
from core.mesh.envoy.route_configs import _route_configuration
from core.mesh.envoy.routes import _Context, _route_targets, envoy_routes
from core.mesh.envoy.secrets import _credential_secrets
from core.mesh.envoy.tls import _server_tls
from core.mesh.kinds.common import hosts_match
from core.mesh.kinds.gateway import Server
from core.mesh.kinds.objects import Gateway, VirtualService

TCP_SERVER_PROTOCOLS: Final = frozenset({"tcp", "mongo", "redis", "mysql"})
"""Gateway server protocols proxied as plain TCP (Istio has no filter of its own for them)."""
TERMINATED_MODES: Final = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"})
"""Server TLS modes whose connections the gateway terminates."""


def _mine(state: MeshState, proxy: Proxy) -> list[Gateway]:
    """The Gateways whose selector the gateway proxy's labels match, oldest name first."""
    return sorted(
        (g for g in state.gateways
         if g.spec.selector
         and all(proxy.labels.get(k) == v for k, v in g.spec.selector.items())),
        key=lambda g: (g.metadata.namespace or "default", g.metadata.name or ""),
    )  # fmt: skip


def _sni_hosts(hosts: Sequence[str]) -> list[str]:
    """A server's hosts as SNI names (``ns/`` dropped); none when one is ``*`` (any name)."""
    names = sorted({h.rsplit("/", 1)[-1] for h in hosts})
    return [] if "*" in names else names


def _host_subset(a: str, b: str) -> bool:
    """``host.Name.SubsetOf``: every name ``a`` covers, ``b`` covers too."""
    return b == "*" or a == b or (b.startswith("*") and a.endswith(b[1:]))


def _bound_hosts(vs: VirtualService, gateway: Gateway, server: Server) -> list[str]:
    """The names a VirtualService bound to ``gateway`` serves on ``server``, as Istio picks
    them (``pickMatchingGatewayHosts``): each of its hosts that matches one of the server's a
    VirtualService of its namespace may take (``ns/host``: only VirtualServices of that
    namespace, ``.`` the gateway's, ``*`` any) — itself when the server's host covers it,
    else the server's narrower host (a VirtualService for ``*`` on a server for
    ``a.example.com`` serves ``a.example.com`` only). None: it does not apply there."""
    vs_ns = vs.metadata.namespace or "default"
    gw_ns = gateway.metadata.namespace or "default"
    allowed = []
    for entry in server.hosts:
        namespace, slash, host = entry.rpartition("/")
        if slash and namespace not in ("*", vs_ns) and not (namespace == "." and vs_ns == gw_ns):
            continue
        allowed.append(host)
    found: list[str] = []
    for vs_host in vs.spec.hosts:
        matching = [h for h in allowed if hosts_match(vs_host, h)]
        if any(_host_subset(vs_host, h) for h in matching):
            matching = [vs_host]
        found += [h for h in matching if h not in found]
    return found


def _server_binds(vs: VirtualService, gateway: Gateway, server: Server) -> bool:
    """Whether a VirtualService bound to ``gateway`` applies to ``server`` (one of its hosts
    matches one of the server's: :func:`_bound_hosts`)."""
    return bool(_bound_hosts(vs, gateway, server))


def _bound(state: MeshState, gateway: Gateway, server: Server) -> list[VirtualService]:
    return [
        vs
        for vs in sorted(
            state.virtual_services,
            key=lambda v: (v.metadata.namespace or "", v.metadata.name or ""),
        )
        if _bound_to(vs, gateway) and _server_binds(vs, gateway, server)
    ]


def _gateway_tcp_targets(
    state: MeshState,
    gateway: Gateway,
    server: Server,
    port: int,
    ctx_services: Mapping[str, MeshService],
) -> list[tuple[str, int]]:
    """The first ``tcp`` route of a VirtualService bound to the server that matches the port
    (Istio's order: the routes of the oldest VirtualService first)."""
    for vs in _bound(state, gateway, server):
        ctx = _Context(namespace=vs.metadata.namespace or "default", port=port,
                       services=ctx_services, rules=state.rules_by_host)  # fmt: skip
        for tcp in vs.spec.tcp:
            if tcp.match and not any(not m.port or m.port == port for m in tcp.match):
                continue
            return _route_targets(tcp.route, ctx)
    return []


def _passthrough_chains(
    state: MeshState,
    gateway: Gateway,
    server: Server,
    port: int,
    ctx_services: Mapping[str, MeshService],
) -> list[dict[str, Any]]:
    """A PASSTHROUGH server's chains: one per ``tls`` route match of the VirtualServices bound
    to it, picked by the client's SNI (within the server's hosts), proxied unterminated."""
    chains = []
    allowed = _sni_hosts(server.hosts)
    for vs in _bound(state, gateway, server):
        ctx = _Context(namespace=vs.metadata.namespace or "default", port=port,
                       services=ctx_services, rules=state.rules_by_host)  # fmt: skip
        for index, route in enumerate(vs.spec.tls):
            for number, match in enumerate(route.match):
                if match.port and match.port != port:
                    continue
                names = [
                    n for n in match.sni_hosts
                    if not allowed or any(hosts_match(n, a) for a in allowed)
                ]  # fmt: skip
                if not names:
                    continue
                name = f"{vs.metadata.namespace}/{vs.metadata.name}.tls.{index}.{number}"
                chains.append({
                    "name": name,
                    "filter_chain_match": {"server_names": sorted(names),
                                           "transport_protocol": "tls"},
                    "filters": [_tcp_proxy(name, _route_targets(route.route, ctx))],
                })  # fmt: skip
    return chains


def _gateway_vhosts(
    state: MeshState,
    servers: Sequence[tuple[Gateway, Server]],
    port: int,
    ctx_services: Mapping[str, MeshService],
) -> list[dict[str, Any]]:
    """The virtual hosts of one route configuration: each VirtualService bound to a server's
    Gateway, for the names it serves on those servers (:func:`_bound_hosts`: a server's
    hosts restrict what binds to it, plain HTTP as HTTPS); ``httpsRedirect`` on a server that
    binds it answers plain HTTP with a 301 to https. A name two VirtualServices serve goes to
    the first (Envoy refuses a domain twice in one configuration)."""
    hosts = []
    taken: set[str] = set()
    for vs in state.virtual_services:
        names: list[str] = []
        redirect = False
        for gateway, server in servers:
            if not _bound_to(vs, gateway):
                continue
            picked = _bound_hosts(vs, gateway, server)
            if picked and server.tls is not None and server.tls.https_redirect:
                redirect = True
            names += [n for n in picked if n not in names and n not in taken]
        if not names:
            continue
        taken.update(names)
        namespace = vs.metadata.namespace or "default"
        ctx = _Context(namespace=namespace, port=port, services=ctx_services,
                       rules=state.rules_by_host)  # fmt: skip
        vs_routes = [r for i, route in enumerate(vs.spec.http) for r in envoy_routes(route, ctx, i)]
        domains = [d for name in names for d in (name, f"{name}:{port}")]
        host: dict[str, Any] = {"name": f"{namespace}/{vs.metadata.name}:{port}",
                                "domains": domains, "routes": vs_routes}  # fmt: skip
        if redirect:
            host["require_tls"] = "ALL"
        hosts.append(host)
    return hosts


def _hcm_chain(route_name: str, *, name: str = "") -> dict[str, Any]:
    chain = _http_listener("", "0.0.0.0", 0, route_name, route_name)["filter_chains"][0]
    if name:
        chain["name"] = name
    return chain


def _is_tls_server(server: Server) -> bool:
    """Istio's ``IsTLSServer``: TLS settings on a protocol other than HTTP's (HTTPS, TLS)."""
    protocol = checks.protocol_of(server.port.protocol if server.port else "") or "http"
    return server.tls is not None and protocol not in checks.HTTP_PROTOCOLS


def _port_servers(servers: Sequence[tuple[Gateway, Server]]) -> list[tuple[Gateway, Server]]:
    """One port's servers as Istio merges them (``mergeGateways``, oldest Gateway first): the
    first server decides what the port is. Plain-text HTTP servers merge with each other (one
    route configuration), TLS servers with each other (chains told apart by SNI); any other
    server on the port — an HTTPS or TLS server after an HTTP one, an HTTP server after a TLS
    one (even with ``httpsRedirect``), anything after a TCP server — is skipped, as Istio
    skips it ("conflict with existing server", counted in ``pilot_total_rejected_configs``;
    the Gateway itself is not refused)."""
    kept: list[tuple[Gateway, Server]] = []
    for gateway, server in servers:
        if kept:
            first = kept[0][1]
            if _is_tls_server(first) != _is_tls_server(server):
                continue
            http = checks.HTTP_PROTOCOLS
            if not _is_tls_server(first) and not (
                _protocol(first) in http and _protocol(server) in http
            ):
                continue
        kept.append((gateway, server))
    return kept


def _protocol(server: Server) -> str:
    return checks.protocol_of(server.port.protocol if server.port else "") or "http"


def auto_passthrough_hosts(state: MeshState, proxy: Proxy) -> tuple[str, ...]:
    """The hosts of a gateway proxy's AUTO_PASSTHROUGH servers, ``ns/`` dropped (Istio's
    ``AutoPassthroughSNIHosts``): it gets the SNI-DNAT clusters of the services they match;
    none when it has no such server."""
    if proxy.kind != "gateway":
        return ()
    return tuple(sorted({
        host.rsplit("/", 1)[-1]
        for gateway in _mine(state, proxy)
        for server in gateway.spec.servers
        if server.tls is not None and server.tls.mode == "AUTO_PASSTHROUGH"
        for host in server.hosts
    }))  # fmt: skip


def sni_dnat_clusters(
    clusters: Sequence[Mapping[str, Any]], hosts: Sequence[str]
) -> list[dict[str, Any]]:
    """Istio's SNI-DNAT clusters for AUTO_PASSTHROUGH: each outbound cluster of a service
    ``hosts`` match again under the name a mesh client sends as SNI
    (``outbound_.<port>_.<subset>_.<host>``), without TLS or HTTP options of its own — the
    client's mutual TLS passes through to the workload — and with the same endpoints (EDS by
    the outbound cluster's name)."""
    made = []
    for cluster in clusters:
        parts = cluster["name"].split("|")  # outbound|<port>|<subset>|<host>
        if len(parts) != 4 or parts[0] != "outbound":
            continue
        if not any(hosts_match(parts[3], h) for h in hosts):
            continue
        dnat = {
            key: copy.deepcopy(value)
            for key, value in cluster.items()
            if key not in ("transport_socket", "transport_socket_matches",
                           "typed_extension_protocol_options")
        }  # fmt: skip
        dnat["name"] = cluster["name"].replace("|", "_.")
        if "load_assignment" in dnat:
            dnat["load_assignment"]["cluster_name"] = dnat["name"]
        made.append(dnat)
    return made


def _auto_passthrough_chain(server: Server, name: str) -> dict[str, Any]:
    """An AUTO_PASSTHROUGH server's chain: TLS with an SNI among its hosts is proxied,
    unterminated, to the cluster the SNI names (Envoy's ``sni_cluster``); no VirtualService
    is involved. A name no cluster has closes the connection."""
    match: dict[str, Any] = {"transport_protocol": "tls"}
    if sni := _sni_hosts(server.hosts):
        match["server_names"] = sni
    return {
        "name": name,
        "filter_chain_match": match,
        "filters": [
            {"name": SNI_CLUSTER_FILTER, "typed_config": {"@type": SNI_CLUSTER_TYPE}},
            _tcp_proxy(name, [(BLACKHOLE_CLUSTER, 0)]),
        ],
    }


def _gateway_listeners(
    state: MeshState, proxy: Proxy, by_host: Mapping[str, MeshService]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """A gateway proxy's listeners, one per port its Gateways' servers use, the servers of a
    port merged as Istio merges them (:func:`_port_servers`): plain HTTP servers share one
    route configuration (``http.<port>``; each server's hosts restrict which bound
    VirtualServices it serves; ``httpsRedirect`` answers 301 to https); HTTPS servers that
    terminate TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL) get a filter chain each,
    picked by the client's SNI among the server's hosts, with its certificate (its
    ``credentialName`` over SDS, its files, or for ISTIO_MUTUAL the workload's) and route
    configuration ``https.<port>.<port name>.<gateway>.<namespace>``; a TLS server that
    terminates proxies its ``tcp`` routes; PASSTHROUGH servers a chain per ``tls`` route's SNI
    hosts, the connection proxied unterminated; AUTO_PASSTHROUGH servers one chain to the
    cluster the SNI names; TCP servers (also MONGO, REDIS, MYSQL) a ``tcp_proxy`` of their
    ``tcp`` routes. Also the SDS secrets of the credentials."""
    listeners: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    mine = _mine(state, proxy)
    secrets = _credential_secrets(state, mine)
    by_port: dict[int, list[tuple[Gateway, Server]]] = {}
    for gateway in mine:
        for server in gateway.spec.servers:
            assert server.port is not None
            by_port.setdefault(server.port.number, []).append((gateway, server))
    for port, all_servers in sorted(by_port.items()):
        servers = _port_servers(all_servers)
        chains: list[dict[str, Any]] = []
        inspect = False
        plain = [(g, s) for g, s in servers if _protocol(s) in checks.HTTP_PROTOCOLS]
        if plain:
            chains.append(_hcm_chain(f"http.{port}"))
            routes.append(_route_configuration(
                f"http.{port}", _gateway_vhosts(state, plain, port, by_host)
            ))  # fmt: skip
        for gateway, server in servers:
            assert server.port is not None
            protocol = _protocol(server)
            gw_name = f"{gateway.metadata.name}.{gateway.metadata.namespace or 'default'}"
            if protocol in checks.HTTP_PROTOCOLS:
                continue
            if protocol in TCP_SERVER_PROTOCOLS:
                targets = _gateway_tcp_targets(state, gateway, server, port, by_host)
                if targets:
                    chains.append({"name": f"tcp.{port}.{server.port.name}.{gw_name}",
                                   "filters": [_tcp_proxy(f"tcp.{port}", targets)]})  # fmt: skip
            elif server.tls is not None and server.tls.mode == "AUTO_PASSTHROUGH":
                inspect = True
                name = f"auto_passthrough.{port}.{server.port.name}.{gw_name}"
                chains.append(_auto_passthrough_chain(server, name))
            elif server.tls is not None and server.tls.mode == "PASSTHROUGH":
                inspect = True
                chains += _passthrough_chains(state, gateway, server, port, by_host)
            elif server.tls is not None and server.tls.mode in TERMINATED_MODES:
                socket = _server_tls(server, secrets)
                if socket is None:
                    continue  # its credential is missing (istioctl analyze says so)
                inspect = True
                name = f"https.{port}.{server.port.name}.{gw_name}"
                if protocol == "https":
                    chain = _hcm_chain(name, name=name)
                    routes.append(_route_configuration(
                        name, _gateway_vhosts(state, [(gateway, server)], port, by_host)
                    ))  # fmt: skip
                else:
                    targets = _gateway_tcp_targets(state, gateway, server, port, by_host)
                    if not targets:
                        continue
                    chain = {"name": name, "filters": [_tcp_proxy(name, targets)]}
                match: dict[str, Any] = {"transport_protocol": "tls"}
                if sni := _sni_hosts(server.hosts):
                    match["server_names"] = sni
                chain["filter_chain_match"] = match
                chain["transport_socket"] = socket
                chains.append(chain)
        chains = _distinct(chains)
        if not chains:
            continue
        listener: dict[str, Any] = {
            "@type": LISTENER_TYPE,
            "name": f"{proxy.bind_address}_{port}",
            "address": _address(proxy.bind_address, port),
            "filter_chains": chains,
        }
        if inspect:
            listener["listener_filters"] = [_tls_inspector()]
        listeners.append(listener)
    return listeners, sorted(routes, key=lambda r: r["name"]), list(secrets.values())
