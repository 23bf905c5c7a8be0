"""A meshed pod's ``istio-proxy``, started by its node without a spec entry, in the pod's
status as Istio's injected container shows it: a ``containerStatuses`` entry after the spec's
containers, counted by READY (2/2), restarted whatever the pod's restart policy, and part of
the pod's readiness; the spec is untouched and the pod's phase reads only its own
containers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.errors import InvalidTransition
from core.mesh.injection import SIDECAR_CONTAINER
from core.pods.aggregate import Pod
from core.pods.lifecycle import container_outcomes
from core.workloads.replicaset import ranked_pod
from ops.render.pods import pod_columns

AT = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
LATER = AT + timedelta(seconds=3)
NOW_NS = int((AT + timedelta(seconds=60)).timestamp() * 1e9)


def meshed_pod(policy: str = "Always") -> Pod:
    manifest: dict[str, Any] = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"restartPolicy": policy, "containers": [{"name": "app", "image": "process"}]},
    }
    pod = Pod.create(None, agg_id="Pod/shop/web", manifest=manifest, uid="u", at=AT)
    assert isinstance(pod, Pod)
    pod.bind(node="n1", score=None, feasible_nodes=1, at=AT)
    return pod


def statuses(pod: Pod) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in pod.manifest["status"]["containerStatuses"]}


def ready_condition(pod: Pod) -> dict[str, Any]:
    return next(c for c in pod.manifest["status"]["conditions"] if c["type"] == "Ready")


def test_the_sidecar_started_first_gets_its_status_after_the_spec_containers() -> None:
    pod = meshed_pod()
    pod.start_container(container=SIDECAR_CONTAINER, node="n1", at=AT)
    status = pod.manifest["status"]
    assert [s["name"] for s in status["containerStatuses"]] == ["app", SIDECAR_CONTAINER]
    assert status["containerStatuses"][1]["state"] == {
        "running": {"startedAt": "2026-12-06T10:00:00Z"}
    }
    assert status["phase"] == "Pending"  # the app has not started
    assert [c["name"] for c in pod.manifest["spec"]["containers"]] == ["app"]  # spec untouched
    pod.start_container(container="app", node="n1", at=LATER)
    assert pod.manifest["status"]["phase"] == "Running"
    assert [s["name"] for s in pod.manifest["status"]["containerStatuses"]] == [
        "app", SIDECAR_CONTAINER,
    ]  # fmt: skip
    ready, reason, _ = pod_columns(pod.manifest, NOW_NS)
    assert (ready, reason) == ("0/2", "Running")
    pod.mark_ready(at=LATER)
    assert all(s["ready"] for s in statuses(pod).values())
    assert pod_columns(pod.manifest, NOW_NS)[0] == "2/2"


def test_the_sidecar_ending_makes_the_pod_not_ready_and_it_restarts_under_never() -> None:
    pod = meshed_pod(policy="Never")
    pod.start_container(container=SIDECAR_CONTAINER, node="n1", at=AT)
    pod.start_container(container="app", node="n1", at=AT)
    pod.mark_ready(at=AT)
    pod.exit_container(container=SIDECAR_CONTAINER, exit_code=137, signal=9, reason="Error",
                       node="n1", at=LATER)  # fmt: skip
    condition = ready_condition(pod)
    assert condition["status"] == "False"
    assert condition["message"] == f"containers with unready status: [{SIDECAR_CONTAINER}]"
    assert statuses(pod)["app"]["ready"] is True  # its own flag is untouched
    assert pod_columns(pod.manifest, NOW_NS)[0] == "1/2"
    # A native sidecar restarts whatever the pod's policy (here Never).
    pod.restart_container(container=SIDECAR_CONTAINER, restart_count=1, backoff_seconds=10.0,
                          reason="Error", node="n1", at=LATER)  # fmt: skip
    sidecar = statuses(pod)[SIDECAR_CONTAINER]
    assert sidecar["restartCount"] == 1
    assert sidecar["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert sidecar["lastState"]["terminated"]["exitCode"] == 137
    pod.start_container(container=SIDECAR_CONTAINER, restart_count=1, node="n1", at=LATER)
    pod.mark_ready(at=LATER)
    assert ready_condition(pod)["status"] == "True"
    _, _, restarts = pod_columns(pod.manifest, NOW_NS)
    assert restarts.startswith("1 ")
    # A replica set ranks it by its restarts too, as a pod with Istio's injected sidecar.
    assert ranked_pod(pod.manifest).max_restarts == 1


def test_the_pod_phase_reads_its_own_containers_only() -> None:
    pod = meshed_pod(policy="Never")
    pod.start_container(container=SIDECAR_CONTAINER, node="n1", at=AT)
    pod.start_container(container="app", node="n1", at=AT)
    pod.exit_container(container="app", exit_code=0, reason="Completed", node="n1", at=LATER)
    pod.exit_container(container=SIDECAR_CONTAINER, exit_code=0, reason="Completed",
                       node="n1", at=LATER)  # fmt: skip
    assert [o.state for o in container_outcomes(pod.manifest)] == ["terminated"]
    pod.succeed(reason="Completed", at=LATER)
    assert pod.manifest["status"]["phase"] == "Succeeded"


def test_only_the_mesh_sidecar_may_be_reported_without_a_spec_entry() -> None:
    pod = meshed_pod()
    with pytest.raises(InvalidTransition, match="no container 'envoy'"):
        pod.start_container(container="envoy", node="n1", at=AT)
