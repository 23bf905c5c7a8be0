"""A container started inside its pod's network namespace as ``ip netns exec`` would, minus ``ip``.

Why this exists: a pod's containers run in the pod's network namespace, with the files of
``/etc/netns/<netns>/`` (its ``resolv.conf``) over ``/etc`` and a ``/sys`` that shows the pod's
interfaces. ``ip netns exec <netns>`` in front of each container's command did that, at the
price of one more exec per container (and its mount work) in the child: in a burst of 100 pods
about 0.15-0.2 s of cpu on a node's cores, paid before any container runs. Here the same steps
are taken by one of the agent's threads, which then forks the container
(``subprocess.Popen``: nothing runs between fork and exec but the C code of ``_posixsubprocess``),
so the container is born in those namespaces and nothing else is started for it.

The steps, in the order ``ip netns exec`` takes them:

1. ``setns`` into the namespace bound at ``/run/netns/<netns>`` (only the calling thread moves);
2. ``unshare(CLONE_NEWNS)``: a mount namespace of its own (for a thread this implies
   ``CLONE_FS``: the thread's root and working directory stop being shared with the others);
3. ``/`` made a recursive slave, so nothing mounted below reaches the node;
4. ``/sys`` detached and a sysfs of the pod's network namespace mounted there (read-only when
   the one it replaces could not be detached and was read-only);
5. each entry of ``/etc/netns/<netns>/`` bound over the same name in ``/etc`` (an entry that
   cannot be bound is logged and skipped, as ``ip`` warns and carries on).

A start thread takes step 2 from a template it made once (see "the start thread's mount
namespace template" below): a copy of the node's mounts without ``/run/netns``'s namespace
handles, ``/`` already a slave and ``/sys`` already detached, so its containers see no pod's
handle and a start no longer copies one mount per pod network namespace of the node.

Which thread: the runtime's own start threads (:func:`start_thread`, their initializer) enter
and leave in place: each has a root and working directory of its own (``unshare(CLONE_FS)``,
which a thread needs to change mount namespace), saves its namespaces and working directory,
and goes back to them after the fork. A thread that could not go back is marked lost and never
starts anything again (every later start in it fails). Any other caller gets a short-lived
thread that enters and ends with the namespaces; it is not used on the agent's path: each
start would then wait twice for the interpreter lock (the thread's start and its end), which
under a busy event loop doubled a burst's start time in a measurement.

A socket needs less: it belongs to the network namespace of the thread that made it, for its
whole life, whichever thread then connects it. :func:`open_socket` makes one in a pod's
namespace (``setns`` alone, in a thread of its own that ends with it), for the node agent's
probes to connect from inside the pod (``handlers.agent.probes``).

One consequence: ``/sys/fs/cgroup`` is not mounted under the new ``/sys`` (nor was it after
``ip netns exec``), so the runtime's cgroup prologue, which runs in the child, reaches the
``cgroup.procs`` files through the agent's own root (:func:`outside`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

RUN_NETNS = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
SYS = b"/sys"

_CLONE_FS = 0x00000200
_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY = 0x1
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SLAVE = 0x80000
_MNT_DETACH = 0x2
_libc = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


class NamespaceEntryError(OSError):
    """The pod's namespaces could not be entered: nothing was started."""


def outside(path: str, *, pid: int | None = None) -> str:
    """``path`` (absolute, as the agent sees it) reachable from a process whose mounts are
    the pod's: through ``/proc/<agent>/root``, the agent's own root (its main thread never
    leaves the node's mount namespace); ``pid``: another process of the node's mounts (a
    start worker names the agent, which outlives it)."""
    return f"/proc/{os.getpid() if pid is None else pid}/root{path}"


def run_in(
    netns: str,
    action: Callable[[], T],
    *,
    run_netns: Path = RUN_NETNS,
    etc_netns: Path = ETC_NETNS,
) -> T:
    """``action()`` called in ``netns``'s namespaces as ``ip netns exec`` enters them (see
    the module docstring): in place in a start thread, else in a new thread this one waits
    for; its result, or what it raised. Raises :class:`NamespaceEntryError` when the
    namespaces could not be entered (``action`` is then not called) or a start thread could
    not go back (it is then marked lost)."""
    if getattr(_this_thread, "home", None) is not None:
        with _entered_in_place(netns, run_netns=run_netns, etc_netns=etc_netns):
            return action()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def inside() -> None:
        try:
            _enter(netns, run_netns=run_netns, etc_netns=etc_netns)
            outcome.append(action())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=inside, name=f"netns-exec {netns}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


