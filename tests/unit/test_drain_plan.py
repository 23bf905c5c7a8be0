"""kubectl drain's filters, as ``fleetlog drain`` applies them before changing anything."""

from __future__ import annotations

from typing import Any

from ops.drain import drain_reason, plan_drain


def item(name: str, owner: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner, "name": "o", "uid": "u", "controller": True}
        ]
    manifest = {"metadata": metadata, "spec": {"nodeName": "n1", **spec}}
    return {"namespace": "default", "name": name, "uid": name, "manifest": manifest}


def test_managed_pods_drain_without_flags() -> None:
    plan = plan_drain([item("a", "ReplicaSet"), item("b", "StatefulSet")])
    assert [i["name"] for i in plan.evict] == ["a", "b"] and not plan.errors


def test_each_refusal_names_its_pods_and_its_override() -> None:
    plan = plan_drain(
        [
            item("bare"),
            item("ds", "DaemonSet"),
            item("scratch", "ReplicaSet", volumes=[{"name": "t", "emptyDir": {}}]),
        ]
    )
    assert plan.errors == [
        "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/ds",
        "cannot delete Pods that declare no controller (use --force to override): default/bare",
        "cannot delete Pods with local storage (use --delete-emptydir-data to override): "
        "default/scratch",
    ]


def test_overrides_turn_refusals_into_warnings_and_daemonset_pods_stay() -> None:
    plan = plan_drain(
        [item("bare"), item("ds", "DaemonSet"), item("done")],
        force=True,
        ignore_daemonsets=True,
    )
    assert not plan.errors and plan.ignored == ["default/ds"]
    assert sorted(i["name"] for i in plan.evict) == ["bare", "done"]
    assert plan.warnings == [
        "ignoring DaemonSet-managed Pods: default/ds",
        "deleting Pods that declare no controller: default/bare, default/done",
    ]


def test_finished_pods_are_deleted_without_force() -> None:
    finished = item("job")
    finished["manifest"]["status"] = {"phase": "Succeeded"}
    assert plan_drain([finished]).evict == [finished]


def test_the_reason_records_who_and_the_grace_period() -> None:
    assert drain_reason("n1", "user:ann", -1) == "drained from node n1 by user:ann"
    assert drain_reason("n1", "user:ann", 0) == "drained from node n1 by user:ann (grace period 0s)"
