"""Pods by label pair, per namespace: the pods a label selector matches without testing every
pod of the namespace.

Why this exists: the HPA controller reads the pods its target's selector matches on every
evaluation, and it evaluates on every new usage sample. Listing the namespace and testing each
pod (what Kubernetes' pod lister does every 15 s) cost an evaluation the whole namespace: with
10,000 pods in one namespace, ``ops/bench_hpa.py`` spent most of the controller's time there.
This index keeps, per namespace, which pods carry each ``key=value``; a selector with
``matchLabels`` starts from the smallest of its pairs' sets, and every candidate is still
checked against the whole selector (``matchExpressions`` included) by the one selector of
``core.meta.labels``, compiled once per call. A selector without ``matchLabels`` falls back to
the namespace's pods.

It is fed by its owner's projection listener (:meth:`observe` for every pod event), and reads
the labels from the cluster model itself, so any event that changes a pod's labels (an update,
a patch) is seen, whatever its type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.meta.labels import Selector
from projections.cluster import ClusterModel, ObjectRecord

_NONE: frozenset[str] = frozenset()


def _labels(record: ObjectRecord | None) -> dict[str, str]:
    if record is None:
        return {}
    labels = (record.manifest.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


class PodLabelIndex:
    """Which pods of a namespace carry each label pair, kept from the cluster model."""

    def __init__(self, model: ClusterModel) -> None:
        self._model = model
        self._labels: dict[tuple[str, str], dict[str, str]] = {}
        self._pods: dict[tuple[str, str, str], set[str]] = {}  # (namespace, key, value)
        for record in model.list("Pod"):
            self.observe(record.namespace, record.name)

    def observe(self, namespace: str, name: str) -> None:
        """Bring the pod's entries up to date with the model (created, relabelled, deleted)."""
        labels = _labels(self._model.get("Pod", namespace, name))
        old = self._labels.get((namespace, name), {})
        if labels == old:
            return
        for key, value in old.items():
            if labels.get(key) != value:
                entry = (namespace, key, value)
                names = self._pods.get(entry)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self._pods[entry]
        for key, value in labels.items():
            if old.get(key) != value:
                self._pods.setdefault((namespace, key, value), set()).add(name)
        if labels:
            self._labels[(namespace, name)] = labels
        else:
            self._labels.pop((namespace, name), None)

    def matching(self, namespace: str, selector: Mapping[str, Any]) -> list[ObjectRecord]:
        """The pods of ``namespace`` the selector matches, by name; none for an empty one
        (``core.meta.labels.selector_matches``' meaning)."""
        compiled = Selector.from_manifest(selector) if selector else None
        if compiled is None or compiled.empty:
            return []
        match_labels = selector.get("matchLabels") or {}
        if match_labels:
            pairs = [(str(k), str(v)) for k, v in match_labels.items()]
            candidates = min((self._pods.get((namespace, *p), _NONE) for p in pairs), key=len)
            records = [self._model.get("Pod", namespace, name) for name in sorted(candidates)]
        else:
            records = list(self._model.list("Pod", namespace))
        return [r for r in records if r is not None and compiled.matches(_labels(r))]
