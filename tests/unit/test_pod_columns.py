"""``fleetlog get pods``' READY, STATUS and RESTARTS are kubectl's (``printPod``), over the
status the log folds: a crash-looping pod reads ``CrashLoopBackOff``, not ``Running``; restarts
say how long ago the latest one was. Statuses are built with the pod's own evolve
(``core.pods.status``) wherever fleetlog records them, so the test reads what ``get`` reads."""

from __future__ import annotations

from typing import Any

import pytest

from core.meta.timestamps import format_stamp
from core.pods.status import (
    with_container_exited,
    with_container_restarted,
    with_container_started,
    with_pod_readiness,
    with_pod_scheduled,
    with_pod_terminated,
)
from ops import render

S = 1_000_000_000
T0 = 1_800_000_000 * S
NOW = T0 + 600 * S


def pod(*names: str, init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": n, "image": "busybox", "command": ["x"]} for n in names or ("main",)
        ]
    }
    if init is not None:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def started(manifest: dict[str, Any], container: str = "main", *, at: int = T0, restarts: int = 0):
    return with_container_started(
        manifest, container=container, restart_count=restarts, stamp=format_stamp(at)
    )


def exited(
    manifest: dict[str, Any],
    container: str = "main",
    *,
    code: int = 1,
    reason: str = "Error",
    at: int = T0,
    restarts: int = 0,
    signal: int | None = None,
):
    return with_container_exited(
        manifest,
        container=container,
        exit_code=code,
        signal=signal,
        reason=reason,
        message="",
        restart_count=restarts,
        started_at_ns=None,
        finished_at_ns=at,
        stamp=format_stamp(at),
    )


def restarted(
    manifest: dict[str, Any], container: str = "main", *, count: int, backoff: float, at: int
):
    return with_container_restarted(
        manifest,
        container=container,
        restart_count=count,
        backoff_seconds=backoff,
        namespace="default",
        name="p",
        uid="u",
        stamp=format_stamp(at),
    )


def ready(manifest: dict[str, Any], at: int = T0) -> dict[str, Any]:
    return with_pod_readiness(manifest, ready=True, reason="", stamp=format_stamp(at))


def bound(manifest: dict[str, Any]) -> dict[str, Any]:
    return with_pod_scheduled(manifest, node="n1", reason="", message="", stamp=format_stamp(T0))


def columns(manifest: dict[str, Any]) -> tuple[str, str, str]:
    return render.pod_columns(manifest, NOW)


def test_a_new_pod_is_pending_and_a_bound_one_creates_its_containers() -> None:
    assert columns(pod()) == ("0/1", "Pending", "0")
    assert columns(bound(pod())) == ("0/1", "Pending", "0")
    two = started(bound(pod("a", "b")), "a")
    assert columns(two) == ("0/2", "ContainerCreating", "0")


def test_a_running_ready_pod() -> None:
    assert columns(ready(started(bound(pod())))) == ("1/1", "Running", "0")
    # Running but not yet ready: kubectl still says Running (the READY column tells).
    assert columns(started(bound(pod()))) == ("0/1", "Running", "0")


def test_a_crash_looping_pod_reads_crashloopbackoff_with_its_last_restart() -> None:
    manifest = ready(started(bound(pod())))
    manifest = exited(manifest, at=T0 + 30 * S)
    assert columns(manifest) == ("0/1", "Error", "0")
    manifest = restarted(manifest, count=1, backoff=10, at=T0 + 30 * S)
    assert columns(manifest) == ("0/1", "CrashLoopBackOff", "1 (9m30s ago)")
    manifest = started(manifest, at=T0 + 40 * S, restarts=1)
    manifest = exited(manifest, at=T0 + 45 * S, restarts=1)
    manifest = restarted(manifest, count=2, backoff=20, at=T0 + 45 * S)
    assert columns(manifest) == ("0/1", "CrashLoopBackOff", "2 (9m15s ago)")
    # Restarted and running again: Running, the restarts still counted.
    manifest = ready(started(manifest, at=T0 + 65 * S, restarts=2), T0 + 66 * S)
    assert columns(manifest) == ("1/1", "Running", "2 (9m15s ago)")


def test_an_ended_container_gives_its_reason_or_its_exit_code() -> None:
    base = started(bound(pod()))
    assert columns(exited(base, reason="OOMKilled", code=137))[1] == "OOMKilled"
    assert columns(exited(base, reason="", code=3))[1] == "ExitCode:3"
    assert columns(exited(base, reason="", code=137, signal=9))[1] == "Signal:9"


def test_completed_pods_and_a_completed_container_beside_a_running_one() -> None:
    done = exited(started(bound(pod())), code=0, reason="Completed")
    done = with_pod_terminated(
        done, phase="Succeeded", reason="Completed", message="", stamp=format_stamp(T0)
    )
    assert columns(done) == ("0/1", "Completed", "0")
    two = started(started(bound(pod("a", "b")), "a"), "b")
    two = ready(two)
    one_done = exited(two, "a", code=0, reason="Completed")
    # "b" still runs: kubectl shows NotReady (the pod is not Ready once "a" ended) ...
    assert columns(one_done) == ("1/2", "NotReady", "0")
    # ... and Running while the pod is still Ready.
    still_ready = with_pod_readiness(one_done, ready=True, reason="", stamp=format_stamp(T0))
    assert columns(still_ready) == ("1/2", "Running", "0")


