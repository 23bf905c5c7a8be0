"""The kubelet's pod lifecycle rules as pure functions: probes, restarts, back-off, phase.

A node agent runs container processes, probes them and restarts them; *what* it must do at each
step is the kubelet's semantics, which are subtle enough (startup probes gate the others,
thresholds count consecutive results, CrashLoopBackOff doubles from the time a container
finished and forgets after it ran cleanly for a while, the phase depends on the restart policy)
to deserve a home of their own that tests can pin down without processes or clocks. Nothing here
does I/O or reads a clock: every instant is passed in (seconds as floats; any epoch, as long as
one caller uses one). The agent owns the processes and the timers; this module owns the rules.

Sources (read, not copied): pkg/kubelet/prober/worker.go and prober_manager.go (thresholds,
initial results, gating), pkg/kubelet/kuberuntime/kuberuntime_manager.go ``doBackOff`` with
client-go's ``flowcontrol.Backoff`` (CrashLoopBackOff), pkg/kubelet/kubelet_pods.go ``getPhase``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import ValidationFailed
from core.meta.durations import format_duration

ProbeKind = Literal["startup", "liveness", "readiness"]
PROBE_KINDS: tuple[ProbeKind, ...] = ("startup", "liveness", "readiness")
RestartPolicy = Literal["Always", "OnFailure", "Never"]
PodPhase = Literal["Pending", "Running", "Succeeded", "Failed"]

# Kubernetes' probe defaults (pkg/apis/core/v1/defaults.go); a 0 in a manifest means "default".
DEFAULT_INITIAL_DELAY_SECONDS = 0
DEFAULT_PERIOD_SECONDS = 10
DEFAULT_TIMEOUT_SECONDS = 1
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_FAILURE_THRESHOLD = 3

# The reasons the kubelet gives for killing a container whose probe failed; they are also the
# ``reason`` of the ContainerRestarted event that follows.
LIVENESS_PROBE_FAILED = "LivenessProbeFailed"
STARTUP_PROBE_FAILED = "StartupProbeFailed"
READINESS_PROBE_FAILED = "ReadinessProbeFailed"
PROBE_FAILURE_REASONS = frozenset({LIVENESS_PROBE_FAILED, STARTUP_PROBE_FAILED})
RESIZE_RESTART = "ResizeRestart"
"""Why the agent stopped a container to start it again with resized resources (its
``resizePolicy`` says ``RestartContainer``): like a probe failure, the node's decision."""
AGENT_RESTART_REASONS = PROBE_FAILURE_REASONS | {RESIZE_RESTART}


# --------------------------------------------------------------------------------------------
# Probe specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HTTPGetCheck:
    """GET ``scheme://host:port/path``; a status in [200, 400) is success. ``host`` "" means
    the pod's IP (127.0.0.1 for a process runtime), as the kubelet does."""

    port: int
    path: str = "/"
    host: str = ""
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TCPSocketCheck:
    """Open a TCP connection to ``host:port``; success if it connects. ``host`` as for HTTP."""

    port: int
    host: str = ""


@dataclass(frozen=True, slots=True)
class ExecCheck:
    """Run ``command`` (no shell) in the container's environment; exit status 0 is success."""

    command: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GRPCCheck:
    """A ``grpc.health.v1`` check; ``service`` "" asks about the server as a whole."""

    port: int
    service: str = ""


ProbeAction = HTTPGetCheck | TCPSocketCheck | ExecCheck | GRPCCheck


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One probe of a container with Kubernetes' defaults applied and its port resolved."""

    kind: ProbeKind
    action: ProbeAction
    initial_delay_seconds: int = DEFAULT_INITIAL_DELAY_SECONDS
    period_seconds: int = DEFAULT_PERIOD_SECONDS
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    termination_grace_period_seconds: int | None = None
    """Liveness/startup only: overrides the pod's grace period when this probe's failure
    kills the container (Kubernetes' probe-level ``terminationGracePeriodSeconds``)."""


