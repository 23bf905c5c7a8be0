"""Container starts in processes of their own: the node agent's start workers.

Why this exists: a container's start is operating-system work (its directories, cgroup v1's
dozen ``mkdir`` and limit files, the pod's namespaces entered, fork and exec, its state file),
about 3.5-4.5 ms of cpu each. Done by the agent's threads it runs under the agent's one
interpreter lock, taking turns with its event loop (the appends, the pods' networks): in a
burst of 100 pods the last pod started no sooner than the agent's cpu for the whole burst.
A start worker is a small Python process that does that work on another core, and is the
parent of the containers it started (containerd-shim's idea, one shim for many containers):
the agent keeps the decisions and the appends, sends each start over a Unix socket (msgpack)
and gets back the instance's state (its pid); the worker reaps each container it started and
sends its exit status (``returncode``), which the agent reports as it reported a child's.

A worker holds nothing that outlives it: every container's ``container.json`` is written as
before, and a worker dies with its agent (``PR_SET_PDEATHSIG`` and the end of its socket).
Its containers then go on running (reparented, as an agent's own children were when it
ended) and the next agent adopts them as before: their exit codes are unknowable
(``Unknown``), as for any adopted container. A worker that ends while its agent runs (killed
by hand) is logged; its containers' watches fall back to their ``pidfd`` (exit code
``Unknown``), a start it had under way fails (``StartError``, the pod worker's restart
policy decides), and later starts go to the other workers, or to the agent's own threads when
none is left. Until a worker has answered its greeting (its interpreter's start, a few tenths
of a second after the agent's), starts run in the agent's threads as before.

Why not the agent as the parent (``clone(CLONE_PARENT)`` from the worker): a fork of the
worker's ~35 MB interpreter, and its teardown at the exec, cost 2-3 ms of cpu more per
container than ``subprocess``' ``vfork``, more than the whole start in the agent's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from handlers.agent.spares import SPARES_DIR, Spares

if TYPE_CHECKING:
    from handlers.agent.runtime import ContainerSpec

log = structlog.get_logger(__name__)

PR_SET_PDEATHSIG = 1
GREETING_WAIT_S = 3.0
"""How long the agent's first starts wait for a worker's greeting (its interpreter's start,
usually 0.1-0.5 s) before they run in the agent's own threads."""
SPARES_IDLE_S = 1.0
"""How long a worker has not started anything before it makes spares: not within a burst."""
SPARES_CHUNK = 16
"""Spares made at a time (a few milliseconds), between which a start is answered."""


# -- the worker process ------------------------------------------------------------------------


def serve(sock: socket.socket) -> None:
    """Answer the agent's starts and report its containers' exits until the agent closes the
    socket: the worker's main loop. Idle for ``SPARES_IDLE_S``, it makes the inodes of later
    starts ahead (:mod:`handlers.agent.spares`), a few at a time."""
    from handlers.agent.netnsexec import start_thread
    from handlers.agent.runtime import (
        ContainerSpec,
        ContainerStartError,
        ProcessRuntime,
        _popen_spawn,
    )

    start_thread()  # a root and working directory of its own: it enters pods' namespaces
    unpacker = msgpack.Unpacker(raw=False)
    runtime: ProcessRuntime | None = None
    spares: Spares | None = None
    busy = time.monotonic()  # when it last started a container
    children: dict[int, subprocess.Popen[bytes]] = {}  # pidfd -> the container's Popen
    try:
        while True:
            timeout = None
            if spares is not None and spares.wanted:
                timeout = max(0.0, busy + SPARES_IDLE_S - time.monotonic())
            ready, _, _ = select.select([sock, *children], [], [], timeout)
            if not ready and spares is not None:
                spares.refill(SPARES_CHUNK)
                continue
            for pidfd in ready:
                if pidfd is sock:
                    continue
                popen = children.pop(pidfd)
                # Leftovers of its group first, while the unreaped leader still holds the id.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, signal.SIGKILL)
                returncode = popen.wait()
                os.close(pidfd)
                sock.sendall(msgpack.packb({"exit": popen.pid, "returncode": returncode}))
            if sock not in ready:
                continue
            data = sock.recv(1 << 16)
            if not data:
                return
            unpacker.feed(data)
            for message in unpacker:
                if "hello" in message:
                    hello = message["hello"]
                    runtime = ProcessRuntime(Path(hello["root"]), base_env=hello["base_env"])
                    spares = Spares(runtime.root / SPARES_DIR / str(os.getpid()))
                    reply: dict[str, Any] = {"hello": {"driver": runtime.cgroups.name}}
                else:
                    assert runtime is not None, "a start before the greeting"
                    spec = ContainerSpec(**message["spec"])
                    try:
                        container = runtime.launch(
                            spec, spawn=_popen_spawn, outside_of=os.getppid(),
                            join_in_parent=True, spares=spares,
                        )  # fmt: skip
                    except ContainerStartError as exc:
                        status = exc.status
                        reply = {"id": message["id"], "error": [status.exit_code, status.message]}
                    else:
                        assert container._popen is not None
                        children[os.pidfd_open(container.pid)] = container._popen
                        reply = {"id": message["id"], "state": container.state()}
                    busy = time.monotonic()
                sock.sendall(msgpack.packb(reply))
    finally:
        if spares is not None:
            spares.remove()


def main() -> None:
    fd, agent = int(sys.argv[1]), int(sys.argv[2])
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != agent:
        return  # the agent ended before the death signal was armed
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    with contextlib.suppress(ConnectionError):
        serve(sock)


