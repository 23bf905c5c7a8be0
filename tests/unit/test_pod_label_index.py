"""The pods a selector matches, from the label index the HPA controller reads: the same pods
as testing every pod of the namespace, kept right through relabelling and deletion."""

from __future__ import annotations

from typing import Any

from core.meta.labels import selector_matches
from projections.cluster import ClusterModel
from projections.podlabels import PodLabelIndex
from streams.envelope import Envelope, StoredEvent


class Log:
    """A cluster model fed pod events by hand, as the projection feeds it."""

    def __init__(self) -> None:
        self.model = ClusterModel()
        self.seq = 0

    def pod(self, event_type: str, namespace: str, name: str, labels: dict[str, Any]) -> None:
        self.seq += 1
        manifest = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "x"}]}}  # fmt: skip
        payload = {"uid": f"uid-{name}", "manifest": manifest}
        envelope = Envelope(
            str(self.seq), event_type, 1, "Pod", namespace, name, self.seq, self.seq,
            "test", "", "", payload,
        )  # fmt: skip
        self.model.apply(StoredEvent(self.seq, f"fleet.evt.pod.{namespace}.{name}", 0, envelope))


def names(index: PodLabelIndex, namespace: str, selector: dict[str, Any]) -> list[str]:
    return [r.name for r in index.matching(namespace, selector)]


def scanned(model: ClusterModel, namespace: str, selector: dict[str, Any]) -> list[str]:
    """What the controller computed before the index: every pod of the namespace tested."""
    return [
        r.name
        for r in model.list("Pod", namespace)
        if selector
        and selector_matches(selector, (r.manifest.get("metadata") or {}).get("labels") or {})
    ]


SELECTORS: list[dict[str, Any]] = [
    {"matchLabels": {"app": "web"}},
    {"matchLabels": {"app": "web", "tier": "front"}},
    {"matchLabels": {"app": "web"},
     "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["back"]}]},
    {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
    {"matchLabels": {"app": "nothing"}},
    {},
]  # fmt: skip


def test_a_selector_matches_the_same_pods_as_testing_every_pod_of_the_namespace() -> None:
    log = Log()
    log.pod("PodCreated", "default", "web-1", {"app": "web", "tier": "front"})
    log.pod("PodCreated", "default", "web-2", {"app": "web", "tier": "back"})
    log.pod("PodCreated", "default", "web-3", {"app": "web"})
    log.pod("PodCreated", "default", "api-1", {"app": "api"})
    log.pod("PodCreated", "other", "web-9", {"app": "web", "tier": "front"})
    index = PodLabelIndex(log.model)
    for selector in SELECTORS:
        for namespace in ("default", "other", "empty"):
            assert names(index, namespace, selector) == scanned(log.model, namespace, selector)
    assert names(index, "default", SELECTORS[0]) == ["web-1", "web-2", "web-3"]
    assert names(index, "default", SELECTORS[2]) == ["web-1", "web-3"]
    assert names(index, "default", {}) == []


def test_relabelled_created_and_deleted_pods_are_followed_once_observed() -> None:
    log = Log()
    log.pod("PodCreated", "default", "web-1", {"app": "web"})
    index = PodLabelIndex(log.model)
    log.pod("PodCreated", "default", "web-2", {"app": "web"})
    index.observe("default", "web-2")
    assert names(index, "default", SELECTORS[0]) == ["web-1", "web-2"]
    # Taken out of the workload by a relabel (kubectl label --overwrite), as Kubernetes does
    # to debug a pod: the selector no longer finds it, the new value does.
    log.pod("PodUpdated", "default", "web-1", {"app": "debug"})
    index.observe("default", "web-1")
    assert names(index, "default", SELECTORS[0]) == ["web-2"]
    assert names(index, "default", {"matchLabels": {"app": "debug"}}) == ["web-1"]
    log.pod("PodDeleted", "default", "web-2", {})
    index.observe("default", "web-2")
    assert names(index, "default", SELECTORS[0]) == []
    for selector in SELECTORS:
        assert names(index, "default", selector) == scanned(log.model, "default", selector)
