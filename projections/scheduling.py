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

from core.scheduling.model import NodeInfo, PodInfo
from projections.cluster import ClusterModel
from streams.envelope import StoredEvent


class SchedulingModel:
    name = "scheduling"

    def __init__(self) -> None:
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

    # -- folding ------------------------------------------------------------------------------

    def apply(self, event: StoredEvent) -> None:
        self.cluster.apply(event)
        react = self._react.get(event.envelope.type)
        if react is None:
            react = self._react[event.envelope.type] = self._reaction(event.envelope.kind)
        react(event)
        if self.listener is not None:
            self.listener(event)

    def _reaction(self, kind: str) -> Callable[[StoredEvent], None]:
        return {"Node": self._node_changed, "Pod": self._pod_changed}.get(
            kind, self._namespace_changed if kind == "Namespace" else _ignore
        )

    def _node_changed(self, event: StoredEvent) -> None:
        name = event.envelope.name
        record = self.cluster.get("Node", "", name)
        if record is None:
            self.nodes.pop(name, None)
            return
        node = self.nodes.get(name)
        if node is None:
            bound = [self._pod_info(key) for key, on in self._placed.items() if on == name]
            self.nodes[name] = NodeInfo.from_manifest(record.manifest, [p for p in bound if p])
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

    def _place(self, key: str, manifest: dict[str, Any]) -> None:
        """A live pod goes on its node's NodeInfo when bound, in the queue otherwise."""
        pod = PodInfo.from_manifest(manifest)
        node_name = manifest.get("spec", {}).get("nodeName")
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
        return PodInfo.from_manifest(record.manifest) if record is not None else None

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return self.cluster.snapshot()

    def restore(self, data: Any) -> None:
        self._reset()
        self.cluster.restore(data)
        for record in self.cluster.list("Namespace"):
            self._note_namespace(record.name, record.manifest)
        for record in self.cluster.list("Node"):
            self.nodes[record.name] = NodeInfo.from_manifest(record.manifest)
        for record in self.cluster.list("Pod"):
            self._place(f"{record.namespace}/{record.name}", record.manifest)

    def digest(self) -> str:
        return self.cluster.digest()


def _ignore(event: StoredEvent) -> None:
    return None
