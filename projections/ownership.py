"""Which objects each owner controls, and which no controller owns, kept from the cluster
projection's events.

Why this exists: the replica-set and deployment controllers must find an owner's dependents
(pods of a replica set, replica sets of a deployment) and the orphans they may adopt on every
reconcile; scanning every object each time would cost the whole cluster per decision. It is a
read model over the shared cluster projection, fed by the controller's listener.
"""

from __future__ import annotations

import dataclasses

from core.workloads.replicaset import RankedPod, ranked_pod
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.envelope import StoredEvent

Key = tuple[str, str]
"""(namespace, name) of an object."""


class ControllerIndex:
    """Which objects of ``dependent_kind`` each owner of ``owner_kind`` controls (the owner
    reference with ``controller: true``), and which no controller owns at all (orphans, which
    an owner may adopt), kept current from the cluster projection.

    ``observe`` must see every event before a controller's ``keys_of`` reads the index."""

    def __init__(
        self, projection: Projection[ClusterModel], dependent_kind: str, owner_kind: str
    ) -> None:
        self._model = projection.model
        self.dependent_kind = dependent_kind
        self.owner_kind = owner_kind
        self._owner_of: dict[Key, tuple[str, str]] = {}  # dependent -> (owner name, owner uid)
        self._dependents: dict[tuple[str, str], set[Key]] = {}  # (namespace, owner uid) -> …
        self._orphans: dict[str, set[Key]] = {}  # namespace -> objects no controller owns
        for record in self._model.list(dependent_kind):
            self._index((record.namespace, record.name))

    def controller_of(self, manifest: dict[str, object]) -> tuple[str, str] | None:
        """(name, uid) of the ``owner_kind`` that controls this object, if any."""
        refs = (manifest.get("metadata") or {}).get("ownerReferences") or []  # type: ignore[union-attr]
        for ref in refs:  # type: ignore[union-attr]
            if ref.get("controller") and ref.get("kind") == self.owner_kind and ref.get("uid"):
                return str(ref.get("name", "")), str(ref["uid"])
        return None

    def _index(self, key: Key) -> None:
        record = self._model.get(self.dependent_kind, *key)
        owner = self.controller_of(record.manifest) if record is not None else None
        orphans = self._orphans.setdefault(key[0], set())
        if record is not None and owner is None and self._any_controller(record.manifest):
            orphans.discard(key)  # controlled by a kind this index does not follow
        elif record is not None and owner is None:
            orphans.add(key)
        else:
            orphans.discard(key)
        if not orphans:
            del self._orphans[key[0]]
        previous = self._owner_of.get(key)
        if owner == previous:
            return
        if previous is not None:
            dependents = self._dependents.get((key[0], previous[1]))
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._dependents[(key[0], previous[1])]
            del self._owner_of[key]
        if owner is not None:
            self._owner_of[key] = owner
            self._dependents.setdefault((key[0], owner[1]), set()).add(key)

    def observe(self, event: StoredEvent) -> Key | None:
        """Fold one event; returns the (namespace, owner name) whose dependents it touched."""
        e = event.envelope
        if e.kind != self.dependent_kind:
            return None
        key = (e.namespace, e.name)
        before = self._owner_of.get(key)
        if e.type.endswith(("Created", "Updated", "Deleted")) and not e.type.endswith(
            "StatusUpdated"
        ):
            self._index(key)
        owner = self._owner_of.get(key) or before
        return (e.namespace, owner[0]) if owner is not None else None

    def dependents(self, namespace: str, owner_uid: str) -> list[Key]:
        return sorted(self._dependents.get((namespace, owner_uid), ()))

    @staticmethod
    def _any_controller(manifest: dict[str, object]) -> bool:
        refs = (manifest.get("metadata") or {}).get("ownerReferences") or []  # type: ignore[union-attr]
        return any(ref.get("controller") for ref in refs)  # type: ignore[union-attr]

    def orphans(self, namespace: str) -> list[Key]:
        """Objects of the namespace that no controller owns: an owner whose selector matches
        them adopts them (Kubernetes' ``ClaimPods`` / ``ClaimReplicaSets``)."""
        return sorted(self._orphans.get(namespace, ()))

    def is_orphan(self, key: Key) -> bool:
        return key in self._orphans.get(key[0], ())


def controlled_pods(
    model: ClusterModel, index: ControllerIndex, namespace: str, owner_uid: str
) -> list[tuple[RankedPod, dict[str, str]]]:
    """The pods ``owner_uid`` controls (``index`` follows pods), each as the replica-set
    ranking and counts read it, with its labels."""
    out = []
    for key in index.dependents(namespace, owner_uid):
        record = model.get("Pod", *key)
        if record is None:
            continue
        ranked = dataclasses.replace(ranked_pod(record.manifest, record.created_ns), uid=record.uid)
        out.append((ranked, (record.manifest.get("metadata") or {}).get("labels") or {}))
    return out
