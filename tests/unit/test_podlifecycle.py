"""The kubelet's lifecycle rules (core/pods/lifecycle.py), each against values worked out by hand
from the kubelet's sources: probe defaults and thresholds, startup gating, CrashLoopBackOff,
restart policies and the pod phase."""

from __future__ import annotations

import math
from typing import Any

import pytest

from core.errors import ValidationFailed
from core.meta.durations import format_duration
from core.pods.lifecycle import (
    BackoffState,
    ContainerHealth,
    ContainerOutcome,
    ContainerProbes,
    CrashLoopBackOff,
    ExecCheck,
    HTTPGetCheck,
    ProbeOutcome,
    ProbeSpec,
    ProbeTracker,
    TCPSocketCheck,
    backoff_message,
    container_outcomes,
    exit_reason,
    exit_status,
    pod_phase,
    probes_of,
    should_restart,
)

CONTAINER: dict[str, Any] = {
    "name": "app",
    "image": "x",
    "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9000}],
    "livenessProbe": {
        "httpGet": {
            "port": "http",
            "path": "/healthz",
            "httpHeaders": [{"name": "X-Probe", "value": "1"}],
        }
    },
    "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 2, "successThreshold": 2},
    "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30, "periodSeconds": 0},
}


def test_probes_get_kubernetes_defaults_and_resolved_ports() -> None:
    probes = probes_of(CONTAINER)
    assert probes.liveness == ProbeSpec(
        kind="liveness",
        action=HTTPGetCheck(port=8080, path="/healthz", headers=(("X-Probe", "1"),)),
        initial_delay_seconds=0,
        period_seconds=10,
        timeout_seconds=1,
        success_threshold=1,
        failure_threshold=3,
    )
    assert probes.readiness == ProbeSpec(
        kind="readiness",
        action=TCPSocketCheck(port=9000),
        period_seconds=2,
        success_threshold=2,
    )
    # periodSeconds 0 means "default" in Kubernetes, not "continuously"
    assert probes.startup == ProbeSpec(
        kind="startup", action=ExecCheck(command=("true",)), failure_threshold=30
    )
    assert probes_of({"name": "plain", "image": "x"}) == ContainerProbes()


def test_a_numeric_string_port_is_a_number_when_no_port_has_that_name() -> None:
    probe = {"readinessProbe": {"httpGet": {"port": "8081", "scheme": "HTTPS", "host": "h"}}}
    spec = probes_of({"name": "a", **probe}).readiness
    assert spec is not None
    assert spec.action == HTTPGetCheck(port=8081, scheme="HTTPS", host="h")


