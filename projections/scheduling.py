"""The scheduler's read model: kube-scheduler's NodeInfos and the queue of unbound pods.

It folds the log through a :class:`ClusterModel` (the one source of full manifests) and keeps,
beside it, what scheduling needs precomputed: a ``NodeInfo`` per node with the pods bound to it
and their aggregated requests, a ``PodInfo`` per pod waiting for a node, and the labels of every
namespace (for affinity namespace selectors). Scheduler replicas rebuild it on start and follow
the log; its state is a function of the log, so it is snapshotted and digested through the
cluster model it wraps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.meta.aggregate import aggregate_id, timestamp_from_ns
from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.nodes.aggregate import Node
from core.pods.aggregate import Pod
from core.scheduling.model import NodeInfo, PodInfo
from core.scheduling.preemption import DisruptionBudget
from projections.cluster import ClusterModel
from streams.envelope import StoredEvent


class SchedulingModel:
    name = "scheduling"

    def __init__(
        self,
        *,
        features: FeatureGates = DEFAULT_FEATURES,
        scheduler_name: str = "default-scheduler",
    ) -> None:
        """``features``: the gates pods are read with (the Gt/Lt toleration operators);
        ``scheduler_name``: the pods to queue are those whose ``spec.schedulerName`` names it
        (another scheduler's pods are not this one's to place, but take room once bound)."""
        self.features = features
        self.scheduler_name = scheduler_name
        self._react: dict[str, Callable[[StoredEvent], None]] = {}
        # Called after each event is folded: the scheduler wakes up on it.
        self.listener: Callable[[StoredEvent], None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.cluster = ClusterModel()
        self.nodes: dict[str, NodeInfo] = {}
        self.pending: dict[str, PodInfo] = {}
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self._placed: dict[str, str] = {}  # pod key -> node name, for bound pods
        self.ledgers: dict[str, dict[str, dict[str, int]]] = {}
        """Node name -> its allocation ledger (pod key -> requests), folded exactly as the
        Node aggregate folds it, so a binder can build the aggregate without reading it."""
        self.node_set_version = 0
        """Changes whenever a node joins or leaves (or the model is rebuilt): node lists and
        arrays built over ``nodes`` must be rebuilt then."""

    def disruption_budgets(self) -> list[DisruptionBudget]:
        """The PodDisruptionBudgets preemption weighs victims against (fewer violations win),
        as the cluster model holds them now."""
        return [
            DisruptionBudget.from_manifest(r.manifest, namespace=r.namespace)
            for r in self.cluster.list("PodDisruptionBudget")
        ]

    # -- folding ------------------------------------------------------------------------------

    def apply(self, event: StoredEvent) -> None:
        self.cluster.apply(event)
        react = self._react.get(event.envelope.type)
        if react is None:
            react = self._react[event.envelope.type] = self._reaction(
                event.envelope.type, event.envelope.kind
            )
        react(event)
        if self.listener is not None:
            self.listener(event)

    def _reaction(self, event_type: str, kind: str) -> Callable[[StoredEvent], None]:
        if event_type in SCHEDULING_NEUTRAL:
            return _ignore
        if event_type == "PodBound":
            return self._pod_bound
        if event_type == "PodAllocated":
            return self._allocated
        if event_type == "PodReleased":
            return self._released
        if event_type in ("PodSucceeded", "PodFailed"):
            return self._pod_finished
        return {"Node": self._node_changed, "Pod": self._pod_changed}.get(
            kind, self._namespace_changed if kind == "Namespace" else _ignore
        )

    def _node_changed(self, event: StoredEvent) -> None:
        name = event.envelope.name
        record = self.cluster.get("Node", "", name)
        if record is None:
            self.ledgers.pop(name, None)
            if self.nodes.pop(name, None) is not None:
                self.node_set_version += 1
            return
        node = self.nodes.get(name)
        if node is None:
            bound = [self._pod_info(key) for key, on in self._placed.items() if on == name]
            self.nodes[name] = NodeInfo.from_manifest(record.manifest, [p for p in bound if p])
            self.node_set_version += 1
        else:
            node.set_node(record.manifest)

    def _pod_changed(self, event: StoredEvent) -> None:
        e = event.envelope
        key = f"{e.namespace}/{e.name}"
        record = self.cluster.get("Pod", e.namespace, e.name)
        previous_node = self._placed.pop(key, None)
        if previous_node is not None and previous_node in self.nodes:
            self.nodes[previous_node].remove_pod(key)
        self.pending.pop(key, None)
        if record is not None:
            self._place(key, record.manifest)

    def _allocated(self, event: StoredEvent) -> None:
        payload = event.envelope.payload
        self.ledgers.setdefault(event.envelope.name, {})[payload["pod"]] = dict(payload["requests"])

    def _released(self, event: StoredEvent) -> None:
        self.ledgers.get(event.envelope.name, {}).pop(event.envelope.payload["pod"], None)

    def node_aggregate(self, name: str) -> tuple[Node, int] | None:
        """The Node aggregate as of the last event folded here, and that event's sequence."""
        record = self.cluster.get("Node", "", name)
        if record is None:
            return None
        node = Node.from_ledger(
            aggregate_id("Node", "", name), manifest=record.manifest, uid=record.uid,
            version=record.version, allocations=self.ledgers.get(name, {}),
            at=timestamp_from_ns(record.updated_ns),
        )  # fmt: skip
        return node, record.last_seq

    def pod_aggregate(self, namespace: str, name: str) -> tuple[Pod, int] | None:
        """The Pod aggregate as of the last event folded here, and that event's sequence."""
        record = self.cluster.get("Pod", namespace, name)
        if record is None:
            return None
        pod = Pod.from_snapshot(
            aggregate_id("Pod", namespace, name), manifest=record.manifest, uid=record.uid,
            version=record.version, at=timestamp_from_ns(record.updated_ns),
        )  # fmt: skip
        assert isinstance(pod, Pod)
        return pod, record.last_seq

    def last_hash(self, kind: str, namespace: str, name: str) -> bytes:
        """The hash of the last event folded here for an object, which its next event must
        chain to (``b""`` if unknown: it predates hashes, or the model was restored from a
        snapshot taken before them; the writer then reads the log). Read it in the same step
        as the aggregate, so both are of the same event."""
        record = self.cluster.get(kind, namespace, name)
        return record.last_hash if record is not None else b""

    def _pod_finished(self, event: StoredEvent) -> None:
        """A Succeeded or Failed pod stays an object but takes no room on its node."""
        key = f"{event.envelope.namespace}/{event.envelope.name}"
        node = self._placed.pop(key, None)
        if node is not None and node in self.nodes:
            self.nodes[node].remove_pod(key)
        self.pending.pop(key, None)

    def _pod_bound(self, event: StoredEvent) -> None:
        """The hot path: the PodInfo waiting in the queue (or assumed on that very node by
        this replica) moves to its node as it is; nothing is parsed again."""
        e = event.envelope
        key = f"{e.namespace}/{e.name}"
        node_name = e.payload["node"]
        node = self.nodes.get(node_name)
        pod = self.pending.get(key)
        if key in self._placed or node is None or (pod is None and key not in node.pods):
            self._pod_changed(event)
            return
        self._placed[key] = node_name
        if pod is not None:
            del self.pending[key]
            pod.node_name = node_name
            node.add_pod(pod)

    def _place(self, key: str, manifest: dict[str, Any]) -> None:
        """A live pod goes on its node's NodeInfo when bound, in the queue otherwise; a
        finished one (Succeeded, Failed) goes nowhere."""
        if (manifest.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        spec = manifest.get("spec", {})
        node_name = spec.get("nodeName")
        if not node_name and spec.get("schedulerName", "default-scheduler") != self.scheduler_name:
            return
        pod = PodInfo.from_manifest(manifest, features=self.features)
        if node_name:
            self._placed[key] = node_name
            if node_name in self.nodes:
                self.nodes[node_name].add_pod(pod)
        else:
            self.pending[key] = pod

    def _namespace_changed(self, event: StoredEvent) -> None:
        record = self.cluster.get("Namespace", "", event.envelope.name)
        if record is None:
            self.namespace_labels.pop(event.envelope.name, None)
        else:
            self._note_namespace(record.name, record.manifest)

    def _note_namespace(self, name: str, manifest: dict[str, Any]) -> None:
        self.namespace_labels[name] = dict(manifest.get("metadata", {}).get("labels") or {})

    def placement(self, key: str) -> str | None:
        """The node the log says a pod is bound to (None while it waits)."""
        return self._placed.get(key)

    def _pod_info(self, key: str) -> PodInfo | None:
        namespace, _, name = key.partition("/")
        record = self.cluster.get("Pod", namespace, name)
        return (
            PodInfo.from_manifest(record.manifest, features=self.features)
            if record is not None
            else None
        )

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return {"cluster": self.cluster.snapshot(), "ledgers": self.ledgers}

    def restore(self, data: Any) -> None:
        version = self.node_set_version
        self._reset()
        self.node_set_version = version + 1
        self.cluster.restore(data["cluster"])
        self.ledgers = {
            node: {pod: dict(requests) for pod, requests in ledger.items()}
            for node, ledger in data["ledgers"].items()
        }
        for record in self.cluster.list("Namespace"):
            self._note_namespace(record.name, record.manifest)
        for record in self.cluster.list("Node"):
            self.nodes[record.name] = NodeInfo.from_manifest(record.manifest)
        for record in self.cluster.list("Pod"):
            self._place(f"{record.namespace}/{record.name}", record.manifest)

    def digest(self) -> str:
        return self.cluster.digest()


SCHEDULING_NEUTRAL = frozenset({"PodUnschedulable", "PodNominated", "PodReady", "PodNotReady"})
"""Pod events that change nothing a scheduling decision reads."""


def _ignore(event: StoredEvent) -> None:
    return None