def test_a_failed_pod_keeps_its_reason() -> None:
    failed = with_pod_terminated(
        bound(pod()),
        phase="Failed",
        reason="ImagePullUnsupported",
        message="no command",
        stamp=format_stamp(T0),
    )
    assert columns(failed) == ("0/1", "ImagePullUnsupported", "0")
    evicted = {**pod(), "status": {"phase": "Failed", "reason": "Evicted"}}
    assert columns(evicted)[1] == "Evicted"


def status_of(manifest: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {**manifest, "status": status}


def waiting(name: str, reason: str = "", **extra: Any) -> dict[str, Any]:
    state = {"waiting": {"reason": reason}} if reason else {"waiting": {}}
    return {"name": name, "ready": False, "restartCount": 0, "state": state, **extra}


def test_waiting_reasons_such_as_image_pull_errors_are_shown() -> None:
    manifest = status_of(
        pod(), phase="Pending", containerStatuses=[waiting("main", "ErrImagePull")]
    )
    assert columns(manifest)[1] == "ErrImagePull"


INIT = [{"name": "setup", "image": "busybox"}, {"name": "migrate", "image": "busybox"}]


@pytest.mark.parametrize(
    ("init_statuses", "shown"),
    [
        ([waiting("setup", "PodInitializing"), waiting("migrate")], "Init:0/2"),
        (
            [
                {"name": "setup", "state": {"terminated": {"exitCode": 0}}, "restartCount": 0},
                waiting("migrate", "PodInitializing"),
            ],
            "Init:1/2",
        ),
        ([waiting("setup", "CrashLoopBackOff")], "Init:CrashLoopBackOff"),
        (
            [{"name": "setup", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}],
            "Init:Error",
        ),
        ([{"name": "setup", "state": {"terminated": {"exitCode": 2}}}], "Init:ExitCode:2"),
        (
            [{"name": "setup", "state": {"terminated": {"exitCode": 137, "signal": 9}}}],
            "Init:Signal:9",
        ),
    ],
)
def test_init_containers(init_statuses: list[dict[str, Any]], shown: str) -> None:
    manifest = status_of(
        pod(init=INIT),
        phase="Pending",
        initContainerStatuses=init_statuses,
        containerStatuses=[waiting("main", "PodInitializing")],
    )
    assert columns(manifest)[1] == shown


def test_a_sidecar_counts_as_a_container_and_its_restarts_count() -> None:
    sidecar = [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]
    finished = format_stamp(NOW - 5 * S)
    manifest = status_of(
        pod(init=sidecar),
        phase="Running",
        conditions=[{"type": "Initialized", "status": "True"}],
        initContainerStatuses=[
            {
                "name": "proxy",
                "ready": True,
                "started": True,
                "restartCount": 3,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": finished}},
            }
        ],
        containerStatuses=[
            {"name": "main", "ready": True, "restartCount": 1, "state": {"running": {}}}
        ],
    )
    assert columns(manifest) == ("2/2", "Running", "4 (5s ago)")


def test_terminating_and_lost_pods() -> None:
    manifest = ready(started(bound(pod())))
    manifest["metadata"]["deletionTimestamp"] = format_stamp(T0)
    assert columns(manifest)[1] == "Terminating"
    manifest["status"]["reason"] = "NodeLost"
    assert columns(manifest)[1] == "Unknown"


def test_scheduling_gated() -> None:
    manifest = status_of(
        pod(),
        phase="Pending",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
    )
    assert columns(manifest)[1] == "SchedulingGated"


def test_wide_columns_are_kubectls() -> None:
    manifest = ready(started(bound(pod())))
    manifest["status"]["podIPs"] = [{"ip": "10.244.0.7"}]
    manifest["status"]["nominatedNodeName"] = "n2"
    manifest["spec"]["readinessGates"] = [{"conditionType": "example.com/lb"}]
    item = {"name": "p", "namespace": "default", "created_ns": T0, "manifest": manifest}
    header, row = render.object_table(
        "Pod", [item], now_ns=NOW, wide=True, show_namespace=False
    ).splitlines()
    assert header.split("  ")[0:1] == ["NAME"] and "NOMINATED NODE" in header
    assert "READINESS GATES" in header
    assert row.split() == ["p", "1/1", "Running", "0", "10m", "10.244.0.7", "n1", "n2", "0/1"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 4 * 60, "5h4m"),
        (8 * 3600 + 59, "8h"),
        (47 * 3600, "47h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (3 * 365 * 86400 + 10 * 86400, "3y10d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_are_kubectls_human_durations(seconds: int, shown: str) -> None:
    assert render.human_duration(seconds) == shown
