"""Defaults added on admission, as the Kubernetes admission plugins add them."""

from __future__ import annotations

from core.policy.admission import default_toleration_seconds

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": []}}
NOT_READY = {
    "key": "node.kubernetes.io/not-ready",
    "operator": "Exists",
    "effect": "NoExecute",
    "tolerationSeconds": 300,
}
UNREACHABLE = {
    "key": "node.kubernetes.io/unreachable",
    "operator": "Exists",
    "effect": "NoExecute",
    "tolerationSeconds": 300,
}


def test_pods_get_five_minute_tolerations_for_not_ready_and_unreachable_nodes() -> None:
    assert default_toleration_seconds(POD)["spec"]["tolerations"] == [NOT_READY, UNREACHABLE]


def test_an_existing_toleration_for_the_taint_is_kept_and_not_duplicated() -> None:
    own = {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 6000,
    }
    pod = {**POD, "spec": {"tolerations": [own]}}
    assert default_toleration_seconds(pod)["spec"]["tolerations"] == [own, NOT_READY]


def test_a_toleration_of_every_taint_needs_no_defaults() -> None:
    pod = {**POD, "spec": {"tolerations": [{"operator": "Exists"}]}}
    assert default_toleration_seconds(pod) == pod


def test_a_noschedule_only_toleration_does_not_count() -> None:
    pod = {
        **POD,
        "spec": {
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoSchedule",
                }
            ]
        },
    }
    assert len(default_toleration_seconds(pod)["spec"]["tolerations"]) == 3


def test_defaulting_is_idempotent_and_leaves_other_kinds_alone() -> None:
    once = default_toleration_seconds(POD)
    assert default_toleration_seconds(once) == once
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}
    assert default_toleration_seconds(service) is service
