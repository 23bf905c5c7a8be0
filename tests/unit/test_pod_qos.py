"""A pod's QoS class as kube-apiserver sets it at creation (cases after kube's
``pkg/apis/core/helper/qos`` TestGetPodQOS), and the status a new pod and a new namespace show."""

from __future__ import annotations

from typing import Any

import pytest

from core.namespaces.status import EVOLVE as NAMESPACE_EVOLVE
from core.pods.qos import pod_qos_class
from core.pods.status import EVOLVE as POD_EVOLVE


def container(requests: dict[str, str] | None = None, limits: dict[str, str] | None = None):
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": "c", "image": "x", "resources": resources}


BOTH = {"cpu": "100m", "memory": "100Mi"}


@pytest.mark.parametrize(
    ("containers", "init", "expected"),
    [
        ([container()], [], "BestEffort"),
        ([container({"cpu": "0", "memory": "0"}, {"cpu": "0", "memory": "0"})], [], "BestEffort"),
        # Only cpu and memory count: an extended resource alone leaves the pod BestEffort.
        ([container(limits={"nvidia.com/gpu": "1"})], [], "BestEffort"),
        ([container(BOTH, BOTH)], [], "Guaranteed"),
        ([container(BOTH, BOTH), container(BOTH, BOTH)], [], "Guaranteed"),
        # A request left out is its limit (the API server defaults it so).
        ([container(limits=BOTH)], [], "Guaranteed"),
        # Equal values written differently are equal.
        ([container({"cpu": "0.1", "memory": "104857600"}, BOTH)], [], "Guaranteed"),
        ([container(BOTH, BOTH), container()], [], "Burstable"),
        ([container({"cpu": "50m", "memory": "100Mi"}, BOTH)], [], "Burstable"),
        ([container(limits={"cpu": "100m"})], [], "Burstable"),
        ([container({"memory": "1Gi"})], [], "Burstable"),
        ([container(BOTH, BOTH)], [container({"cpu": "10m"})], "Burstable"),
        ([container(BOTH, BOTH)], [container(BOTH, BOTH)], "Guaranteed"),
        # The pod's sums are compared, not each container's requests with its limits.
        (
            [
                container({"cpu": "50m"}, {"cpu": "100m", "memory": "1Gi"}),
                container({"cpu": "150m"}, {"cpu": "0.1", "memory": "1Gi"}),
            ],
            [],
            "Guaranteed",
        ),
        ([container({"cpu": "-1"}, {"memory": "1Gi"})], [], "Burstable"),
    ],
)
def test_qos_class(containers: list[Any], init: list[Any], expected: str) -> None:
    assert pod_qos_class({"containers": containers, "initContainers": init}) == expected


def test_a_new_pod_is_pending_with_its_class_and_a_new_namespace_is_active() -> None:
    pod = {"kind": "Pod", "spec": {"containers": [container(BOTH, BOTH)]}}
    created = POD_EVOLVE["PodCreated"](None, {"manifest": pod, "uid": "u"}, "")  # type: ignore[arg-type]
    assert created["status"] == {"phase": "Pending", "qosClass": "Guaranteed"}
    assert "status" not in pod  # the event's manifest is left as it was
    namespace = {"kind": "Namespace", "metadata": {"name": "shop"}}
    active = NAMESPACE_EVOLVE["NamespaceCreated"](None, {"manifest": namespace}, "")  # type: ignore[arg-type]
    assert active["status"] == {"phase": "Active"}
