"""On-demand virtual hosts (Envoy's VHDS) for sidecars: which virtual hosts answer a proxy's
request for ``<route configuration>/<host>``.

Why this exists: a sidecar's route configuration for a port holds a virtual host per service
on it (1,000 in the benchmark), and Envoy rebuilds its whole route table for every update of
it — a full RDS push or a VHDS update of one host alike (``RouteConfigUpdateReceiverImpl::
onVhdsUpdate`` copies every held host into a new configuration). Measured on one Envoy
(``ops/bench_envoy_apply.py``): ~20 ms of CPU per change holding 1,000 hosts, ~2 ms holding
100, ~0.6 ms holding 10. So delta sidecars get a route configuration with no hosts and a VHDS
source, and Envoy's ``on_demand`` filter asks for the host of each request no held host
matches; a proxy holds only the hosts it called, and a change is sent only to proxies holding
its hosts.

Semantics stay Istio's — every request routes exactly as a full route configuration would
route it:

* A request's host (its port ignored, as the sidecar's route configuration ignores it) is
  answered by the virtual host with that exact domain, else by the one whose wildcard domain
  (``*.example.com``) is the longest that matches, as Envoy picks.
* A wildcard host is sent with every host more specific under it (exact names and longer
  wildcards it covers): once Envoy holds ``*.example.com``, a later ``a.example.com`` matches
  it without asking, so ``a.example.com``'s own host must already be there.
* No host matches: a captured sidecar (Istio's ALLOW_ANY catch-all ``allow_any``, which would
  match every host and stop on-demand from ever asking) gets a host for exactly that name
  routed to the pass-through cluster, as the catch-all would route it; any other sidecar gets
  "not found" (Envoy answers 404, as with no matching host today).

Pure: names, dicts and lookups; the handler serves them (``handlers/mesh/push.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

VIRTUAL_HOST_TYPE: Final = "type.googleapis.com/envoy.config.route.v3.VirtualHost"
ON_DEMAND_FILTER: Final = "envoy.filters.http.on_demand"
ON_DEMAND_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.http.on_demand.v3.OnDemand"
VHDS_SOURCE: Final = {"config_source": {"ads": {}, "resource_api_version": "V3"}}
"""The VHDS source: the ADS stream itself (Envoy 1.40 accepts ``ads`` for VHDS over a delta
ADS stream; the older ``api_config_source`` DELTA_GRPC would open a second stream, outside the
proxy token's admission)."""


def resource_name(route_config: str, host: str) -> str:
    """A virtual host's VHDS name, ``<route configuration>/<its name>`` (also its own name:
    Envoy drops a held host by the name a removal gives)."""
    return f"{route_config}/{host}"


def virtual_host_resource(route_config: str, host: Mapping[str, Any]) -> dict[str, Any]:
    """A route configuration's virtual host as a VHDS resource."""
    return {
        "@type": VIRTUAL_HOST_TYPE,
        **host,
        "name": resource_name(route_config, str(host["name"])),
    }


def request_host(alias: str) -> tuple[str, str]:
    """``(route configuration, host)`` of Envoy's on-demand request ``<config>/<Host>``: the
    host lower-cased (Envoy matches domains case-insensitively) and without its port."""
    config, _, host = alias.partition("/")
    host = host.lower()
    if host.startswith("["):  # an IPv6 literal: [::1]:8080
        end = host.find("]")
        return config, host[: end + 1] if end > 0 else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return config, name
    return config, host


@dataclass(frozen=True)
class HostIndex:
    """A build's VHDS resources by the domains they answer, per route configuration."""

    exact: Mapping[tuple[str, str], str]
    """``(route configuration, domain)`` → resource name."""
    wildcards: Mapping[str, tuple[tuple[str, str], ...]]
    """Route configuration → ``(suffix, resource name)`` of its wildcard domains
    (``*.example.com`` → ``.example.com``), longest suffix first (Envoy's preference)."""
    under: Mapping[str, tuple[str, ...]]
    """A wildcard host's resource name → the hosts more specific under it."""


def host_index(resources: Iterable[Mapping[str, Any]]) -> HostIndex:
    """The index of VHDS resources (:func:`virtual_host_resource`)."""
    exact: dict[tuple[str, str], str] = {}
    wildcards: dict[str, list[tuple[str, str]]] = {}
    domains: dict[str, list[tuple[str, str]]] = {}
    for resource in resources:
        name = str(resource["name"])
        config = name.partition("/")[0]
        for domain in resource.get("domains") or ():
            domain = str(domain).lower()
            domains.setdefault(config, []).append((domain, name))
            if domain.startswith("*") and domain != "*":
                wildcards.setdefault(config, []).append((domain[1:], name))
            else:
                exact.setdefault((config, domain), name)
    under: dict[str, tuple[str, ...]] = {}
    for config, suffixes in wildcards.items():
        suffixes.sort(key=lambda pair: -len(pair[0]))
        for suffix, name in suffixes:
            covered = {
                other
                for domain, other in domains[config]
                if other != name and _covers(suffix, domain)
            }
            under[name] = tuple(sorted(covered))
    return HostIndex(
        exact=exact,
        wildcards={config: tuple(pairs) for config, pairs in wildcards.items()},
        under=under,
    )


def index_replaced(
    index: HostIndex,
    *,
    gone: Sequence[Mapping[str, Any]],
    added: Sequence[Mapping[str, Any]],
) -> HostIndex | None:
    """``index`` with the resources ``gone`` replaced by ``added`` (a VirtualService change
    makes a few hosts again: the other 999's domains are not indexed again); None when a
    wildcard is involved (a wildcard host, or a name under one: :func:`host_index` again)."""
    changed = [*gone, *added]
    for resource in changed:
        config = str(resource["name"]).partition("/")[0]
        suffixes = index.wildcards.get(config, ())
        for domain in resource.get("domains") or ():
            domain = str(domain).lower()
            if domain.startswith("*") or any(_covers(s, domain) for s, _ in suffixes):
                return None
    exact = dict(index.exact)
    for resource in gone:
        config = str(resource["name"]).partition("/")[0]
        for domain in resource.get("domains") or ():
            key = (config, str(domain).lower())
            if exact.get(key) == resource["name"]:
                del exact[key]
    for resource in added:
        config, name = str(resource["name"]).partition("/")[0], str(resource["name"])
        for domain in resource.get("domains") or ():
            exact.setdefault((config, str(domain).lower()), name)
    return HostIndex(exact=exact, wildcards=index.wildcards, under=index.under)


def _covers(suffix: str, domain: str) -> bool:
    """Whether the wildcard ``*<suffix>`` matches ``domain`` (an exact name, or a wildcard
    whose own suffix is longer: every name it matches, this one matches too)."""
    if domain.startswith("*"):
        return len(domain) - 1 > len(suffix) and domain[1:].endswith(suffix)
    return len(domain) > len(suffix) and domain.endswith(suffix)


def resolve(index: HostIndex, alias: str) -> tuple[str, ...] | None:
    """The resources that answer Envoy's on-demand request ``alias``: the host whose exact
    domain it is, else the longest matching wildcard's with the hosts under it; None when no
    host matches (the caller answers the catch-all's way)."""
    config, host = request_host(alias)
    found = index.exact.get((config, host))
    if found is not None:
        return (found,)
    for suffix, name in index.wildcards.get(config, ()):
        if len(host) > len(suffix) and host.endswith(suffix):
            return (name, *index.under.get(name, ()))
    return None


def passthrough_host(alias: str, *, cluster: str) -> dict[str, Any]:
    """A captured sidecar's answer for a host no service has: Istio's ``allow_any`` catch-all
    for exactly that name (the request goes on to the address the application connected to).
    Named by the host (two requests for it, with and without a port, get one); a later
    service of that name answers instead."""
    config, host = request_host(alias)
    return {
        "@type": VIRTUAL_HOST_TYPE,
        "name": resource_name(config, f"allow_any:{host}"),
        "domains": [host],
        "routes": [{"name": "allow_any", "match": {"prefix": "/"},
                    "route": {"cluster": cluster, "timeout": "0s"}}],
    }  # fmt: skip
