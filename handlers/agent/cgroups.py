"""Control groups for the process runtime: one cgroup per container instance, v2 or v1.

Why this exists: a container's memory and cpu limits, its usage figures and the fact that it
was OOM-killed all come from the kernel's control groups. Machines differ: pure cgroup v2
(``/sys/fs/cgroup/cgroup.controllers`` exists), the v1/hybrid layout (one hierarchy per
controller, e.g. ``/sys/fs/cgroup/memory``), or nothing writable (an unprivileged agent, a
container without cgroup delegation). :func:`detect` picks the driver at run time:

* :class:`V2Driver` — ``<mount>/fleetlog/<pod_uid>/<container>.<restart>``; the memory, cpu and
  pids controllers are enabled through ``cgroup.subtree_control`` at each level above the leaf;
  limits go to ``memory.max`` (plus ``memory.swap.max = 0`` and ``memory.oom.group = 1`` when
  those files exist) and ``cpu.max``; OOM kills are counted in ``memory.events``.
* :class:`V1Driver` — the same relative path in the memory, cpu, cpuacct and pids hierarchies
  (wherever ``/proc/self/mountinfo`` says they are mounted, co-mounted or not); limits go to
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` when swap accounting exists,
  so a container over its limit is OOM-killed rather than swapped, as on v2) and
  ``cpu.cfs_quota_us``/``cpu.cfs_period_us``; OOM kills come from ``memory.oom_control``'s
  ``oom_kill`` counter (kernel ≥ 4.13), else from ``memory.failcnt`` plus a SIGKILL nobody sent.
* Limits are written at start and again, in place, when a pod is resized
  (``core.pods.resize``): the same files, so a running process keeps its PID. The cpu request
  goes to ``cpu.shares`` (v1) or ``cpu.weight`` (v2) as the kubelet converts it;
  :meth:`CgroupDriver.limits` reads back what the files hold (the pod's actual resources).
* :class:`ProcDriver` — nothing writable: no limits, usage summed over the container's process
  group from ``/proc``; ``limits_enforced`` is False and ``message`` says why, for the node
  condition.

A leaf per container *instance* (``<container>.<restart_count>``; container names are DNS
labels, so the dot cannot collide) means a restarted container never inherits the previous
instance's counters. Processes join their cgroup before they exec (see :func:`join_argv`),
or are born in it from a start worker that joined it around the fork (:func:`joined`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

CGROUP_MOUNT = Path("/sys/fs/cgroup")
ROOT_NAME = "fleetlog"
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses less; Kubernetes' MinQuotaPeriod is the same
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V2_CONTROLLERS = ("memory", "cpu", "pids")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
V1_UNLIMITED_MEMORY = 1 << 62
"""v1's memory.limit_in_bytes reads back ``-1`` as 9223372036854771712 (a page-rounded
LONG_MAX): any figure this large means no limit."""
KILL_ROUNDS = 50  # x 10 ms: how long remove/kill_all wait for killed processes to leave


class CgroupError(RuntimeError):
    """A cgroup could not be created, configured or removed."""


class HomeLost(RuntimeError):
    """A process that joined a container's cgroups (:func:`joined`) could not leave them."""


