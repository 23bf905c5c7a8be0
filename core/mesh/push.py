"""The mesh-push handler's rules that need no network: which proxy a node id names, a snapshot's
versions, the debounce, and how a proxy's ACKs and NACKs read (as ``istioctl proxy-status``).

Why this exists: the handler (``handlers/mesh``) is a thin shell over gRPC and NATS; what it
decides — when a burst of changes is pushed, whether a snapshot changed, whether a request is
an ACK, a NACK or stale, what ``fleetlog mesh status`` shows — is pure and tested here without
a server. Nothing here reads a clock: times are given.

* **Node ids** are Istio's: ``<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local``,
  ``sidecar`` for a pod's sidecar and ``router`` for a gateway.
* **Versions** are a hash of a type's resources, so a rebuilt snapshot that did not change is
  not pushed again, and a restarted handler computes the versions Envoy already runs.
* **Debounce** (Istio's ``PILOT_DEBOUNCE_AFTER`` / ``PILOT_DEBOUNCE_MAX``): a push waits until
  changes have been quiet for ``quiet_s``, but never longer than ``max_s`` after the first.
* **Scoping** (Istio's ``ConfigsUpdated``): which types a change of each kind can alter
  (:data:`REBUILT_BY`); the others are not built again.
* **Sync state** per type, as ``istioctl proxy-status`` names it: ``SYNCED`` (the last version
  sent is acked), ``NACKED`` (Envoy refused it), ``STALE`` (sent, no answer yet),
  ``NOT SENT``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from core.mesh.envoy.model import Snapshot
from core.mesh.envoy.names import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from core.mesh.vhds import VIRTUAL_HOST_TYPE

TYPE_ORDER: Final = (
    CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE, LISTENER_TYPE, ROUTE_TYPE, VIRTUAL_HOST_TYPE
)  # fmt: skip
"""The order Envoy needs a push applied in: clusters → endpoints → secrets (SDS: a cluster or
listener with mTLS warms until its certificates come) → listeners → routes → the virtual
hosts an on-demand sidecar asked for (VHDS, ``core.mesh.vhds``)."""
SHORT: Final = {CLUSTER_TYPE: "CDS", ENDPOINT_TYPE: "EDS", SECRET_TYPE: "SDS",
                LISTENER_TYPE: "LDS", ROUTE_TYPE: "RDS", VIRTUAL_HOST_TYPE: "VHDS"}  # fmt: skip
BUILT_TYPES: Final = (
    CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE, VIRTUAL_HOST_TYPE
)  # fmt: skip
"""The types built from the mesh's state: SDS's are a gateway's credentials (the proxy's own
certificate is issued per identity and joins them when served)."""
_XDS: Final = frozenset({CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, VIRTUAL_HOST_TYPE})
REBUILT_BY: Final[Mapping[str, frozenset[str]]] = {
    "Service": _XDS,
    "ServiceEntry": _XDS,
    "EndpointSlice": frozenset({ENDPOINT_TYPE}),
    "Pod": frozenset({CLUSTER_TYPE, ENDPOINT_TYPE}),
    "Namespace": frozenset({CLUSTER_TYPE, ENDPOINT_TYPE}),
    "VirtualService": frozenset({LISTENER_TYPE, ROUTE_TYPE, VIRTUAL_HOST_TYPE}),
    "DestinationRule": frozenset(
        {CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, VIRTUAL_HOST_TYPE, SECRET_TYPE}
    ),
    "Gateway": frozenset({CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE}),
    "Secret": frozenset({LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE}),
    "PeerAuthentication": frozenset({ENDPOINT_TYPE, LISTENER_TYPE}),
    "Node": frozenset({ENDPOINT_TYPE}),
}
"""Which types a change of each kind can alter, from what the builder reads of it (Istio's
``ConfigsUpdated`` scoping): a pod's labels and sidecar give subsets' endpoints and auto
mTLS (clusters' transport sockets, endpoints' ``tlsMode``), a Namespace's labels which pods
are meshed; a VirtualService is routes and TCP listeners' targets; a DestinationRule is
clusters, subsets' endpoints, routes' hash policies and the credentials its ``credentialName``
gives a proxy; a Gateway is a gateway's listeners,
routes and credentials, and so is a Secret it names, and a Gateway also a gateway's clusters
(an AUTO_PASSTHROUGH server brings the SNI-DNAT ones); a PeerAuthentication is endpoints' mTLS
and the inbound listener; a Node's topology labels are its endpoints' locality (a proxy
following its node's locality gets new part keys, so all its types are built for it). The unit
tests check each row against the builder (emptying a kind
changes exactly the types listed)."""


def rebuilt_by(kinds: Iterable[str]) -> frozenset[str]:
    """The types to build again after changes of ``kinds`` (all of them for a kind not in
    :data:`REBUILT_BY`: a kind the builder reads but this table forgot costs a full build, not
    a stale proxy)."""
    found: set[str] = set()
    for kind in kinds:
        found |= REBUILT_BY.get(kind, frozenset(BUILT_TYPES))
    return frozenset(found)


DOMAIN_SUFFIX: Final = ".svc.cluster.local"

SyncState = Literal["SYNCED", "NACKED", "STALE", "NOT SENT"]


class BadNodeId(ValueError):
    """A node id that is not Istio's ``type~ip~pod.namespace~domain``."""


@dataclass(frozen=True, kw_only=True)
class ProxyNode:
    """Who a connected Envoy is, read from its node id (and metadata)."""

    id: str
    kind: Literal["sidecar", "gateway"]
    ip: str
    pod: str
    namespace: str

    @property
    def name(self) -> str:
        """``istioctl proxy-status``'s NAME: ``<pod>.<namespace>``."""
        return f"{self.pod}.{self.namespace}"


def parse_node_id(node_id: str) -> ProxyNode:
    """Istio's node id: ``sidecar~10.1.0.5~web-1.shop~shop.svc.cluster.local``; a gateway's
    type is ``router``."""
    parts = node_id.split("~")
    if len(parts) != 4:
        raise BadNodeId(f"node id {node_id!r} is not type~ip~pod.namespace~domain")
    kind, ip, workload, domain = parts
    if kind not in ("sidecar", "router"):
        raise BadNodeId(f"node id {node_id!r}: type {kind!r} is not sidecar or router")
    pod, dot, namespace = workload.rpartition(".")
    if not dot or not pod or not namespace:
        raise BadNodeId(f"node id {node_id!r}: {workload!r} is not pod.namespace")
    if domain and not domain.startswith(namespace + "."):
        raise BadNodeId(f"node id {node_id!r}: domain {domain!r} is not of {namespace!r}")
    return ProxyNode(
        id=node_id,
        kind="gateway" if kind == "router" else "sidecar",
        ip=ip,
        pod=pod,
        namespace=namespace,
    )


def node_id(*, kind: Literal["sidecar", "gateway"], ip: str, pod: str, namespace: str) -> str:
    """The node id Istio gives a proxy (what a bootstrap sets)."""
    prefix = "router" if kind == "gateway" else "sidecar"
    return f"{prefix}~{ip}~{pod}.{namespace}~{namespace}{DOMAIN_SUFFIX}"


def resource_name(resource: Mapping[str, Any]) -> str:
    """How Envoy names a resource: a ClusterLoadAssignment by its cluster, others by name."""
    return str(resource.get("cluster_name") or resource.get("name") or "")


def canonical(resource: Mapping[str, Any]) -> str:
    """A resource's canonical JSON (sorted keys, no spaces): what its version is a hash of."""
    return json.dumps(resource, sort_keys=True, separators=(",", ":"))


def resource_version(text: str) -> str:
    """One resource's version, a hash of its canonical JSON: delta xDS sends a resource only
    when this differs from what the proxy holds, and a reconnecting Envoy's
    ``initial_resource_versions`` name these, so a restarted handler re-sends nothing."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def type_version(pairs: Iterable[tuple[str, str]], *, ordered: bool = False) -> str:
    """A type's version from its resources' ``(name, resource version)``: order-independent,
    and cheap (the resources' JSON is hashed once each, when it changes). ``ordered``: the
    pairs come sorted already (the encoder's are), so they are not sorted again — a second
    sort of 1,000 pairs on every full push of a type."""
    lines = "\n".join(
        f"{name} {version}" for name, version in (pairs if ordered else sorted(pairs))
    )
    return hashlib.sha256(lines.encode()).hexdigest()[:12]


def version_of(resources: Sequence[Mapping[str, Any]]) -> str:
    """A hash of the resources (order-independent: sorted by name), short enough to read."""
    return type_version((resource_name(r), resource_version(canonical(r))) for r in resources)


def resources_by_type(snapshot: Snapshot) -> dict[str, list[dict[str, Any]]]:
    return {
        CLUSTER_TYPE: snapshot.clusters,
        ENDPOINT_TYPE: snapshot.endpoints,
        LISTENER_TYPE: snapshot.listeners,
        ROUTE_TYPE: snapshot.routes,
        VIRTUAL_HOST_TYPE: snapshot.virtual_hosts,
    }


@dataclass(frozen=True, kw_only=True)
class Debounce:
    """Istio's debounce: quiet for ``quiet_s``, at most ``max_s`` after the first change."""

    quiet_s: float = 0.003
    """Short: Istio's 100 ms is its ceiling, not a floor; 3 ms gathers the events one command
    folds together (measured: the 10 ms this was cost every change that much)."""
    max_s: float = 0.100

    def wait(self, *, first_at: float, last_at: float, now: float) -> float:
        """Seconds still to wait before pushing (0: push now)."""
        return max(0.0, min(last_at + self.quiet_s, first_at + self.max_s) - now)


# -- ACK / NACK ------------------------------------------------------------------------------


@dataclass
class TypeStatus:
    """One type URL of one proxy: what was sent last, what Envoy acked, what it refused."""

    sent: str = ""
    sent_nonce: str = ""
    sent_ns: int = 0
    acked: str = ""
    acked_ns: int = 0
    nacked: str = ""
    """The version Envoy refused last (cleared when a later version is acked)."""
    error: str = ""
    nacked_ns: int = 0

    def state(self) -> SyncState:
        if not self.sent:
            return "NOT SENT"
        if self.nacked and self.nacked == self.sent:
            return "NACKED"
        if self.acked == self.sent:
            return "SYNCED"
        return "STALE"

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "sent_nonce": self.sent_nonce,
            "sent_ns": self.sent_ns,
            "acked": self.acked,
            "acked_ns": self.acked_ns,
            "nacked": self.nacked,
            "error": self.error,
            "nacked_ns": self.nacked_ns,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TypeStatus:
        return cls(**{k: data[k] for k in cls().as_dict() if k in data})


Answer = Literal["initial", "ack", "nack", "stale"]


def classify(status: TypeStatus, *, nonce: str, error: str | None) -> Answer:
    """What a DiscoveryRequest is, by the xDS protocol: no nonce, a first request (or one
    after a reconnect); the nonce of the last response, an ACK or (with ``error_detail``) a
    NACK of it; another nonce, stale (superseded by a later response: ignored)."""
    if not nonce:
        return "initial"
    if nonce != status.sent_nonce:
        return "stale"
    return "nack" if error else "ack"


def record(
    status: TypeStatus, answer: Answer, *, version: str, error: str | None, at_ns: int
) -> None:
    """Fold an ACK or NACK of the last response into ``status``."""
    if answer == "ack":
        status.acked, status.acked_ns = version, at_ns
        if status.nacked and status.nacked != version:
            status.nacked, status.error = "", ""
    elif answer == "nack":
        status.nacked, status.error, status.nacked_ns = status.sent, error or "", at_ns


@dataclass
class ProxyStatus:
    """What ``fleetlog mesh status`` reads of one proxy (stored as its ``as_dict``)."""

    id: str
    name: str
    kind: str
    connected: bool = True
    handler: str = ""
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def of(self, type_url: str) -> TypeStatus:
        return self.types.setdefault(SHORT[type_url], TypeStatus())

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "connected": self.connected,
            "handler": self.handler,
            "types": {short: t.as_dict() for short, t in sorted(self.types.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProxyStatus:
        return cls(
            id=data["id"],
            name=data.get("name", data["id"]),
            kind=data.get("kind", "sidecar"),
            connected=bool(data.get("connected", False)),
            handler=data.get("handler", ""),
            types={k: TypeStatus.from_dict(v) for k, v in (data.get("types") or {}).items()},
        )


STATUS_COLUMNS: Final = ("NAME", "CDS", "LDS", "EDS", "RDS", "VHDS", "LAG", "ERROR")


def status_row(status: ProxyStatus, *, now_ns: int) -> list[str]:
    """One row of ``fleetlog mesh status``: the proxy's name, each type's state, its lag (how
    long the oldest unanswered push has waited; ``0s`` when every type is answered) and the
    last NACK's error."""
    cells = [status.name]
    waiting: list[int] = []
    errors: list[str] = []
    for short in ("CDS", "LDS", "EDS", "RDS", "VHDS"):
        t = status.types.get(short) or TypeStatus()
        state = t.state()
        cells.append(state)
        if state == "STALE":
            waiting.append(t.sent_ns)
        if t.nacked:
            errors.append(f"{short}: {one_line(t.error)}")
    lag = max(0, now_ns - min(waiting)) if waiting else 0
    cells.append(_seconds(lag))
    cells.append("; ".join(errors) or ("disconnected" if not status.connected else "-"))
    return cells


ERROR_WIDTH: Final = 160


def one_line(error: str, *, width: int = ERROR_WIDTH) -> str:
    """Envoy's error on one line for a table: its whitespace collapsed and, when long, its
    end kept (Envoy puts the reason last, after a dump of the refused message)."""
    text = " ".join(error.split())
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _seconds(ns: int) -> str:
    seconds = ns / 1e9
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if ns else "0s"
    return f"{seconds:.1f}s"


def ads_bootstrap(
    *,
    node: str,
    ads_host: str,
    ads_port: int,
    admin_port: int,
    metadata: Mapping[str, Any] | None = None,
    cluster: str = "",
    ads_pipe: str | None = None,
    upstream_mark: int | None = None,
    delta: bool = True,
    token: str | None = None,
) -> dict[str, Any]:
    """An Envoy bootstrap whose every resource comes over ADS from the mesh-push handler at
    ``ads_host:ads_port`` (HTTP/2 gRPC), as Istio's ``pilot-agent`` writes one: node id (and
    metadata, e.g. ``LABELS``), the ``xds-grpc`` cluster, CDS and LDS through ADS, an admin
    listener on loopback.

    ``ads_pipe``: a Unix socket to reach ADS through instead (a sidecar in its pod's network
    namespace cannot reach the node's loopback; the node agent relays the socket there).
    ``upstream_mark``: the socket mark of every connection Envoy makes upstream, which the
    pod's capture rules let pass (else Envoy's own connections would be redirected to it).
    ``delta``: incremental xDS (``DELTA_GRPC``: only changed resources are sent, the default
    for the proxies fleetlog starts); False asks for state of the world (``GRPC``), which the
    handler serves too, for bootstraps written before delta existed.
    ``token``: the proxy's token (``core.mesh.proxytoken``), sent on the ADS stream as gRPC
    metadata; the handler refuses a proxy without one unless it runs in insecure mode (tests
    that start Envoy by hand)."""
    address: dict[str, Any] = (
        {"pipe": {"path": ads_pipe}}
        if ads_pipe is not None
        else {"socket_address": {"address": ads_host, "port_value": ads_port}}
    )
    bootstrap = _ads_bootstrap(node=node, address=address, admin_port=admin_port,
                               metadata=metadata, cluster=cluster, delta=delta)  # fmt: skip
    if token is not None:
        service = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]
        service["initial_metadata"] = [{"key": TOKEN_METADATA, "value": BEARER + token}]
    if upstream_mark is not None:
        bootstrap["cluster_manager"] = {
            "upstream_bind_config": {
                "source_address": {"address": "0.0.0.0", "port_value": 0},
                "socket_options": [
                    {"description": "SO_MARK", "level": SOL_SOCKET, "name": SO_MARK,
                     "int_value": upstream_mark, "state": "STATE_PREBIND"}
                ],
            }
        }  # fmt: skip
    return bootstrap


TOKEN_METADATA: Final = "authorization"
BEARER: Final = "Bearer "
"""The proxy token travels as a bearer credential in this gRPC metadata (an HTTP/2 header of
the ADS stream), as Istio's agent sends its JWT."""

SOL_SOCKET: Final = 1
SO_MARK: Final = 36
"""Linux's ``setsockopt`` level and option for a socket's mark."""


def _ads_bootstrap(
    *,
    node: str,
    address: dict[str, Any],
    admin_port: int,
    metadata: Mapping[str, Any] | None,
    cluster: str,
    delta: bool,
) -> dict[str, Any]:
    return {
        "node": {
            "id": node,
            "cluster": cluster or node.split("~")[2].split(".")[0],
            "metadata": dict(metadata or {}),
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
                    },
                }
            ]
        },
    }
