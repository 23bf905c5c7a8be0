"""Pod status events (ContainerStarted, PodReady, PodNotReady): who may record them, and the
status they fold into, as ``kubectl get pod -o yaml`` shows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import InvalidTransition
from core.pods.aggregate import Pod
from tests.unit.support import recorded

AT = datetime(2026, 11, 25, 3, 12, tzinfo=UTC)
LATER = AT + timedelta(seconds=2)
POD = {
    "metadata": {"name": "web"},
    "spec": {"containers": [{"name": "app", "image": "nginx:1"}, {"name": "log", "image": "x"}]},
}


def bound_pod() -> Pod:
    pod = Pod.create(None, agg_id="Pod/default/web", manifest=POD, uid="u", at=AT)
    assert isinstance(pod, Pod)
    pod.bind(node="n1", score=None, feasible_nodes=1, at=AT)
    return pod


def conditions(pod: Pod) -> dict[str, str]:
    return {c["type"]: c["status"] for c in pod.manifest["status"]["conditions"]}


def test_an_unbound_pod_cannot_start() -> None:
    pod = Pod.create(None, agg_id="Pod/default/web", manifest=POD, uid="u", at=AT)
    assert isinstance(pod, Pod)
    with pytest.raises(InvalidTransition, match="not bound to a node") as caught:
        pod.start_container(container="app", node="n1", at=AT)
    assert caught.value.field == "spec.nodeName"


def test_a_pod_starts_only_on_the_node_it_is_bound_to() -> None:
    pod = bound_pod()
    with pytest.raises(InvalidTransition, match="bound to node 'n1', not 'n2'"):
        pod.start_container(container="app", node="n2", at=AT)
    with pytest.raises(InvalidTransition, match="no container 'nope'"):
        pod.start_container(container="nope", node="n1", at=AT)


def test_the_phase_is_running_once_every_container_started_and_ready_follows() -> None:
    pod = bound_pod()
    pod.start_container(container="app", node="n1", at=LATER)
    status = pod.manifest["status"]
    assert status["phase"] == "Pending" and status["startTime"] == "2026-11-25T03:12:02Z"
    assert [c["started"] for c in status["containerStatuses"]] == [True, False]
    assert status["containerStatuses"][1]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    with pytest.raises(InvalidTransition, match="containers not started: log"):
        pod.mark_ready(at=LATER)

    pod.start_container(container="log", node="n1", at=LATER)
    status = pod.manifest["status"]
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0] == {
        "name": "app",
        "image": "nginx:1",
        "imageID": "",
        "ready": False,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": "2026-11-25T03:12:02Z"}},
    }
    assert conditions(pod) == {
        "PodScheduled": "True",
        "Initialized": "True",
        "Ready": "False",
        "ContainersReady": "False",
    }
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [app log]"

    pod.mark_ready(reason="probes passed", at=LATER)
    assert conditions(pod)["Ready"] == conditions(pod)["ContainersReady"] == "True"
    assert all(c["ready"] for c in pod.manifest["status"]["containerStatuses"])
    pod.mark_not_ready(reason="ReadinessProbeFailed", at=LATER)
    assert conditions(pod)["Ready"] == "False"

    history = recorded(pod)
    assert [e.type for e in history] == [
        "PodCreated",
        "PodBound",
        "ContainerStarted",
        "ContainerStarted",
        "PodReady",
        "PodNotReady",
    ]
    assert history[2].payload == {"container": "app", "restart_count": 0, "node": "n1"}
    rebuilt = Pod.from_history("Pod/default/web", history)
    assert rebuilt is not None and rebuilt.manifest == pod.manifest


def test_the_same_start_or_readiness_again_records_nothing() -> None:
    pod = bound_pod()
    for name in ("app", "log"):
        pod.start_container(container=name, node="n1", at=AT)
    pod.mark_ready(at=AT)
    before = pod.version
    pod.start_container(container="app", node="n1", at=LATER)
    pod.mark_ready(at=LATER)
    assert pod.version == before
    pod.start_container(container="app", restart_count=1, node="n1", at=LATER)
    assert pod.version == before + 1 and conditions(pod)["Ready"] == "False"
    with pytest.raises(InvalidTransition, match="out of date"):
        pod.start_container(container="app", restart_count=0, node="n1", at=LATER)
