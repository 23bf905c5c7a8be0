"""The process runtime: a container is a process (group) on this machine, in its own cgroup.

Why this exists: the node agent decides *what* runs (which pods, restarts, probes); this module
is the part that touches the operating system, so the agent can stay a reactor over events and
the runtime can be replaced (the simulated nodes have their own).

What a container is here:

* A process started in a new session (its pid is its process-group id), stdin ``/dev/null``,
  stdout and stderr appended to ``<root>/pods/<pod_uid>/<container>/<restart>/stdout`` and
  ``…/stderr``. Files, not pipes: containers outlive an agent restart, and a pipe whose reader
  is gone would kill them with SIGPIPE. The files are opened with ``O_APPEND``, which is what
  lets the node's log rotator truncate them under the writer (``handlers.agent.logrotate``).
* In its cgroup before its first instruction: a tiny ``/bin/sh`` prologue writes its own pid to
  the cgroup's ``cgroup.procs`` and then ``exec``s the command (same pid, no extra process,
  nothing run between fork and exec inside the agent, which is threaded). See
  :func:`handlers.agent.cgroups.join_argv`. A start worker, which starts one container at a
  time, instead joins the cgroups itself around the fork and goes back to its own after it
  (:func:`handlers.agent.cgroups.joined`): the container is born in them, no shell run.
* With a container-like environment: ``PATH`` (the agent's, so ``python`` resolves as the
  operator expects), ``HOME``, ``HOSTNAME`` (the pod's name), ``LANG``/``LC_ALL``/``TZ`` when set,
  then the pod's own ``env``. Nothing else of the agent's environment (tokens, NATS
  credentials) leaks in.
* In its pod's network namespace when the pod has one, with the pod's ``/etc/netns`` files
  and ``/sys``, as ``ip netns exec <netns>`` would put it there, but born there: forked by a
  thread of the agent that entered them (:mod:`handlers.agent.netnsexec`), so no ``ip`` runs
  per container, and ``bwrap`` too runs inside them and shares them rather than the node's
  (:mod:`handlers.agent.network`). A command run "inside" the container later (an exec
  probe) still goes through ``ip netns exec`` (the instance's ``launch_prefix``).
* Optionally isolated with bubblewrap (:mod:`handlers.agent.isolation`).
* When its main process ends, the container has ended: whatever it left behind in its process
  group or cgroup is killed, as the end of a pid namespace's init would.

Surviving an agent restart: each running instance has ``container.json`` beside its output
(pid, pgid, the process start time from ``/proc/<pid>/stat`` field 22, the boot id, the cgroup,
the spec). :meth:`ProcessRuntime.adopt_all` keeps the instances whose process is still the same
process (same boot, same start time: PIDs are reused, ``pid_max`` is 32768 here) and drops the
others (their cgroup is removed, their output kept).

Waiting: a ``pidfd`` (``os.pidfd_open``, Linux ≥ 5.3) per container, watched with
``loop.add_reader``; the status is collected with ``waitid(P_PIDFD, …)``, which names exactly
that process (no PID-reuse race, and no interference with asyncio's child watcher, which only
waits for its own pids). An adopted process is normally no longer the agent's child: its exit
code went to its new parent (init), so it is reported as ``exit_code=None``, reason
``Unknown`` — unless the cgroup counted an OOM kill, which is still known. (A shim process per
container, as conmon or containerd-shim keep, would know the code; it would cost a process per
container and a non-``exec`` shell changes how signals reach the workload, so it is not done.)
Where ``pidfd_open`` is missing, the runtime polls every 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import structlog

from handlers.agent.cgroups import (
    CgroupDriver,
    CgroupError,
    CgroupHandle,
    Limits,
    Usage,
    detect,
    driver_for,
    join_argv,
    joined,
    proc_start_ticks,
    proc_stat_fields,
)
from handlers.agent.isolation import Bubblewrap, IsolationUnavailable
from handlers.agent.netnsexec import NamespaceEntryError, outside, run_in, start_thread, usable
from handlers.agent.spares import Spares
from handlers.agent.spares import clear as clear_spares
from handlers.agent.startworker import StartWorker, StartWorkers, WorkerEnded

if TYPE_CHECKING:
    from handlers.agent.seams import Container

log = structlog.get_logger(__name__)

STATE_FILE = "container.json"
STATE_VERSION = 1
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSED_THROUGH = ("LANG", "LC_ALL", "TZ")
POLL_S = 0.05
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
NETNS_DIR = Path("/run/netns")
START_THREADS = min(32, (os.cpu_count() or 1) + 4)
"""Containers started at once (asyncio's default for worker threads)."""


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """One instance of one container of a pod: everything the runtime needs to start it."""

    pod_uid: str
    pod_namespace: str
    pod_name: str
    name: str
    restart_count: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    cpu_limit_millis: int | None = None
    memory_limit_bytes: int | None = None
    cpu_request_millis: int | None = None
    """The cpu request, written as the cgroup's share (None: the kernel's default share)."""
    isolate: bool = False
    netns: str | None = None
    """The pod's network namespace (an ``ip netns`` name); None: the node's network."""
    mounts: tuple[tuple[str, str], ...] = ()
    """(source, mountPath) bound read-only in the container's view (configMap and secret
    volumes); the mount point must exist."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitStatus:
    """How a container instance ended.

    ``exit_code`` follows the container runtimes' convention: 128 + n when killed by signal n
    (``signal`` = n then). ``None`` when it cannot be known (an adopted process). ``reason`` is
    Kubernetes' ``Completed`` / ``Error`` / ``OOMKilled``, ``StartError`` for a container that
    could not be started, or ``Unknown``.
    """

    exit_code: int | None
    signal: int | None
    oom_killed: bool
    finished_ns: int
    reason: str
    message: str = ""


class ContainerStartError(RuntimeError):
    """The container could not be started; ``status`` is what to report (reason StartError)."""

    def __init__(self, status: ExitStatus) -> None:
        super().__init__(status.message)
        self.status = status


def installation_of(executable: Path) -> Path:
    """What must stay visible for ``executable`` to run: the directory above its ``bin`` (a
    virtualenv, a prefix), else its own directory."""
    parent = executable.parent
    return parent.parent if parent.name == "bin" else parent


def _owner_only(path: str, flags: int) -> int:
    """Opens a container's output file readable by the agent's user only: what a program
    prints may be a secret."""
    return os.open(path, flags, 0o600)


def _start_error(code: int, message: str) -> ContainerStartError:
    status = ExitStatus(
        exit_code=code,
        signal=None,
        oom_killed=False,
        finished_ns=time.time_ns(),
        reason="StartError",
        message=message,
    )
    return ContainerStartError(status)


@dataclass(eq=False)
class RunningContainer:
    """A started (or adopted) container instance. Hand it back to the runtime to act on it."""

    spec: ContainerSpec
    pid: int
    pgid: int
    start_ticks: int
    started_ns: int
    directory: Path
    cgroup: CgroupHandle
    env: dict[str, str]
    cwd: str
    launch_prefix: tuple[str, ...]  # netns entry and isolation wrapper; empty when neither
    procs_files: tuple[str, ...]  # the cgroup.procs files a process writes itself into
    oom_baseline: int | None = None
    failcnt_baseline: int | None = None
    adopted: bool = False
    status: ExitStatus | None = None  # set once the exit has been observed
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _shim: StartWorker | None = field(default=None, repr=False)
    """The start worker that is the process's parent and reports its exit, if one is."""
    _returncode: int | None = field(default=None, repr=False)
    """As ``Popen.returncode``, when the start worker reported it."""
    _pidfd: int | None = field(default=None, repr=False)
    _future: asyncio.Future[ExitStatus] | None = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _poll_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _killed: bool = field(default=False, repr=False)

    @property
    def stdout_path(self) -> Path:
        return self.directory / "stdout"

    @property
    def stderr_path(self) -> Path:
        return self.directory / "stderr"

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` as run "inside" this container: its cgroup and its isolation wrapper."""
        return join_argv(self.procs_files, [*self.launch_prefix, *argv])

    def enter_argv(self, argv: list[str], *, nsenter: str = "nsenter") -> list[str]:
        """``argv`` as ``kubectl exec`` runs it: in this container's cgroup, inside the
        namespaces of its running workload (``nsenter`` into each one that differs from the
        agent's: the pod's network, and with isolation the sandbox's pid, mount, IPC and UTS
        namespaces, so the command sees the container's processes, ``/tmp`` and hostname),
        as the workload's own user and group, in the container's working directory.

        The workload is the main process, or (isolated) the first child of ``bwrap`` in a
        pid namespace of its own. The user is read from the workload's process, never
        taken from the caller: exec cannot run as anyone else. Raises
        :class:`ContainerNotRunning` when the workload has ended."""
        if self.status is not None or not _same_process_alive(self.pid, self.start_ticks):
            raise ContainerNotRunning(f"container {self.spec.name} is not running")
        target = _sandbox_of(self.pid)
        credentials = _credentials(target)
        if credentials is None:
            raise ContainerNotRunning(f"container {self.spec.name} is not running")
        uid, gid = credentials
        entered = [ns for ns in _NAMESPACES if _namespace(target, ns) != _namespace("self", ns)]
        wrapper: list[str] = []
        if entered or (uid, gid) != (os.getuid(), os.getgid()):
            wrapper = [nsenter, f"--target={target}", *(_NSENTER_FLAGS[ns] for ns in entered)]
            if (uid, gid) != (os.getuid(), os.getgid()):
                wrapper += [f"--setgid={gid}", f"--setuid={uid}"]
            if "mnt" in entered:
                # Entering a mount namespace moves to its root: come back to the container's.
                wrapper.append(f"--wd={self.cwd}")
            wrapper.append("--")
        return join_argv(self.procs_files, [*wrapper, *argv])

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "boot_id": _boot_id(),
            "spec": dict(vars(self.spec)),  # flat fields: no deep copy (asdict) per start
            "pid": self.pid,
            "pgid": self.pgid,
            "start_ticks": self.start_ticks,
            "started_ns": self.started_ns,
            "cgroup": self.cgroup.as_json(),
            "env": self.env,
            "cwd": self.cwd,
            "launch_prefix": list(self.launch_prefix),
            "procs_files": list(self.procs_files),
            "oom_baseline": self.oom_baseline,
            "failcnt_baseline": self.failcnt_baseline,
        }


@functools.cache
def _boot_id() -> str:
    """This boot's id (read once: it changes only with a reboot, and a start reads it)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def default_base_env() -> dict[str, str]:
    """What every container gets before its own env: PATH, HOME, locale and time zone."""
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH}
    try:
        env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir or "/"
    except KeyError:
        env["HOME"] = "/"
    for key in PASSED_THROUGH:
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def resolve_executable(argv0: str, path: str, cwd: str) -> str:
    """Where ``argv0`` will be found, or a :class:`ContainerStartError` saying why not."""
    if "/" in argv0:
        candidate = Path(cwd, argv0)
        if not candidate.exists():
            raise _start_error(127, f'exec: "{argv0}": no such file or directory')
    else:
        found = shutil.which(argv0, path=path)
        if found is None:
            # Present but not executable is a different error, as in runc.
            if any(Path(d or ".", argv0).is_file() for d in path.split(":")):
                raise _start_error(126, f'exec: "{argv0}": permission denied')
            raise _start_error(127, f'exec: "{argv0}": executable file not found in $PATH')
        candidate = Path(found)
    if candidate.is_dir() or not os.access(candidate, os.X_OK):
        raise _start_error(126, f'exec: "{argv0}": permission denied')
    return str(candidate)


class Spawn(Protocol):
    """Forks and execs ``argv`` as a container's main process (a new session, stdin
    ``/dev/null``, ``out`` and ``err`` as stdout and stderr, ``env``, ``cwd``): its pid and,
    when this process is its parent through ``subprocess``, the ``Popen``. Raises
    ``OSError`` when it could not be started."""

    def __call__(
        self,
        argv: list[str],
        *,
        out: BinaryIO,
        err: BinaryIO,
        env: dict[str, str],
        cwd: str,
    ) -> tuple[int, subprocess.Popen[bytes] | None]: ...


def _popen_spawn(
    argv: list[str], *, out: BinaryIO, err: BinaryIO, env: dict[str, str], cwd: str
) -> tuple[int, subprocess.Popen[bytes] | None]:
    popen = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd,
        start_new_session=True, close_fds=True,
    )  # fmt: skip
    return popen.pid, popen


def _decode_returncode(returncode: int) -> tuple[int, int | None]:
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


class ProcessRuntime:
    """Starts, watches, stops and adopts container processes under ``root``: the node agent's
    :class:`handlers.agent.seams.ContainerRuntime`. It acts only on the
    :class:`RunningContainer` instances it handed out."""

    def __init__(
        self,
        root: Path,
        *,
        cgroups: CgroupDriver | None = None,
        isolation: Bubblewrap | None = None,
        base_env: Mapping[str, str] | None = None,
        start_workers: int = 0,
    ) -> None:
        """``start_workers``: processes that start the containers
        (:mod:`handlers.agent.startworker`), where the machine allows them and the cgroups
        and isolation are this machine's own (not given); 0: the runtime's own threads."""
        self.root = Path(root)
        self.cgroups = cgroups if cgroups is not None else detect()
        self.isolation = isolation if isolation is not None else Bubblewrap.detect()
        self.base_env = dict(base_env) if base_env is not None else default_base_env()
        self._ip = shutil.which("ip")
        self._home: tuple[str, ...] | None = None
        self._containers: dict[tuple[str, str, int], RunningContainer] = {}
        self._starts: ThreadPoolExecutor | None = None
        self._workers: StartWorkers | None = None
        if start_workers > 0 and cgroups is None and isolation is None and _PIDFD:
            clear_spares(self.root)  # an earlier agent's workers' (they ended with it)
            self._workers = StartWorkers(
                start_workers, root=self.root, base_env=self.base_env, driver=self.cgroups.name
            )
            weakref.finalize(self, self._workers.close)

    # -- what the node can do -------------------------------------------------------------

    def limits_condition(self) -> tuple[bool, str, str]:
        """(enforced, reason, message) for the node's ``ResourceLimitsEnforced`` condition."""
        return self.cgroups.limits_enforced, self.cgroups.reason, self.cgroups.message

    @property
    def isolation_available(self) -> bool:
        return self.isolation.available

    def instance_dir(self, spec: ContainerSpec) -> Path:
        return self.root / "pods" / spec.pod_uid / spec.name / str(spec.restart_count)

    def work_dir(self, spec: ContainerSpec) -> Path:
        """The default working directory (kept across restarts, writable when isolated)."""
        return self.root / "pods" / spec.pod_uid / spec.name / "work"

    # -- start ----------------------------------------------------------------------------

    async def start(self, spec: ContainerSpec) -> RunningContainer:
        """Start one container instance. Raises :class:`ContainerStartError` (with the
        status to report) when it cannot run: missing executable (127), not executable (126),
        missing working directory, isolation unavailable, cgroup failure (128).

        The blocking part (cgroup files, fork/exec) runs in a worker thread. If the caller is
        cancelled meanwhile, the start still completes and the container is then removed
        (killed), so a cancelled start never leaves a process nobody knows about.
        """
        worker = await self._workers.pick() if self._workers is not None else None
        if worker is not None:
            task = asyncio.ensure_future(self._start_in(worker, spec))
        else:
            loop = asyncio.get_running_loop()
            call = functools.partial(contextvars.copy_context().run, self.start_sync, spec)
            task = asyncio.ensure_future(loop.run_in_executor(self._start_threads(), call))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._remove_unwanted)
            raise

    async def _start_in(self, worker: StartWorker, spec: ContainerSpec) -> RunningContainer:
        """:meth:`start` by a start worker: the container is still this process's child."""
        self._refuse_running(spec)
        try:
            answer = await worker.start(spec)
        except WorkerEnded as exc:
            raise _start_error(128, str(exc)) from exc
        if "error" in answer:
            code, message = answer["error"]
            raise _start_error(code if code is not None else 128, message)
        container = _from_state(answer["state"], self.instance_dir(spec), adopted=False)
        container.spec = spec
        container._pidfd = _pidfd_open(container.pid)
        container._shim = worker
        self._started(container)
        return container

    def start_workers(self) -> list[int]:
        """The process ids of the start workers that have greeted and not ended (none when
        containers are started by this process's threads)."""
        if self._workers is None:
            return []
        return [worker.process.pid for worker in self._workers.ready()]

    def _start_threads(self) -> ThreadPoolExecutor:
        """The threads containers are started from (each enters a pod's namespaces in place:
        :mod:`handlers.agent.netnsexec`); they end with the runtime."""
        if self._starts is None:
            self._starts = ThreadPoolExecutor(
                max_workers=START_THREADS, thread_name_prefix="container-start",
                initializer=start_thread,
            )  # fmt: skip
            weakref.finalize(self, self._starts.shutdown, wait=False)
        return self._starts

    def _remove_unwanted(self, task: asyncio.Future[RunningContainer]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.remove(task.result())

    def start_sync(self, spec: ContainerSpec) -> RunningContainer:
        """:meth:`start` without the event loop (it blocks for a few milliseconds)."""
        try:
            usable()
        except NamespaceEntryError as exc:
            raise _start_error(128, str(exc)) from exc
        self._refuse_running(spec)
        container = self.launch(spec, spawn=_popen_spawn)
        container._pidfd = _pidfd_open(container.pid)
        self._started(container)
        return container

    def _refuse_running(self, spec: ContainerSpec) -> None:
        existing = self._containers.get((spec.pod_uid, spec.name, spec.restart_count))
        if existing is not None and existing.status is None:
            raise _start_error(128, f"container {spec.name} #{spec.restart_count} is running")

    def _started(self, container: RunningContainer) -> None:
        spec = container.spec
        self._containers[(spec.pod_uid, spec.name, spec.restart_count)] = container
        log.info(
            "container.started", pod=f"{spec.pod_namespace}/{spec.pod_name}",
            container=spec.name, restart=spec.restart_count, pid=container.pid,
            cgroup=container.cgroup.relative if container.cgroup.paths else None,
            isolated=spec.isolate,
        )  # fmt: skip

    def launch(
        self,
        spec: ContainerSpec,
        *,
        spawn: Spawn,
        outside_of: int | None = None,
        join_in_parent: bool = False,
        spares: Spares | None = None,
    ) -> RunningContainer:
        """The operating system's part of a start: the instance's directories, its cgroup and
        limits, the process (``spawn``, in the pod's namespaces) and its state file. The
        caller watches and registers it. ``outside_of``: the process whose root the cgroup
        prologue reaches the cgroup files through (default: this one; a start worker names
        the agent, the container's parent, which outlives it). ``join_in_parent``: this
        process (one that starts one container at a time: a start worker) joins the cgroups
        itself around the fork, and the container runs without the ``/bin/sh`` prologue.
        ``spares``: directories and files made ahead (a start worker's), taken for the
        instance's instead of making new ones (:mod:`handlers.agent.spares`)."""
        if not spec.argv:
            raise _start_error(128, "no command given")
        directory = self.instance_dir(spec)
        work = self.work_dir(spec)
        if spares is None:
            directory.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
        else:
            spares.makedirs(directory)
            spares.makedirs(work)
        cwd = spec.working_dir or str(work)
        if not Path(cwd).is_dir():
            raise _start_error(128, f'working directory "{cwd}" does not exist')
        env = {**self.base_env, "HOSTNAME": spec.pod_name, **spec.env}
        executable = resolve_executable(spec.argv[0], env.get("PATH", DEFAULT_PATH), cwd)
        # What runs a command "inside" this container later (exec probes): the pod's
        # namespace through `ip netns exec`, then the isolation wrapper.
        prefix: list[str] = []
        if spec.netns is not None:
            prefix += self._netns_prefix(spec.netns)
        wrapper: list[str] = []
        if spec.isolate:
            writable = [work] if spec.working_dir is None else [work, Path(cwd)]
            try:
                wrapper = self.isolation.prefix(
                    writable=writable, working_dir=Path(cwd), hostname=spec.pod_name,
                    readable=[installation_of(Path(executable))], mounts=spec.mounts,
                )  # fmt: skip
            except IsolationUnavailable as exc:
                raise _start_error(128, str(exc)) from exc
        elif spec.mounts:
            try:
                wrapper = self.isolation.mount_prefix(spec.mounts)
            except IsolationUnavailable as exc:
                raise _start_error(128, str(exc)) from exc
        prefix += wrapper
        try:
            handle = self.cgroups.create(spec.pod_uid, spec.name, spec.restart_count)
            new = self.cgroups.is_new(handle)
            self.cgroups.apply_limits(
                handle, spec.cpu_limit_millis, spec.memory_limit_bytes,
                cpu_request_millis=spec.cpu_request_millis, initial=True,
            )  # fmt: skip
        except CgroupError as exc:
            raise _start_error(128, str(exc)) from exc
        procs_files = self.cgroups.procs_files(handle)
        oom_baseline, failcnt_baseline = self.cgroups.baselines(handle, new=new)
        if spares is not None:
            spares.place_file(directory / "stdout")
            spares.place_file(directory / "stderr")
        try:
            with (
                open(directory / "stdout", "ab", opener=_owner_only) as out,
                open(directory / "stderr", "ab", opener=_owner_only) as err,
            ):
                home = self._home_procs_files() if join_in_parent and procs_files else ()
                if home:
                    # Born in its cgroups: this process is in them while it forks.
                    argv = [*wrapper, *spec.argv]
                    with joined(procs_files, home):
                        if spec.netns is None:
                            pid, popen = spawn(argv, out=out, err=err, env=env, cwd=cwd)
                        else:
                            pid, popen = run_in(
                                spec.netns,
                                lambda: spawn(argv, out=out, err=err, env=env, cwd=cwd),
                                run_netns=NETNS_DIR,
                            )
                elif spec.netns is None:
                    argv = join_argv(procs_files, [*wrapper, *spec.argv])
                    pid, popen = spawn(argv, out=out, err=err, env=env, cwd=cwd)
                else:
                    # Born in the pod's namespaces (no `ip` started: handlers.agent.netnsexec),
                    # where /sys is the pod's: the prologue reaches its cgroups from outside.
                    reach = functools.partial(outside, pid=outside_of)
                    prologue = join_argv(tuple(map(reach, procs_files)), [*wrapper, *spec.argv])
                    pid, popen = run_in(
                        spec.netns,
                        lambda: spawn(prologue, out=out, err=err, env=env, cwd=cwd),
                        run_netns=NETNS_DIR,
                    )
        except OSError as exc:
            with contextlib.suppress(CgroupError):
                self.cgroups.remove(handle)
            raise _start_error(128, f"cannot start {spec.argv[0]!r}: {exc}") from exc
        container = RunningContainer(
            spec=spec, pid=pid, pgid=pid, start_ticks=proc_start_ticks(pid) or 0,
            started_ns=time.time_ns(), directory=directory, cgroup=handle, env=env, cwd=cwd,
            launch_prefix=tuple(prefix), procs_files=procs_files, oom_baseline=oom_baseline,
            failcnt_baseline=failcnt_baseline, _popen=popen,
        )  # fmt: skip
        _write_state(container, spares)
        return container

    def _home_procs_files(self) -> tuple[str, ...]:
        """This process's own cgroups (read once: a start worker is never moved)."""
        if self._home is None:
            self._home = self.cgroups.home_procs_files()
        return self._home

    def _netns_prefix(self, netns: str) -> list[str]:
        if self._ip is None:
            raise _start_error(128, "the pod has a network namespace but ip (iproute2) is missing")
        if not (NETNS_DIR / netns).exists():
            raise _start_error(128, f"the pod's network namespace {netns} does not exist")
        return [self._ip, "netns", "exec", netns]

    # -- wait / stop ----------------------------------------------------------------------

    async def wait(self, container: Container) -> ExitStatus:
        """Until the container's main process has ended; its status. Any number of callers
        may wait at once; cancelling one waiter does not affect the others."""
        if not isinstance(container, RunningContainer):
            raise _foreign(container)
        if container.status is not None:
            return container.status
        return await asyncio.shield(self._watch(container))

    async def stop(self, container: Container, grace_seconds: float) -> ExitStatus:
        """SIGTERM to the container's process group; after ``grace_seconds`` SIGKILL to the
        group and everything in its cgroup. Returns how it ended."""
        if not isinstance(container, RunningContainer):
            raise _foreign(container)
        if container.status is not None:
            return container.status
        future = self._watch(container)
        log.info("container.stopping", container=container.spec.name, pid=container.pid,
                 grace=grace_seconds)  # fmt: skip
        self._signal(container, signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, grace_seconds))
        except TimeoutError:
            pass
        container._killed = True
        self._signal(container, signal.SIGKILL)
        driver_for(container.cgroup, self.cgroups).kill_all(container.cgroup)
        return await asyncio.shield(future)

    def is_running(self, container: RunningContainer) -> bool:
        if container.status is not None:
            return False
        return _same_process_alive(container.pid, container.start_ticks)

    def usage(self, container: Container) -> Usage:
        """Cumulative cpu ns and current memory (cgroup, or the process group from /proc)."""
        if not isinstance(container, RunningContainer):
            raise _foreign(container)
        return driver_for(container.cgroup, self.cgroups).usage(container.cgroup, container.pgid)

    def resize(
        self,
        container: Container,
        *,
        cpu_limit_millis: int | None,
        cpu_request_millis: int | None,
        memory_limit_bytes: int | None,
    ) -> Limits:
        """Write new limits into the running instance's cgroup, in place (the process keeps
        running, with its PID); what the cgroup holds afterwards. ``CgroupError`` when the
        kernel refuses (v1 refuses a memory limit below what the group uses)."""
        if not isinstance(container, RunningContainer):
            raise _foreign(container)
        driver = driver_for(container.cgroup, self.cgroups)
        driver.apply_limits(
            container.cgroup, cpu_limit_millis, memory_limit_bytes,
            cpu_request_millis=cpu_request_millis,
        )  # fmt: skip
        return driver.limits(container.cgroup)

    def limits(self, container: Container) -> Limits:
        """What the instance's cgroup holds now."""
        if not isinstance(container, RunningContainer):
            raise _foreign(container)
        return driver_for(container.cgroup, self.cgroups).limits(container.cgroup)

    def remove(self, container: Container) -> None:
        """Forget the instance: kill anything left, remove its cgroup and state (not its
        output). Removing a running container kills it."""
        if not isinstance(container, RunningContainer):
            raise _foreign(container)
        driver = driver_for(container.cgroup, self.cgroups)
        if container.status is None:
            container._killed = True
            self._signal(container, signal.SIGKILL)
            driver.kill_all(container.cgroup)
            if container._pidfd is not None:
                with contextlib.suppress(OSError):
                    select.select([container._pidfd], [], [], 1.0)
            self._finish(container)
        self._unwatch(container)
        if container._shim is not None:
            container._shim.forget(container.pid)
        try:
            driver.remove(container.cgroup)
        except CgroupError as exc:
            log.warning("container.cgroup_left", cgroup=container.cgroup.relative, error=str(exc))
        with contextlib.suppress(FileNotFoundError):
            container.state_path.unlink()
        key = (container.spec.pod_uid, container.spec.name, container.spec.restart_count)
        if self._containers.get(key) is container:
            del self._containers[key]

    # -- adoption -------------------------------------------------------------------------

    def adopt_all(self) -> list[RunningContainer]:
        """The containers started earlier under ``root`` (by this or an earlier agent) whose
        process is still alive. Dead ones (and state pointing at a reused pid) are dropped."""
        adopted: list[RunningContainer] = []
        boot_id = _boot_id()
        for state_path in sorted(self.root.glob(f"pods/*/*/*/{STATE_FILE}")):
            try:
                data = json.loads(state_path.read_text())
                container = _from_state(data, state_path.parent)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("container.state_unreadable", path=str(state_path), error=repr(exc))
                with contextlib.suppress(FileNotFoundError):
                    state_path.unlink()
                continue
            spec = container.spec
            key = (spec.pod_uid, spec.name, spec.restart_count)
            known = self._containers.get(key)
            if known is not None and known.status is None:
                adopted.append(known)
                continue
            pidfd = _pidfd_open(container.pid) if data.get("boot_id") == boot_id else None
            alive = data.get("boot_id") == boot_id and _same_process_alive(
                container.pid, container.start_ticks
            )
            if alive and pidfd is not None and _readable(pidfd):
                alive = False  # it ended between the two checks
            if not alive:
                if pidfd is not None:
                    os.close(pidfd)
                log.info("container.dropped", container=spec.name, pod_uid=spec.pod_uid,
                         pid=container.pid, reason="process gone or pid reused")  # fmt: skip
                with contextlib.suppress(CgroupError):
                    driver_for(container.cgroup, self.cgroups).remove(container.cgroup)
                with contextlib.suppress(FileNotFoundError):
                    state_path.unlink()
                continue
            container._pidfd = pidfd
            self._containers[key] = container
            adopted.append(container)
            log.info("container.adopted", container=spec.name, pod_uid=spec.pod_uid,
                     pid=container.pid)  # fmt: skip
        return adopted

    # -- internals ------------------------------------------------------------------------

    def _signal(self, container: RunningContainer, sig: int) -> None:
        if container.status is not None:
            return
        if container._pidfd is not None and _readable(container._pidfd):
            return  # the leader has ended: its status (and leftovers) are handled by _finish
        # The group outlives its leader only while members remain, so its id cannot have been
        # reused while they live; if the leader is gone and the group empty, this is ESRCH.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(container.pgid, sig)

    def _watch(self, container: RunningContainer) -> asyncio.Future[ExitStatus]:
        loop = asyncio.get_running_loop()
        if container._future is not None and container._loop is loop:
            return container._future
        self._unwatch(container)
        future: asyncio.Future[ExitStatus] = loop.create_future()
        container._future, container._loop = future, loop
        if container._shim is not None and container._pidfd is not None:
            # Its parent, the start worker, reaps it and says how it ended.
            container._shim.watch(container.pid, functools.partial(self._on_reaped, container))
        elif container._pidfd is not None:
            loop.add_reader(container._pidfd, self._on_exit, container)
        else:
            container._poll_task = loop.create_task(self._poll(container))
        return future

    def _unwatch(self, container: RunningContainer) -> None:
        if container._shim is not None:
            container._shim.unwatch(container.pid)
        loop = container._loop
        if loop is not None and container._pidfd is not None and not loop.is_closed():
            loop.remove_reader(container._pidfd)
        if container._poll_task is not None:
            container._poll_task.cancel()
            container._poll_task = None
        future = container._future
        if future is not None and not future.done() and container.status is not None:
            future.set_result(container.status)
        elif future is not None and not future.done() and loop is not None:
            future.cancel()
        container._future = container._loop = None

    def _on_reaped(self, container: RunningContainer, returncode: int | None) -> None:
        """The start worker reaped the container (``returncode``), or ended before it did:
        then its ``pidfd`` says when it ends, its code unknown (no longer anyone's child)."""
        if returncode is not None:
            container._returncode = returncode
            self._on_exit(container)
            return
        container._shim = None
        loop = container._loop
        if container.status is None and container._pidfd is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nothing waits any more
                loop.add_reader(container._pidfd, self._on_exit, container)

    def _on_exit(self, container: RunningContainer) -> None:
        loop = container._loop
        if loop is not None and container._pidfd is not None:
            loop.remove_reader(container._pidfd)
        status = self._finish(container)
        if container._future is not None and not container._future.done():
            container._future.set_result(status)

    async def _poll(self, container: RunningContainer) -> None:
        while True:
            popen = container._popen
            if popen is not None:
                if popen.poll() is not None:
                    break
            elif not _same_process_alive(container.pid, container.start_ticks):
                break
            await asyncio.sleep(POLL_S)
        status = self._finish(container)
        if container._future is not None and not container._future.done():
            container._future.set_result(status)

    def _finish(self, container: RunningContainer) -> ExitStatus:
        """Collect the status of an ended main process, kill what it left, persist nothing."""
        if container.status is not None:
            return container.status
        if container._shim is not None and container._returncode is None:
            container._returncode = container._shim.returncode(container.pid)
        if container._returncode is None:
            # Leftovers first, while our zombie leader still reserves the group id (a start
            # worker that reaped the leader killed them before, for the same reason).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(container.pgid, signal.SIGKILL)
        exit_code, sig = self._reap(container)
        driver = driver_for(container.cgroup, self.cgroups)
        with contextlib.suppress(OSError):
            driver.kill_all(container.cgroup)
        oom = False
        kills = driver.oom_kills(container.cgroup) if container.cgroup.paths else None
        if kills is not None:
            oom = kills > (container.oom_baseline or 0)
        else:
            failures = driver.memory_failures(container.cgroup) if container.cgroup.paths else None
            oom = (
                failures is not None
                and failures > (container.failcnt_baseline or 0)
                and sig == signal.SIGKILL
                and not container._killed
            )
        if oom:
            reason, message = "OOMKilled", "the container exceeded its memory limit"
        elif exit_code is None:
            reason = "Unknown"
            message = "the process ended while another agent was its parent: exit code unknown"
        elif exit_code == 0:
            reason, message = "Completed", ""
        else:
            reason, message = "Error", ""
        if oom and exit_code is None:
            exit_code, sig = 128 + signal.SIGKILL, signal.SIGKILL
        status = ExitStatus(
            exit_code=exit_code,
            signal=sig,
            oom_killed=oom,
            finished_ns=time.time_ns(),
            reason=reason,
            message=message,
        )
        container.status = status
        if container._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(container._pidfd)
            container._pidfd = None
        log.info("container.exited", container=container.spec.name, pid=container.pid,
                 exit_code=exit_code, signal=sig, reason=reason)  # fmt: skip
        return status

    def _reap(self, container: RunningContainer) -> tuple[int | None, int | None]:
        if container._returncode is not None:
            return _decode_returncode(container._returncode)
        popen = container._popen
        if popen is not None and popen.returncode is not None:
            return _decode_returncode(popen.returncode)
        if container._pidfd is not None:
            try:
                result = os.waitid(os.P_PIDFD, container._pidfd, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                result = None  # not our child: its parent (init) has the code
            if result is not None:
                if result.si_code == os.CLD_EXITED:
                    code, sig = result.si_status, None
                else:
                    code, sig = 128 + result.si_status, result.si_status
                if popen is not None:  # so Popen never waits for it again
                    popen.returncode = code if sig is None else -sig
                return code, sig
        elif popen is not None:
            returncode = popen.poll()
            if returncode is not None:
                return _decode_returncode(returncode)
        return None, None


class ContainerNotRunning(RuntimeError):
    """The container's workload has ended: nothing to run a command inside."""


_NAMESPACES = ("mnt", "uts", "ipc", "net", "pid")
_NSENTER_FLAGS = {
    "mnt": "--mount", "uts": "--uts", "ipc": "--ipc", "net": "--net", "pid": "--pid",
}  # fmt: skip


def _namespace(pid: int | str, ns: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{ns}")
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            children += [int(c) for c in task.read_text().split()]
    return children


def _sandbox_of(pid: int) -> int:
    """The process whose namespaces are the container's: ``pid``, or its child in a pid
    namespace of its own (``bwrap --unshare-pid`` stays outside as the sandbox's monitor)."""
    own = _namespace(pid, "pid")
    for child in _children(pid):
        if _namespace(child, "pid") not in (None, own):
            return child
    return pid


def _credentials(pid: int) -> tuple[int, int] | None:
    """(effective uid, effective gid) of ``pid``."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    found: dict[str, int] = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid"):
            found[key] = int(value.split()[1])
    if "Uid" not in found or "Gid" not in found:
        return None
    return found["Uid"], found["Gid"]


def _foreign(container: Container) -> TypeError:
    """A container this runtime did not start: the caller mixed up runtimes."""
    return TypeError(f"{container!r} was not started by a ProcessRuntime")


_PIDFD = hasattr(os, "pidfd_open")


def _pidfd_open(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _same_process_alive(pid: int, start_ticks: int) -> bool:
    fields = proc_stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == start_ticks


def _write_state(container: RunningContainer, spares: Spares | None = None) -> None:
    tmp = container.state_path.with_suffix(".tmp")
    if spares is not None:
        spares.place_file(tmp)  # an empty 0o600 file, truncated and written as a new one
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # env may hold secrets
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(container.state()))  # dumps: the C encoder, dump is Python
    os.replace(tmp, container.state_path)


def _from_state(data: dict[str, Any], directory: Path, *, adopted: bool = True) -> RunningContainer:
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"state version {data.get('version')!r}")
    return RunningContainer(
        spec=ContainerSpec(**data["spec"]),
        pid=int(data["pid"]),
        pgid=int(data["pgid"]),
        start_ticks=int(data["start_ticks"]),
        started_ns=int(data["started_ns"]),
        directory=directory,
        cgroup=CgroupHandle.from_json(data["cgroup"]),
        env=dict(data["env"]),
        cwd=str(data["cwd"]),
        launch_prefix=tuple(data["launch_prefix"]),
        procs_files=tuple(data["procs_files"]),
        oom_baseline=data.get("oom_baseline"),
        failcnt_baseline=data.get("failcnt_baseline"),
        adopted=adopted,
    )