@pytest.mark.parametrize(
    ("probe_key", "probe", "field"),
    [
        (
            "livenessProbe",
            {"exec": {"command": ["x"]}, "successThreshold": 2},
            "livenessProbe.successThreshold",
        ),
        (
            "startupProbe",
            {"exec": {"command": ["x"]}, "successThreshold": 3},
            "startupProbe.successThreshold",
        ),
        ("readinessProbe", {"httpGet": {"port": "metrics"}}, "readinessProbe.httpGet.port"),
        ("livenessProbe", {"tcpSocket": {"port": 70000}}, "livenessProbe.tcpSocket.port"),
        (
            "livenessProbe",
            {"exec": {"command": ["x"]}, "tcpSocket": {"port": 1}},
            "livenessProbe",
        ),
        ("readinessProbe", {"exec": {"command": []}}, "readinessProbe.exec.command"),
        (
            "readinessProbe",
            {"exec": {"command": ["x"]}, "periodSeconds": -1},
            "readinessProbe.periodSeconds",
        ),
    ],
)
def test_invalid_probes_are_refused_naming_the_field(
    probe_key: str, probe: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        probes_of(
            {"name": "app", "ports": [{"name": "http", "containerPort": 80}], probe_key: probe}
        )
    assert caught.value.field == field


def test_a_readiness_probe_may_need_more_than_one_success() -> None:
    spec = probes_of(
        {"name": "a", "readinessProbe": {"exec": {"command": ["x"]}, "successThreshold": 2}}
    )
    assert spec.readiness is not None and spec.readiness.success_threshold == 2


def spec(kind: str, **timings: int) -> ProbeSpec:
    return ProbeSpec(kind=kind, action=ExecCheck(command=("check",)), **timings)  # type: ignore[arg-type]


def test_a_probe_is_due_after_the_initial_delay_then_on_its_period_grid() -> None:
    tracker = ProbeTracker(spec("readiness", initial_delay_seconds=5), started_at=100.0)
    assert tracker.next_due(100.0) == 105.0
    assert tracker.next_due(107.0) == 107.0  # overdue: run now
    tracker.record(False, 105.5)  # ran at 105, took 0.5 s
    assert tracker.next_due(105.5) == 115.0
    tracker.record(False, 127.0)  # ran late: the grid stays, the missed tick is not caught up
    assert tracker.next_due(127.0) == 135.0


def test_liveness_fails_after_failure_threshold_consecutive_failures_and_holds() -> None:
    probes = ContainerProbes(liveness=spec("liveness", period_seconds=1))
    health = ContainerHealth("app", probes, started_at=0.0)
    assert health.started and health.ready  # no startup or readiness probe
    assert health.due(0.0) == ["liveness"]
    assert health.record("liveness", False, 0.0) is None
    assert health.record("liveness", False, 1.0) is None
    assert health.record("liveness", True, 2.0) is None  # the run of failures is broken
    assert health.record("liveness", False, 3.0) is None
    assert health.record("liveness", False, 4.0) is None
    outcome = health.record("liveness", False, 5.0)
    assert outcome == ProbeOutcome(
        container="app",
        kind="liveness",
        transition="failed",
        reason="LivenessProbeFailed",
        message="Container app failed liveness probe, will be restarted",
        restart=True,
        started=True,
        ready=False,
    )
    # on hold until the container is restarted: nothing due, results ignored
    assert health.next_due(6.0) == math.inf and health.due(6.0) == []
    assert health.record("liveness", False, 6.0) is None
    health.restarted(20.0)
    assert health.next_due(20.0) == 20.0
    assert health.record("liveness", False, 20.0) is None
    assert health.record("liveness", False, 21.0) is None  # the counter started over
    failed = health.record("liveness", False, 22.0)
    assert failed is not None and failed.transition == "failed"


def test_under_restart_policy_never_a_probe_failure_kills_without_the_restart_wording() -> None:
    probes = ContainerProbes(liveness=spec("liveness", failure_threshold=1))
    health = ContainerHealth("app", probes, started_at=0.0, restart_policy="Never")
    outcome = health.record("liveness", False, 0.0)
    assert outcome is not None and outcome.message == "Container app failed liveness probe"


def test_readiness_starts_not_ready_and_reports_transitions_only() -> None:
    probes = ContainerProbes(readiness=spec("readiness", success_threshold=2, failure_threshold=2))
    health = ContainerHealth("web", probes, started_at=0.0)
    assert health.started and not health.ready
    assert health.record("readiness", False, 0.0) is None  # already not ready: no transition
    assert health.record("readiness", False, 10.0) is None
    assert health.record("readiness", True, 20.0) is None  # 1 of 2 successes
    ready = health.record("readiness", True, 30.0)
    assert ready is not None and (ready.transition, ready.ready, ready.restart) == (
        "ready",
        True,
        False,
    )
    assert health.record("readiness", True, 40.0) is None
    assert health.record("readiness", False, 50.0) is None
    not_ready = health.record("readiness", False, 60.0)
    assert not_ready is not None
    assert (not_ready.transition, not_ready.reason, not_ready.ready) == (
        "not_ready",
        "ReadinessProbeFailed",
        False,
    )
    assert not_ready.message == "Container web failed readiness probe"
    assert health.record("readiness", False, 70.0) is None  # readiness never holds
    assert health.next_due(70.0) == 80.0


def test_a_startup_probe_gates_liveness_and_readiness_until_it_succeeds() -> None:
    probes = ContainerProbes(
        startup=spec("startup", period_seconds=1, failure_threshold=3),
        liveness=spec("liveness", initial_delay_seconds=2),
        readiness=spec("readiness"),
    )
    health = ContainerHealth("app", probes, started_at=0.0)
    assert not health.started and not health.ready
    assert health.gated("liveness") and health.gated("readiness") and not health.gated("startup")
    assert health.due(0.0) == ["startup"]
    assert health.record("startup", False, 0.0) is None
    assert health.next_due(0.5) == 1.0  # only the startup probe's schedule counts
    assert health.record("readiness", True, 0.5) is None  # a gated probe's result is ignored
    started = health.record("startup", True, 1.0)
    assert started is not None
    assert (started.transition, started.started, started.ready) == ("started", True, False)
    assert health.gated("startup") and not health.gated("liveness")
    # readiness (due since 0) runs at once, liveness after its initial delay
    assert health.due(1.0) == ["readiness"]
    assert health.due(2.0) == ["liveness", "readiness"]
    ready = health.record("readiness", True, 2.0)
    assert ready is not None and ready.transition == "ready" and health.ready
    assert health.record("startup", False, 3.0) is None  # no longer probed


def test_a_startup_probe_that_keeps_failing_restarts_the_container() -> None:
    probes = ContainerProbes(startup=spec("startup", failure_threshold=2))
    health = ContainerHealth("app", probes, started_at=0.0)
    assert health.record("startup", False, 0.0) is None
    failed = health.record("startup", False, 10.0)
    assert failed is not None
    assert (failed.transition, failed.reason, failed.restart, failed.started) == (
        "failed",
        "StartupProbeFailed",
        True,
        False,
    )
    assert failed.message == "Container app failed startup probe, will be restarted"
    health.restarted(30.0)
    assert not health.started and health.due(30.0) == ["startup"]


def test_without_a_readiness_probe_a_container_is_ready_once_started() -> None:
    health = ContainerHealth("app", ContainerProbes(startup=spec("startup")), started_at=0.0)
    assert not health.ready
    started = health.record("startup", True, 0.0)
    assert started is not None and started.ready and health.ready


def crash_loop(backoff: CrashLoopBackOff, runs: list[float], gap: float = 0.0) -> list[float]:
    """Delays of a container that runs ``runs[i]`` seconds each time, restarted as told."""
    state, now, delays = BackoffState(), 0.0, []
    for ran in runs:
        started, finished = now, now + ran
        delay, after = backoff.delay_before_restart(state, started, finished)
        assert backoff.state_after(delay) == after  # rebuildable from the recorded back-off
        delays.append(delay)
        state, now = after, finished + delay + gap
    return delays


def test_crash_loop_back_off_is_immediate_then_doubles_from_10s_to_300s() -> None:
    delays = crash_loop(CrashLoopBackOff(), [1.0] * 9)
    assert delays == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]


