"""A pod's QoS class as kube-apiserver sets it at creation (cases after kube's
``pkg/apis/core/helper/qos`` TestGetPodQOS), and the status a new pod and a new namespace show."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.namespaces.status import EVOLVE as NAMESPACE_EVOLVE
from core.pods.qos import computed_qos_class, pod_qos_class
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


QUANTITIES = st.one_of(
    st.sampled_from(["0", "100m", "0.1", "1", "2", "100Mi", "1Gi", "128Mi", "-1", "bad", "1e3"]),
    st.integers(-1, 2),
    st.sampled_from([0.1, 0.0, -0.0, 1.5]),
    st.booleans(),
    st.none(),
)
SECTION = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["cpu", "memory", "storage"]), QUANTITIES, max_size=3),
)
CONTAINERS = st.lists(
    st.builds(
        lambda limits, requests: {
            "name": "c",
            "resources": {
                k: v for k, v in (("limits", limits), ("requests", requests)) if v is not None
            },
        },
        SECTION,
        SECTION,
    ),
    max_size=3,
)


@settings(max_examples=500, deadline=None)
@given(CONTAINERS, CONTAINERS)
def test_the_remembered_class_is_the_computed_one(
    containers: list[dict[str, Any]], init: list[dict[str, Any]]
) -> None:
    spec = {"containers": containers, "initContainers": init}
    for _ in range(2):  # computed, then remembered
        assert pod_qos_class(spec) == computed_qos_class(spec)


def test_a_number_and_a_boolean_are_not_one_remembered_shape() -> None:
    """``True == 1`` as keys go; as quantities, 1 is one and ``true`` is invalid (skipped)."""
    number = {"containers": [{"resources": {"limits": {"cpu": 1, "memory": 1}}}]}
    boolean = {"containers": [{"resources": {"limits": {"cpu": True, "memory": True}}}]}
    assert pod_qos_class(number) == "Guaranteed"
    assert pod_qos_class(boolean) == computed_qos_class(boolean) == "BestEffort"