@dataclass(frozen=True, slots=True)
class ContainerProbes:
    """The probes a container declares (``None`` where it declares none)."""

    startup: ProbeSpec | None = None
    liveness: ProbeSpec | None = None
    readiness: ProbeSpec | None = None

    def get(self, kind: ProbeKind) -> ProbeSpec | None:
        return {"startup": self.startup, "liveness": self.liveness, "readiness": self.readiness}[
            kind
        ]


def resolve_port(port: int | str, container: Mapping[str, Any], where: str) -> int:
    """A probe's port: a number, or the name of one of the container's ``ports`` (a numeric
    string is taken as a number if no port has that name, as the kubelet's
    ``ResolveContainerPort`` does)."""
    number: int | None
    if isinstance(port, bool):
        number = None
    elif isinstance(port, int):
        number = port
    else:
        number = next(
            (
                int(p["containerPort"])
                for p in container.get("ports") or []
                if p.get("name") == port and p.get("containerPort") is not None
            ),
            None,
        )
        if number is None and str(port).isdigit():
            number = int(port)
        if number is None:
            raise ValidationFailed(
                f"container {container.get('name')!r} has no port named {port!r}", field=where
            )
    if number is None or not 0 < number < 65536:
        raise ValidationFailed(f"invalid port number: {port!r}", field=where)
    return number


def _timing(probe: Mapping[str, Any], key: str, default: int, where: str, minimum: int) -> int:
    value = probe.get(key)
    if value is None or value == 0:
        return default  # Kubernetes defaults zero as well as absent
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationFailed(f"{key} must be an integer >= {minimum}", field=f"{where}.{key}")
    return value


def _action(probe: Mapping[str, Any], container: Mapping[str, Any], where: str) -> ProbeAction:
    given = [k for k in ("httpGet", "tcpSocket", "exec", "grpc") if probe.get(k) is not None]
    if len(given) != 1:
        raise ValidationFailed(
            "a probe needs exactly one handler (one of: exec, httpGet, tcpSocket, grpc)",
            field=where,
        )
    handler = given[0]
    spec: Mapping[str, Any] = probe[handler]
    here = f"{where}.{handler}"
    if handler == "httpGet":
        scheme = spec.get("scheme") or "HTTP"
        if scheme not in ("HTTP", "HTTPS"):
            raise ValidationFailed("scheme must be HTTP or HTTPS", field=f"{here}.scheme")
        return HTTPGetCheck(
            port=resolve_port(spec.get("port"), container, f"{here}.port"),
            path=spec.get("path") or "/",
            host=spec.get("host") or "",
            scheme=scheme,
            headers=tuple(
                (str(h["name"]), str(h.get("value", ""))) for h in spec.get("httpHeaders") or []
            ),
        )
    if handler == "tcpSocket":
        return TCPSocketCheck(
            port=resolve_port(spec.get("port"), container, f"{here}.port"),
            host=spec.get("host") or "",
        )
    if handler == "grpc":
        return GRPCCheck(
            port=resolve_port(spec.get("port"), container, f"{here}.port"),
            service=spec.get("service") or "",
        )
    command = spec.get("command") or []
    if not command:
        raise ValidationFailed("an exec probe needs a command", field=f"{here}.command")
    return ExecCheck(command=tuple(str(part) for part in command))