def test_back_off_starts_over_after_running_cleanly_for_twice_the_cap() -> None:
    # 600 s is not enough (the kubelet wants strictly more), 601 s is
    delays = crash_loop(CrashLoopBackOff(), [1.0, 1.0, 1.0, 600.0, 601.0, 1.0, 1.0])
    assert delays == [0.0, 10.0, 20.0, 40.0, 0.0, 10.0, 20.0]


def test_back_off_durations_are_configurable() -> None:
    fast = CrashLoopBackOff(initial=0.1, cap=0.4)
    assert fast.reset_seconds == 0.8
    assert crash_loop(fast, [0.01] * 5) == [0.0, 0.1, 0.2, 0.4, 0.4]
    assert crash_loop(fast, [0.01, 0.01, 0.81, 0.01]) == [0.0, 0.1, 0.0, 0.1]
    custom = CrashLoopBackOff(initial=1, cap=60, reset_after=5)
    assert crash_loop(custom, [1, 1, 6, 1]) == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        CrashLoopBackOff(initial=10, cap=5)


def test_back_off_state_is_rebuilt_from_the_last_recorded_back_off() -> None:
    policy = CrashLoopBackOff()
    assert policy.state_after(None) == BackoffState()
    assert policy.state_after(0) == BackoffState(10.0)
    assert policy.state_after(20) == BackoffState(40.0)
    assert policy.state_after(300) == BackoffState(300.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (10, "10s"),
        (20, "20s"),
        (80, "1m20s"),
        (160, "2m40s"),
        (300, "5m0s"),
        (3600, "1h0m0s"),
        (1.5, "1.5s"),
        (0.05, "50ms"),
        (0, "0s"),
    ],
)
def test_durations_read_like_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_crash_loop_message_is_the_kubelets() -> None:
    assert (
        backoff_message(40, "app", "web", "default", "1234")
        == "back-off 40s restarting failed container=app pod=web_default(1234)"
    )


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 137, True),
        ("Never", 0, False),
        ("Never", 1, False),
    ],
)
def test_restart_policies(policy: str, code: int, restart: bool) -> None:
    assert should_restart(policy, code) is restart


