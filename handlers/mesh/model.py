"""The mesh-push handler's read model: the cluster projection's Services, EndpointSlices, pods'
labels and Istio objects, as the builder's :class:`core.mesh.envoy.model.MeshState`.

Why this exists: the builder is pure and reads one ``MeshState``; the handler must know when
that state changed (to push) without rebuilding it on every event of the cluster. This follows
the shared cluster projection as the endpoints service does (a listener on its events, so
nothing applied meanwhile is missed), remembers that something relevant changed and when, and
makes the state on demand. Istio objects are parsed once per version of their manifest (they
were validated when stored; parsing gives the builder typed objects).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog

from core.api.manifests import parse_manifest
from core.mesh.envoy.endpoints import locality_of
from core.mesh.envoy.model import MeshState
from core.mesh.envoy.secrets import wanted_credentials, wanted_rule_credentials
from core.mesh.injection import wants_sidecar
from core.mesh.proxytoken import INGRESS_NAMESPACE, INGRESS_PREFIX
from projections.cluster import ClusterModel, ObjectRecord
from projections.endpoints import ServiceSlices
from projections.runtime import Projection
from streams.envelope import StoredEvent

log = structlog.get_logger(__name__)

ISTIO_KINDS: Final = {
    "VirtualService": "virtual_services",
    "DestinationRule": "destination_rules",
    "Gateway": "gateways",
    "ServiceEntry": "service_entries",
    "PeerAuthentication": "peer_authentications",
}
WATCHED: Final = frozenset(
    {"Service", "EndpointSlice", "Pod", "Namespace", "Secret", "Node", *ISTIO_KINDS}
)


@dataclass(frozen=True, kw_only=True)
class Changes:
    """What changed between two pushes."""

    kinds: frozenset[str]
    """The kinds of the objects that changed (which types to build again:
    ``core.mesh.push.rebuilt_by``)."""
    endpoints_of: set[tuple[str, str]] | None
    """When only EndpointSlices changed, the ``(namespace, service)`` they belong to (only
    their endpoints need building again); None when anything else did."""


class MeshModel:
    """The mesh as the projection holds it now; ``on_change`` is called (on the event loop,
    from the projection's fold) after every event of a kind the mesh reads."""

    def __init__(
        self,
        projection: Projection[ClusterModel],
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._projection = projection
        self._on_change = on_change
        self._parsed: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self.changes = 0
        self.last_change = time.monotonic()
        self._slices = ServiceSlices(projection.model)
        self._endpoints_of: set[tuple[str, str]] | None = set()
        self._kinds: set[str] = set()
        self._localities = self._node_localities()
        """Each node's locality as last seen: a Node event that leaves it is no change."""
        projection.listeners.append(self._on_event)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._projection.listeners.remove(self._on_event)

    def _on_event(self, event: StoredEvent) -> None:
        kind = event.envelope.kind
        if kind not in WATCHED:
            return
        if kind == "Pod" and event.envelope.type.endswith("StatusUpdated"):
            # A pod's status (ready or not) reaches the mesh through its EndpointSlice; only
            # its labels (subsets) matter here.
            return
        if kind == "Secret" and not self._wants_secret(
            event.envelope.namespace, event.envelope.name
        ):
            return  # only the Secrets Gateways and DestinationRules name reach the mesh
        if kind == "Node" and not self._locality_moved(event.envelope.name):
            return  # a node's heartbeats and conditions: only its topology labels matter
        if kind == "EndpointSlice":
            touched = self._slices.observe(kind, event.envelope.namespace, event.envelope.name)
            if self._endpoints_of is not None:
                self._endpoints_of.update(touched)
        else:
            self._endpoints_of = None
        self._kinds.add(kind)
        self.changes += 1
        self.last_change = time.monotonic()
        if self._on_change is not None:
            self._on_change()

    def _locality_moved(self, node: str) -> bool:
        """Whether a node's locality (its topology labels) differs from the last one seen."""
        record = self._projection.model.get("Node", "", node)
        labels = (record.manifest.get("metadata") or {}).get("labels") or {} if record else {}
        locality = locality_of(labels)
        if self._localities.get(node, "") == locality:
            return False
        self._localities[node] = locality
        return True

    def pod_locality(self, namespace: str, pod: str) -> str:
        """The locality of the node the pod runs on (empty: unbound, or no topology labels):
        a proxy's when its bootstrap gives none. A node's ingress Envoy is no pod of the model:
        its name says its node (``core.mesh.proxytoken.ingress_pod``)."""
        record = self._projection.model.get("Pod", namespace, pod)
        if record is not None:
            node = str((record.manifest.get("spec") or {}).get("nodeName") or "")
        elif namespace == INGRESS_NAMESPACE and pod.startswith(INGRESS_PREFIX):
            node = pod.removeprefix(INGRESS_PREFIX)
        else:
            return ""
        found = self._projection.model.get("Node", "", node) if node else None
        if found is None:
            return ""
        return locality_of((found.manifest.get("metadata") or {}).get("labels") or {})

    def pending_changes(self) -> Changes:
        """What changed since the last :meth:`take_changes`, left to be taken."""
        slices = set(self._endpoints_of) if self._endpoints_of is not None else None
        return Changes(kinds=frozenset(self._kinds), endpoints_of=slices)

    def take_changes(self) -> Changes:
        """What changed since the last call (see :class:`Changes`)."""
        changes = Changes(kinds=frozenset(self._kinds), endpoints_of=self._endpoints_of)
        self._endpoints_of, self._kinds = set(), set()
        return changes

    def istio(self, kind: str, live: set[tuple[str, str, str]] | None = None) -> list[Any]:
        """The parsed objects of one Istio kind (each parsed once per version); the keys seen
        are added to ``live``."""
        found: list[Any] = []
        for record in self._projection.model.list(kind):
            key = (kind, record.namespace, record.name)
            if live is not None:
                live.add(key)
            cached = self._parsed.get(key)
            if cached is None or cached[0] != record.last_seq:
                try:
                    cached = (record.last_seq, parse_manifest(record.manifest))
                except Exception as exc:  # stored before a stricter rule: skipped, said
                    log.warning("mesh.object_skipped", kind=kind, name=record.name,
                                namespace=record.namespace, error=str(exc))  # fmt: skip
                    continue
                self._parsed[key] = cached
            found.append(cached[1])
        return found

    def state(self) -> MeshState:
        """The builder's input, as of the projection's position now."""
        model = self._projection.model
        live: set[tuple[str, str, str]] = set()
        istio = {field: self.istio(kind, live) for kind, field in ISTIO_KINDS.items()}
        for key in [k for k in self._parsed if k not in live]:
            del self._parsed[key]
        pod_labels = {
            (record.namespace, record.name): (record.manifest.get("metadata") or {}).get("labels")
            or {}
            for record in model.list("Pod")
        }
        return MeshState(
            services=[record.manifest for record in model.list("Service")],
            slices=[record.manifest for record in model.list("EndpointSlice")],
            pod_labels=pod_labels,
            meshed_pods=self._meshed_pods(),
            node_localities=self._node_localities(),
            **istio,
        )

    def _node_localities(self) -> dict[str, str]:
        """Each node's ``region/zone/subzone`` (its topology labels): its endpoints' locality."""
        found: dict[str, str] = {}
        for record in self._projection.model.list("Node"):
            locality = locality_of((record.manifest.get("metadata") or {}).get("labels") or {})
            if locality:
                found[record.name] = locality
        return found

    def _meshed_pods(self) -> dict[tuple[str, str], str]:
        """The pods the node agents give a sidecar (Istio's injection policy, the same
        decision the agent takes) -> their service accounts: auto mTLS reaches them over TLS."""
        model = self._projection.model
        namespace_labels = {
            record.name: (record.manifest.get("metadata") or {}).get("labels") or {}
            for record in model.list("Namespace")
        }
        found: dict[tuple[str, str], str] = {}
        for record in model.list("Pod"):
            if wants_sidecar(record.manifest, namespace_labels.get(record.namespace, {})):
                found[(record.namespace, record.name)] = _account(record.manifest)
        return found

    def wanted_secrets(self) -> set[tuple[str, str]]:
        """The Secrets ``(namespace, name)`` the mesh serves as credentials: those Gateways
        name, and those DestinationRules name in any namespace that has one (a proxy takes
        its own namespace's)."""
        wanted = wanted_credentials(self.istio("Gateway"))
        names = wanted_rule_credentials(self.istio("DestinationRule"))
        if names:
            wanted |= {
                (record.namespace, record.name)
                for record in self._projection.model.list("Secret")
                if record.name in names
            }
        return wanted

    def _wants_secret(self, namespace: str, name: str) -> bool:
        """Whether a Secret's change concerns the mesh (also once it is deleted)."""
        return (namespace, name) in wanted_credentials(self.istio("Gateway")) or (
            name in wanted_rule_credentials(self.istio("DestinationRule"))
        )

    def secret(self, namespace: str, name: str) -> ObjectRecord | None:
        """The Secret's record (its manifest sealed, as the log holds it), or None."""
        return self._projection.model.get("Secret", namespace, name)

    def service_account(self, namespace: str, pod: str) -> str | None:
        """The pod's service account (None: no such pod in the read model)."""
        record = self._projection.model.get("Pod", namespace, pod)
        return _account(record.manifest) if record is not None else None

    def pod_manifest(self, namespace: str, pod: str) -> dict[str, Any] | None:
        record = self._projection.model.get("Pod", namespace, pod)
        return record.manifest if record is not None else None

    def pod_uid(self, namespace: str, pod: str) -> str:
        record = self._projection.model.get("Pod", namespace, pod)
        return record.uid if record is not None else ""

    def node_exists(self, node: str) -> bool:
        return self._projection.model.get("Node", "", node) is not None

    def pod_labels(self, namespace: str, pod: str) -> dict[str, str]:
        record = self._projection.model.get("Pod", namespace, pod)
        if record is None:
            return {}
        return dict((record.manifest.get("metadata") or {}).get("labels") or {})


def _account(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
