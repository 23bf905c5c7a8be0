"""The build: one proxy's snapshot (:func:`build_snapshot`), and :class:`MeshBuild`, one state's
build shared by every proxy of a push.

Why this exists: a push serves many proxies from one state, so what depends only on the state
(services, clusters, endpoints per locality, the sidecars' route configurations) is made once
and each proxy's own parts per :func:`part_key`; a build also takes over from the last one
what a change cannot have altered. The resources themselves are made by the sibling modules
(the package's docstring says which holds what); this module decides what is made, when, and
what is shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Final

from core.mesh.envoy.clusters import build_clusters
from core.mesh.envoy.delegates import merge_delegates
from core.mesh.envoy.endpoints import build_endpoints, slices_by_service
from core.mesh.envoy.gateway import _gateway_listeners, auto_passthrough_hosts, sni_dnat_clusters
from core.mesh.envoy.model import MeshService, MeshState, Proxy, Snapshot, mesh_services
from core.mesh.envoy.names import (
    BLACKHOLE_CLUSTER,
    CLUSTER_TYPE,
    DIRECT_RESPONSE_BODY_MAX,
    ENDPOINT_TYPE,
    INBOUND_PASSTHROUGH_CLUSTER,
    LISTENER_TYPE,
    PASSTHROUGH_CLUSTER,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from core.mesh.envoy.route_configs import (
    _same,
    _serves_http,
    _sidecar_route_configuration,
    _virtual_host,
    _VirtualHost,
)
from core.mesh.envoy.secrets import rule_credentials, uses_credentials
from core.mesh.envoy.sidecar import (
    _allow_any,
    _ask_on_demand,
    _http_ports,
    _inbound_listener,
    _outbound_listener,
    _passthrough_cluster,
    _sidecar_listeners,
)
from core.mesh.envoy.tls import service_identities
from core.mesh.kinds.objects import DestinationRule
from core.mesh.listener_parts import (
    LISTENER_ROUNDS_HELD,
    ListenerKey,
    ListenerPart,
    ListenerRoutes,
    listener_key,
    listener_routes,
)
from core.mesh.vhds import (
    VHDS_SOURCE,
    VIRTUAL_HOST_TYPE,
    HostIndex,
    host_index,
    index_replaced,
    virtual_host_resource,
)


def build_snapshot(state: MeshState, proxy: Proxy) -> Snapshot:
    """Every resource ``proxy`` needs, from ``state``."""
    return MeshBuild(state).snapshot(proxy)


PartKey = tuple[Any, ...]


def part_key(proxy: Proxy, type_url: str) -> PartKey:
    """What of ``proxy`` its resources of ``type_url`` depend on: proxies with equal keys get
    equal resources of that type from one :class:`MeshBuild` (the handler builds and encodes
    each key's once per push). Endpoints depend on the proxy's locality (``localityLbSetting``
    prefers it), clusters on it too (a DNS cluster's endpoints are inline) and on whether its
    traffic is captured (the pass-through clusters); a sidecar's routes on its capture
    (``allow_any``) and on-demand hosts, a gateway's routes and credentials on the labels that
    select its Gateways, VHDS resources only on on-demand hosts; listeners on everything (the
    bind address, the workload's PeerAuthentication; a sidecar's are made once per
    :func:`~core.mesh.listener_parts.listener_key`, narrower, and shared by these keys).
    :meth:`MeshBuild.key` adds what the state makes proxy-specific: the DestinationRules whose
    ``workloadSelector`` picks a sidecar (their ``credentialName`` goes over SDS)."""
    captured = proxy.kind == "sidecar" and proxy.captured
    if type_url == ENDPOINT_TYPE:
        return (proxy.locality,)
    if type_url == CLUSTER_TYPE:
        return (proxy.kind == "gateway", captured, proxy.locality)
    on_demand = proxy.kind == "sidecar" and proxy.on_demand
    if type_url == ROUTE_TYPE:
        if proxy.kind == "gateway":
            return ("gateway", tuple(sorted(proxy.labels.items())))
        return ("sidecar", captured, on_demand)
    if type_url == VIRTUAL_HOST_TYPE:
        return (on_demand,)
    if type_url == SECRET_TYPE:
        return (proxy.kind, proxy.namespace, tuple(sorted(proxy.labels.items())))
    return (proxy.kind, proxy.namespace, tuple(sorted(proxy.labels.items())),
            proxy.bind_address, captured, proxy.locality, on_demand)  # fmt: skip


_Gateway = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class _ServiceParts:
    """One service's clusters and ClusterLoadAssignments for a cluster part key, with the
    service, rule and identities they were made from."""

    service: MeshService
    rule: DestinationRule | None
    identities: tuple[str, ...]
    clusters: list[dict[str, Any]]
    endpoints: list[dict[str, Any]]


_SERVICE_KINDS: Final = frozenset({"Service", "ServiceEntry"})
"""Changes that may alter the services themselves: a build after them takes nothing over."""
_HOST_BLIND_KINDS: Final = frozenset({"Gateway", "Secret"})
"""Changes a sidecar virtual host does not check itself against (it reads services,
VirtualServices and DestinationRules, and records which): after them, hosts are made again."""
_CLUSTER_BLIND_KINDS: Final = frozenset(
    {"Pod", "Namespace", "PeerAuthentication", "Secret", "Node"}
)
"""Changes a service's clusters and endpoints do not check themselves against (pods' labels,
meshed pods, inbound mTLS, opened credentials, nodes' localities): after them, they are made again.
EndpointSlice changes drop only their services'; a DestinationRule's is checked per service."""
_KNOWN_KINDS: Final = frozenset({
    "Service", "ServiceEntry", "EndpointSlice", "Pod", "Namespace", "VirtualService",
    "DestinationRule", "Gateway", "Secret", "PeerAuthentication", "Node",
})  # fmt: skip
"""The kinds taking over knows about: after a change of any other, nothing is taken over."""


class MeshBuild:
    """One state's build, shared by every proxy of a push (Istio's push context before its
    per-proxy generation): what depends only on the state — the services, clusters,
    endpoints (per locality), the sidecars' route configurations — is made once, when first
    asked for; each proxy's own parts (:func:`part_key`) are made per proxy. A proxy gets
    exactly what a build of its own would give it. The lists returned are shared between
    proxies: callers must not change them (the handler only encodes them)."""

    def __init__(
        self,
        state: MeshState,
        *,
        previous: MeshBuild | None = None,
        kinds: Iterable[str] = (),
        slices_of: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        """``previous``: the last build, and what changed since its state — the ``kinds`` of
        the objects, and for EndpointSlices the services ``(namespace, name)`` they belong to
        (None: unknown, any). What of it the changes cannot have altered is taken over, so a
        VirtualService change builds only its hosts' virtual hosts and a DestinationRule
        change only its host's clusters and endpoints (Istio's scoped push); each part taken
        over is also checked against this state (its service, rule, VirtualService)."""
        self.state = replace(state, virtual_services=merge_delegates(state.virtual_services))
        self._gateways: dict[PartKey, _Gateway] = {}
        self._dnat: dict[PartKey, list[dict[str, Any]]] = {}
        """A gateway's clusters with the SNI-DNAT ones, per cluster part key."""
        self._localities: dict[PartKey, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self._hosts: dict[tuple[int, str], _VirtualHost] = {}
        """Each sidecar virtual host made, by port and service host (a later build's start)."""
        self._service_parts: dict[tuple[PartKey, str], _ServiceParts] = {}
        """Each service's clusters and endpoints made, by cluster part key and host."""
        self.reused = 0
        """How many virtual hosts and services' clusters were taken over: tests read it."""
        self._vhds_made: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}
        """Each virtual host's VHDS resource, by the host's identity (a host taken over keeps
        its resource, so the encoder finds its JSON without making it again)."""
        self._previous_index: tuple[list[dict[str, Any]], HostIndex] | None = None
        """The last build's VHDS resources and index, when it made them: this one's index
        is that one's with the hosts made again replaced."""
        self._round = 0 if previous is None else previous._round + 1
        self._listener_parts: dict[ListenerKey, ListenerPart] = {}
        """Sidecar listeners made or taken over, by what of a proxy they depend on
        (:func:`~core.mesh.listener_parts.listener_key`: sidecars of other namespaces and
        labels share them), with what of the state they were made from
        (``core.mesh.listener_parts``): checked when asked for again."""
        self.listeners_reused = 0
        """How many proxies' listeners were taken over: tests read it."""
        if previous is not None:
            self._vhds_made = previous._vhds_made
            if "host_index" in previous.__dict__:
                self._previous_index = (previous._vhds_resources, previous.host_index)
            else:  # a push that left the VHDS resources as they were
                self._previous_index = previous._previous_index
            self._take_over(previous, frozenset(kinds), slices_of)

    def _take_over(
        self,
        previous: MeshBuild,
        kinds: frozenset[str],
        slices_of: Iterable[tuple[str, str]] | None,
    ) -> None:
        if kinds - _KNOWN_KINDS or kinds & _SERVICE_KINDS:
            return  # the services themselves may differ: nothing is taken over
        if "services" in previous.__dict__:
            self.__dict__["services"] = previous.services
            # What is made of the services alone goes with them.
            for made in ("_http_port_numbers", "_http_services"):
                if made in previous.__dict__:
                    self.__dict__[made] = previous.__dict__[made]
        # Each part records what it read (the services list, the VirtualServices' TCP and TLS
        # routes, the inbound mTLS): checked when used. Parts no build asked for in
        # LISTENER_ROUNDS_HELD rounds are let go (their proxies are gone).
        self._listener_parts = {
            key: part
            for key, part in previous._listener_parts.items()
            if self._round - part.used <= LISTENER_ROUNDS_HELD
        }
        if not kinds & _HOST_BLIND_KINDS:
            # Sidecar routes read only services, VirtualServices and DestinationRules, and each
            # host says which of them it read: checked when used.
            self._hosts = dict(previous._hosts)
        if kinds & _CLUSTER_BLIND_KINDS or ("EndpointSlice" in kinds and slices_of is None):
            return
        touched = set(slices_of or ())
        if not touched:  # a VirtualService or DestinationRule change: a plain copy is cheaper
            self._service_parts = dict(previous._service_parts)
            return
        self._service_parts = {
            key: part
            for key, part in previous._service_parts.items()
            if (part.service.namespace, part.service.name) not in touched
        }

    @cached_property
    def services(self) -> list[MeshService]:
        return mesh_services(self.state)

    @cached_property
    def by_host(self) -> dict[str, MeshService]:
        return {s.host: s for s in self.services}

    @cached_property
    def _http_port_numbers(self) -> list[int]:
        return _http_ports(self.services)

    @cached_property
    def _http_services(self) -> list[tuple[int, list[MeshService]]]:
        """Each HTTP port with the services serving HTTP on it, in the services' order."""
        return [
            (port, [s for s in self.services if _serves_http(s, port)])
            for port in self._http_port_numbers
        ]

    @cached_property
    def _listener_routes(self) -> ListenerRoutes:
        return listener_routes(self.state.virtual_services)

    @cached_property
    def _identities(self) -> dict[str, tuple[str, ...]]:
        return service_identities(self.state)

    def key(self, proxy: Proxy, type_url: str) -> PartKey:
        """:func:`part_key`, with the DestinationRules whose ``workloadSelector`` picks the
        proxy for clusters and SDS (a sidecar they pick takes their credentials over SDS)."""
        key = part_key(proxy, type_url)
        if type_url == CLUSTER_TYPE and proxy.kind == "gateway":
            # Its Gateways decide which SNI-DNAT clusters it gets (AUTO_PASSTHROUGH).
            key = (*key, auto_passthrough_hosts(self.state, proxy))
        if type_url in (CLUSTER_TYPE, SECRET_TYPE) and proxy.kind == "sidecar":
            picked = tuple(
                (r.metadata.namespace or "", r.metadata.name or "")
                for r in self.state.destination_rules
                if r.spec.workload_selector is not None and uses_credentials(r, proxy)
            )
            key = (*key, picked)
        return key

    @cached_property
    def _slice_index(self) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
        return slices_by_service(self.state.slices)

    def _service_clusters(self, key: PartKey, service: MeshService, proxy: Proxy) -> _ServiceParts:
        """One service's clusters and endpoints: taken over when its rule and mTLS identities
        are what made them (nothing else of the state they read changed since: see
        ``_take_over``), else built."""
        rule = self.state.rules_by_host.get(service.host)
        identities = self._identities.get(service.host, ())
        found = self._service_parts.get((key, service.host))
        if (
            found is not None
            and _same(found.service, service)
            and _same(found.rule, rule)
            and found.identities == identities
        ):
            self.reused += 1
            return found
        clusters = build_clusters([service], self.state.rules_by_host, self._identities,
                                  proxy=proxy)  # fmt: skip
        # Built together: a DNS cluster gets its endpoints inline.
        endpoints = build_endpoints([service], clusters, self.state, proxy_locality=proxy.locality,
                                    index=self._slice_index)  # fmt: skip
        found = _ServiceParts(service, rule, identities, clusters, endpoints)
        self._service_parts[(key, service.host)] = found
        return found

    def _clusters_and_endpoints(
        self, proxy: Proxy
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        key = self.key(proxy, CLUSTER_TYPE)
        if key not in self._localities:
            # Service by service, in the services' order: what one build of all gives.
            parts = [self._service_clusters(key, s, proxy) for s in self.services]
            self._localities[key] = (
                [c for p in parts for c in p.clusters],
                [e for p in parts for e in p.endpoints],
            )
        return self._localities[key]

    def clusters(self, proxy: Proxy) -> list[dict[str, Any]]:
        clusters = self._clusters_and_endpoints(proxy)[0]
        if hosts := auto_passthrough_hosts(self.state, proxy):
            key = self.key(proxy, CLUSTER_TYPE)
            if key not in self._dnat:
                self._dnat[key] = [*clusters, *sni_dnat_clusters(clusters, hosts)]
            return self._dnat[key]
        if proxy.kind == "sidecar" and proxy.captured:
            return [
                *clusters,
                _passthrough_cluster(PASSTHROUGH_CLUSTER),
                _passthrough_cluster(INBOUND_PASSTHROUGH_CLUSTER),
                {"@type": CLUSTER_TYPE, "name": BLACKHOLE_CLUSTER, "type": "STATIC",
                 "connect_timeout": "10s"},
            ]  # fmt: skip
        return clusters

    def endpoints(self, proxy: Proxy) -> list[dict[str, Any]]:
        return self._clusters_and_endpoints(proxy)[1]

    @cached_property
    def _sidecar_routes(self) -> list[dict[str, Any]]:
        """:func:`_sidecar_routes`, each virtual host taken over from the previous build when
        the state still gives it (a VirtualService change makes its hosts' again)."""
        configs = []
        for port, services in self._http_services:
            hosts = []
            direct = False
            for service in services:
                found = self._hosts.get((port, service.host))
                if found is not None and found.still(service, self.state, self.by_host):
                    self.reused += 1
                else:
                    found = _virtual_host(service, port, self.state, self.by_host)
                    self._hosts[(port, service.host)] = found
                hosts.append(found.host)
                direct = direct or found.direct
            configs.append(_sidecar_route_configuration(str(port), hosts, direct=direct))
        return configs

    @cached_property
    def _captured_routes(self) -> list[dict[str, Any]]:
        return [
            {**route, "virtual_hosts": [*route["virtual_hosts"], _allow_any()]}
            for route in self._sidecar_routes
        ]

    def _gateway(self, proxy: Proxy) -> _Gateway:
        key = part_key(proxy, LISTENER_TYPE)
        if key not in self._gateways:
            self._gateways[key] = _gateway_listeners(self.state, proxy, self.by_host)
        return self._gateways[key]

    def routes(self, proxy: Proxy) -> list[dict[str, Any]]:
        if proxy.kind == "gateway":
            return self._gateway(proxy)[1]
        if proxy.on_demand:
            return self._on_demand_routes
        return self._captured_routes if proxy.captured else self._sidecar_routes

    @cached_property
    def _on_demand_routes(self) -> list[dict[str, Any]]:
        """An on-demand sidecar's route configurations: no host (each comes over VHDS when a
        request asks for it), so a VirtualService change never re-sends them; no ``allow_any``
        either (it would match every host and stop on-demand: ``core.mesh.vhds``)."""
        return [
            {"@type": ROUTE_TYPE, "name": config["name"], "virtual_hosts": [],
             "validate_clusters": False, "ignore_port_in_host_matching": True,
             "max_direct_response_body_size_bytes": DIRECT_RESPONSE_BODY_MAX,
             "vhds": VHDS_SOURCE}
            for config in self._sidecar_routes
        ]  # fmt: skip

    def virtual_hosts(self, proxy: Proxy) -> list[dict[str, Any]]:
        """An on-demand sidecar's VHDS resources: every host of its route configurations."""
        if proxy.kind != "sidecar" or not proxy.on_demand:
            return []
        return self._vhds_resources

    @cached_property
    def _vhds_resources(self) -> list[dict[str, Any]]:
        made: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}
        resources = []
        for config in self._sidecar_routes:
            for host in config["virtual_hosts"]:
                found = self._vhds_made.get(id(host))
                if found is None or found[0] is not host:
                    found = (host, virtual_host_resource(config["name"], host))
                made[id(host)] = found
                resources.append(found[1])
        self._vhds_made = made
        return resources

    @cached_property
    def host_index(self) -> HostIndex:
        """The VHDS resources by the domains they answer (``core.mesh.vhds.resolve``): the
        last build's index with the hosts made again replaced, when it has one (indexing
        1,000 hosts' domains is ~5-9 ms, a few hosts' a fraction of one)."""
        resources = self._vhds_resources
        if self._previous_index is not None:
            old, index = self._previous_index
            now = {id(r) for r in resources}
            before = {id(r) for r in old}
            gone = [r for r in old if id(r) not in now]
            added = [r for r in resources if id(r) not in before]
            if len(gone) + len(added) <= max(8, len(resources) // 8):
                replaced = index_replaced(index, gone=gone, added=added)
                if replaced is not None:
                    return replaced
        return host_index(resources)

    def secrets(self, proxy: Proxy) -> list[dict[str, Any]]:
        """The credentials served over SDS: a gateway's servers' ``credentialName``s, and the
        DestinationRules' the proxy uses (one secret per name)."""
        servers = self._gateway(proxy)[2] if proxy.kind == "gateway" else []
        named = {s["name"]: s for s in [*servers, *rule_credentials(self.state, proxy)]}
        return list(named.values())

    def listeners(self, proxy: Proxy) -> list[dict[str, Any]]:
        """A gateway's listeners, or a sidecar's: taken over from the last build when what
        they read is unchanged (an HTTP-only VirtualService change alters no listener:
        ``core.mesh.listener_parts``), else made for the proxy's listener part key."""
        if proxy.kind == "gateway":
            return self._gateway(proxy)[0]
        mtls = self.state.inbound_mtls(proxy.namespace, proxy.labels) if proxy.captured else None
        key = listener_key(proxy.bind_address, proxy.captured, proxy.on_demand, mtls)
        routes = self._listener_routes
        found = self._listener_parts.get(key)
        if found is not None and found.still(self.services, routes, mtls):
            if found.used != self._round:
                self.listeners_reused += 1
                self._listener_parts[key] = replace(found, used=self._round)
            return found.listeners
        listeners = _sidecar_listeners(self.state, proxy, self.services, self.by_host,
                                       http_ports=self._http_port_numbers)  # fmt: skip
        if proxy.on_demand:
            _ask_on_demand(listeners)
        if mtls is not None:
            for listener in listeners:
                listener["bind_to_port"] = False
            listeners[:0] = [_outbound_listener(), _inbound_listener(mtls)]
        self._listener_parts[key] = ListenerPart(listeners, self.services, routes, mtls,
                                                 self._round)  # fmt: skip
        return listeners

    def snapshot(self, proxy: Proxy) -> Snapshot:
        """Every resource ``proxy`` needs (its lists shared with other proxies' snapshots)."""
        return Snapshot(clusters=self.clusters(proxy), endpoints=self.endpoints(proxy),
                        listeners=self.listeners(proxy), routes=self.routes(proxy),
                        secrets=self.secrets(proxy),
                        virtual_hosts=self.virtual_hosts(proxy))  # fmt: skip

    def resources(self, proxy: Proxy, type_url: str) -> list[dict[str, Any]]:
        """``proxy``'s resources of one type (the handler builds only the types a change
        touched); :data:`SECRET_TYPE` is a gateway's credentials."""
        build = {CLUSTER_TYPE: self.clusters, ENDPOINT_TYPE: self.endpoints,
                 LISTENER_TYPE: self.listeners, ROUTE_TYPE: self.routes,
                 SECRET_TYPE: self.secrets, VIRTUAL_HOST_TYPE: self.virtual_hosts,
                 }[type_url]  # fmt: skip
        return build(proxy)
