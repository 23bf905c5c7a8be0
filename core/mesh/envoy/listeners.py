"""Listener pieces that sidecars and gateways share: addresses, the HTTP connection manager
listener, the TCP proxy listener and filter, the TLS inspector, and de-duplicated filter chains.

Why this exists: the sidecar's and the gateway's listeners differ in what they listen for but
are assembled from the same Envoy filters; those are made in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.mesh.envoy.names import (
    CORS_FILTER,
    CORS_TYPE,
    FAULT_FILTER,
    FAULT_TYPE,
    HCM_TYPE,
    LISTENER_TYPE,
    ROUTER_TYPE,
    TCP_PROXY_TYPE,
    TLS_INSPECTOR_TYPE,
)


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _http_listener(
    name: str, address: str, port: int, route_name: str, stat: str
) -> dict[str, Any]:
    manager = {
        "@type": HCM_TYPE,
        "stat_prefix": stat,
        "rds": {
            "config_source": {"ads": {}, "resource_api_version": "V3"},
            "route_config_name": route_name,
        },
        "http_filters": [
            # Inert unless a route carries a policy (typed_per_filter_config); CORS first, as
            # Istio orders them, so a preflight is answered before any fault applies.
            {"name": CORS_FILTER, "typed_config": {"@type": CORS_TYPE}},
            {"name": FAULT_FILTER, "typed_config": {"@type": FAULT_TYPE}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    return {
        "@type": LISTENER_TYPE,
        "name": name,
        "address": _address(address, port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                          "typed_config": manager}]}
        ],
    }  # fmt: skip


def _tcp_listener(
    name: str, address: str, port: int, targets: list[tuple[str, int]]
) -> dict[str, Any]:
    return {
        "@type": LISTENER_TYPE,
        "name": name,
        "address": _address(address, port),
        "filter_chains": [{"filters": [_tcp_proxy(name, targets)]}],
    }


def _tls_inspector() -> dict[str, Any]:
    return {
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": {"@type": TLS_INSPECTOR_TYPE},
    }


def _tcp_proxy(stat: str, targets: Sequence[tuple[str, int]]) -> dict[str, Any]:
    proxy: dict[str, Any] = {"@type": TCP_PROXY_TYPE, "stat_prefix": stat}
    if len(targets) == 1:
        proxy["cluster"] = targets[0][0]
    else:
        proxy["weighted_clusters"] = {
            "clusters": [{"name": n, "weight": w} for n, w in targets if w > 0]
        }
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}


def _distinct(chains: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chains with the first of each match kept (Envoy refuses two chains with the same
    match, or the same name): the oldest Gateway's server wins, as in Istio."""
    seen_matches: set[str] = set()
    seen_names: set[str] = set()
    kept = []
    for chain in chains:
        key = repr(sorted((chain.get("filter_chain_match") or {}).items()))
        if key in seen_matches or chain.get("name") in seen_names:
            continue
        seen_matches.add(key)
        if "name" in chain:
            seen_names.add(chain["name"])
        kept.append(chain)
    return kept
