"""The mesh-push handler: the cluster projection's mesh, built per proxy, debounced, versioned,
and served to Envoy over ADS (gRPC: incremental/delta xDS, or state of the world for older
bootstraps), with every ACK and NACK reported.

Why this exists: Envoy proxies (sidecars, gateways) are configured by one gRPC stream each
(``envoy.service.discovery.v3.AggregatedDiscoveryService``); fleetlog's log says what they
should run. This shell connects the two:

* **Debounce** (``core.mesh.push.Debounce``): events of the kinds the mesh reads wake the push
  loop, which waits for 3 ms of quiet (at most 100 ms after the first change), then makes
  every connected proxy's resources from one shared build (``core.mesh.envoy.build.MeshBuild``):
  each type once per part key (``part_key``: proxies that differ only by their bind address
  share clusters, endpoints and routes), and only the types the changed kinds can alter
  (``core.mesh.push.rebuilt_by``).
* **Versions**: a resource's version is the hash of its JSON and a type's the hash of those,
  so an unchanged type is not pushed again, a delta stream sends only the resources whose
  version differs from what Envoy holds, and a restarted handler (or another replica) has the
  versions a reconnecting Envoy already runs (its first request carries them: nothing is
  re-sent).
* **Replicas**: each proxy's stream is served by the handler it connected to; its status key
  is that handler's (``handlers.mesh.status``), so replicas share proxies without double
  pushes.
* **Order**: per stream, clusters → endpoints → listeners → routes; a type waits while an
  earlier one is unanswered, except endpoints: a changed cluster set's endpoints are re-sent
  right after it (Envoy warms a changed cluster until its endpoints come again, and answers
  the clusters only then).
* **ACK/NACK** (``core.mesh.push.classify``): the nonce of the last response with no error is
  an ACK, with ``error_detail`` a NACK; older nonces are stale and ignored. A NACKed version is
  remembered per proxy and type: it is never sent to that proxy again, and a new stream (Envoy
  reconnecting) gets the last version it acked for that type instead.
* **Report**: each proxy's :class:`~core.mesh.push.ProxyStatus` goes to ``fleet_mesh_status``
  (``handlers.mesh.status``).
* **SDS** on the same stream: a proxy's secrets (``default``, ``ROOTCA``) are its identity's
  (namespace and service account: its pod's in the read model, else Istio's
  ``SERVICE_ACCOUNT`` node metadata — a gateway has no pod — else ``default``), issued by
  the mesh CA (``handlers.mesh.ca``) and issued again at half their life; the proxies of that
  identity get the new ones pushed. A gateway proxy also gets the certificates its servers
  name by ``credentialName`` (``kubernetes://<name>``): Secrets, sealed in the log, opened
  here with their data keys (``secret_keys``, which ``up`` gives the handler it runs) and
  pushed again when the Secret changes (Envoy serves the new one with no restart); so does any
  proxy whose DestinationRules name a ``credentialName`` it takes (its namespace's Secret).
* **The root's rotation** (``roots_tick``, every second): a new root (``fleetlog mesh
  rotate-ca``, or the handler's own when the root nears its end) first reaches every proxy's
  bundle beside the old one; certificates are issued again from it once every connected proxy
  acked that bundle; the old root leaves the bundle when the overlap is over.

* **Admission**: a stream is served only once its proxy proved who it is — a proxy token
  (``core.mesh.proxytoken``, in the stream's gRPC metadata) signed by a trusted node key for
  this node id and backed by the read model (the pod, its uid and node; a gateway's node);
  otherwise it ends with UNAUTHENTICATED or PERMISSION_DENIED before anything is sent.
  ``insecure`` (tests that start Envoy by hand) skips the check.

``amend`` is a hook over each built snapshot (tests use it to make a config Envoy refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import grpc
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from core.mesh.envoy.build import MeshBuild, PartKey, build_snapshot
from core.mesh.envoy.clusters import build_clusters
from core.mesh.envoy.endpoints import build_endpoints
from core.mesh.envoy.model import MeshState, Proxy, Snapshot, mesh_services
from core.mesh.envoy.names import PASSTHROUGH_CLUSTER, SECRET_TYPE
from core.mesh.envoy.secrets import mesh_secrets
from core.mesh.proxytoken import (
    ProxyRefused,
    binding_problem,
    token_from_metadata,
    verify_token,
)
from core.mesh.push import (
    BUILT_TYPES,
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SHORT,
    TYPE_ORDER,
    Answer,
    BadNodeId,
    Debounce,
    ProxyNode,
    ProxyStatus,
    TypeStatus,
    classify,
    parse_node_id,
    rebuilt_by,
    record,
    resources_by_type,
)
from core.mesh.vhds import VIRTUAL_HOST_TYPE, host_index, passthrough_host, resolve
from core.services.slices import SERVICE_NAME_LABEL
from handlers.mesh.ca import TRUST_WAIT, Issued, MeshCA
from handlers.mesh.model import MeshModel
from handlers.mesh.status import StatusWriter
from handlers.mesh.xds import Encoded, Encoder, chosen, combined, since
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.secretkeys import SecretKeys

log = structlog.get_logger(__name__)

Amend = Callable[[ProxyNode, Snapshot], Snapshot]
BIND_ADDRESS_KEY = "BIND_ADDRESS"
"""Node metadata naming the address listeners bind (fleetlog's; tests bind loopback)."""
ADS_ADDRESS_FILE = "mesh/ads-address"
"""Where, under ``fleetlog up``'s data directory, the ADS address is written (``host:port``)
for the node agent and the bootstraps it writes."""
INTERCEPTION_KEY = "INTERCEPTION_MODE"
"""Istio's node metadata of how the pod's traffic reaches its sidecar: ``REDIRECT`` (the
node agent's nftables redirect to 15001) gets the capture listeners; absent or ``NONE``,
none."""
WILDCARD_TYPES: Final = frozenset({CLUSTER_TYPE, LISTENER_TYPE})
"""The types Envoy subscribes to as a whole (no names); EDS and RDS name what they want."""
LABELS_KEY = "LABELS"
"""Istio's node metadata of the workload's labels (a gateway's select its Gateways)."""
ADMISSION_WAIT_S: Final = 5.0
"""How long a proxy with a good token waits for the read model to show its pod (or node)."""
ROOT_TICK_S: Final = 1.0
"""How often the handler looks at the mesh CA's directory and the root's transition."""
SERVICE_ACCOUNT_KEY = "SERVICE_ACCOUNT"
"""Istio's node metadata of the workload's service account (its identity)."""


@dataclass
class _Certificate:
    """One identity's current certificate, as SDS serves it, and when it is issued again."""

    issued: Issued
    encoded: Encoded
    renew_at: float


@dataclass
class _Memory:
    """What the handler remembers of one proxy across its streams."""

    status: ProxyStatus
    good: dict[str, Encoded] = field(default_factory=dict)
    """Per type, the last version the proxy acked."""
    refused: dict[str, set[str]] = field(default_factory=dict)
    """Per type, the versions it NACKed."""


@dataclass
class _TypeStream:
    subscribed: bool = False
    names: tuple[str, ...] = ()
    sent_version: str = ""
    sent_names: tuple[str, ...] | None = None
    sent: Encoded | None = None
    awaiting: bool = False
    force: bool = False


class _Subscription(Protocol):
    subscribed: bool
    awaiting: bool


def _answerable(types: Mapping[str, _Subscription]) -> Iterator[str]:
    """The subscribed types a response may be sent for now, in Envoy's order (both
    protocols): a type waits while an earlier one is unanswered, except endpoints, which
    follow an unanswered clusters response at once."""
    clusters_unanswered = False
    for type_url in TYPE_ORDER:
        state = types[type_url]
        if clusters_unanswered and type_url != ENDPOINT_TYPE:
            return
        if state.awaiting:
            if type_url != CLUSTER_TYPE:
                return  # later types wait for this one's answer (Envoy's order)
            clusters_unanswered = True
        elif state.subscribed:
            yield type_url


class _Stream:
    """One Envoy's ADS stream."""

    def __init__(self, push: MeshPush) -> None:
        self.push = push
        self.node: ProxyNode | None = None
        self.proxy: Proxy | None = None
        self.memory: _Memory | None = None
        self.identity: tuple[str, str] | None = None
        """``(namespace, service account)``: whose certificate SDS serves this proxy."""
        self.types = {t: _TypeStream() for t in TYPE_ORDER}
        self.current: dict[str, Encoded] = {}
        self.sds: tuple[tuple[str, str], Encoded] | None = None
        """The identity's secrets and the gateway's credentials as one SDS set, by their two
        versions (made again only when one changes)."""
        self.wake = asyncio.Event()
        self.done = False
        self.token: str | None = None
        self.own_locality = False
        """Whether Envoy's bootstrap gave its locality (else its pod's node's is followed)."""
        """The proxy token its stream's gRPC metadata carried (``core.mesh.proxytoken``)."""

    # -- requests ---------------------------------------------------------------------------

    async def read(self, requests: AsyncIterator[Any]) -> None:
        try:
            async for request in requests:
                if self.node is None:
                    # Nothing is served, not even a Secret, before the proxy proved who it is.
                    await self.push.admit(request.node.id, self.token)
                self.on_request(request)
        finally:
            self.done = True
            self.wake.set()

    def on_request(self, request: Any) -> None:
        if self.node is None:
            self._identify(request)
        assert self.memory is not None
        type_url = request.type_url
        if type_url not in self.types:
            log.info("mesh.unknown_type", type_url=type_url)
            return
        state = self.types[type_url]
        status = self.memory.status.of(type_url)
        error = request.error_detail.message if request.HasField("error_detail") else None
        answer = classify(status, nonce=request.response_nonce, error=error)
        if answer == "stale":
            return
        now = time.time_ns()
        state.subscribed = True
        state.names = tuple(sorted(request.resource_names))
        if answer == "initial":
            serving = self.serving(type_url)
            if serving is not None and request.version_info == serving.version:
                # Envoy runs this already (a restarted handler, a reconnect): resumed.
                state.sent_version, state.sent_names, state.sent = (
                    serving.version, state.names, serving,
                )  # fmt: skip
                if status.acked != serving.version:
                    status.sent = status.acked = serving.version
                    status.sent_ns = status.acked_ns = now
                    self.push.report(self.memory.status)
                self.memory.good[type_url] = serving
        else:
            state.awaiting = False
            record(status, answer, version=request.version_info, error=error, at_ns=now)
            if answer == "ack" and state.sent is not None:
                self.memory.good[type_url] = state.sent
            elif answer == "nack":
                self.memory.refused.setdefault(type_url, set()).add(status.nacked)
                log.warning("mesh.nack", proxy=self.node.id if self.node else "",
                            type=SHORT[type_url], version=status.nacked, error=error)  # fmt: skip
            self.push.report(self.memory.status)
        self.wake.set()

    def _identify(self, request: Any) -> None:
        node = parse_node_id(request.node.id)
        metadata = json_format.MessageToDict(request.node.metadata)
        labels = metadata.get(LABELS_KEY)
        if not isinstance(labels, dict):
            labels = self.push.model.pod_labels(node.namespace, node.pod)
        self.node = node
        # The pod's own record first: the log, not the proxy's claim, says who it runs as; a
        # proxy's own word (its metadata) only where proxies are not authenticated.
        account = (
            self.push.model.service_account(node.namespace, node.pod)
            or (metadata.get(SERVICE_ACCOUNT_KEY) if self.push.insecure else None)
            or "default"
        )
        self.identity = (node.namespace, str(account))
        self.proxy = Proxy(
            kind=node.kind,
            namespace=node.namespace,
            labels={str(k): str(v) for k, v in labels.items()},
            bind_address=str(metadata.get(BIND_ADDRESS_KEY) or self.push.bind_address),
            captured=node.kind == "sidecar" and metadata.get(INTERCEPTION_KEY) == "REDIRECT",
            # Envoy's node.locality, as Istio's agent writes it from the node's topology labels;
            # the node agent's sidecars and ingress Envoy give none: their pod's node's then
            # (followed when the node's labels change: ``rebuild``).
            locality=_locality(request.node.locality)
            or self.push.model.pod_locality(node.namespace, node.pod),
            # A delta sidecar asks for its virtual hosts as its requests need them (VHDS only
            # exists over delta xDS); a gateway's routes stay whole.
            on_demand=node.kind == "sidecar" and isinstance(self, _DeltaStream),
        )
        self.own_locality = bool(_locality(request.node.locality))
        self.memory = self.push.attach(self)
        self.memory.status.connected = True
        self.memory.status.handler = self.push.handler_id
        self.push.report(self.memory.status)
        self.push.refresh(self)

    def subscribed(self, type_url: str) -> bool:
        return self.types[type_url].subscribed

    # -- responses --------------------------------------------------------------------------

    def serving(self, type_url: str) -> Encoded | None:
        """What this proxy should run for a type: the newest build, unless it refused that
        version, then the last one it acked (nothing if it never acked one)."""
        if type_url == SECRET_TYPE:
            current: Encoded | None = self.push.secrets(self)
        else:
            current = self._current(type_url)
        if current is None or self.memory is None:
            return current
        if current.version in self.memory.refused.get(type_url, ()):
            return self.memory.good.get(type_url)
        return current

    def _current(self, type_url: str) -> Encoded | None:
        return self.current.get(type_url)

    def next_response(self) -> Any:
        """The next response in Envoy's order: a type waits while an earlier one is
        unanswered — except endpoints, which follow a clusters response at once. Envoy
        re-creates a changed cluster and warms it until its endpoints come again, and answers
        the clusters response only once they are warm (or its 15 s initial fetch timeout
        ends): endpoints held back for that answer made every cluster change take 15 s. The
        one stream keeps them in order."""
        for type_url in _answerable(self.types):
            state = self.types[type_url]
            serving = self.serving(type_url)
            if serving is None:
                continue
            running = state.sent_version
            if self.memory is not None and running in self.memory.refused.get(type_url, ()):
                # Envoy refused what was sent last: it runs the last version it acked.
                good = self.memory.good.get(type_url)
                running = good.version if good is not None else ""
            if serving.version == running and state.names == state.sent_names and not state.force:
                continue
            return self._respond(type_url, state, serving)
        return None

    def _respond(
        self, type_url: str, state: _TypeStream, serving: Encoded
    ) -> discovery_pb2.DiscoveryResponse:
        assert self.memory is not None
        nonce = self.push.nonce()
        state.sent_version, state.sent_names, state.sent = serving.version, state.names, serving
        state.awaiting, state.force = True, False
        if type_url == CLUSTER_TYPE:
            self.types[ENDPOINT_TYPE].force = True  # re-created clusters warm until these come
        status = self.memory.status.of(type_url)
        status.sent, status.sent_nonce, status.sent_ns = serving.version, nonce, time.time_ns()
        resources = serving.named(state.names)
        wanted = set(state.names)
        self.push.count(
            self.memory.status.id,
            type_url,
            tuple(n for n, _ in serving.resources if not wanted or n in wanted),
        )
        self.push.report(self.memory.status)
        # EDS and RDS name what they want; clusters and listeners are wildcard subscriptions.
        return discovery_pb2.DiscoveryResponse(
            version_info=serving.version, type_url=type_url, nonce=nonce, resources=resources
        )

    async def responses(self) -> AsyncIterator[Any]:
        while True:
            response = self.next_response()
            if response is not None:
                yield response
                continue
            if self.done:
                return
            self.wake.clear()
            await self.wake.wait()


@dataclass
class _DeltaType:
    """One type on a delta stream: what Envoy subscribed to and holds, by name."""

    subscribed: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    known: dict[str, str] = field(default_factory=dict)
    """Name -> the resource version Envoy holds (as far as acks tell)."""
    before: dict[str, str | None] = field(default_factory=dict)
    """What ``known`` held, before the unanswered response, of the names it sent or removed
    (None: not held): what Envoy keeps if it refuses it."""
    sent: Encoded | None = None
    awaiting: bool = False
    force: set[str] = field(default_factory=set)
    """Names to send again even though Envoy holds their version (a re-created cluster's
    endpoints)."""
    basis: str = ""
    """The type version ``known`` fully reflects (for the names subscribed): a later version
    made from it by replacing a few resources is compared by those names alone."""
    last_sent: tuple[tuple[str, str], ...] = ()
    """The ``(name, version)`` pairs of the last response (VHDS: refused ones if NACKed)."""


MAX_ASKED_HOSTS: Final = 4096
"""How many on-demand requests (``<route configuration>/<Host>``) one proxy's stream holds;
a request past it is answered "not found" (a 404 for that host from that sidecar, which
never asks again): more than a sidecar calls in practice (the benchmark's mesh has 1,000
services), few enough that one pod sending endless Host names cannot grow the handler."""
ASKED_SHARED: Final = 1024
"""How many distinct on-demand answers the handler shares between a push and the next, at
most (a set per distinct set of requests: proxies asking alike share one)."""
VHDS_READY: Final = "fleetlog-vhds-ready"
"""A virtual host name no host has (``<config>/fleetlog-vhds-ready`` is removed in the first
VHDS response of each route configuration)."""


@dataclass(frozen=True)
class _Asked:
    """What answers an on-demand proxy's VHDS requests (``_DeltaStream._asked_hosts``)."""

    encoded: Encoded
    """The virtual hosts, versioned as this proxy's set."""
    aliases: Mapping[str, list[str]]
    """Each host's name → the requests it answers."""
    missing: tuple[str, ...]
    """The requests no host answers."""


class _DeltaStream(_Stream):
    """One Envoy's incremental ADS stream (``DeltaAggregatedResources``): each response
    carries only the resources whose version differs from what Envoy holds, and the names it
    should drop. Versions are per resource (the hash of its JSON), so a reconnecting Envoy's
    ``initial_resource_versions`` tell what it already runs and nothing unchanged is re-sent.
    The type's version (``system_version_info``) is the same hash of hashes state-of-the-world
    streams use, so status, refusals and ``fleetlog mesh status`` read the same."""

    def __init__(self, push: MeshPush) -> None:
        super().__init__(push)
        self.delta = {t: _DeltaType() for t in TYPE_ORDER}
        self._asked: tuple[tuple[str, frozenset[str], int], _Asked] | None = None
        self.refused_hosts: set[tuple[str, str]] = set()
        """VHDS: each virtual host version this proxy refused (never sent to it again; the
        version it acked before stays, as a NACKed type's)."""
        self.not_found: set[str] = set()
        """VHDS: the requests answered "not found" (answered again only once a host exists)."""
        self.announced: set[str] = set()
        """VHDS: the route configurations whose subscription got its first response."""
        self.overflow: list[str] = []
        """VHDS: requests past :data:`MAX_ASKED_HOSTS`, to be answered "not found" once and
        not kept."""
        self.overflowed = 0
        """VHDS: how many requests were past the bound."""
        self._passthrough: dict[str, Encoded] = {}
        """VHDS: each pass-through host this proxy was answered, encoded once."""

    def on_request(self, request: Any) -> None:
        if self.node is None:
            self._identify(request)
        assert self.memory is not None
        type_url = request.type_url
        if type_url not in self.delta:
            log.info("mesh.unknown_type", type_url=type_url)
            return
        state = self.delta[type_url]
        status = self.memory.status.of(type_url)
        first = not state.subscribed
        state.subscribed = True
        if first or request.resource_names_subscribe or request.resource_names_unsubscribe:
            state.basis = ""
        if first:
            state.known = dict(request.initial_resource_versions)
            # Envoy's legacy wildcard: a first CDS/LDS request naming nothing.
            state.wildcard = not request.resource_names_subscribe and type_url in WILDCARD_TYPES
        for name in request.resource_names_subscribe:
            if name == "*":
                state.wildcard = True
            elif (
                type_url == VIRTUAL_HOST_TYPE
                and name not in state.names
                and len(state.names) >= MAX_ASKED_HOSTS
            ):
                self._past_the_bound(name)
            else:
                state.names.add(name)
                if not first:
                    state.known.pop(name, None)  # a new subscription wants the resource
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
            state.names.discard(name)
            state.known.pop(name, None)
            self.not_found.discard(name)
        if request.response_nonce:
            error = request.error_detail.message if request.HasField("error_detail") else None
            answer = classify(status, nonce=request.response_nonce, error=error)
            if answer in ("ack", "nack"):
                self._answered(type_url, state, status, answer, error)
        elif first:
            serving = self.serving(type_url)
            if serving is not None and not any(self._difference(state, serving)):
                # Envoy holds every resource already (a restarted handler, a reconnect).
                if status.acked != serving.version:
                    now = time.time_ns()
                    status.sent = status.acked = serving.version
                    status.sent_ns = status.acked_ns = now
                    self.push.report(self.memory.status)
                self.memory.good[type_url] = serving
        self.wake.set()

    def subscribed(self, type_url: str) -> bool:
        return self.delta[type_url].subscribed

    def _answered(
        self,
        type_url: str,
        state: _DeltaType,
        status: TypeStatus,
        answer: Answer,
        error: str | None,
    ) -> None:
        assert self.memory is not None
        state.awaiting = False
        record(status, answer, version=status.sent, error=error, at_ns=time.time_ns())
        if answer == "ack" and state.sent is not None:
            self.memory.good[type_url] = state.sent
        elif answer == "nack":
            for name, held in state.before.items():  # Envoy keeps what it had
                if held is None:
                    state.known.pop(name, None)
                else:
                    state.known[name] = held
            state.basis = ""
            if type_url == VIRTUAL_HOST_TYPE:
                self.refused_hosts.update(state.last_sent)
            self.memory.refused.setdefault(type_url, set()).add(status.nacked)
            log.warning("mesh.nack", proxy=self.node.id if self.node else "",
                        type=SHORT[type_url], version=status.nacked, error=error)  # fmt: skip
        self.push.report(self.memory.status)

    def _difference(
        self, state: _DeltaType, serving: Encoded
    ) -> tuple[list[tuple[str, str, Any]], list[str]]:
        wanted = serving.by_name
        if state.basis:
            names: frozenset[str] | set[str] | None = None
            if serving.version == state.basis:
                names = state.force
            elif serving.replaced is not None and serving.replaced[0] == state.basis:
                # Made from what Envoy holds by replacing a few: only those can differ (and
                # a re-created cluster's endpoints, sent again whatever their version).
                names = serving.replaced[1] | state.force
            if names is not None:
                # Compared by those names alone, not over every resource of the type once per
                # proxy: ten streams after a DestinationRule change each walked 1,000.
                return [
                    (name, *wanted[name])
                    for name in sorted(names)
                    if name in wanted
                    and (state.wildcard or name in state.names)
                    and (state.known.get(name) != wanted[name][0] or name in state.force)
                ], []
        changed = [
            (name, version, packed)
            for name, (version, packed) in wanted.items()
            if (state.wildcard or name in state.names)
            and (state.known.get(name) != version or name in state.force)
        ]
        removed = [n for n in state.known if n not in wanted]
        return changed, removed

    def next_response(self) -> Any:
        """As state of the world's (:meth:`_Stream.next_response`): endpoints follow a
        clusters response at once, every other type waits for the one before it."""
        for type_url in _answerable(self.delta):
            state = self.delta[type_url]
            serving = self.serving(type_url)
            if serving is None:
                continue
            if type_url == VIRTUAL_HOST_TYPE:
                response = self._virtual_hosts(state, serving)
                if response is None:
                    continue
                return response
            changed, removed = self._difference(state, serving)
            if not changed and not removed:
                state.force.clear()
                state.basis = serving.version
                continue
            return self._respond_delta(type_url, state, serving, changed, removed)
        return None

    # -- VHDS: on-demand virtual hosts (core.mesh.vhds) ---------------------------------------

    def _past_the_bound(self, name: str) -> None:
        """A request past :data:`MAX_ASKED_HOSTS`: answered "not found" (Envoy answers 404)
        and not kept. Every Host name a pod sends is a request Envoy never withdraws (nor asks
        again once answered), so without a bound one pod sending endless names would grow
        this stream, and the work each of its requests costs, without end."""
        self.overflow.append(name)
        self.overflowed += 1
        if self.overflowed == 1 or self.overflowed % 1000 == 0:
            log.warning(
                "mesh.on_demand_hosts_past_bound",
                proxy=self.memory.status.id if self.memory is not None else None,
                held=MAX_ASKED_HOSTS,
                refused=self.overflowed,
                host=name,
            )

    def _current(self, type_url: str) -> Encoded | None:
        shared = self.current.get(type_url)
        if type_url != VIRTUAL_HOST_TYPE or shared is None:
            return shared
        return self._asked_hosts(shared).encoded

    def _asked_hosts(self, shared: Encoded) -> _Asked:
        """The virtual hosts that answer what this proxy asked for (``<config>/<host>``), as a
        set of its own: resolved again when the build or the requests change. Proxies asking
        alike share one answer per build (:meth:`MeshPush.asked_hosts`), unless this one
        refused a host (its answer then keeps the version it acked: its own)."""
        names = frozenset(self.delta[VIRTUAL_HOST_TYPE].names)
        key = (shared.version, names, len(self.refused_hosts))
        if self._asked is not None and self._asked[0] == key:
            return self._asked[1]
        captured = self.proxy is not None and self.proxy.captured
        if self.refused_hosts:
            asked = self._resolve_asked(shared, names, captured=captured)
        else:
            asked = self.push.asked_hosts(
                shared, names, captured=captured,
                resolve_asked=lambda: self._resolve_asked(shared, names, captured=captured),
            )  # fmt: skip
        self._asked = (key, asked)
        return asked

    def _resolve_asked(self, shared: Encoded, names: frozenset[str], *, captured: bool) -> _Asked:
        index = shared.index or host_index(())
        aliases: dict[str, list[str]] = {}
        extra: dict[str, Encoded] = {}
        missing: list[str] = []
        for alias in sorted(names):
            found = resolve(index, alias)
            if found is None and captured:  # Istio's ALLOW_ANY catch-all, for this host
                host = passthrough_host(alias, cluster=PASSTHROUGH_CLUSTER)
                if host["name"] not in self._passthrough:
                    self._passthrough[host["name"]] = self.push.encode([host])
                extra[host["name"]] = self._passthrough[host["name"]]
                found = (host["name"],)
            if found is None:
                missing.append(alias)
                continue
            for name in found:
                aliases.setdefault(name, [])
            aliases[found[0]].append(alias)
        good = self.memory.good.get(VIRTUAL_HOST_TYPE) if self.memory is not None else None
        encoded = chosen(shared, aliases, refused=self.refused_hosts, good=good)
        for name in [name for name in self._passthrough if name not in extra]:
            del self._passthrough[name]  # no request it answers is held any more
        if extra:
            encoded = combined(encoded, *extra.values())
        return _Asked(encoded=encoded, aliases=aliases, missing=tuple(missing))

    def _virtual_hosts(self, state: _DeltaType, serving: Encoded) -> Any:
        """The VHDS response due, if any: the asked hosts Envoy does not hold (with the
        requests they answer as ``aliases``), the held ones no longer asked for or gone, and
        "not found" (the request's name, no resource) for a request no host answers."""
        shared = self.current.get(VIRTUAL_HOST_TYPE)
        asked = self._asked_hosts(shared) if shared is not None else _Asked(serving, {}, ())
        wanted = serving.by_name
        changed = [
            (name, version, packed)
            for name, (version, packed) in wanted.items()
            if state.known.get(name) != version
        ]
        removed = [name for name in state.known if name not in wanted]
        self.not_found &= set(asked.missing)
        missing = [alias for alias in asked.missing if alias not in self.not_found]
        missing.extend(self.overflow)
        self.overflow.clear()
        # Each route configuration's VHDS subscription counts as fetched only once a response
        # names a resource of it (``<config>/...``): until then its listener warms, for the 15 s
        # initial fetch timeout when nothing is asked. So a new configuration gets the removal
        # of a name no host has.
        routes = self.current.get(ROUTE_TYPE)
        configs = {name for name, _ in routes.resources} if routes is not None else set()
        fresh = sorted(configs - self.announced)
        if not changed and not removed and not missing and not fresh:
            return None
        removed = [*removed, *(f"{config}/{VHDS_READY}" for config in fresh)]
        self.announced.update(fresh)
        self.not_found.update(missing)
        state.last_sent = tuple((name, version) for name, version, _ in changed)
        response = self._respond_delta(VIRTUAL_HOST_TYPE, state, serving, changed, removed)
        for resource in response.resources:
            resource.aliases.extend(asked.aliases.get(resource.name, ()))
        for alias in missing:
            response.resources.append(discovery_pb2.Resource(name=alias, aliases=[alias]))
        return response

    def _respond_delta(
        self,
        type_url: str,
        state: _DeltaType,
        serving: Encoded,
        changed: list[tuple[str, str, Any]],
        removed: list[str],
    ) -> Any:
        assert self.memory is not None
        nonce = self.push.nonce()
        # What Envoy keeps if it refuses this: the versions it held of these names alone (a
        # copy of every name it holds, per response and proxy, was 1,000 entries each).
        state.before = {name: state.known.get(name) for name, _, _ in changed}
        state.before.update((name, state.known.get(name)) for name in removed)
        for name, version, _ in changed:
            state.known[name] = version
        for name in removed:
            state.known.pop(name, None)
        state.sent, state.awaiting = serving, True
        state.force.clear()
        state.basis = serving.version
        if type_url == CLUSTER_TYPE:
            # Envoy re-creates a changed cluster and warms it until its endpoints come again.
            self.delta[ENDPOINT_TYPE].force.update(name for name, _, _ in changed)
        status = self.memory.status.of(type_url)
        status.sent, status.sent_nonce, status.sent_ns = serving.version, nonce, time.time_ns()
        self.push.count(self.memory.status.id, type_url, tuple(name for name, _, _ in changed))
        self.push.report(self.memory.status)
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=serving.version,
            type_url=type_url,
            nonce=nonce,
            resources=[
                discovery_pb2.Resource(name=name, version=version, resource=packed)
                for name, version, packed in changed
            ],
            removed_resources=removed,
        )


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, push: MeshPush) -> None:
        self._push = push

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for response in self._serve(_Stream(self._push), request_iterator, context):
            yield response

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self._serve(_DeltaStream(self._push), request_iterator, context):
            yield response

    async def _serve(
        self,
        stream: _Stream,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        metadata = {str(key): value for key, value in context.invocation_metadata() or ()
                    if isinstance(value, str)}  # fmt: skip
        stream.token = token_from_metadata(metadata)
        reader = asyncio.create_task(stream.read(request_iterator))
        try:
            async for response in stream.responses():
                yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._push.detach(stream)
            if reader.done() and not reader.cancelled():
                error = reader.exception()
                if isinstance(error, BadNodeId):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
                if isinstance(error, ProxyRefused):
                    await context.abort(getattr(grpc.StatusCode, error.code), str(error))


class MeshPush:
    """The handler: ``await start()`` binds the ADS port, ``run()`` pushes until cancelled."""

    def __init__(
        self,
        projection: Projection[ClusterModel],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        status: StatusWriter | None = None,
        debounce: Debounce | None = None,
        bind_address: str = "0.0.0.0",
        amend: Amend | None = None,
        handler_id: str = "",
        ca: MeshCA | None = None,
        trusted_keys: Mapping[str, str] | None = None,
        insecure: bool = False,
        admission_wait_s: float = ADMISSION_WAIT_S,
        secret_keys: SecretKeys | None = None,
    ) -> None:
        """``trusted_keys``: the public nkeys (``U…`` -> whose) whose proxy tokens admit a
        proxy (the node agents'); ``insecure``: serve any proxy on its node id's word, with no
        token (tests that start Envoy by hand; never ``fleetlog up``); ``admission_wait_s``:
        how long a proxy whose token the read model does not back yet is given for the model
        to catch up (its pod just created or bound) before it is refused."""
        self.model = MeshModel(projection, on_change=self._changed)
        self.trusted_keys = dict(trusted_keys or {})
        self.insecure = insecure
        self.admission_wait_s = admission_wait_s
        self.refusals: Counter[str] = Counter()
        """Streams refused, by gRPC status name: tests and operators read it."""
        self._refusals_said: set[tuple[str, str]] = set()
        self._secret_keys = secret_keys
        """Opens the Secrets Gateways name as credentials (none: such servers get no
        certificate and are left out)."""
        self._credentials: dict[tuple[str, str], tuple[tuple[str, int], dict[str, bytes]]] = {}
        self.host = host
        self.port = port
        self.bind_address = bind_address
        self.amend = amend
        self.handler_id = handler_id or f"{socket.gethostname()}:{os.getpid()}"
        self._status = status
        self._debounce = debounce or Debounce()
        self.ca = ca or MeshCA()
        self._certificates: dict[tuple[str, str], _Certificate] = {}
        self._rotation_wake = asyncio.Event()
        self._staged_since = time.monotonic()
        self.root_tick_s = ROOT_TICK_S
        self.rotations = 0
        """How many certificates were issued again before expiry: tests read it."""
        self._streams: set[_Stream] = set()
        self._memory: dict[str, _Memory] = {}
        self._encoder = Encoder()
        self._asked: dict[tuple[str, int, frozenset[str], bool], tuple[Any, _Asked]] = {}
        """VHDS: each on-demand answer by (build's hosts, their index, requests, captured),
        shared by the proxies asking alike (ten sidecars calling the same services resolved
        and chose the same hosts each); emptied at each push."""
        self._parts: dict[tuple[str, PartKey], Encoded] = {}
        self._last_build: MeshBuild | None = None
        """The last push's build: the next one takes over what its changes left alone."""
        """Each type's resources per :func:`~core.mesh.envoy.build.part_key`, as the last push (or
        a new stream) made them: every proxy with that key is served these."""
        self._server: grpc.aio.Server | None = None
        self._wake = asyncio.Event()
        self._first_change: float | None = None
        self._last_change = 0.0
        # One sequence for every stream: a reconnected proxy's new stream never repeats a nonce
        # its old one used.
        self._nonces = itertools.count(1)
        self.pushes = 0
        """How many times the mesh was rebuilt (debounced changes): tests read it."""
        self.sent: Counter[tuple[str, str]] = Counter()
        """Responses sent, by ``(proxy id, type short name)``: tests count pushes with it."""
        self.last_sent: dict[tuple[str, str], tuple[str, ...]] = {}
        """The names of the resources the last response of each carried."""
        self.built: Counter[str] = Counter()
        """How many times each type (short name) was built and encoded — once per part key
        and push, however many proxies share it: tests read it."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        if self.port:
            # Refused here, with the OS's reason: a gRPC server that failed to bind cannot be
            # disposed of cleanly.
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.host, self.port))
                except OSError as exc:
                    raise OSError(f"cannot listen on {self.address} for ADS: {exc}") from None
        # No SO_REUSEPORT (gRPC's default on Linux): a second handler on a taken port must
        # fail, not share the port's connections with the first.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), server)
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            await server.stop(None)
            raise OSError(f"cannot listen on {self.address} for ADS")
        self.port = bound
        await server.start()
        self._server = server
        log.info("mesh.ads_listening", address=self.address)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Push changes until cancelled; then the gRPC server stops (streams are closed)."""
        if self._server is None:
            await self.start()
        writer = asyncio.create_task(self._status.run()) if self._status is not None else None
        rotation = asyncio.create_task(self._rotate())
        roots = asyncio.create_task(self._watch_roots())
        # The credentials of the Gateways already in the log, before any proxy's first build.
        await self.open_credentials()
        if self._streams:
            self._changed()
        if ready is not None:
            ready.set()
        try:
            while True:
                await self._wake.wait()
                while self._first_change is not None:
                    wait = self._debounce.wait(
                        first_at=self._first_change,
                        last_at=self._last_change,
                        now=time.monotonic(),
                    )
                    if wait <= 0:
                        break
                    await asyncio.sleep(wait)
                self._wake.clear()
                self._first_change = None
                await self.open_credentials()
                self.rebuild()
        finally:
            rotation.cancel()
            roots.cancel()
            await self.stop()
            if writer is not None and self._status is not None:
                self._status.close()
                try:
                    await asyncio.wait_for(asyncio.shield(writer), 10)
                except TimeoutError:
                    writer.cancel()

    async def stop(self) -> None:
        """Stop serving (streams are closed; Envoy keeps its config and reconnects); also for a
        handler whose ``run`` was cancelled before it began."""
        self.model.close()
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace=1.0)

    # -- changes and builds -------------------------------------------------------------------

    def _changed(self) -> None:
        now = time.monotonic()
        if self._first_change is None:
            self._first_change = now
        self._last_change = now
        self._wake.set()

    def rebuild(self) -> None:
        """Build what every connected proxy should run from the model now, and wake its
        stream. Proxies share what they have alike: each type's resources are built and
        encoded once per :func:`~core.mesh.envoy.build.part_key` from one
        :class:`~core.mesh.envoy.build.MeshBuild` (ten sidecars differing by their bind address
        share their clusters, endpoints and routes; only their listeners are their own). Only
        the types the changed kinds can alter are built again (``rebuilt_by``: a
        VirtualService change builds listeners and routes, not clusters); when only
        EndpointSlices changed, only their services' endpoints (Istio's EDS-only push)."""
        self.pushes += 1
        changes = self.model.take_changes()
        previous, self._last_build = self._last_build, None
        if not self._streams:
            self._parts.clear()
            return
        state = self._state()
        if self.amend is not None:
            self._rebuild_amended(state)
            return
        # Each part is made on first use, once; what the changes cannot have altered since the
        # last build is taken over (a VirtualService change makes its hosts' virtual hosts).
        if changes.kinds & {"Node", "Pod"}:
            self._follow_localities()
        build = MeshBuild(
            state, previous=previous, kinds=changes.kinds, slices_of=changes.endpoints_of
        )
        stale = rebuilt_by(changes.kinds)
        fresh: dict[str, list[dict[str, Any]]] = {}
        parts: dict[tuple[str, PartKey], Encoded] = {}
        for stream in list(self._streams):
            proxy = stream.proxy
            assert proxy is not None
            current: dict[str, Encoded] = {}
            try:
                for type_url in BUILT_TYPES:
                    key = (type_url, build.key(proxy, type_url))
                    if key not in parts:
                        kept = self._parts.get(key)
                        if kept is not None and type_url not in stale:
                            self._encoder.keep(kept)
                            parts[key] = kept
                        elif (
                            kept is not None
                            and type_url == ENDPOINT_TYPE
                            and (changes.endpoints_of is not None)
                        ):
                            if proxy.locality not in fresh:
                                fresh[proxy.locality] = touched_endpoints(
                                    state, changes.endpoints_of, locality=proxy.locality
                                )
                            self.built["EDS"] += 1
                            parts[key] = self._encoder.replace(kept, fresh[proxy.locality])
                        else:
                            # Which resources differ from the last push's is found here, once
                            # for every proxy sharing the part (``since``).
                            parts[key] = since(self._build(build, proxy, type_url), kept)
                    current[type_url] = parts[key]
            except Exception as exc:  # one proxy's failed build must not stop the others
                log.error("mesh.build_failed", proxy=stream.node.id if stream.node else "",
                          error=repr(exc))  # fmt: skip
                continue
            stream.current = current
            stream.wake.set()
        self._parts = parts
        self._last_build = build
        self._encoder.next_round()
        self._asked.clear()

    def _follow_localities(self) -> None:
        """A proxy whose bootstrap gave no locality takes its pod's node's again (the node's
        topology labels changed, or the pod was bound): its parts' keys change with it, so
        its endpoints are built for the new locality."""
        for stream in self._streams:
            proxy, node = stream.proxy, stream.node
            if proxy is None or node is None or stream.own_locality:
                continue
            locality = self.model.pod_locality(node.namespace, node.pod)
            if locality != proxy.locality:
                stream.proxy = dataclasses.replace(proxy, locality=locality)

    def _rebuild_amended(self, state: MeshState) -> None:
        """With the ``amend`` hook (tests): every proxy's whole snapshot built on its own and
        amended, nothing shared."""
        for stream in list(self._streams):
            try:
                stream.current = self._encode(stream, build_snapshot(state, stream.proxy))
            except Exception as exc:
                log.error("mesh.build_failed", proxy=stream.node.id if stream.node else "",
                          error=repr(exc))  # fmt: skip
                continue
            stream.wake.set()
        self._parts.clear()
        self._encoder.next_round()
        self._asked.clear()

    def _build(self, build: MeshBuild, proxy: Proxy, type_url: str) -> Encoded:
        self.built[SHORT[type_url]] += 1
        encoded = self._encoder.encode(build.resources(proxy, type_url))
        if type_url == VIRTUAL_HOST_TYPE:
            encoded = dataclasses.replace(encoded, index=build.host_index)
        return encoded

    def asked_hosts(
        self,
        shared: Encoded,
        names: frozenset[str],
        *,
        captured: bool,
        resolve_asked: Callable[[], _Asked],
    ) -> _Asked:
        """The on-demand answer to ``names`` from ``shared``: ``resolve_asked()``'s, made
        once for every proxy asking the same of the same hosts (the answer depends on nothing
        else of a proxy that has refused no host)."""
        key = (shared.version, id(shared.index), names, captured)
        found = self._asked.get(key)
        if found is not None and found[0] is shared.index:
            return found[1]
        if len(self._asked) >= ASKED_SHARED:
            self._asked.clear()
        asked = resolve_asked()
        self._asked[key] = (shared.index, asked)
        return asked

    def encode(self, resources: list[dict[str, Any]]) -> Encoded:
        """Resources made for one stream (an on-demand proxy's pass-through hosts)."""
        return self._encoder.encode(resources)

    def refresh(self, stream: _Stream) -> None:
        """A new stream's resources, made now (it must not wait for the next change): what a
        proxy alike already has is shared, the rest built from the model as it is."""
        proxy = stream.proxy
        assert proxy is not None
        try:
            if self.amend is not None:
                stream.current = self._encode(stream, build_snapshot(self._state(), proxy))
                return
            # Each part made only if no proxy alike has it, taking over the last build's (what
            # changed since is still pending: the next push takes those changes again). Kept
            # as the last build, so the first push after proxies connect is scoped too.
            pending = self.model.pending_changes()
            build = MeshBuild(self._state(), previous=self._last_build, kinds=pending.kinds,
                              slices_of=pending.endpoints_of)  # fmt: skip
            self._last_build = build
            current: dict[str, Encoded] = {}
            for type_url in BUILT_TYPES:
                key = (type_url, build.key(proxy, type_url))
                if key not in self._parts:
                    self._parts[key] = self._build(build, proxy, type_url)
                current[type_url] = self._parts[key]
        except Exception as exc:  # said, not swallowed by the stream: the proxy gets nothing
            log.error("mesh.build_failed", proxy=stream.node.id if stream.node else "",
                      error=repr(exc))  # fmt: skip
            raise
        stream.current = current

    def _encode(self, stream: _Stream, snapshot: Snapshot) -> dict[str, Encoded]:
        if self.amend is not None and stream.node is not None:
            snapshot = self.amend(stream.node, snapshot)
        encoder = self._encoder
        encoded = {t: encoder.encode(r) for t, r in resources_by_type(snapshot).items()}
        encoded[VIRTUAL_HOST_TYPE] = dataclasses.replace(
            encoded[VIRTUAL_HOST_TYPE], index=host_index(snapshot.virtual_hosts)
        )
        # A gateway's credentials; the proxy's own certificates join them when served.
        encoded[SECRET_TYPE] = encoder.encode(snapshot.secrets)
        return encoded

    # -- certificates (SDS) -------------------------------------------------------------------

    def secrets(self, stream: _Stream) -> Encoded | None:
        """The stream's SDS secrets: its identity's (issued on first use) and, for a gateway,
        the credentials its servers name (``kubernetes://<credentialName>``)."""
        if stream.identity is None:
            return None
        found = self._certificates.get(stream.identity)
        if found is None:
            found = self._certificates[stream.identity] = self._issue(stream.identity)
            self._rotation_wake.set()
        credentials = stream.current.get(SECRET_TYPE)
        if credentials is None or not credentials.resources:
            return found.encoded
        versions = (found.encoded.version, credentials.version)
        if stream.sds is None or stream.sds[0] != versions:
            stream.sds = (versions, combined(found.encoded, credentials))
        return stream.sds[1]

    async def open_credentials(self) -> None:
        """Open the Secrets the Gateways name as credentials (sealed in the log; opened with
        their data keys, as the query service opens them for a reader): the builder reads
        them from the state. A Secret is opened again only when it changed."""
        wanted = self.model.wanted_secrets()
        opened: dict[tuple[str, str], tuple[tuple[str, int], dict[str, bytes]]] = {}
        for namespace, name in sorted(wanted):
            record = self.model.secret(namespace, name)
            if record is None:
                continue
            seen = (record.uid, record.last_seq)
            cached = self._credentials.get((namespace, name))
            if cached is not None and cached[0] == seen:
                opened[(namespace, name)] = cached
                continue
            if self._secret_keys is None:
                log.warning("mesh.credential_unreadable", namespace=namespace, name=name,
                            error="this handler holds no cluster key")  # fmt: skip
                continue
            try:
                data = await self._secret_keys.values(
                    record.manifest, namespace=namespace, name=name, uid=record.uid
                )
                if data is None:
                    continue  # its key is gone: its values open for nobody, as if deleted
            except Exception as exc:  # one unreadable Secret must not stop the others
                log.warning("mesh.credential_unreadable", namespace=namespace, name=name,
                            error=repr(exc))  # fmt: skip
                continue
            opened[(namespace, name)] = (seen, data)
        self._credentials = opened

    def _state(self) -> MeshState:
        credentials = {key: data for key, (_, data) in self._credentials.items()}
        return dataclasses.replace(self.model.state(), credentials=credentials)

    def _issue(self, identity: tuple[str, str]) -> _Certificate:
        issued = self.ca.issue(*identity)
        secrets = mesh_secrets(cert_pem=issued.cert_pem, key_pem=issued.key_pem,
                               root_pem=self.ca.root_pem)  # fmt: skip
        # Istio's agent renews at half the certificate's life: a proxy never holds one near
        # expiry, and a missed round leaves the other half.
        renew_at = time.monotonic() + self.ca.ttl.total_seconds() / 2
        return _Certificate(issued, Encoder().encode(secrets), renew_at)

    async def _rotate(self) -> None:
        """Issue each connected identity's certificate again at half its life, and push it
        to that identity's proxies (Envoy swaps it in; open connections are not touched)."""
        while True:
            now = time.monotonic()
            for identity, current in list(self._certificates.items()):
                if current.renew_at > now:
                    continue
                users = [s for s in self._streams if s.identity == identity]
                if not users:
                    del self._certificates[identity]  # issued again if it comes back
                    continue
                self._certificates[identity] = self._issue(identity)
                self.rotations += 1
                log.info("mesh.certificate_rotated", identity=self._certificates[identity]
                         .issued.identity, expires=str(current.issued.expires))  # fmt: skip
                for stream in users:
                    stream.wake.set()
            upcoming = [c.renew_at for c in self._certificates.values()]
            self._rotation_wake.clear()
            timeout = max(0.0, min(upcoming) - time.monotonic()) if upcoming else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rotation_wake.wait(), timeout)

    async def _watch_roots(self) -> None:
        """The root's transition, one step per tick (:meth:`roots_tick`)."""
        while True:
            try:
                self.roots_tick()
            except Exception as exc:  # a bad file must not end the handler: said, retried
                log.error("mesh.root_check_failed", error=repr(exc))
            await asyncio.sleep(self.root_tick_s)

    def roots_tick(self) -> None:
        """One step of a root rotation (``handlers.mesh.ca``): a root rotated by the command
        (read from the directory) or near its end (rotated here) → every proxy's bundle
        carries both roots, with its certificate unchanged; once every connected proxy acked
        that bundle (or after ``TRUST_WAIT``) → every identity's certificate issued again from
        the new root; once the overlap is over → the old roots dropped from the bundle."""
        now = datetime.datetime.now(datetime.UTC)
        changed = self.ca.reload()
        if not changed and self.ca.previous is None and self.ca.needs_rotation(now):
            log.info("mesh.root_rotating", expires=str(self.ca.root.not_valid_after_utc))
            self.ca.rotate(now=now)
            changed = True
        if changed:
            log.info("mesh.root_rotated", root=self.ca.root.subject.rfc4514_string())
            self._staged_since = time.monotonic()
            self._rebundle()
        elif self.ca.staged:
            waited = time.monotonic() - self._staged_since
            if self._bundle_acked() or waited >= TRUST_WAIT.total_seconds():
                self.ca.promote()
                log.info("mesh.root_promoted", waited_s=round(waited, 3),
                         identities=len(self._certificates))  # fmt: skip
                for identity in list(self._certificates):
                    self._certificates[identity] = self._issue(identity)
                self._wake_all()
        elif self.ca.drop_due(now):
            self.ca.drop_previous()
            log.info("mesh.root_dropped")
            self._rebundle()

    def _rebundle(self) -> None:
        """Every identity's current certificate with the current trust bundle."""
        for identity, current in list(self._certificates.items()):
            secrets = mesh_secrets(cert_pem=current.issued.cert_pem,
                                   key_pem=current.issued.key_pem,
                                   root_pem=self.ca.root_pem)  # fmt: skip
            self._certificates[identity] = dataclasses.replace(
                current, encoded=Encoder().encode(secrets)
            )
        self._wake_all()

    def _wake_all(self) -> None:
        self._rotation_wake.set()
        for stream in self._streams:
            stream.wake.set()

    def _bundle_acked(self) -> bool:
        """Whether every connected proxy that asked for its secrets acked the ones it
        should run now (the bundle with the new root)."""
        for stream in self._streams:
            if stream.memory is None or not stream.subscribed(SECRET_TYPE):
                continue
            serving = self.secrets(stream)
            if serving is None or stream.memory.status.of(SECRET_TYPE).acked != serving.version:
                return False
        return True

    # -- proxies ------------------------------------------------------------------------------

    async def admit(self, proxy_id: str, token: str | None) -> None:
        """Admit a proxy's stream, or raise :class:`ProxyRefused` (``BadNodeId`` for a node
        id that is not Istio's): its token must be signed by a trusted key for this node id,
        and the read model must back it (``core.mesh.proxytoken``). A refusal is counted and
        logged once per proxy and reason (Envoy retries the stream every few seconds)."""
        node = parse_node_id(proxy_id)
        if self.insecure:
            return
        try:
            claims = verify_token(token, node=node, trusted=self.trusted_keys)
            deadline = time.monotonic() + self.admission_wait_s
            while True:
                problem = binding_problem(
                    claims,
                    pod=self.model.pod_manifest(claims.namespace, claims.pod),
                    pod_uid=self.model.pod_uid(claims.namespace, claims.pod),
                    node_exists=self.model.node_exists(claims.node),
                )
                if problem is None:
                    return
                if time.monotonic() >= deadline:
                    raise ProxyRefused("PERMISSION_DENIED", f"proxy {node.name}: {problem}")
                # The agent may have seen the pod (or its binding) before this projection.
                await asyncio.sleep(0.05)
        except ProxyRefused as refused:
            self.refusals[refused.code] += 1
            said = (proxy_id, str(refused))
            if said not in self._refusals_said:
                self._refusals_said.add(said)
                log.warning("mesh.proxy_refused", proxy=proxy_id, code=refused.code,
                            reason=str(refused))  # fmt: skip
            raise

    def attach(self, stream: _Stream) -> _Memory:
        assert stream.node is not None
        node = stream.node
        memory = self._memory.get(node.id)
        if memory is None:
            memory = self._memory[node.id] = _Memory(
                ProxyStatus(id=node.id, name=node.name, kind=node.kind)
            )
        self._streams.add(stream)
        return memory

    def detach(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        if stream.memory is not None and not any(s.memory is stream.memory for s in self._streams):
            stream.memory.status.connected = False
            for type_status in stream.memory.status.types.values():
                type_status.sent_nonce = ""
            self.report(stream.memory.status)

    def count(self, proxy_id: str, type_url: str, names: tuple[str, ...]) -> None:
        self.sent[(proxy_id, SHORT[type_url])] += 1
        self.last_sent[(proxy_id, SHORT[type_url])] = names

    def nonce(self) -> str:
        return f"{self.handler_id}-{next(self._nonces)}"

    def report(self, status: ProxyStatus) -> None:
        if self._status is not None:
            self._status.changed(status)

    def serving_versions(self, proxy_id: str) -> dict[str, str]:
        """The version of each built type (short name) the handler serves a connected proxy
        now (empty when not connected): tests and the benchmark wait on it."""
        for stream in list(self._streams):
            if stream.node is not None and stream.node.id == proxy_id:
                # An on-demand proxy's virtual hosts: the set of those it asked for.
                return {SHORT[t]: (stream._current(t) or encoded).version
                        for t, encoded in stream.current.items()}  # fmt: skip
        return {}

    def status_of(self, proxy_id: str) -> ProxyStatus | None:
        memory = self._memory.get(proxy_id)
        return memory.status if memory is not None else None

    @property
    def connected(self) -> int:
        return len(self._streams)


def touched_endpoints(
    state: MeshState, changed: set[tuple[str, str]], *, locality: str = ""
) -> list[dict[str, Any]]:
    """The ClusterLoadAssignments of the services ``(namespace, name)`` whose EndpointSlices
    changed, from the state cut down to them and their slices (an EDS-only push reads nothing
    else); replacing those of the same names in a full build gives the new full build."""
    services = [
        s
        for s in state.services
        if ((s.get("metadata") or {}).get("namespace") or "default",
            (s.get("metadata") or {}).get("name")) in changed
    ]  # fmt: skip
    slices = [
        s
        for s in state.slices
        if ((s.get("metadata") or {}).get("namespace") or "default",
            ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)) in changed
    ]  # fmt: skip
    small = dataclasses.replace(state, services=services, slices=slices)
    touched = [s for s in mesh_services(small) if (s.namespace, s.name) in changed]
    # Their clusters did not change: build_endpoints reads only which exist and their types.
    clusters = build_clusters(touched, small.rules_by_host)
    return build_endpoints(touched, clusters, small, proxy_locality=locality)


def type_status(push: MeshPush, proxy_id: str, short: str) -> TypeStatus:
    """A proxy's status of one type (empty when unknown): tests and the benchmark read it."""
    status = push.status_of(proxy_id)
    return status.types.get(short, TypeStatus()) if status is not None else TypeStatus()


def _locality(locality: Any) -> str:
    """Envoy's ``node.locality`` as ``region/zone/subzone`` (empty trailing parts dropped)."""
    parts = [locality.region, locality.zone, locality.sub_zone]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts)