def test_an_unknown_restart_policy_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        should_restart("Sometimes", 1)


def test_exit_codes_and_reasons_as_the_kubelet_reports_them() -> None:
    assert exit_status(-9) == (137, 9)
    assert exit_status(-15) == (143, 15)
    assert exit_status(3) == (3, None)
    assert exit_reason(0) == "Completed"
    assert exit_reason(1) == "Error"
    assert exit_reason(143, 15) == "Error"
    assert exit_reason(137, 9, oom_killed=True) == "OOMKilled"


RUNNING = ContainerOutcome("running")
OK = ContainerOutcome("terminated", 0)
FAILED = ContainerOutcome("terminated", 1)
WAITING = ContainerOutcome("waiting")
RESTARTING = ContainerOutcome("waiting", terminated_before=True)
UNKNOWN = ContainerOutcome("unknown")


@pytest.mark.parametrize(
    ("policy", "outcomes", "phase"),
    [
        ("Always", [], "Pending"),
        ("Always", [WAITING, RUNNING], "Pending"),
        ("Always", [UNKNOWN, RUNNING], "Pending"),
        ("Always", [RUNNING, FAILED], "Running"),
        ("Never", [RUNNING, OK], "Running"),
        ("Always", [OK, FAILED], "Running"),  # both being restarted
        ("Always", [OK, OK], "Running"),
        ("OnFailure", [OK, OK], "Succeeded"),
        ("OnFailure", [OK, FAILED], "Running"),  # the failed one is restarted
        ("OnFailure", [OK, RESTARTING], "Running"),
        ("Never", [OK, OK], "Succeeded"),
        ("Never", [OK, FAILED], "Failed"),
        ("Never", [RESTARTING], "Failed"),  # stopped, and not a success as far as known
    ],
)
def test_pod_phase(policy: str, outcomes: list[ContainerOutcome], phase: str) -> None:
    assert pod_phase(policy, outcomes) == phase


def test_a_terminal_pod_is_succeeded_or_failed_whatever_its_restart_policy() -> None:
    assert pod_phase("Always", [OK, OK], pod_is_terminal=True) == "Succeeded"
    assert pod_phase("Always", [OK, ContainerOutcome("terminated", 143)], pod_is_terminal=True) == (
        "Failed"
    )
    assert pod_phase("Always", [RUNNING, OK], pod_is_terminal=True) == "Running"


def test_container_outcomes_are_read_from_the_pod_status() -> None:
    manifest = {
        "spec": {"containers": [{"name": n} for n in ("a", "b", "c", "d", "e")]},
        "status": {
            "containerStatuses": [
                {"name": "a", "state": {"running": {"startedAt": "t"}}},
                {"name": "b", "state": {"terminated": {"exitCode": 2}}},
                {
                    "name": "c",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1}},
                },
                {"name": "d", "state": {"waiting": {"reason": "ContainerCreating"}}},
            ]
        },
    }
    assert container_outcomes(manifest) == [
        RUNNING,
        ContainerOutcome("terminated", 2),
        RESTARTING,
        WAITING,
        UNKNOWN,
    ]