def probe_spec(
    kind: ProbeKind, probe: Mapping[str, Any], container: Mapping[str, Any]
) -> ProbeSpec:
    """One probe of ``container`` (a manifest dict, camelCase) as a :class:`ProbeSpec`."""
    where = f"{kind}Probe"
    success = _timing(probe, "successThreshold", DEFAULT_SUCCESS_THRESHOLD, where, 1)
    if kind != "readiness" and success != 1:
        # A liveness or startup probe acts on one failure run; Kubernetes refuses any other
        # success threshold rather than silently ignoring it.
        raise ValidationFailed(
            f"{where}.successThreshold must be 1, not {success}",
            field=f"{where}.successThreshold",
        )
    grace = probe.get("terminationGracePeriodSeconds")
    return ProbeSpec(
        kind=kind,
        action=_action(probe, container, where),
        initial_delay_seconds=_timing(
            probe, "initialDelaySeconds", DEFAULT_INITIAL_DELAY_SECONDS, where, 0
        ),
        period_seconds=_timing(probe, "periodSeconds", DEFAULT_PERIOD_SECONDS, where, 1),
        timeout_seconds=_timing(probe, "timeoutSeconds", DEFAULT_TIMEOUT_SECONDS, where, 1),
        success_threshold=success,
        failure_threshold=_timing(probe, "failureThreshold", DEFAULT_FAILURE_THRESHOLD, where, 1),
        termination_grace_period_seconds=int(grace) if grace is not None else None,
    )


def probes_of(container: Mapping[str, Any]) -> ContainerProbes:
    """The startup, liveness and readiness probes of a container manifest (as
    ``dump_manifest`` writes it), with defaults applied and named ports resolved."""
    found: dict[str, ProbeSpec] = {}
    for kind in PROBE_KINDS:
        probe = container.get(f"{kind}Probe")
        if probe:
            found[kind] = probe_spec(kind, probe, container)
    return ContainerProbes(**found)


# --------------------------------------------------------------------------------------------
# Probe results
# --------------------------------------------------------------------------------------------

ProbeResult = Literal["unknown", "success", "failure"]
ProbeTransition = Literal["started", "failed", "ready", "not_ready"]

# The value each probe kind reports before it has run (the kubelet's ``initialValue``): a
# container is not ready until a readiness probe passes, is alive until liveness says otherwise,
# and has not started until its startup probe passes.
_INITIAL: dict[ProbeKind, ProbeResult] = {
    "startup": "unknown",
    "liveness": "success",
    "readiness": "failure",
}


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """A change a probe result caused, to be recorded or acted on.

    ``restart`` means the container must be killed (and restarted unless the restart policy is
    Never) with ``reason`` as the ContainerRestarted reason. ``started``/``ready`` are the
    container's state *after* the change (a startup success makes a container without a
    readiness probe ready at once)."""

    container: str
    kind: ProbeKind
    transition: ProbeTransition
    reason: str
    message: str
    restart: bool
    started: bool
    ready: bool


class ProbeTracker:
    """One probe of one container instance: when it is due and what its results amount to.

    A result run is counted as the kubelet counts it: the same result again lengthens the run, a
    different one starts a new run of 1; the probe's result changes only when a run reaches the
    threshold (success or failure), and only a *change* is reported. After a liveness or startup
    failure the probe is on hold until the container is restarted.
    """

    def __init__(self, spec: ProbeSpec, started_at: float) -> None:
        self.spec = spec
        self.restart(started_at)

    def restart(self, started_at: float) -> None:
        """A new container instance started: back to the initial result and schedule.
        (The kubelet keeps the previous run counters across instances; starting afresh only
        differs for a readiness successThreshold > 1 straddling a restart.)"""
        self.started_at = started_at
        self.result: ProbeResult = _INITIAL[self.spec.kind]
        self.on_hold = False
        self._last: ProbeResult = "unknown"
        self._run = 0
        self._due = started_at + self.spec.initial_delay_seconds

    def next_due(self, now: float) -> float:
        """When the probe should run next: ``startedAt + initialDelaySeconds`` first, then
        every ``periodSeconds`` after it; ``now`` if that moment has passed; ``inf`` while on
        hold."""
        if self.on_hold:
            return math.inf
        return max(self._due, now)

    def record(self, success: bool, now: float) -> ProbeResult | None:
        """Count one probe result (a timeout is a failure) obtained at ``now``; returns the new
        result if it changed, else ``None``."""
        # The next run is on the period grid, as a ticker keeps it; a probe that ran late (or
        # took long) does not shift the grid, and missed ticks are not caught up.
        period = self.spec.period_seconds
        if now >= self._due:
            self._due += period * (math.floor((now - self._due) / period) + 1)
        result: ProbeResult = "success" if success else "failure"
        if result == self._last:
            self._run += 1
        else:
            self._last, self._run = result, 1
        threshold = self.spec.success_threshold if success else self.spec.failure_threshold
        if self._run < threshold:
            return None
        if result == "failure" and self.spec.kind != "readiness":
            self.on_hold = True  # the container is being killed: no more probes of it
            self._run = 0
        if result == self.result:
            return None
        self.result = result
        return result


