"""Clusters (CDS): one per service port and per DestinationRule subset, with the rule's
traffic policy (load balancer, connection pool, outlier detection, warmup, locality weights)
and auto mTLS or the rule's TLS origination.

Why this exists: a cluster is where a DestinationRule takes effect; building one is a
self-contained step the shared build caches per service (``build.MeshBuild``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from core.mesh.envoy.model import MeshService, Proxy, Rules, _merged, _rule_for, rules_by_host
from core.mesh.envoy.names import (
    CLUSTER_TYPE,
    HTTP_OPTIONS_TYPE,
    MESH_ALPN,
    RAW_BUFFER_TYPE,
    TLS_MODE_KEY,
    _go_duration,
    cluster_name,
    duration,
)
from core.mesh.envoy.secrets import uses_credentials
from core.mesh.envoy.tls import upstream_mtls, upstream_tls
from core.mesh.kinds.trafficpolicy import ClientTLSSettings, TrafficPolicy

DEFAULT_CONNECT_TIMEOUT_MS: Final = 10_000
"""Istio's ``connectTimeout`` default."""


SIMPLE_POLICIES: Final = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "UNSPECIFIED": "LEAST_REQUEST",
}
"""Istio's simple policies as Envoy's ``lb_policy`` (PASSTHROUGH is a cluster type)."""


def _apply_policy(cluster: dict[str, Any], policy: TrafficPolicy | None) -> None:
    lb = policy.load_balancer if policy is not None else None
    cluster["lb_policy"] = "LEAST_REQUEST"
    if lb is not None and lb.simple == "PASSTHROUGH":
        cluster["type"] = "ORIGINAL_DST"
        cluster["lb_policy"] = "CLUSTER_PROVIDED"
        cluster.pop("eds_cluster_config", None)
    elif lb is not None and lb.simple is not None:
        cluster["lb_policy"] = SIMPLE_POLICIES[lb.simple]
    elif lb is not None and lb.consistent_hash is not None:
        hashing = lb.consistent_hash
        if hashing.maglev is not None:
            cluster["lb_policy"] = "MAGLEV"
            cluster["maglev_lb_config"] = {"table_size": hashing.maglev.table_size}
        else:
            cluster["lb_policy"] = "RING_HASH"
            size = hashing.ring_hash.minimum_ring_size if hashing.ring_hash else 0
            size = size or hashing.minimum_ring_size
            if size:
                cluster["ring_hash_lb_config"] = {"minimum_ring_size": size}
    if policy is None:
        return
    pool = policy.connection_pool
    if pool is not None:
        thresholds: dict[str, Any] = {}
        if pool.tcp is not None:
            if pool.tcp.max_connections:
                thresholds["max_connections"] = pool.tcp.max_connections
            if pool.tcp.connect_timeout:
                cluster["connect_timeout"] = _go_duration(pool.tcp.connect_timeout)
        if pool.http is not None:
            http = pool.http
            for source, target in (
                (http.http1_max_pending_requests, "max_pending_requests"),
                (http.http2_max_requests, "max_requests"),
                (http.max_retries, "max_retries"),
            ):
                if source:
                    thresholds[target] = source
            common: dict[str, Any] = {}
            if http.max_requests_per_connection:
                common["max_requests_per_connection"] = http.max_requests_per_connection
            if http.idle_timeout:
                common["idle_timeout"] = _go_duration(http.idle_timeout)
            if common:
                cluster["typed_extension_protocol_options"] = {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": HTTP_OPTIONS_TYPE,
                        "common_http_protocol_options": common,
                        "explicit_http_config": {"http_protocol_options": {}},
                    }
                }
        if thresholds:
            cluster["circuit_breakers"] = {"thresholds": [thresholds]}
    outlier = policy.outlier_detection
    if outlier is not None:
        detection: dict[str, Any] = {}
        errors = outlier.consecutive5xx_errors
        if errors is None and outlier.consecutive_errors:
            errors = outlier.consecutive_errors
        if errors is not None:
            detection["consecutive_5xx"] = errors
            detection["enforcing_consecutive_5xx"] = 100 if errors else 0
        if outlier.consecutive_gateway_errors is not None:
            detection["consecutive_gateway_failure"] = outlier.consecutive_gateway_errors
            detection["enforcing_consecutive_gateway_failure"] = (
                100 if outlier.consecutive_gateway_errors else 0
            )
        if outlier.interval:
            detection["interval"] = _go_duration(outlier.interval)
        if outlier.base_ejection_time:
            detection["base_ejection_time"] = _go_duration(outlier.base_ejection_time)
        if outlier.max_ejection_percent:
            detection["max_ejection_percent"] = outlier.max_ejection_percent
        cluster["outlier_detection"] = detection
    if policy.tls is not None:
        cluster["metadata"] = {"filter_metadata": {"istio": {"tls_mode": policy.tls.mode}}}