@dataclass(frozen=True, slots=True)
class CgroupHandle:
    """Where one container instance's cgroup lives: one directory per hierarchy (v1), one (v2),
    none (measure-only)."""

    driver: str
    relative: str
    paths: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"driver": self.driver, "relative": self.relative, "paths": list(self.paths)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> CgroupHandle:
        paths = data.get("paths") or []
        assert isinstance(paths, list)
        return cls(str(data["driver"]), str(data["relative"]), tuple(str(p) for p in paths))


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Cumulative cpu time and current memory of one container instance."""

    cpu_ns: int
    memory_bytes: int
    working_set_bytes: int  # memory minus inactive file cache: what `kubectl top` shows
    timestamp_ns: int
    source: str  # "cgroup" or "proc"


def join_argv(procs_files: tuple[str, ...] | list[str], argv: list[str]) -> list[str]:
    """``argv`` behind a tiny /bin/sh prologue that moves itself into the given cgroups first.

    The shell writes its own pid (``$$``) to each ``cgroup.procs`` and then ``exec``s the real
    command, which keeps the pid, the session and the cgroup: the container is limited from its
    first instruction, there is no extra process, and nothing runs between fork and exec in the
    agent (``preexec_fn`` is unsafe in a process with threads). Paths and argv are passed as
    positional parameters, never interpolated into the script. A failed write exits 125.
    """
    if not procs_files:
        return list(argv)
    script = (
        'n=$1; shift; while [ "$n" -gt 0 ]; do '
        'echo $$ > "$1" || { echo "fleetlog: cannot join cgroup $1" >&2; exit 125; }; '
        'shift; n=$((n - 1)); done; exec "$@"'
    )
    return ["/bin/sh", "-c", script, "fleetlog-init", str(len(procs_files)), *procs_files, *argv]


def home_procs_files(
    hierarchies: list[tuple[Path, str]], *, self_cgroup: Path = Path("/proc/self/cgroup")
) -> tuple[str, ...]:
    """The ``cgroup.procs`` files of this process's own cgroups, one per (mount point, one of
    its controllers; "" for v2) in ``hierarchies``: where :func:`joined` moves it back to."""
    by_controller: dict[str, str] = {}
    for line in self_cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            by_controller[controller] = path.lstrip("/")
    return tuple(
        str(mount / by_controller.get(controller, "") / "cgroup.procs")
        for mount, controller in hierarchies
    )


@contextlib.contextmanager
def joined(procs_files: tuple[str, ...], home: tuple[str, ...]) -> Iterator[None]:
    """This process in the cgroups of ``procs_files`` for the block, then back in ``home``.

    Why: a child forked in the block is born in the container's cgroups, limited from its
    first instruction, without the ``/bin/sh`` prologue of :func:`join_argv` (an exec of a
    shell and its writes, ~0.75 ms of the container's cpu). Only for a process that starts
    one container at a time (a start worker): every thread of the process moves. What the
    process itself spends in the block (a vfork, a few pages) is counted to the container.
    """
    pid = str(os.getpid()).encode()
    try:
        for path in procs_files:
            _write_bytes(path, pid)
        yield
    finally:
        try:
            for path in home:
                _write_bytes(path, pid)
        except OSError as exc:
            # Left in a container's cgroup, this process would be killed with it.
            raise HomeLost(f"cannot return to its own cgroup {path}: {exc}") from exc


def _write_bytes(path: str, value: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)


# -- /proc helpers -------------------------------------------------------------------------------


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (index 0 = state), or None if there is no such pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: everything after the last ")" is split safely.
    return raw[raw.rfind(b")") + 2 :].decode().split()


def proc_start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``: start time in clock ticks since boot (None if gone)."""
    fields = proc_stat_fields(pid)
    return int(fields[19]) if fields else None


def pids_in_group(pgid: int) -> list[int]:
    """Every live process whose process group is ``pgid`` (a scan of /proc)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = proc_stat_fields(int(entry.name))
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def proc_usage(pids: list[int]) -> tuple[int, int]:
    """Summed cpu (ns, own + reaped children) and resident memory (bytes) of ``pids``."""
    cpu_ticks = 0
    rss = 0
    for pid in pids:
        fields = proc_stat_fields(pid)
        if not fields:
            continue
        # utime, stime, cutime, cstime are fields 14-17; rss (pages) is field 24.
        cpu_ticks += sum(int(value) for value in fields[11:15])
        rss += int(fields[21]) * PAGE_SIZE
    return cpu_ticks * (1_000_000_000 // CLOCK_TICKS), rss


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _made(directory: Path, *, parents: bool = False) -> bool:
    """Make ``directory`` if it is missing; whether it was made now (a cgroup directory left by
    an earlier attempt may hold limits other than the kernel's defaults)."""
    try:
        directory.mkdir(parents=parents)
    except FileExistsError:
        return False
    return True


def _take(pending: set[str], key: str) -> bool:
    """Whether ``key`` was in ``pending``, removing it."""
    if key in pending:
        pending.discard(key)
        return True
    return False


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (``key value`` per line) as a dict."""
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _kill_pids(pids: list[int], sig: int) -> int:
    sent = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            sent += 1
    return sent


def _read_procs(directory: Path) -> list[int]:
    try:
        return [int(line) for line in (directory / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def _rmdir_retrying(directory: Path) -> None:
    for _ in range(KILL_ROUNDS):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise CgroupError(f"cannot remove cgroup {directory}: {exc}") from exc
        time.sleep(0.01)
    raise CgroupError(f"cannot remove cgroup {directory}: still busy")


def cpu_quota_us(millis: int, period_us: int = CPU_PERIOD_US) -> int:
    """A cpu limit in millicores as a CFS quota per period (Kubernetes' MilliCPUToQuota)."""
    return max(MIN_CPU_QUOTA_US, millis * period_us // 1000)


MIN_SHARES = 2
MAX_SHARES = 262_144


def cpu_shares(millis: int) -> int:
    """A cpu request in millicores as v1 ``cpu.shares`` (Kubernetes' MilliCPUToShares)."""
    return min(MAX_SHARES, max(MIN_SHARES, millis * 1024 // 1000))


def cpu_weight(shares: int) -> int:
    """v1 shares as v2 ``cpu.weight`` (the conversion runc and the kubelet use)."""
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


def millis_of_shares(shares: int) -> int:
    """The cpu request v1 shares stand for (the kubelet's reverse conversion, rounded up)."""
    return -(-shares * 1000 // 1024)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a container instance's cgroup holds: cpu limit (millicores from the CFS quota),
    cpu shares (v1 shares, or v2 weight converted back), memory limit (bytes); None =
    unlimited or not readable."""

    cpu_limit_millis: int | None
    cpu_shares: int | None
    memory_limit_bytes: int | None


# -- drivers -------------------------------------------------------------------------------------


class CgroupDriver(ABC):
    """One way of confining and measuring container instances."""

    name: str
    limits_enforced: bool
    reason: str  # a CamelCase reason for the node condition
    message: str  # a sentence for people

    @abstractmethod
    def create(self, pod_uid: str, container: str, restart_count: int) -> CgroupHandle: ...

    @abstractmethod
    def apply_limits(
        self,
        handle: CgroupHandle,
        cpu_millis: int | None,
        memory_bytes: int | None,
        *,
        cpu_request_millis: int | None = None,
        initial: bool = False,
    ) -> None:
        """Set the limits (None = unlimited) and, given one, the cpu request's share. Called
        at start and again in place on a resize. The measure-only driver ignores them.

        ``initial``: the first limits of a cgroup that :meth:`create` has just made (its
        directory was new): a file whose kernel default is already the value wanted is not
        written. Each write is an open, a write and a close that applies the limit, about a
        third of a container's start; a pod without limits needs none of them."""

    def limits(self, handle: CgroupHandle) -> Limits:
        """What the cgroup holds now (all None for the measure-only driver)."""
        return Limits(None, None, None)

    def procs_files(self, handle: CgroupHandle) -> tuple[str, ...]:
        """The ``cgroup.procs`` files a process writes its pid to, to join ``handle``."""
        return tuple(str(Path(path) / "cgroup.procs") for path in handle.paths)

    def home_procs_files(self) -> tuple[str, ...]:
        """This process's own ``cgroup.procs`` files, in the order of :meth:`procs_files`
        (empty for the measure-only driver)."""
        return ()

    def pids(self, handle: CgroupHandle) -> list[int]:
        """The processes in the cgroup (empty for the measure-only driver)."""
        return _read_procs(Path(handle.paths[0])) if handle.paths else []

    @abstractmethod
    def usage(self, handle: CgroupHandle, pgid: int) -> Usage: ...

    def oom_kills(self, handle: CgroupHandle) -> int | None:
        """How many processes the OOM killer ended in this cgroup (None = not counted)."""
        return None

    def memory_failures(self, handle: CgroupHandle) -> int | None:
        """How often the memory limit was hit (v1 fallback evidence for an OOM kill)."""
        return None

    def is_new(self, handle: CgroupHandle) -> bool:
        """Whether :meth:`create` made ``handle``'s directory just now and its first limits
        are still to be applied (nothing has run in it)."""
        return False

    def baselines(self, handle: CgroupHandle, *, new: bool) -> tuple[int | None, int | None]:
        """(:meth:`oom_kills`, :meth:`memory_failures`) of ``handle`` now, the counters a
        container's end is compared with. A ``new`` cgroup's are the kernel's zeros (or
        None where not counted): read once per driver, then known without two file reads a
        start."""
        if new and self._new_baselines is not None:
            return self._new_baselines
        read = (self.oom_kills(handle), self.memory_failures(handle))
        if new:
            self._new_baselines = read
        return read

    _new_baselines: tuple[int | None, int | None] | None = None

    def kill_all(self, handle: CgroupHandle) -> int:
        """SIGKILL everything in the cgroup; wait (≤ 0.5 s) until it is empty. Returns kills."""
        if not handle.paths:
            return 0
        killed = 0
        for _ in range(KILL_ROUNDS):
            pids = self.pids(handle)
            if not pids:
                return killed
            killed += _kill_pids(pids, signal.SIGKILL)
            time.sleep(0.01)
        log.warning("cgroup.kill_incomplete", cgroup=handle.relative, left=self.pids(handle))
        return killed

    def remove(self, handle: CgroupHandle) -> None:
        """Kill what is left, remove the leaf, and the pod level when it has become empty."""
        if not handle.paths:
            return
        self.kill_all(handle)
        for path in handle.paths:
            _rmdir_retrying(Path(path))
            with contextlib.suppress(OSError):  # other containers of the pod may still be there
                Path(path).parent.rmdir()


class ProcDriver(CgroupDriver):
    """No writable cgroups: measure from /proc, enforce nothing, and say why."""

    name = "none"
    limits_enforced = False
    reason = "CgroupsNotWritable"

    def __init__(self, why: str) -> None:
        self.message = (
            f"resource limits are not enforced ({why}); usage is measured from /proc per "
            "process group"
        )

    def create(self, pod_uid: str, container: str, restart_count: int) -> CgroupHandle:
        return CgroupHandle(self.name, f"{ROOT_NAME}/{pod_uid}/{container}.{restart_count}")

    def apply_limits(
        self,
        handle: CgroupHandle,
        cpu_millis: int | None,
        memory_bytes: int | None,
        *,
        cpu_request_millis: int | None = None,
        initial: bool = False,
    ) -> None:
        return None

    def usage(self, handle: CgroupHandle, pgid: int) -> Usage:
        cpu_ns, rss = proc_usage(pids_in_group(pgid))
        return Usage(
            cpu_ns=cpu_ns,
            memory_bytes=rss,
            working_set_bytes=rss,
            timestamp_ns=time.time_ns(),
            source="proc",
        )


class V2Driver(CgroupDriver):
    """The unified hierarchy (cgroup v2)."""

    name = "v2"
    limits_enforced = True
    reason = "CgroupV2"

    def __init__(self, mount: Path = CGROUP_MOUNT, root_name: str = ROOT_NAME) -> None:
        self.mount = mount
        self.root = mount / root_name
        available = set((mount / "cgroup.controllers").read_text().split())
        self.controllers = [c for c in V2_CONTROLLERS if c in available]
        missing = sorted(set(V2_CONTROLLERS) - available - {"pids"})
        if missing:
            raise CgroupError(f"cgroup v2 at {mount} lacks the {', '.join(missing)} controller")
        self._enable(mount)
        self.root.mkdir(exist_ok=True)
        self._enable(self.root)
        self.message = f"memory and cpu limits enforced through cgroup v2 at {self.root}"
        self._new: set[str] = set()
        """Cgroups :meth:`create` made and whose limits were not applied yet: their files
        hold the kernel's defaults."""

    def _enable(self, directory: Path) -> None:
        control = directory / "cgroup.subtree_control"
        enabled = set(control.read_text().split()) if control.exists() else set()
        wanted = [c for c in self.controllers if c not in enabled]
        if not wanted:
            return
        try:
            _write(control, " ".join(f"+{c}" for c in wanted))
        except OSError as exc:
            # EBUSY: the directory holds processes itself ("no internal processes" rule), as
            # the root of a cgroup namespace inside a container does.
            raise CgroupError(f"cannot enable {wanted} in {control}: {exc}") from exc

    def create(self, pod_uid: str, container: str, restart_count: int) -> CgroupHandle:
        pod_dir = self.root / pod_uid
        leaf = pod_dir / f"{container}.{restart_count}"
        try:
            pod_dir.mkdir(exist_ok=True)
            self._enable(pod_dir)
            new = _made(leaf)
        except OSError as exc:
            raise CgroupError(f"cannot create cgroup {leaf}: {exc}") from exc
        handle = CgroupHandle(self.name, str(leaf.relative_to(self.mount)), (str(leaf),))
        if new:
            self._new.add(handle.relative)
        else:  # there already: whatever an earlier create of it said no longer holds
            self._new.discard(handle.relative)
        return handle

    def apply_limits(
        self,
        handle: CgroupHandle,
        cpu_millis: int | None,
        memory_bytes: int | None,
        *,
        cpu_request_millis: int | None = None,
        initial: bool = False,
    ) -> None:
        leaf = Path(handle.paths[0])
        # A new cgroup holds "max" in memory.max and "max 100000" in cpu.max.
        defaults = _take(self._new, handle.relative) and initial
        try:
            if cpu_request_millis is not None and (leaf / "cpu.weight").exists():
                _write(leaf / "cpu.weight", str(cpu_weight(cpu_shares(cpu_request_millis))))
            if memory_bytes or not defaults:
                _write(leaf / "memory.max", str(memory_bytes) if memory_bytes else "max")
            if memory_bytes and (leaf / "memory.swap.max").exists():
                _write(leaf / "memory.swap.max", "0")
            if (leaf / "memory.oom.group").exists():
                # The whole container dies on OOM, as the kubelet configures it on v2.
                _write(leaf / "memory.oom.group", "1")
            if cpu_millis or not defaults:
                quota = str(cpu_quota_us(cpu_millis)) if cpu_millis else "max"
                _write(leaf / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        except OSError as exc:
            raise CgroupError(f"cannot set limits on {leaf}: {exc}") from exc

    def limits(self, handle: CgroupHandle) -> Limits:
        leaf = Path(handle.paths[0])
        try:
            memory = (leaf / "memory.max").read_text().strip()
            quota, _, period = (leaf / "cpu.max").read_text().strip().partition(" ")
            weight_file = leaf / "cpu.weight"
            weight = int(weight_file.read_text()) if weight_file.exists() else None
        except (OSError, ValueError):
            return Limits(None, None, None)
        cpu = None if quota == "max" else int(quota) * 1000 // int(period or CPU_PERIOD_US)
        # v2 keeps a weight; the shares it came from are found back by the inverse formula.
        shares = (
            None
            if weight is None
            else MIN_SHARES + -(-(weight - 1) * (MAX_SHARES - MIN_SHARES) // 9999)
        )
        return Limits(cpu, shares, None if memory == "max" else int(memory))

    def usage(self, handle: CgroupHandle, pgid: int) -> Usage:
        leaf = Path(handle.paths[0])
        cpu_us = _read_keyed(leaf / "cpu.stat").get("usage_usec", 0)
        memory = _read_int(leaf / "memory.current") or 0
        inactive = _read_keyed(leaf / "memory.stat").get("inactive_file", 0)
        return Usage(
            cpu_ns=cpu_us * 1000,
            memory_bytes=memory,
            working_set_bytes=max(0, memory - inactive),
            timestamp_ns=time.time_ns(),
            source="cgroup",
        )

    def oom_kills(self, handle: CgroupHandle) -> int | None:
        return _read_keyed(Path(handle.paths[0]) / "memory.events").get("oom_kill")

    def is_new(self, handle: CgroupHandle) -> bool:
        return handle.relative in self._new

    def home_procs_files(self) -> tuple[str, ...]:
        return home_procs_files([(self.mount, "")])

    def kill_all(self, handle: CgroupHandle) -> int:
        kill_file = Path(handle.paths[0]) / "cgroup.kill"
        if kill_file.exists():  # Linux ≥ 5.14: atomic, and no fork can escape it
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        return super().kill_all(handle)


def v1_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> dict[str, Path]:
    """Controller name → mount point of each cgroup v1 hierarchy (co-mounts share one)."""
    out: dict[str, Path] = {}
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        mount_point = Path(left.split()[4])
        for option in fields[2].split(","):
            if option in V1_CONTROLLERS:
                out.setdefault(option, mount_point)
    return out


def _v1_memory_limit(memory: Path, memory_bytes: int | None, *, new: bool = False) -> None:
    """A v1 memory cgroup's limit (None: unlimited), memsw (memory + swap) beside it.
    ``new``: the cgroup holds the kernel's default, unlimited (its limit is not read)."""
    limit = str(memory_bytes) if memory_bytes else "-1"
    memsw = memory / "memory.memsw.limit_in_bytes"
    if memsw.exists() and memory_bytes:
        # memsw must stay ≥ the memory limit at every step: a lower limit goes to memory
        # first, a higher one (a resize raising it) to memsw first.
        current = None if new else _read_int(memory / "memory.limit_in_bytes")
        if current is not None and memory_bytes > current:
            _write(memsw, limit)
            _write(memory / "memory.limit_in_bytes", limit)
        else:
            _write(memory / "memory.limit_in_bytes", limit)
            _write(memsw, limit)
    elif memsw.exists():
        _write(memsw, "-1")
        _write(memory / "memory.limit_in_bytes", limit)
    else:
        _write(memory / "memory.limit_in_bytes", limit)


class V1Driver(CgroupDriver):
    """One hierarchy per controller (cgroup v1, or the v1 side of the hybrid layout)."""

    name = "v1"
    limits_enforced = True
    reason = "CgroupV1"

    def __init__(self, mounts: dict[str, Path], root_name: str = ROOT_NAME) -> None:
        missing = [c for c in ("memory", "cpu") if c not in mounts]
        if missing:
            raise CgroupError(f"no cgroup v1 hierarchy for {', '.join(missing)}")
        self.mounts = mounts
        # Distinct hierarchies, memory first: its cgroup.procs is the one listed and killed.
        self.hierarchies: list[Path] = []
        for controller in V1_CONTROLLERS:
            mount = mounts.get(controller)
            if mount is not None and mount not in self.hierarchies:
                self.hierarchies.append(mount)
        self.root_name = root_name
        for mount in self.hierarchies:
            (mount / root_name).mkdir(exist_ok=True)
        self._new: set[str] = set()
        """Cgroups :meth:`create` made and whose limits were not applied yet: their files
        hold the kernel's defaults."""
        self.message = (
            "memory and cpu limits enforced through cgroup v1 "
            f"({', '.join(str(m) for m in self.hierarchies)})"
        )

    def _dir(self, handle: CgroupHandle, controller: str) -> Path:
        mount = self.mounts[controller]
        return Path(handle.paths[self.hierarchies.index(mount)])

    def create(self, pod_uid: str, container: str, restart_count: int) -> CgroupHandle:
        relative = f"{self.root_name}/{pod_uid}/{container}.{restart_count}"
        paths = []
        new = True
        for mount in self.hierarchies:
            leaf = mount / relative
            try:
                new = _made(leaf, parents=True) and new
            except OSError as exc:
                raise CgroupError(f"cannot create cgroup {leaf}: {exc}") from exc
            paths.append(str(leaf))
        if new:
            self._new.add(relative)
        else:  # there already: whatever an earlier create of it said no longer holds
            self._new.discard(relative)
        return CgroupHandle(self.name, relative, tuple(paths))

    def apply_limits(
        self,
        handle: CgroupHandle,
        cpu_millis: int | None,
        memory_bytes: int | None,
        *,
        cpu_request_millis: int | None = None,
        initial: bool = False,
    ) -> None:
        memory = self._dir(handle, "memory")
        cpu = self._dir(handle, "cpu")
        # A new cgroup is unlimited (memory and memsw) with a CFS period of 100 ms and no quota.
        defaults = _take(self._new, handle.relative) and initial
        try:
            if cpu_request_millis is not None:
                _write(cpu / "cpu.shares", str(cpu_shares(cpu_request_millis)))
            if memory_bytes or not defaults:
                _v1_memory_limit(memory, memory_bytes, new=defaults)
            if not defaults:
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            if cpu_millis or not defaults:
                quota = str(cpu_quota_us(cpu_millis)) if cpu_millis else "-1"
                _write(cpu / "cpu.cfs_quota_us", quota)
        except OSError as exc:
            raise CgroupError(f"cannot set limits on {handle.relative}: {exc}") from exc

    def limits(self, handle: CgroupHandle) -> Limits:
        memory = self._dir(handle, "memory")
        cpu = self._dir(handle, "cpu")
        try:
            limit = int((memory / "memory.limit_in_bytes").read_text())
            quota = int((cpu / "cpu.cfs_quota_us").read_text())
            period = int((cpu / "cpu.cfs_period_us").read_text())
            shares = int((cpu / "cpu.shares").read_text())
        except (OSError, ValueError):
            return Limits(None, None, None)
        # v1 spells "unlimited" as -1 (quota) and as a page-rounded huge number (memory).
        unlimited_memory = limit >= V1_UNLIMITED_MEMORY
        return Limits(
            None if quota < 0 else quota * 1000 // period,
            shares,
            None if unlimited_memory else limit,
        )

    def usage(self, handle: CgroupHandle, pgid: int) -> Usage:
        memory_dir = self._dir(handle, "memory")
        if "cpuacct" in self.mounts:
            cpu_ns = _read_int(self._dir(handle, "cpuacct") / "cpuacct.usage") or 0
        else:
            cpu_ns = proc_usage(self.pids(handle))[0]
        memory = _read_int(memory_dir / "memory.usage_in_bytes") or 0
        stat = _read_keyed(memory_dir / "memory.stat")
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        return Usage(
            cpu_ns=cpu_ns,
            memory_bytes=memory,
            working_set_bytes=max(0, memory - inactive),
            timestamp_ns=time.time_ns(),
            source="cgroup",
        )

    def oom_kills(self, handle: CgroupHandle) -> int | None:
        return _read_keyed(self._dir(handle, "memory") / "memory.oom_control").get("oom_kill")

    def memory_failures(self, handle: CgroupHandle) -> int | None:
        return _read_int(self._dir(handle, "memory") / "memory.failcnt")

    def is_new(self, handle: CgroupHandle) -> bool:
        return handle.relative in self._new

    def home_procs_files(self) -> tuple[str, ...]:
        first = {mount: c for c in reversed(V1_CONTROLLERS) if (mount := self.mounts.get(c))}
        return home_procs_files([(mount, first[mount]) for mount in self.hierarchies])


def detect(mount: Path = CGROUP_MOUNT, root_name: str = ROOT_NAME) -> CgroupDriver:
    """The best driver this process can use here; :class:`ProcDriver` (with why) otherwise."""
    try:
        if (mount / "cgroup.controllers").exists():
            driver: CgroupDriver = V2Driver(mount, root_name)
        else:
            mounts = v1_mounts()
            if not mounts:
                return ProcDriver(f"no cgroup v2 at {mount} and no cgroup v1 hierarchies")
            driver = V1Driver(mounts, root_name)
    except (OSError, CgroupError) as exc:
        why = f"cgroups not writable: {exc}"
        log.warning("cgroups.measure_only", reason=why)
        return ProcDriver(why)
    log.info("cgroups.detected", driver=driver.name, message=driver.message)
    return driver


def driver_for(handle: CgroupHandle, current: CgroupDriver) -> CgroupDriver:
    """The driver to use for a handle persisted earlier (the node's mode may have changed)."""
    if handle.driver == current.name:
        return current
    return ProcDriver("the container was started without cgroups")
