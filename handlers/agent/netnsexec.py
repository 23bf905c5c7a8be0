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
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import structlog
from pyroute2 import netns as pyroute2_netns

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
    """The calling start thread in ``netns``'s namespaces for the block, then back."""
    usable()
    saved = [
        os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        for path in ("/proc/thread-self/ns/net", "/proc/thread-self/ns/mnt", ".")
    ]
    try:
        try:
            _enter(netns, run_netns=run_netns, etc_netns=etc_netns)
            yield
        finally:
            _go_back(*saved)
    finally:
        for fd in saved:
            os.close(fd)


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


def _enter(netns: str, *, run_netns: Path, etc_netns: Path) -> None:
    try:
        fd = os.open(run_netns / netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NamespaceEntryError(
            exc.errno, f"the pod's network namespace {netns}: {exc.strerror}"
        ) from exc
    try:
        pyroute2_netns.setns(fd)
    except OSError as exc:
        raise NamespaceEntryError(exc.errno, f"setns({netns}): {exc.strerror}") from exc
    finally:
        os.close(fd)
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_SLAVE, None), "mount --make-rslave /")
    flags = 0
    if _libc.umount2(SYS, _MNT_DETACH) != 0:
        # Nothing to detach, or not allowed: the new sysfs goes over it, read-only if it is.
        try:
            if os.statvfs(SYS).f_flag & os.ST_RDONLY:
                flags = _MS_RDONLY
        except OSError:
            pass
    _check(_libc.mount(netns.encode(), SYS, b"sysfs", flags, None), "mount of /sys")
    _bind_etc(etc_netns / netns)


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