def _auto_sni(cluster: dict[str, Any], tls: ClientTLSSettings) -> None:
    """Istio's ``ENABLE_AUTO_SNI``: an HTTP cluster originating TLS with no ``sni`` sends the
    request's Host as SNI (and, verifying with no ``subjectAltNames``, checks the server's
    certificate names that host)."""
    options = cluster.setdefault("typed_extension_protocol_options", {}).setdefault(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        {"@type": HTTP_OPTIONS_TYPE, "explicit_http_config": {"http_protocol_options": {}}},
    )
    upstream: dict[str, Any] = {"auto_sni": True}
    if not tls.insecure_skip_verify and not tls.subject_alt_names:
        upstream["auto_san_validation"] = True
    options["upstream_http_protocol_options"] = upstream


def _apply_mtls(
    cluster: dict[str, Any],
    policy: TrafficPolicy | None,
    identities: Sequence[str],
    *,
    http: bool = False,
    credentials: bool = False,
) -> None:
    """Istio's choice of a cluster's TLS: the DestinationRule's ``ISTIO_MUTUAL`` always,
    its ``DISABLE`` never, SIMPLE / MUTUAL as the rule says (:func:`upstream_tls`), and with
    no TLS setting auto mTLS — TLS to the endpoints labelled ``tlsMode: istio`` (meshed
    pods), plain text to the others."""
    tls = policy.tls if policy is not None else None
    mode = tls.mode if tls is not None else None
    if tls is not None and mode in ("SIMPLE", "MUTUAL"):
        cluster["transport_socket"] = upstream_tls(tls, credentials=credentials)
        if http and not tls.sni:
            _auto_sni(cluster, tls)
        return
    if cluster["type"] != "EDS":
        return
    sni = cluster["name"].replace("|", "_.")  # Istio's: outbound_.80_.v1_.web.shop.svc...
    if mode == "ISTIO_MUTUAL":
        assert tls is not None
        # The rule's own names and SNI, when it sets them, over the service's identities.
        cluster["transport_socket"] = upstream_mtls(
            tls.subject_alt_names or identities, sni=tls.sni or sni
        )
    elif mode is None and identities:
        cluster["transport_socket_matches"] = [
            {"name": "tlsMode-istio", "match": {TLS_MODE_KEY: MESH_ALPN},
             "transport_socket": upstream_mtls(identities, sni=sni)},
            {"name": "tlsMode-disabled", "match": {},
             "transport_socket": {"name": "envoy.transport_sockets.raw_buffer",
                                  "typed_config": {"@type": RAW_BUFFER_TYPE}}},
        ]  # fmt: skip


def _base_cluster(name: str, service: MeshService) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "@type": CLUSTER_TYPE,
        "name": name,
        "connect_timeout": duration(DEFAULT_CONNECT_TIMEOUT_MS),
        # A removed endpoint leaves at once, health or not (DESIGN: envoy notes).
        "ignore_health_on_host_removal": True,
    }
    if service.resolution == "EDS":
        cluster["type"] = "EDS"
        cluster["eds_cluster_config"] = {
            "eds_config": {"ads": {}, "resource_api_version": "V3"},
            "service_name": name,
        }
    elif service.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        cluster["type"] = "STRICT_DNS" if service.resolution == "DNS" else "LOGICAL_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
    else:
        cluster["type"] = "ORIGINAL_DST"
    return cluster