class ContainerHealth:
    """The probes of one container instance together: which run, and whether it is started and
    ready.

    * While a startup probe exists and has not succeeded, liveness and readiness do not run
      (:meth:`gated`); once it succeeded it does not run again for this instance.
    * Started: at once without a startup probe, else when the startup probe succeeds.
    * Ready: started, and (no readiness probe, or its result is success).
    """

    def __init__(
        self,
        container: str,
        probes: ContainerProbes,
        started_at: float,
        restart_policy: RestartPolicy = "Always",
    ) -> None:
        self.container = container
        self.probes = probes
        self.restart_policy = restart_policy
        self.trackers: dict[ProbeKind, ProbeTracker] = {
            kind: ProbeTracker(spec, started_at)
            for kind in PROBE_KINDS
            if (spec := probes.get(kind)) is not None
        }

    def restarted(self, started_at: float) -> None:
        """A new instance of the container started: every probe starts over."""
        for tracker in self.trackers.values():
            tracker.restart(started_at)

    @property
    def started(self) -> bool:
        startup = self.trackers.get("startup")
        return startup is None or startup.result == "success"

    @property
    def ready(self) -> bool:
        readiness = self.trackers.get("readiness")
        return self.started and (readiness is None or readiness.result == "success")

    def gated(self, kind: ProbeKind) -> bool:
        """Whether probe ``kind`` must not run now: liveness and readiness until the startup
        probe succeeded, the startup probe after it did."""
        return self.started if kind == "startup" else not self.started

    def due(self, now: float) -> list[ProbeKind]:
        """The probes to run at ``now``."""
        return [
            kind
            for kind, tracker in self.trackers.items()
            if not self.gated(kind) and tracker.next_due(now) <= now
        ]

    def next_due(self, now: float) -> float:
        """The earliest moment any probe that may run is due (``inf`` if none will)."""
        return min(
            (t.next_due(now) for k, t in self.trackers.items() if not self.gated(k)),
            default=math.inf,
        )

    def record(self, kind: ProbeKind, success: bool, now: float) -> ProbeOutcome | None:
        """Count a result of probe ``kind``; the transition it caused, if any. A result of a
        gated or absent probe (one that was running as the gate closed) is ignored."""
        tracker = self.trackers.get(kind)
        if tracker is None or self.gated(kind) or tracker.on_hold:
            return None
        changed = tracker.record(success, now)
        if changed is None:
            return None
        name = self.container
        if kind == "readiness":
            if changed == "success":
                return self._outcome(kind, "ready", "", "", restart=False)
            return self._outcome(
                kind, "not_ready", READINESS_PROBE_FAILED,
                f"Container {name} failed readiness probe", restart=False,
            )  # fmt: skip
        if changed == "success":  # startup (liveness starts as success, so never changes to it)
            if kind == "liveness":
                return None
            return self._outcome(kind, "started", "", "", restart=False)
        reason = STARTUP_PROBE_FAILED if kind == "startup" else LIVENESS_PROBE_FAILED
        message = f"Container {name} failed {kind} probe"
        if self.restart_policy != "Never":
            message += ", will be restarted"
        return self._outcome(kind, "failed", reason, message, restart=True)

    def _outcome(
        self,
        kind: ProbeKind,
        transition: ProbeTransition,
        reason: str,
        message: str,
        *,
        restart: bool,
    ) -> ProbeOutcome:
        return ProbeOutcome(
            container=self.container, kind=kind, transition=transition, reason=reason,
            message=message, restart=restart, started=self.started,
            ready=self.ready and not restart,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# CrashLoopBackOff
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackoffState:
    """The kubelet's back-off entry for one container: the delay the *next* restart waits
    (0: no entry, the next restart is immediate). Persist it, or rebuild it with
    :meth:`CrashLoopBackOff.state_after` from the last ContainerRestarted's back-off."""

    backoff_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class CrashLoopBackOff:
    """kubelet's CrashLoopBackOff (``doBackOff`` over ``flowcontrol.Backoff``, no jitter).

    The first restart is immediate; each later one waits ``initial`` (10 s), doubling up to
    ``cap`` (300 s), counted from the moment the container *finished*. A container that ran for
    more than ``reset_after`` (2 x cap = 600 s) before exiting restarts immediately and the
    sequence starts over. (The kubelet measures that run from the time it last allowed a
    restart, which is when the exited container was started.)
    """

    initial: float = 10.0
    cap: float = 300.0
    reset_after: float | None = None
    """Default 2 x ``cap``, as ``flowcontrol.Backoff`` ties it to the maximum."""

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.cap < self.initial:
            raise ValueError("back-off needs 0 < initial <= cap")
        if self.reset_after is not None and self.reset_after < 0:
            raise ValueError("reset_after must not be negative")

    @property
    def reset_seconds(self) -> float:
        return 2 * self.cap if self.reset_after is None else self.reset_after

    def delay_before_restart(
        self, state: BackoffState, started_at: float, finished_at: float
    ) -> tuple[float, BackoffState]:
        """How long after ``finished_at`` the container that ran from ``started_at`` is
        restarted, and the back-off state after that restart."""
        if state.backoff_seconds <= 0 or finished_at - started_at > self.reset_seconds:
            return 0.0, BackoffState(self.initial)
        delay = min(state.backoff_seconds, self.cap)
        return delay, BackoffState(min(delay * 2, self.cap))

    def state_after(self, backoff_seconds: float | None) -> BackoffState:
        """The state after a restart that waited ``backoff_seconds`` (``None``: the container
        never restarted), to rebuild the state from the log."""
        if backoff_seconds is None:
            return BackoffState()
        if backoff_seconds <= 0:
            return BackoffState(self.initial)
        return BackoffState(min(backoff_seconds * 2, self.cap))


def backoff_message(
    backoff_seconds: float, container: str, pod: str, namespace: str, uid: str
) -> str:
    """The waiting message of a container in CrashLoopBackOff, as the kubelet words it."""
    return (
        f"back-off {format_duration(backoff_seconds)} restarting failed container={container} "
        f"pod={pod}_{namespace}({uid})"
    )


# --------------------------------------------------------------------------------------------
# Exits, restarts, phase
# --------------------------------------------------------------------------------------------


def should_restart(restart_policy: str, exit_code: int) -> bool:
    """Whether a container that exited with ``exit_code`` is restarted under the pod's policy."""
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    if restart_policy == "Never":
        return False
    raise ValidationFailed(
        f"restartPolicy must be Always, OnFailure or Never, not {restart_policy!r}",
        field="spec.restartPolicy",
    )


def exit_status(returncode: int) -> tuple[int, int | None]:
    """A process's wait status as ``(exit_code, signal)``: Python reports death by signal N as
    ``-N``; the kubelet (through the runtime) reports it as exit code 128 + N."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def exit_reason(exit_code: int, signal: int | None = None, oom_killed: bool = False) -> str:
    """The terminated reason a container runtime gives: OOMKilled, Completed (exit 0, not
    killed by a signal) or Error."""
    if oom_killed:
        return "OOMKilled"
    if exit_code == 0 and not signal:
        return "Completed"
    return "Error"


ContainerState = Literal["waiting", "running", "terminated", "unknown"]


@dataclass(frozen=True, slots=True)
class ContainerOutcome:
    """What :func:`pod_phase` needs of one container: its state, the exit code if terminated,
    and whether it terminated before (a waiting container with a ``lastState``: restarting)."""

    state: ContainerState
    exit_code: int | None = None
    terminated_before: bool = False


def container_outcomes(pod_manifest: Mapping[str, Any]) -> list[ContainerOutcome]:
    """The outcome of each container of the spec, read from ``status.containerStatuses``
    (``unknown`` for a container without a status yet)."""
    statuses = {
        s.get("name"): s for s in (pod_manifest.get("status") or {}).get("containerStatuses") or []
    }
    out: list[ContainerOutcome] = []
    for container in (pod_manifest.get("spec") or {}).get("containers") or []:
        status = statuses.get(container.get("name"))
        state: Mapping[str, Any] = (status or {}).get("state") or {}
        if status is None or not state:
            out.append(ContainerOutcome("unknown"))
        elif "running" in state:
            out.append(ContainerOutcome("running"))
        elif "terminated" in state:
            code = state["terminated"].get("exitCode")
            out.append(ContainerOutcome("terminated", int(code) if code is not None else None))
        else:
            before = "terminated" in (status.get("lastState") or {})
            out.append(ContainerOutcome("waiting", terminated_before=before))
    return out


def pod_phase(
    restart_policy: str, outcomes: Iterable[ContainerOutcome], *, pod_is_terminal: bool = False
) -> PodPhase:
    """The pod phase from its containers, as the kubelet's ``getPhase`` computes it (regular
    containers; init containers are not modelled).

    Pending while any container waits to start for the first time (or has no status); Running
    once all have started and one runs; when none runs: with Always they are restarting
    (Running), otherwise Succeeded if every one exited 0, Failed with Never, Running (restarting
    the failed ones) with OnFailure. ``pod_is_terminal`` (the pod is being stopped for good)
    makes all-stopped Succeeded or Failed whatever the policy.
    """
    running = waiting = stopped = succeeded = unknown = 0
    for outcome in outcomes:
        if outcome.state == "running":
            running += 1
        elif outcome.state == "terminated":
            stopped += 1
            succeeded += outcome.exit_code == 0
        elif outcome.state == "waiting":
            if outcome.terminated_before:
                stopped += 1  # restarting: counts as stopped, its exit code unknown here
            else:
                waiting += 1
        else:
            unknown += 1
    if waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if not running and stopped and not unknown:
        if pod_is_terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def restart_reason_allowed(restart_policy: str, exit_code: int, reason: str) -> bool:
    """Whether a container that ended this way may be restarted: a probe failure restarts under
    any policy but Never (the kubelet kills it to restart it), any other end follows
    :func:`should_restart`."""
    if reason in AGENT_RESTART_REASONS:
        return restart_policy != "Never"
    return should_restart(restart_policy, exit_code)


__all__ = [
    "AGENT_RESTART_REASONS",
    "PROBE_FAILURE_REASONS",
    "RESIZE_RESTART",
    "BackoffState",
    "ContainerHealth",
    "ContainerOutcome",
    "ContainerProbes",
    "CrashLoopBackOff",
    "ExecCheck",
    "GRPCCheck",
    "HTTPGetCheck",
    "ProbeOutcome",
    "ProbeSpec",
    "ProbeTracker",
    "TCPSocketCheck",
    "backoff_message",
    "container_outcomes",
    "exit_reason",
    "exit_status",
    "pod_phase",
    "probes_of",
    "resolve_port",
    "restart_reason_allowed",
    "should_restart",
]
