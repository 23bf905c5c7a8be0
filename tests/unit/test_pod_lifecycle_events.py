"""Container exits, restarts and terminal phases (ContainerExited, ContainerRestarted,
PodSucceeded, PodFailed): who may record them, and the status they fold into — the same in the
live aggregate, the aggregate rebuilt from its history and the cluster read model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.errors import InvalidTransition
from core.meta.aggregate import RecordedEvent
from core.pods.aggregate import Pod
from projections.cluster import ClusterModel
from streams.envelope import Envelope, StoredEvent
from tests.unit.support import recorded

AT = datetime(2026, 11, 25, 3, 12, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ID = "Pod/default/web"


def at(seconds: int) -> datetime:
    return AT + timedelta(seconds=seconds)


def ns(seconds: int) -> int:
    return (at(seconds) - EPOCH) // timedelta(microseconds=1) * 1000


def new_pod(policy: str = "Always", containers: tuple[str, ...] = ("app",)) -> Pod:
    manifest = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "restartPolicy": policy,
            "containers": [{"name": name, "image": "x"} for name in containers],
        },
    }
    pod = Pod.create(None, agg_id=ID, manifest=manifest, uid="u-1", at=AT)
    assert isinstance(pod, Pod)
    pod.bind(node="n1", score=None, feasible_nodes=1, at=AT)
    return pod


def folded(history: list[RecordedEvent]) -> dict[str, Any]:
    """The pod's manifest as the cluster read model folds the same events."""
    model = ClusterModel()
    for seq, event in enumerate(history, 1):
        stamp = (event.timestamp - EPOCH) // timedelta(microseconds=1) * 1000
        envelope = Envelope(
            str(seq), event.type, 1, "Pod", "default", "web", event.version, stamp,
            "test", "", "", event.payload,
        )  # fmt: skip
        model.apply(StoredEvent(seq, "fleet.evt.pod.default.web", stamp, envelope))
    record = model.get("Pod", "default", "web")
    assert record is not None
    return record.manifest


def assert_folds_agree(pod: Pod) -> list[RecordedEvent]:
    history = recorded(pod)
    rebuilt = Pod.from_history(ID, history)
    assert rebuilt is not None and rebuilt.manifest == pod.manifest
    assert folded(history) == pod.manifest
    return history


def status_of(pod: Pod, container: str = "app") -> dict[str, Any]:
    status = pod.container_status(container)
    assert status is not None
    return status


def conditions(pod: Pod) -> dict[str, tuple[str, str]]:
    return {
        c["type"]: (c["status"], c.get("reason", "")) for c in pod.manifest["status"]["conditions"]
    }


def test_a_crash_loop_as_the_status_tells_it() -> None:
    pod = new_pod()
    pod.start_container(container="app", node="n1", at=at(1))
    pod.mark_ready(at=at(2))
    pod.exit_container(
        container="app", exit_code=1, reason="Error", node="n1", restart_count=0,
        started_at_ns=ns(1), finished_at_ns=ns(5), message="boom", at=at(6),
    )  # fmt: skip
    first_end = {
        "exitCode": 1,
        "reason": "Error",
        "message": "boom",
        "startedAt": "2026-11-25T03:12:01Z",
        "finishedAt": "2026-11-25T03:12:05Z",
    }
    assert status_of(pod) == {
        "name": "app",
        "image": "x",
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"terminated": first_end},
    }
    assert conditions(pod)["Ready"] == ("False", "ContainersNotReady")
    assert pod.manifest["status"]["phase"] == "Running"  # Always: it will be restarted

    pod.restart_container(
        container="app", restart_count=1, backoff_seconds=0, reason="Error", node="n1", at=at(6)
    )
    assert status_of(pod)["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert status_of(pod)["lastState"] == {"terminated": first_end}
    assert status_of(pod)["restartCount"] == 1
    pod.start_container(container="app", restart_count=1, node="n1", at=at(7))
    assert status_of(pod)["state"] == {"running": {"startedAt": "2026-11-25T03:12:07Z"}}
    assert status_of(pod)["lastState"] == {"terminated": first_end}

    # killed by the OOM killer; the times default to the running state and the event
    pod.exit_container(
        container="app", exit_code=137, signal=9, reason="OOMKilled", node="n1",
        restart_count=1, at=at(8),
    )  # fmt: skip
    second_end = {
        "exitCode": 137,
        "signal": 9,
        "reason": "OOMKilled",
        "startedAt": "2026-11-25T03:12:07Z",
        "finishedAt": "2026-11-25T03:12:08Z",
    }
    pod.restart_container(
        container="app", restart_count=2, backoff_seconds=10, reason="OOMKilled",
        node="n1", at=at(8),
    )  # fmt: skip
    assert status_of(pod) == {
        "name": "app",
        "image": "x",
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 2,
        "state": {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": "back-off 10s restarting failed container=app pod=web_default(u-1)",
            }
        },
        "lastState": {"terminated": second_end},
    }
    pod.start_container(container="app", restart_count=2, node="n1", at=at(18))
    assert status_of(pod)["state"] == {"running": {"startedAt": "2026-11-25T03:12:18Z"}}
    assert status_of(pod)["started"] is True
    pod.mark_ready(at=at(19))
    assert conditions(pod)["Ready"] == ("True", "")

    history = assert_folds_agree(pod)
    assert [e.type for e in history][2:] == [
        "ContainerStarted",
        "PodReady",
        "ContainerExited",
        "ContainerRestarted",
        "ContainerStarted",
        "ContainerExited",
        "ContainerRestarted",
        "ContainerStarted",
        "PodReady",
    ]
    assert history[4].payload == {
        "container": "app",
        "exit_code": 1,
        "signal": None,
        "reason": "Error",
        "node": "n1",
        "restart_count": 0,
        "started_at_ns": ns(1),
        "finished_at_ns": ns(5),
        "message": "boom",
    }
    assert history[8].payload == {
        "container": "app",
        "restart_count": 2,
        "backoff_seconds": 10.0,
        "reason": "OOMKilled",
        "node": "n1",
    }