_this_thread = threading.local()


def start_thread() -> None:
    """Make the calling thread one that enters pods' namespaces in place (a start thread's
    initializer): its root and working directory become its own. Should that be refused,
    the thread stays as it is and :func:`run_in` uses a new thread for each start."""
    if _libc.unshare(_CLONE_FS) != 0:
        log.warning("netnsexec.start_thread_shared", error=os.strerror(ctypes.get_errno()))
        return
    _this_thread.home = True
    _this_thread.lost = False


def usable() -> None:
    """Raise :class:`NamespaceEntryError` when the calling thread was left in a pod's
    namespaces: nothing may be started from it."""
    if getattr(_this_thread, "lost", False):
        raise NamespaceEntryError(0, "this start thread could not return to the node's namespaces")


@contextlib.contextmanager
def _entered_in_place(netns: str, *, run_netns: Path, etc_netns: Path) -> Iterator[None]:
    """The calling start thread in ``netns``'s namespaces for the block, then back: from
    the thread's template (:class:`_Template`) when it has one, else as ``ip`` enters them."""
    usable()
    saved = [
        os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        for path in ("/proc/thread-self/ns/net", "/proc/thread-self/ns/mnt", ".")
    ]
    try:
        template = _template(saved, run_netns)
        try:
            if template is None:
                _enter(netns, run_netns=run_netns, etc_netns=etc_netns)
            else:
                _enter_from(template, netns, run_netns=run_netns, etc_netns=etc_netns)
            yield
        finally:
            _go_back(*saved)
    finally:
        for fd in saved:
            os.close(fd)


# -- the start thread's mount namespace template ------------------------------------------------
#
# Why: ``unshare(CLONE_NEWNS)`` copies every mount of the namespace it is called in, and the
# node's holds one bind per pod network namespace under /run/netns (a pool of 100 and 100
# pods: 200 mounts, 0.5 ms of cpu a start, against 0.12 ms with one). A start thread makes,
# once, a mount namespace that is the node's with / a recursive slave (as each start's was),
# /run/netns detached (with every namespace handle below it) and an empty read-only tmpfs
# there, and /sys detached; each start then copies that one. A container therefore no longer
# sees any pod's namespace handle (its own neither: it needs none, it is in it), and the
# node's later binds under /run/netns never reach the template: its /run/netns is no peer of
# the node's. Everything else is as ``ip netns exec`` leaves it. So that a start still copies
# the node's mounts as they are when it starts (a node whose / is private propagates nothing
# to a slave), the thread watches the node's mount table (``poll`` on its mountinfo: one
# syscall a start) and makes the template again when a mount outside /run/netns changed. The
# table is read (0.3 ms with 200 mounts, as much as the copy saves) at most every
# ``MOUNTS_RECHECK_S``: during a burst pods' handles are bound all the time, and fleetlog
# itself mounts nothing else on a node, so only a mount made by something else in the last
# quarter of a second can be missed by a start.

TEMPLATE_RETRY = 100
"""Starts after which a thread whose template could not be made tries again."""
MOUNTS_RECHECK_S = 0.25
"""Least time between two reads of the node's mount table by one start thread."""
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_EINVAL = 22


class _Template:
    """A start thread's mount namespace template: its namespace file and the flags of the
    sysfs each start mounts on /sys (read-only when the /sys it replaces could not be
    detached and was read-only, as :func:`_enter` decides it)."""

    __slots__ = ("checked", "fd", "mounts", "stale", "sys_flags")

    def __init__(self, fd: int, sys_flags: int, mounts: bytes, checked: float) -> None:
        self.fd = fd
        self.sys_flags = sys_flags
        self.mounts = mounts  # the node's mounts it was made from, /run/netns's handles left out
        self.checked = checked  # when the node's table was last read (monotonic)
        self.stale = False  # the node's table changed since: to read again

    def close(self) -> None:
        os.close(self.fd)