# -- the agent's side --------------------------------------------------------------------------


class WorkerEnded(RuntimeError):
    """The start worker ended (or its answer could not be read) before answering."""


ExitWatch = Callable[[int | None], None]
"""Called with a container's ``returncode`` once its worker reaped it, or None when the
worker ended first (the code is then unknowable)."""


class StartWorker:
    """One start worker process, as the agent sees it: starts out, answers and exits in."""

    def __init__(self, *, root: Path, base_env: dict[str, str], driver: str) -> None:
        self._driver = driver
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "handlers.agent.startworker", str(theirs.fileno()),
                 str(os.getpid())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            theirs.close()
        self._sock = ours
        ours.sendall(msgpack.packb({"hello": {"root": str(root), "base_env": base_env}}))
        ours.setblocking(False)
        self._unpacker = msgpack.Unpacker(raw=False)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._exits: dict[int, int] = {}
        """pid -> returncode of containers reaped before anyone watched them."""
        self._watches: dict[int, ExitWatch] = {}
        self._reader: asyncio.Task[None] | None = None
        self.ready = False
        self.ended = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def connect(self) -> None:
        """Read its messages on the running loop; its greeting, if it came already, now."""
        if self._reader is not None or self.ended:
            return
        try:
            data = self._sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._end(f"the start worker cannot be read: {exc}")
            return
        else:
            if not data:
                self._end("the start worker ended before its greeting")
                return
            self._received(data)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def start(self, spec: ContainerSpec) -> dict[str, Any]:
        """The worker's answer for ``spec``: ``{"state": ...}`` or ``{"error": ...}``."""
        if self.ended:
            raise WorkerEnded("the start worker has ended")
        request = next(self._ids)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending[request] = future
        try:
            # Its fields as they are (dataclasses.asdict copies deeply: ten times the cost).
            message = msgpack.packb({"id": request, "spec": vars(spec)})
            await loop.sock_sendall(self._sock, message)
            return await asyncio.shield(future)
        finally:
            self._pending.pop(request, None)

    def watch(self, pid: int, on_exit: ExitWatch) -> None:
        """Call ``on_exit`` once the container ``pid`` this worker started has been reaped
        (at once if it has been)."""
        if pid in self._exits:
            on_exit(self._exits.pop(pid))
        elif self.ended:
            on_exit(None)
        else:
            self._watches[pid] = on_exit

    def returncode(self, pid: int) -> int | None:
        """``pid``'s returncode if it has been reported and not handed to a watch."""
        return self._exits.pop(pid, None)

    def unwatch(self, pid: int) -> None:
        self._watches.pop(pid, None)

    def forget(self, pid: int) -> None:
        """Nothing more of ``pid`` is wanted (the container was removed)."""
        self._exits.pop(pid, None)
        self._watches.pop(pid, None)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self._sock, 1 << 16):
                self._received(data)
            self._end("the start worker ended")
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            self._end(f"the start worker's messages cannot be read: {exc}")

    def _received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for message in self._unpacker:
            if "exit" in message:
                pid, returncode = message["exit"], message["returncode"]
                watch = self._watches.pop(pid, None)
                if watch is None:
                    self._exits[pid] = returncode
                else:
                    watch(returncode)
            elif "hello" in message:
                driver = message["hello"].get("driver")
                if driver != self._driver:
                    self._end(f"the start worker found cgroups {driver!r}, not {self._driver!r}")
                    return
                self.ready = True
            else:
                future = self._pending.get(message.get("id"))
                if future is not None and not future.done():
                    future.set_result(message)

    def _end(self, why: str) -> None:
        if self.ended:
            return
        log.warning("agent.start_worker_ended", pid=self.process.pid, reason=why)
        self.close()

    def close(self) -> None:
        """Close its socket (it exits at the end of its input): starts under way fail, and
        the containers it started are watched by their ``pidfd`` (exit code unknown)."""
        if self.ended:
            return
        self.ended = True
        self.ready = False
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerEnded("the start worker ended"))
        watches, self._watches = self._watches, {}
        for watch in watches.values():
            watch(None)
        if self._reader is not None and not self._reader.done():
            with contextlib.suppress(RuntimeError):
                self._reader.cancel()
        self._sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=0)


class StartWorkers:
    """The agent's start workers: each start goes to the ready one with the fewest starts
    under way; None when none is ready (the caller starts it in its own threads)."""

    def __init__(self, count: int, *, root: Path, base_env: dict[str, str], driver: str) -> None:
        self._workers = [
            StartWorker(root=root, base_env=base_env, driver=driver) for _ in range(count)
        ]
        self._greeting_until = time.monotonic() + GREETING_WAIT_S

    def ready(self) -> list[StartWorker]:
        for worker in self._workers:
            worker.connect()
        return [w for w in self._workers if w.ready and not w.ended]

    async def pick(self) -> StartWorker | None:
        """The worker for the next start; right after the agent started, it waits (up to
        ``GREETING_WAIT_S``) for the first greeting rather than start in the agent's threads."""
        ready = self.ready()
        while not ready and time.monotonic() < self._greeting_until:
            if all(w.ended for w in self._workers):
                break
            await asyncio.sleep(0.01)
            ready = self.ready()
        self._greeting_until = 0.0  # once: later, a start never waits for a worker
        return min(ready, key=lambda w: w.pending) if ready else None

    def close(self) -> None:
        for worker in self._workers:
            worker.close()


if __name__ == "__main__":
    main()
