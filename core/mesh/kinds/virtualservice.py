"""A VirtualService's spec: its hosts, gateways and export, its HTTP routes, and its TCP and
TLS routes (L4 and SNI matches), validated as Istio validates them.

Why this exists: what ties a VirtualService's routes together (hosts, gateway names, route
across the whole object) is checked at this level, apart from one HTTP route's rules.
"""

from __future__ import annotations

from core.mesh import checks
from core.mesh.kinds.common import (
    Destination,
    _add_all,
    _destinations_problems,
    _gateway_name_problems,
    host_subset_of,
    hosts_match,
)
from core.mesh.kinds.http import HTTPRoute
from core.meta.model import K8sModel, Problems
from core.meta.names import label_problems


class L4MatchAttributes(K8sModel):
    destination_subnets: list[str] = []
    port: int = 0
    source_labels: dict[str, str] = {}
    source_namespace: str | None = None
    gateways: list[str] = []

    def problems(self) -> Problems:
        found = Problems()
        for index, subnet in enumerate(self.destination_subnets):
            _add_all(found, checks.ip_subnet_errors(subnet), "destinationSubnets", index)
        if self.port:
            _add_all(found, checks.port_errors(self.port), "port")
        found.extend(label_problems(self.source_labels), "sourceLabels")
        return found


class RouteDestination(K8sModel):
    destination: Destination | None = None
    weight: int = 0


class TCPRoute(K8sModel):
    match: list[L4MatchAttributes] = []
    route: list[RouteDestination] = []

    def problems(self) -> Problems:
        found = Problems()
        for index, match in enumerate(self.match):
            found.extend(match.problems().items, "match", index)
        if not self.route:
            found.add("TCP route is required", "route")
        found.extend(_destinations_problems(self.route, http=False).items, "route")
        return found


class TLSMatchAttributes(K8sModel):
    sni_hosts: list[str] = []
    destination_subnets: list[str] = []
    port: int = 0
    source_labels: dict[str, str] = {}
    source_namespace: str | None = None
    gateways: list[str] = []

    def problems(self, hosts: list[str]) -> Problems:
        """``validateTLSMatch``: SNI hosts required, each within one of the VirtualService's
        ``hosts`` (an IP is Istio's warning, not an error: accepted)."""
        found = Problems()
        if not self.sni_hosts:
            found.add("TLS match must have at least one SNI host", "sniHosts")
        for index, sni in enumerate(self.sni_hosts):
            if messages := checks.wildcard_domain_errors(sni):
                if not checks.is_ip(sni):
                    _add_all(found, messages, "sniHosts", index)
                continue
            if not any(host_subset_of(sni, host) for host in hosts):
                found.add(
                    f'SNI host "{sni}" is not a compatible subset of any of the virtual '
                    f"service hosts: [{', '.join(hosts)}]",
                    "sniHosts",
                    index,
                )
        for index, subnet in enumerate(self.destination_subnets):
            _add_all(found, checks.ip_subnet_errors(subnet), "destinationSubnets", index)
        if self.port:
            _add_all(found, checks.port_errors(self.port), "port")
        found.extend(label_problems(self.source_labels), "sourceLabels")
        found.extend(_gateway_name_problems(self.gateways).items, "gateways")
        return found


class TLSRoute(K8sModel):
    """A VirtualService's ``tls`` route: TLS connections told apart by their SNI (not
    terminated), proxied to the destinations."""

    match: list[TLSMatchAttributes] = []
    route: list[RouteDestination] = []

    def problems(self, hosts: list[str]) -> Problems:
        """``validateTLSRoute``."""
        found = Problems()
        if not self.match:
            found.add("TLS route must have at least one match condition", "match")
        for index, match in enumerate(self.match):
            found.extend(match.problems(hosts).items, "match", index)
        if not self.route:
            found.add("TLS route is required", "route")
        found.extend(_destinations_problems(self.route, http=False).items, "route")
        return found


class VirtualServiceSpec(K8sModel):
    hosts: list[str] = []
    gateways: list[str] = []
    http: list[HTTPRoute] = []
    tcp: list[TCPRoute] = []
    tls: list[TLSRoute] = []
    export_to: list[str] = []

    def problems(self) -> Problems:
        """``ValidateVirtualService``. One with no hosts is a delegate: its routes are merged
        under the routes of a root VirtualService that names it (``http[].delegate``)."""
        found = Problems()
        delegate = not self.hosts
        if delegate:
            if self.gateways:
                found.add("delegate virtual service must have no gateways specified", "gateways")
            if self.tls:
                found.add("delegate virtual service must have no tls route specified", "tls")
            if self.tcp:
                found.add("delegate virtual service must have no tcp route specified", "tcp")
        applies_to_mesh = not self.gateways or "mesh" in self.gateways
        found.extend(_gateway_name_problems(self.gateways).items, "gateways")
        valid = True
        for index, host in enumerate(self.hosts):
            messages = [] if checks.is_ip(host) else checks.wildcard_domain_errors(host)
            if messages:
                valid = False
                _add_all(found, messages, "hosts", index)
            elif applies_to_mesh and host == "*":
                valid = False
                found.add(
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                    "hosts",
                    index,
                )
        if valid:
            for i, first in enumerate(self.hosts):
                for j in range(i + 1, len(self.hosts)):
                    if hosts_match(first, self.hosts[j]):
                        found.add(
                            f"duplicate hosts in virtual service: {first} & {self.hosts[j]}",
                            "hosts",
                            j,
                        )
        if not self.http and not self.tcp and not self.tls:
            found.add("http, tcp or tls must be provided in virtual service")
        for index, route in enumerate(self.http):
            found.extend(route.problems(in_delegate=delegate).items, "http", index)
        for index, tcp in enumerate(self.tcp):
            found.extend(tcp.problems().items, "tcp", index)
        for index, tls in enumerate(self.tls):
            found.extend(tls.problems(self.hosts).items, "tls", index)
        return found