def _node_mounts(watch: int, run_netns: Path) -> bytes:
    """The node's mount table as ``watch`` (its mountinfo, opened at home) reads now, the
    mounts under ``run_netns`` left out: what a template copies."""
    os.lseek(watch, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(watch, 65536):
        chunks.append(chunk)
    under = bytes(run_netns) + b"/"
    return b"\n".join(
        line for line in b"".join(chunks).splitlines()
        if not line.split(b" ", 5)[4].startswith(under)
    )  # fmt: skip


def _changed(watch: int) -> bool:
    """Whether the node's mount table changed since the last call (``poll`` reports it once)."""
    poller = select.poll()
    poller.register(watch, select.POLLPRI | select.POLLERR)
    return bool(poller.poll(0))


def _template(saved: list[int], run_netns: Path) -> _Template | None:
    """The calling start thread's template, made now if it has none (``saved``: its net,
    mount and working directory files, to go back with); None when it cannot be made (the
    start then enters as ``ip`` does; tried again after ``TEMPLATE_RETRY`` starts)."""
    watch: int | None = getattr(_this_thread, "mounts_watch", None)
    if watch is None:
        watch = os.open("/proc/thread-self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        _this_thread.mounts_watch = watch
    made: _Template | None = getattr(_this_thread, "template", None)
    if made is not None:
        if _changed(watch):
            made.stale = True
        if not made.stale:
            return made
        now = time.monotonic()
        if now - made.checked < MOUNTS_RECHECK_S:
            return made
        made.stale = False  # a change after the poll above is in what is read here
        made.checked = now
        if _node_mounts(watch, run_netns) == made.mounts:
            return made
        _this_thread.template = None  # a mount outside /run/netns came or went: made again
        made.close()
    wait = getattr(_this_thread, "template_wait", 0)
    if wait > 0:
        _this_thread.template_wait = wait - 1
        return None
    _changed(watch)  # what changes from here on is seen at the next start
    checked = time.monotonic()
    mounts = _node_mounts(watch, run_netns)
    try:
        try:
            made = _make_template(run_netns, mounts, checked)
        finally:
            _go_back(*saved)
    except NamespaceEntryError as exc:
        if getattr(_this_thread, "lost", False):
            raise
        log.warning("netnsexec.template_unavailable", error=str(exc))
        _this_thread.template_wait = TEMPLATE_RETRY
        return None
    _this_thread.template = made
    return made


def _make_template(run_netns: Path, mounts: bytes, checked: float) -> _Template:
    """Build the template in the calling thread's own new mount namespace (the caller goes
    back): its file, opened before going back. Raises :class:`NamespaceEntryError`."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_SLAVE, None), "mount --make-rslave /")
    where = bytes(run_netns)
    # Every mount stacked on /run/netns (ip and pyroute2 make one: a shared bind of itself),
    # and with each the namespace handles bound under it.
    detached = 0
    while _libc.umount2(where, _MNT_DETACH) == 0:
        detached += 1
    code = ctypes.get_errno()
    if detached == 0:
        # Not a mount point: the handles would sit on the parent's mount, where the node's
        # later ones would still reach the template. Not this thread's template.
        raise NamespaceEntryError(code, f"{run_netns} is not a mount point: {os.strerror(code)}")
    if code != _EINVAL:
        raise NamespaceEntryError(code, f"umount of {run_netns}: {os.strerror(code)}")
    _check(
        _libc.mount(b"none", where, b"tmpfs",
                    _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, b"mode=0755,size=4k"),
        f"an empty tmpfs on {run_netns}",
    )  # fmt: skip
    sys_flags = _detach_sys()
    fd = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    return _Template(fd, sys_flags, mounts, checked)


def _enter_from(template: _Template, netns: str, *, run_netns: Path, etc_netns: Path) -> None:
    """:func:`_enter`'s result from the template: the pod's network namespace, then a copy
    of the template (/ already a slave, /sys already detached), the pod's sysfs and /etc."""
    _join_network(netns, run_netns)
    cwd = os.getcwd()
    _check(_libc.setns(template.fd, _CLONE_NEWNS), "setns(template)")
    # Entering a mount namespace moves the thread to its root: the working directory back,
    # by name in the template, so the copy below carries it as `unshare` alone would have.
    os.chdir(cwd)
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(netns.encode(), SYS, b"sysfs", template.sys_flags, None), "mount of /sys")
    _bind_etc(etc_netns / netns)


def _go_back(net: int, mnt: int, cwd: int) -> None:
    # Entering a mount namespace moves the thread to its root: the working directory after.
    try:
        _check(_libc.setns(mnt, _CLONE_NEWNS), "setns(mnt) back")
        _check(_libc.setns(net, _CLONE_NEWNET), "setns(net) back")
        os.fchdir(cwd)
    except OSError as exc:
        _this_thread.lost = True
        log.critical("netnsexec.thread_namespace_lost", error=str(exc))
        raise NamespaceEntryError(exc.errno, f"a start thread is lost: {exc}") from exc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise NamespaceEntryError(code, f"{what}: {os.strerror(code)}")


def _join_network(netns: str, run_netns: Path) -> None:
    """The calling thread into the pod's network namespace (its handle under ``run_netns``)."""
    try:
        fd = os.open(run_netns / netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NamespaceEntryError(
            exc.errno, f"the pod's network namespace {netns}: {exc.strerror}"
        ) from exc
    try:
        _check(_libc.setns(fd, _CLONE_NEWNET), f"setns({netns})")
    finally:
        os.close(fd)


def _enter(netns: str, *, run_netns: Path, etc_netns: Path) -> None:
    _join_network(netns, run_netns)
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_SLAVE, None), "mount --make-rslave /")
    _check(_libc.mount(netns.encode(), SYS, b"sysfs", _detach_sys(), None), "mount of /sys")
    _bind_etc(etc_netns / netns)


