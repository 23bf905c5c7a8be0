"""``fleetlog rollout``'s decisions (ops/rollout.py) on query items, and the ReplicaSet columns of
``fleetlog get``: kubectl's messages, revision choice and rollback manifest, without a server."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from core.errors import FleetError
from ops import render
from ops.rollout import (
    Undo,
    controlled_by,
    deployment_name,
    history_rows,
    plan_undo,
    revision_history,
    revision_of,
    revision_template,
    rollback_target,
    rollout_status,
    template_without_hash,
    with_paused,
)

UID = "dep-uid"


def error_of(action: Callable[[], object]) -> str:
    with pytest.raises(FleetError) as raised:
        action()
    return str(raised.value)


def template(image: str, hash_label: str | None = None) -> dict[str, Any]:
    labels = {"app": "web"} | ({"pod-template-hash": hash_label} if hash_label else {})
    return {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "main", "image": image}], "restartPolicy": "Always"},
    }


def deployment(image: str = "v2", *, paused: bool = False, **annotations: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web", "namespace": "default", "generation": 2}
    if annotations:
        metadata["annotations"] = annotations
    spec = {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": template(image),
        "paused": paused,
    }
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}
    manifest["status"] = {"observedGeneration": 2, "replicas": 3}
    return {"name": "web", "namespace": "default", "uid": UID, "version": 7, "manifest": manifest}


def replica_set(
    revision: str | None, image: str, *, owner: str = UID, cause: str | None = None, **extra: str
) -> dict[str, Any]:
    hash_label = f"h{image}"
    annotations = dict(extra)
    if revision is not None:
        annotations["deployment.kubernetes.io/revision"] = revision
    if cause is not None:
        annotations["kubernetes.io/change-cause"] = cause
    metadata = {
        "name": f"web-{hash_label}",
        "namespace": "default",
        "annotations": annotations,
        "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner,
             "controller": True, "blockOwnerDeletion": True},
        ],
    }  # fmt: skip
    spec = {
        "replicas": 0,
        "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash_label}},
        "template": template(image, hash_label),
    }
    manifest = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": metadata, "spec": spec}
    return {"name": metadata["name"], "namespace": "default", "uid": f"rs-{image}",
            "manifest": manifest}  # fmt: skip


def test_only_deployments_have_rollouts() -> None:
    assert deployment_name("deployment/web") == "web"
    assert deployment_name("deploy/web") == "web"
    assert deployment_name("deployment.apps/web") == "web"
    with pytest.raises(FleetError, match="deployments only, not on a replicaset"):
        deployment_name("rs/web")
    with pytest.raises(FleetError, match="expected KIND/NAME"):
        deployment_name("web")


def test_revision_annotation_absent_is_zero_and_garbage_is_skipped() -> None:
    assert revision_of(replica_set("4", "a")["manifest"]) == 4
    assert revision_of(replica_set(None, "a")["manifest"]) == 0
    assert revision_of(replica_set("four", "a")["manifest"]) is None


def test_only_replica_sets_the_deployment_controls_count() -> None:
    mine = replica_set("1", "a")
    stranger = replica_set("2", "b", owner="other-uid")
    not_controller = replica_set("3", "c")
    not_controller["manifest"]["metadata"]["ownerReferences"][0]["controller"] = False
    orphan = replica_set("4", "d")
    del orphan["manifest"]["metadata"]["ownerReferences"]
    assert controlled_by([mine, stranger, not_controller, orphan], UID) == [mine]


def test_history_sorted_by_revision_with_change_causes() -> None:
    history = revision_history(
        [
            replica_set("10", "c", cause="kubectl set image v10"),
            replica_set("2", "b"),
            replica_set("bad", "x"),
            replica_set("1", "a", cause="first"),
        ]
    )
    assert history_rows(history) == [
        ["1", "first"],
        ["2", "<none>"],
        ["10", "kubectl set image v10"],
    ]
    shown = revision_template(history, 1)
    assert shown["metadata"]["annotations"] == {"kubernetes.io/change-cause": "first"}
    assert shown["metadata"]["labels"] == {"app": "web", "pod-template-hash": "ha"}
    assert shown["spec"]["containers"][0]["image"] == "a"
    assert (
        error_of(lambda: revision_template(history, 3)) == "unable to find the specified revision"
    )
    assert history_rows(revision_history([])) == []


def test_rollback_target_is_the_second_highest_revision_or_the_one_asked_for() -> None:
    sets = [replica_set("3", "c"), replica_set("1", "a"), replica_set("5", "e")]
    assert rollback_target(sets, 0, "web")[0] == 3
    assert rollback_target(list(reversed(sets)), 0, "web")[0] == 3
    assert rollback_target(sets, 1, "web") == (1, sets[1])
    assert (
        error_of(lambda: rollback_target(sets, 2, "web"))
        == "unable to find specified revision 2 in history"
    )
    assert (
        error_of(lambda: rollback_target(sets, -1, "web"))
        == "unable to find specified revision -1 in history"
    )
    assert (
        error_of(lambda: rollback_target(sets[:1], 0, "web"))
        == 'no rollout history found for deployment "web"'
    )
    with pytest.raises(FleetError, match="no rollout history found"):
        rollback_target([], 0, "web")


def test_undo_copies_the_template_without_its_hash_and_the_annotations_as_kubectl() -> None:
    current = deployment(
        "v2",
        **{
            "deployment.kubernetes.io/revision": "2",
            "kubernetes.io/change-cause": "to v2",
            "team": "payments",
        },
    )
    before = copy.deepcopy(current)
    old = replica_set(
        "1", "v1", cause="to v1",
        **{"deployment.kubernetes.io/desired-replicas": "3", "team": "web"},
    )  # fmt: skip
    sets = [old, replica_set("2", "v2"), replica_set("1", "stranger", owner="x")]
    undo = plan_undo(current, sets, 0)
    assert undo.revision == 1 and undo.manifest is not None
    assert undo.message("web") == "deployment.apps/web rolled back"
    assert undo.manifest["spec"]["template"] == template("v1")
    assert "status" not in undo.manifest
    assert undo.manifest["spec"]["replicas"] == 3
    # rollback.go replaces the annotations: the deployment's own revision, the rest from the
    # replica set (its change-cause), never the replica set's controller annotations.
    assert undo.manifest["metadata"]["annotations"] == {
        "deployment.kubernetes.io/revision": "2",
        "kubernetes.io/change-cause": "to v1",
        "team": "web",
    }
    assert current == before  # the query item is not modified

    without = plan_undo(deployment("v2"), [replica_set("1", "v1"), replica_set("2", "v2")], 0)
    assert without.manifest is not None and "annotations" not in without.manifest["metadata"]


def test_undo_to_the_current_template_is_skipped() -> None:
    sets = [replica_set("1", "v1"), replica_set("2", "v2")]
    undo = plan_undo(deployment("v2"), sets, 2)
    assert undo == Undo(2, None)
    assert undo.message("web") == (
        "deployment.apps/web skipped rollback (current template already matches revision 2)"
    )


def test_undo_of_a_paused_deployment_is_refused_after_the_revision_is_found() -> None:
    sets = [replica_set("1", "v1"), replica_set("2", "v2")]
    with pytest.raises(FleetError) as refused:
        plan_undo(deployment(paused=True), sets, 0)
    assert str(refused.value) == (
        "you cannot rollback a paused deployment; resume it first with "
        "'fleetlog rollout resume deployment/web' and try again"
    )
    with pytest.raises(FleetError, match="unable to find specified revision 9"):
        plan_undo(deployment(paused=True), sets, 9)


def test_template_comparison_ignores_only_the_hash_label() -> None:
    assert template_without_hash(template("v1", "abc")) == template("v1")
    bare = {"metadata": {"labels": {"pod-template-hash": "abc"}}, "spec": {}}
    assert template_without_hash(bare) == {"spec": {}}


def test_pause_and_resume_flip_spec_paused_or_say_it_already_is() -> None:
    paused = with_paused(deployment(), True)
    assert paused["spec"]["paused"] is True and "status" not in paused
    assert with_paused(deployment(paused=True), False)["spec"]["paused"] is False
    assert (
        error_of(lambda: with_paused(deployment(paused=True), True))
        == 'deployments.apps "web" is already paused'
    )
    assert (
        error_of(lambda: with_paused(deployment(), False)) == 'deployments.apps "web" is not paused'
    )


def status_of(generation: int, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": 3},
        "status": status,
    }


@pytest.mark.parametrize(
    ("manifest", "message", "done"),
    [
        (status_of(2, observedGeneration=1), "Waiting for deployment spec update to be observed...", False),
        (status_of(1), "Waiting for deployment spec update to be observed...", False),
        (status_of(1, observedGeneration=1, replicas=3, updatedReplicas=1),
         'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...', False),
        (status_of(1, observedGeneration=1, replicas=5, updatedReplicas=3),
         'Waiting for deployment "web" rollout to finish: 2 old replicas are pending termination...', False),
        (status_of(1, observedGeneration=1, replicas=3, updatedReplicas=3, availableReplicas=1),
         'Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas are available...', False),
        (status_of(1, observedGeneration=1, replicas=3, updatedReplicas=3, availableReplicas=3),
         'deployment "web" successfully rolled out', True),
        (status_of(1, observedGeneration=2, replicas=3, updatedReplicas=3, availableReplicas=3),
         'deployment "web" successfully rolled out', True),
    ],
)  # fmt: skip
def test_rollout_status_messages_in_kubectl_order(
    manifest: dict[str, Any], message: str, done: bool
) -> None:
    status = rollout_status(manifest, "web")
    assert (status.message, status.done) == (message, done)


def test_a_rollout_past_its_progress_deadline_is_an_error_once_observed() -> None:
    stalled = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    manifest = status_of(
        1, observedGeneration=1, replicas=3, updatedReplicas=1, conditions=[stalled]
    )
    assert (
        error_of(lambda: rollout_status(manifest, "web"))
        == 'deployment "web" exceeded its progress deadline'
    )
    # a newer spec not yet observed is waited for, whatever the old condition says
    manifest["metadata"]["generation"] = 2
    assert not rollout_status(manifest, "web").done
    progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
    manifest = status_of(
        1,
        observedGeneration=1,
        replicas=3,
        updatedReplicas=3,
        availableReplicas=3,
        conditions=[progressing],
    )
    assert rollout_status(manifest, "web").done


def test_replica_set_columns() -> None:
    item = replica_set("1", "v1")
    item["manifest"]["spec"]["replicas"] = 3
    item["manifest"]["spec"]["selector"]["matchExpressions"] = [
        {"key": "tier", "operator": "In", "values": ["web", "api"]},
        {"key": "legacy", "operator": "DoesNotExist"},
    ]
    item["manifest"]["status"] = {"replicas": 3, "readyReplicas": 2}
    item["created_ns"] = 0
    table = render.object_table(
        "ReplicaSet", [item], now_ns=90 * 10**9, wide=True, show_namespace=False
    )
    assert [line.split() for line in table.splitlines()] == [
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
        ["web-hv1", "3", "3", "2", "90s", "main", "v1",
         "app=web,!legacy,pod-template-hash=hv1,tier", "in", "(api,web)"],
    ]  # fmt: skip
    del item["manifest"]["status"]
    narrow = render.object_table("ReplicaSet", [item], now_ns=0, wide=False, show_namespace=True)
    assert narrow.splitlines()[1].split() == ["default", "web-hv1", "3", "0", "0", "0s"]


def test_describe_names_the_new_and_the_old_replica_sets() -> None:
    from ops.render import deployment_lines

    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}
    old_template = {"metadata": {"labels": {"app": "web", "pod-template-hash": "x"}}, "spec": {}}
    new_template = {**template, "metadata": {"labels": {"app": "web", "pod-template-hash": "y"}}}

    def rs(name: str, tmpl: dict, replicas: int, created: int) -> dict:
        manifest = {
            "spec": {"replicas": replicas, "template": tmpl},
            "status": {"replicas": created},
        }
        return {"name": name, "manifest": manifest}

    manifest = {
        "spec": {"replicas": 3, "template": template},
        "status": {
            "replicas": 4,
            "updatedReplicas": 2,
            "availableReplicas": 3,
            "unavailableReplicas": 1,
        },
    }
    lines = deployment_lines(
        manifest, [rs("web-x", old_template, 2, 2), rs("web-y", new_template, 2, 2)]
    )
    assert lines == [
        "Replicas:     3 desired | 2 updated | 4 total | 3 available | 1 unavailable",
        "StrategyType: RollingUpdate",
        "OldReplicaSets: web-x (2/2 replicas created)",
        "NewReplicaSet:  web-y (2/2 replicas created)",
    ]


async def test_undo_pause_and_resume_decide_again_when_the_deployment_changed_under_them() -> None:
    """A rolling-out deployment's status changes under a read-modify-apply (kubectl patches,
    which never conflict): the attempt is read and decided again; other refusals stop it."""
    from ops.rollout import retry_on_conflict

    calls: list[int] = []

    def attempt_failing(times: int, code: str) -> Callable[[], Any]:
        async def attempt() -> str:
            calls.append(len(calls))
            if len(calls) <= times:
                raise FleetError("changed", code=code)
            return "applied"

        return attempt

    assert await retry_on_conflict(attempt_failing(2, "conflict")) == "applied"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(FleetError) as refused:
        await retry_on_conflict(attempt_failing(1, "invalid"))
    assert (refused.value.code, len(calls)) == ("invalid", 1)
    calls.clear()
    with pytest.raises(FleetError) as lost:
        await retry_on_conflict(attempt_failing(9, "conflict"), attempts=3)
    assert (lost.value.code, len(calls)) == ("conflict", 3)