def test_one_container_ending_leaves_the_others_ready_flags_alone() -> None:
    pod = new_pod(containers=("app", "log"))
    for name in ("app", "log"):
        pod.start_container(container=name, node="n1", at=at(1))
    pod.mark_ready(at=at(2))
    pod.exit_container(container="log", exit_code=0, reason="Completed", node="n1", at=at(3))
    assert [c["ready"] for c in pod.manifest["status"]["containerStatuses"]] == [True, False]
    ready = next(c for c in pod.manifest["status"]["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "containers with unready status: [log]"
    with pytest.raises(InvalidTransition, match="containers not started: log"):
        pod.mark_ready(at=at(4))
    assert_folds_agree(pod)


def test_a_container_may_end_before_it_ran() -> None:
    pod = new_pod(policy="Never")
    pod.exit_container(
        container="app", exit_code=128, reason="StartError", node="n1",
        message="exec: no such file", at=at(1),
    )  # fmt: skip
    assert status_of(pod)["state"] == {
        "terminated": {
            "exitCode": 128,
            "reason": "StartError",
            "message": "exec: no such file",
            "finishedAt": "2026-11-25T03:12:01Z",
        }
    }
    pod.fail(reason="", at=at(1))
    assert_folds_agree(pod)


def test_exits_are_recorded_only_for_the_current_instance_and_once() -> None:
    pod = new_pod()
    with pytest.raises(InvalidTransition, match="bound to node 'n1', not 'n2'"):
        pod.exit_container(container="app", exit_code=1, reason="Error", node="n2", at=AT)
    with pytest.raises(InvalidTransition, match="no container 'nope'"):
        pod.exit_container(container="nope", exit_code=1, reason="Error", node="n1", at=AT)
    pod.start_container(container="app", node="n1", at=at(1))
    with pytest.raises(InvalidTransition, match="never started"):
        pod.exit_container(
            container="app", exit_code=1, reason="Error", node="n1", restart_count=1, at=at(2)
        )
    pod.exit_container(container="app", exit_code=1, reason="Error", node="n1", at=at(2))
    before = pod.version
    pod.exit_container(container="app", exit_code=1, reason="Error", node="n1", at=at(3))
    pod.start_container(container="app", node="n1", at=at(3))  # a repeat of the ended start
    assert pod.version == before
    pod.restart_container(
        container="app", restart_count=1, backoff_seconds=0, reason="Error", node="n1", at=at(3)
    )
    with pytest.raises(InvalidTransition, match="out of date"):
        pod.exit_container(container="app", exit_code=1, reason="Error", node="n1", at=at(4))
    with pytest.raises(InvalidTransition, match="out of date"):
        pod.start_container(container="app", restart_count=0, node="n1", at=at(4))
    assert_folds_agree(pod)


def test_restarts_follow_the_ended_instance_and_are_recorded_once() -> None:
    pod = new_pod()
    pod.start_container(container="app", node="n1", at=at(1))
    with pytest.raises(InvalidTransition, match="has not ended"):
        pod.restart_container(
            container="app", restart_count=1, backoff_seconds=0, reason="Error", node="n1",
            at=at(2),
        )  # fmt: skip
    pod.exit_container(container="app", exit_code=2, reason="Error", node="n1", at=at(2))
    with pytest.raises(InvalidTransition, match="must have count 1, not 2"):
        pod.restart_container(
            container="app", restart_count=2, backoff_seconds=0, reason="Error", node="n1",
            at=at(2),
        )  # fmt: skip
    pod.restart_container(
        container="app", restart_count=1, backoff_seconds=0, reason="Error", node="n1", at=at(2)
    )
    before = pod.version
    pod.restart_container(
        container="app", restart_count=1, backoff_seconds=0, reason="Error", node="n1", at=at(3)
    )
    pod.start_container(container="app", restart_count=1, node="n1", at=at(3))
    pod.restart_container(  # still a repeat once the new instance runs
        container="app", restart_count=1, backoff_seconds=0, reason="Error", node="n1", at=at(4)
    )
    assert pod.version == before + 1
    assert_folds_agree(pod)


@pytest.mark.parametrize(
    ("policy", "exit_code", "reason", "allowed"),
    [
        ("Never", 1, "Error", False),
        ("Never", 137, "LivenessProbeFailed", False),
        ("OnFailure", 0, "Completed", False),
        ("OnFailure", 1, "Error", True),
        ("OnFailure", 0, "LivenessProbeFailed", True),  # killed by the kubelet to restart it
        ("Always", 0, "Completed", True),
    ],
)
def test_the_restart_policy_decides_whether_a_container_restarts(
    policy: str, exit_code: int, reason: str, allowed: bool
) -> None:
    pod = new_pod(policy)
    pod.start_container(container="app", node="n1", at=at(1))
    pod.exit_container(container="app", exit_code=exit_code, reason="Error", node="n1", at=at(2))
    restart = {
        "container": "app", "restart_count": 1, "backoff_seconds": 0, "reason": reason,
        "node": "n1", "at": at(2),
    }  # fmt: skip
    if allowed:
        pod.restart_container(**restart)
        assert status_of(pod)["restartCount"] == 1
    else:
        with pytest.raises(InvalidTransition, match=f"restartPolicy {policy}") as caught:
            pod.restart_container(**restart)
        assert caught.value.field == "spec.restartPolicy"


def test_a_pod_whose_containers_all_completed_succeeds_and_then_stays_put() -> None:
    pod = new_pod(policy="Never", containers=("app", "log"))
    for name in ("app", "log"):
        pod.start_container(container=name, node="n1", at=at(1))
    pod.mark_ready(at=at(2))
    pod.exit_container(container="app", exit_code=0, reason="Completed", node="n1", at=at(3))
    with pytest.raises(InvalidTransition, match="not every container ended with exit code 0"):
        pod.succeed(at=at(3))
    pod.exit_container(container="log", exit_code=0, reason="Completed", node="n1", at=at(4))
    pod.succeed(at=at(4))
    status = pod.manifest["status"]
    assert status["phase"] == "Succeeded" and pod.terminal and "reason" not in status
    assert conditions(pod)["Ready"] == ("False", "PodCompleted")
    assert conditions(pod)["ContainersReady"] == ("False", "PodCompleted")
    assert not any(c["ready"] for c in status["containerStatuses"])

    before = pod.version
    pod.succeed(at=at(5))
    pod.exit_container(container="log", exit_code=0, reason="Completed", node="n1", at=at(5))
    pod.mark_not_ready(reason="x", at=at(5))
    assert pod.version == before
    for attempt in (
        lambda: pod.start_container(container="app", restart_count=1, node="n1", at=at(5)),
        lambda: pod.mark_ready(at=at(5)),
        lambda: pod.fail(reason="x", at=at(5)),
    ):
        with pytest.raises(InvalidTransition, match="has succeeded") as caught:
            attempt()
        assert caught.value.field == "status.phase"
    assert_folds_agree(pod)


def test_a_failed_pod_says_why_and_accepts_no_more_container_events() -> None:
    pod = new_pod(policy="Never")
    pod.start_container(container="app", node="n1", at=at(1))
    pod.exit_container(container="app", exit_code=3, reason="Error", node="n1", at=at(2))
    pod.fail(reason="Error", message="container app exited with code 3", at=at(2))
    status = pod.manifest["status"]
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed",
        "Error",
        "container app exited with code 3",
    )
    pod.fail(reason="again", at=at(3))  # a repeat changes nothing
    with pytest.raises(InvalidTransition, match="has failed"):
        pod.restart_container(
            container="app", restart_count=1, backoff_seconds=0, reason="Error", node="n1",
            at=at(3),
        )  # fmt: skip
    with pytest.raises(InvalidTransition, match="has failed"):
        pod.succeed(at=at(3))
    history = assert_folds_agree(pod)
    assert history[-1].type == "PodFailed"
    assert history[-1].payload == {
        "reason": "Error",
        "message": "container app exited with code 3",
    }


def test_an_unbound_pod_cannot_end() -> None:
    pod = Pod.create(
        None, agg_id=ID, manifest={"spec": {"containers": [{"name": "app"}]}}, uid="u", at=AT
    )
    assert isinstance(pod, Pod)
    with pytest.raises(InvalidTransition, match="not bound"):
        pod.fail(reason="x", at=AT)
    with pytest.raises(InvalidTransition, match="not bound"):
        pod.exit_container(container="app", exit_code=0, reason="Completed", node="n1", at=AT)