def _finish_cluster(cluster: dict[str, Any]) -> None:
    if cluster["type"] == "ORIGINAL_DST":
        cluster["lb_policy"] = "CLUSTER_PROVIDED"
        cluster.pop("eds_cluster_config", None)


def build_clusters(
    services: Sequence[MeshService],
    rules: Rules,
    identities: Mapping[str, Sequence[str]] | None = None,
    *,
    proxy: Proxy | None = None,
) -> list[dict[str, Any]]:
    """One cluster per service port, and one per subset of its DestinationRule; ``identities``
    (:func:`service_identities`) turns on auto mTLS for the services with meshed pods;
    ``proxy`` decides whether a rule's ``credentialName`` is used (:func:`uses_credentials`)."""
    identities = identities or {}
    if not isinstance(rules, Mapping):
        rules = rules_by_host(rules)
    clusters: list[dict[str, Any]] = []
    for service in services:
        rule = _rule_for(service.host, rules)
        credentials = rule is not None and uses_credentials(rule, proxy)
        for port in service.ports:
            if port.protocol == "udp":
                continue
            top = rule.spec.traffic_policy if rule is not None else None
            variants: list[tuple[str, TrafficPolicy | None]] = [("", top)]
            if rule is not None:
                variants += [
                    (subset.name, _merged(top, subset.traffic_policy))
                    for subset in rule.spec.subsets
                ]
            for subset, policy in variants:
                name = cluster_name(service.host, port.number, subset)
                cluster = _base_cluster(name, service)
                chosen = policy.for_port(port.number) if policy else None
                _apply_policy(cluster, chosen)
                _apply_slow_start(cluster, chosen)
                _apply_locality_weights(cluster, chosen)
                _finish_cluster(cluster)
                _apply_mtls(
                    cluster, chosen, identities.get(service.host, ()),
                    http=port.protocol == "http", credentials=credentials,
                )  # fmt: skip
                clusters.append(cluster)
    return clusters


def _apply_slow_start(cluster: dict[str, Any], policy: TrafficPolicy | None) -> None:
    """DestinationRule ``warmup`` (or the older ``warmupDurationSecs``) as Envoy's slow start:
    a new endpoint's weight ramps up over the window. Round robin and least request only,
    as Istio applies it (Istio's default policy is least request)."""
    lb = policy.load_balancer if policy is not None else None
    if lb is None or cluster.get("lb_policy") not in ("ROUND_ROBIN", "LEAST_REQUEST"):
        return
    if lb.warmup is not None and lb.warmup.duration is not None:
        config: dict[str, Any] = {
            "slow_start_window": _go_duration(lb.warmup.duration),
            "aggression": {
                "default_value": 1.0 if lb.warmup.aggression is None else lb.warmup.aggression,
                "runtime_key": "mesh.slow_start.aggression",
            },
            "min_weight_percent": {
                "value": 10.0 if lb.warmup.minimum_percent is None else lb.warmup.minimum_percent
            },
        }
    elif lb.warmup_duration_secs is not None:
        config = {"slow_start_window": _go_duration(lb.warmup_duration_secs)}
    else:
        return
    key = (
        "round_robin_lb_config"
        if cluster["lb_policy"] == "ROUND_ROBIN"
        else ("least_request_lb_config")
    )
    cluster[key] = {"slow_start_config": config}


def _apply_locality_weights(cluster: dict[str, Any], policy: TrafficPolicy | None) -> None:
    """Envoy reads the groups' ``load_balancing_weight`` only with locality-weighted
    balancing on (``distribute``)."""
    lb = policy.load_balancer if policy is not None else None
    setting = lb.locality_lb_setting if lb is not None else None
    if setting is not None and setting.enabled is not False and setting.distribute:
        cluster["common_lb_config"] = {"locality_weighted_lb_config": {}}
