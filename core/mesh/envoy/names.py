"""Envoy's names the builder shares: type URLs, filter names, the well-known clusters and SDS
secrets, and the value formats (durations, fractions, FQDNs, cluster names, SPIFFE ids).

Why this exists: every part of the mesh builder (clusters, endpoints, routes, listeners, TLS)
spells the same ``@type`` URLs and names, and the handler and tests match resources by them;
one module holds them so each is spelled once and no builder module imports another for a
constant.
"""

from __future__ import annotations

from typing import Any, Final

from core.mesh import checks

TYPE_PREFIX: Final = "type.googleapis.com/"
CLUSTER_TYPE: Final = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE: Final = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE: Final = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE: Final = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
HCM_TYPE: Final = (
    TYPE_PREFIX
    + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
TCP_PROXY_TYPE: Final = TYPE_PREFIX + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER_TYPE: Final = TYPE_PREFIX + "envoy.extensions.filters.http.router.v3.Router"
FAULT_TYPE: Final = TYPE_PREFIX + "envoy.extensions.filters.http.fault.v3.HTTPFault"
HTTP_OPTIONS_TYPE: Final = TYPE_PREFIX + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
FAULT_FILTER: Final = "envoy.filters.http.fault"
CORS_FILTER: Final = "envoy.filters.http.cors"
CORS_TYPE: Final = TYPE_PREFIX + "envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY_TYPE: Final = TYPE_PREFIX + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
DIRECT_RESPONSE_BODY_MAX: Final = 1024 * 1024
"""Envoy caps a direct response body at 4 KiB unless the route configuration says more; Istio
raises it to the 1 MB its validation allows."""


DOMAIN: Final = "cluster.local"


INBOUND_PASSTHROUGH_CLUSTER: Final = "InboundPassthroughCluster"
BLACKHOLE_CLUSTER: Final = "BlackHoleCluster"
"""A cluster with no endpoint: where a connection to the capture ports themselves goes (it
would otherwise be passed on to the port it came in on, by Envoy, forever)."""
HTTP_INSPECTOR_FILTER: Final = "envoy.filters.listener.http_inspector"
HTTP_INSPECTOR_TYPE: Final = (
    TYPE_PREFIX + "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
)


ORIGINAL_DST_FILTER: Final = "envoy.filters.listener.original_dst"
ORIGINAL_DST_TYPE: Final = (
    TYPE_PREFIX + "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
)
PASSTHROUGH_CLUSTER: Final = "PassthroughCluster"
"""Istio's cluster for a captured connection no virtual listener takes: it goes on, unchanged,
to the address the application connected to."""

SECRET_TYPE: Final = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
"""SDS: the proxy's certificate and the mesh's root, on the same ADS stream."""
UPSTREAM_TLS_TYPE: Final = (
    TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)
DOWNSTREAM_TLS_TYPE: Final = (
    TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
RAW_BUFFER_TYPE: Final = TYPE_PREFIX + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
TLS_INSPECTOR_TYPE: Final = (
    TYPE_PREFIX + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
)
CERT_SECRET: Final = "default"
"""Istio's SDS name of the proxy's own certificate and key."""
ROOT_SECRET: Final = "ROOTCA"
"""Istio's SDS name of the trust bundle (the mesh CA's certificate)."""
TRUST_DOMAIN: Final = "cluster.local"
MESH_ALPN: Final = "istio"
"""The ALPN a sidecar offers on mTLS to another sidecar; the inbound listener tells mesh TLS
from an application's own TLS by it, as Istio does."""
TLS_MODE_KEY: Final = "tlsMode"
SOCKET_MATCH_KEY: Final = "envoy.transport_socket_match"
ADS_SOURCE: Final = {"ads": {}, "resource_api_version": "V3"}


def spiffe_id(namespace: str, service_account: str) -> str:
    """Istio's workload identity (its certificate's URI SAN)."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def duration(ms: int) -> str:
    """Milliseconds as protobuf JSON's Duration (``"1.5s"``)."""
    whole, part = divmod(ms, 1000)
    return f"{whole}.{part:03d}".rstrip("0").rstrip(".") + "s"


def _go_duration(text: str) -> str:
    return duration(checks.duration_ms(text))


def fraction(value: float) -> dict[str, Any]:
    """A percentage as Envoy's FractionalPercent (per million, as Istio writes it)."""
    return {"numerator": round(value * 10_000), "denominator": "MILLION"}


def fqdn(host: str, namespace: str) -> str:
    """Istio's host resolution: a short name is a service of the object's namespace."""
    if "." in host or host.startswith("*"):
        return host if host.count(".") > 1 or host.startswith("*") else f"{host}.svc.{DOMAIN}"
    return f"{host}.{namespace}.svc.{DOMAIN}"


def cluster_name(host: str, port: int, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{host}"


SNI_CLUSTER_FILTER: Final = "envoy.filters.network.sni_cluster"
SNI_CLUSTER_TYPE: Final = TYPE_PREFIX + "envoy.extensions.filters.network.sni_cluster.v3.SniCluster"
