"""Which simulated pods a load set on ``fleet.sim.load`` applies to: a selector's labels all
present with the same values (``selector_matches`` of its ``matchLabels``), or the pod named."""

from __future__ import annotations

from typing import Any

import pytest

from core.meta.labels import selector_matches
from handlers.simusage import Load
from projections.cluster import ObjectRecord


def pod(name: str, labels: dict[str, str], namespace: str = "default") -> ObjectRecord:
    manifest = {"metadata": {"name": name, "namespace": namespace, "labels": labels}}
    return ObjectRecord("Pod", namespace, name, f"uid-{name}", manifest, 1, 1, 0, 0,
                        "PodCreated", "test")  # fmt: skip


def load(labels: dict[str, Any] | None, *, pod_name: str | None = None) -> Load:
    return Load("default", labels, pod_name, 300, None)


@pytest.mark.parametrize(
    "selector",
    [{"app": "web"}, {"app": "web", "tier": "front"}, {"app": "api"}, {"tier": "front"}, {}],
)
def test_a_load_applies_to_the_pods_its_selector_matches(selector: dict[str, str]) -> None:
    pods = [pod("a", {"app": "web", "tier": "front"}), pod("b", {"app": "web"}), pod("c", {})]
    for record in pods:
        labels = record.manifest["metadata"]["labels"]
        expected = selector_matches({"matchLabels": selector}, labels)
        assert load(selector).applies_to(record) is expected


def test_a_load_applies_only_in_its_namespace_or_to_the_pod_it_names() -> None:
    assert not load({"app": "web"}).applies_to(pod("a", {"app": "web"}, namespace="other"))
    assert load(None, pod_name="a").applies_to(pod("a", {}))
    assert not load(None, pod_name="a").applies_to(pod("b", {"app": "web"}))
    assert not load(None).applies_to(pod("a", {"app": "web"}))