def _detach_sys() -> int:
    """Detach the namespace's /sys; the flags of the sysfs mounted in its place: none, or
    read-only when there was nothing to detach (or it was not allowed) and the /sys it then
    goes over is read-only."""
    if _libc.umount2(SYS, _MNT_DETACH) == 0:
        return 0
    try:
        return _MS_RDONLY if os.statvfs(SYS).f_flag & os.ST_RDONLY else 0
    except OSError:
        return 0


def _bind_etc(directory: Path) -> None:
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        return  # nothing of the pod's own: the node's /etc
    except OSError as exc:
        log.warning("netnsexec.etc_unreadable", directory=str(directory), error=str(exc))
        return
    for entry in entries:
        source, target = directory / entry, Path("/etc") / entry
        if _libc.mount(bytes(source), bytes(target), b"none", _MS_BIND, None) != 0:
            code = ctypes.get_errno()
            log.warning("netnsexec.bind_failed", source=str(source), target=str(target),
                        error=os.strerror(code))  # fmt: skip


async def open_socket(
    netns: str, family: int = socket.AF_INET, *, run_netns: Path = RUN_NETNS
) -> socket.socket:
    """A non-blocking TCP socket of ``netns`` (the name under ``run_netns``): made by a
    short-lived thread that enters only that network namespace and ends there, so no thread
    of the agent is ever left in a pod's namespace. Raises :class:`NamespaceEntryError`."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(outcome: socket.socket | BaseException) -> None:
        if made.cancelled():
            if isinstance(outcome, socket.socket):
                outcome.close()
        elif isinstance(outcome, BaseException):
            made.set_exception(outcome)
        else:
            made.set_result(outcome)

    def inside() -> None:
        outcome: socket.socket | BaseException
        try:
            fd = os.open(run_netns / netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            outcome = NamespaceEntryError(
                exc.errno, f"the pod's network namespace {netns}: {exc.strerror}"
            )
        else:
            try:
                _check(_libc.setns(fd, _CLONE_NEWNET), f"setns({netns})")
                outcome = socket.socket(family, socket.SOCK_STREAM)
                outcome.setblocking(False)
            except OSError as exc:
                outcome = exc
            finally:
                os.close(fd)
        loop.call_soon_threadsafe(deliver, outcome)

    threading.Thread(target=inside, name=f"netns-socket {netns}", daemon=True).start()
    return await made
