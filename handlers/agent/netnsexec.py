"""A container started inside its pod's network namespace as ``ip netns exec`` would, minus ``ip``.

Why this exists: a pod's containers run in the pod's network namespace, with the files of
``/etc/netns/<netns>/`` (its ``resolv.conf``) over ``/etc`` and a ``/sys`` that shows the pod's
interfaces. ``ip netns exec <netns>`` in front of each container's command did that, at the
price of one more exec per container (and its mount work) in the child: in a burst of 100 pods
that is a tenth of a second of cpu on a node's cores, paid before any container runs. Here the
same steps are taken by a short-lived thread of the agent, which then forks the container
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

Why a new thread each time rather than entering and leaving in a worker thread: a thread's
namespaces end with it, so no path exists on which one of the agent's threads stays in a pod's
namespaces (a failed return would otherwise leave a pooled thread inside a pod). A thread costs
tens of microseconds; the exec it saves, about a millisecond.

One consequence: ``/sys/fs/cgroup`` is not mounted under the new ``/sys`` (nor was it after
``ip netns exec``), so the runtime's cgroup prologue, which runs in the child, reaches the
``cgroup.procs`` files through the agent's own root (:func:`outside`).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog
from pyroute2 import netns as pyroute2_netns

log = structlog.get_logger(__name__)

RUN_NETNS = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
SYS = b"/sys"

_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 0x1
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SLAVE = 0x80000
_MNT_DETACH = 0x2
_libc = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


class NamespaceEntryError(OSError):
    """The pod's namespaces could not be entered: nothing was started."""


def outside(path: str) -> str:
    """``path`` (absolute, as the agent sees it) reachable from a process whose mounts are
    the pod's: through ``/proc/<agent>/root``, the agent's own root (its main thread never
    leaves the node's mount namespace)."""
    return f"/proc/{os.getpid()}/root{path}"


def run_in(
    netns: str,
    action: Callable[[], T],
    *,
    run_netns: Path = RUN_NETNS,
    etc_netns: Path = ETC_NETNS,
) -> T:
    """``action()`` called in a new thread that has entered ``netns`` as ``ip netns exec``
    does (see the module docstring); its result, or what it raised. Raises
    :class:`NamespaceEntryError` when the namespaces could not be entered (``action`` is
    then not called). Blocks the calling thread until the new one has ended."""
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
