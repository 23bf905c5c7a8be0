"""A snapshot as a static Envoy bootstrap (:func:`static_bootstrap`): route configurations
inlined into their listeners, EDS clusters made STATIC with their assignments, SDS references
made references to static secrets.

Why this exists: ``envoy --mode validate`` checks a static bootstrap, so tests validate what the
builder makes against real Envoy without an xDS server; it is a view of a finished snapshot and
no part of building one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from core.mesh.envoy.listeners import _address
from core.mesh.envoy.model import Snapshot


def _untyped(resource: Mapping[str, Any]) -> dict[str, Any]:
    return _static_secrets({k: copy.deepcopy(v) for k, v in resource.items() if k != "@type"})


def _static_secrets(value: Any) -> Any:
    """SDS references made references to the bootstrap's static secrets (an
    ``sds_secret_config`` with only a name), in place."""
    if isinstance(value, dict):
        if "sds_config" in value and "name" in value:
            value.pop("sds_config")
        for item in value.values():
            _static_secrets(item)
    elif isinstance(value, list):
        for item in value:
            _static_secrets(item)
    return value


def static_bootstrap(
    snapshot: Snapshot, *, admin_port: int = 0, node_id: str = "fleetlog"
) -> dict[str, Any]:
    """The snapshot as a bootstrap with static resources: route configurations inlined into
    their listeners, EDS clusters made STATIC with their assignments. What Envoy validates
    (``envoy --mode validate``) and what runs a proxy without an xDS server."""
    assignments = {a["cluster_name"]: _untyped(a) for a in snapshot.endpoints}
    routes = {r["name"]: _untyped(r) for r in snapshot.routes}
    clusters = []
    for resource in snapshot.clusters:
        cluster = _untyped(resource)
        if cluster.get("type") == "EDS":
            cluster["type"] = "STATIC"
            cluster.pop("eds_cluster_config")
            cluster["load_assignment"] = assignments.get(
                cluster["name"], {"cluster_name": cluster["name"], "endpoints": []}
            )
        clusters.append(cluster)
    listeners = []
    for resource in snapshot.listeners:
        listener = _untyped(resource)
        for chain in listener["filter_chains"]:
            for item in chain["filters"]:
                config = item["typed_config"]
                if "rds" in config:
                    name = config.pop("rds")["route_config_name"]
                    config["route_config"] = routes[name]
        listeners.append(listener)
    static: dict[str, Any] = {"listeners": listeners, "clusters": clusters}
    if snapshot.secrets:
        static["secrets"] = [_untyped(secret) for secret in snapshot.secrets]
    return {
        "node": {"id": node_id, "cluster": node_id},
        "admin": {"address": _address("127.0.0.1", admin_port)},
        "static_resources": static,
    }
