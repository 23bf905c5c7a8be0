"""The node agent's side of ``kubectl exec`` and ``kubectl port-forward``.

Why this exists: the API server cannot run a command in a container or reach a pod's
``localhost``: only the node can. So the agent answers session requests on its node's subject
(:mod:`streams.nodestream`: request/reply to open, then frames with flow control over two
inboxes) and does the work here:

* ``exec`` (``{"op": "exec", "uid", "namespace", "pod", "container", "command", "stdin",
  "tty"}``):
  the command runs inside the running container (``Container.enter_argv``: its namespaces,
  cgroup and user; its environment and working directory). Session channels are kube's: 0
  stdin, 1 stdout, 2 stderr. The session ends with ``{"exitCode": n}``. If the other side goes
  away first, the command's whole process group is killed.
* ``portforward`` (``{"op": "portforward", "uid", "namespace", "pod", "port"}``): one TCP
  connection to ``localhost:<port>`` *inside the pod's network namespace* (what kubelet does, so
  a server bound to the pod's loopback is reachable too), piped both ways on channel 0; each
  direction's end is passed on as a half-close. The session ends with ``{}``, or ``{"error"}``
  if the connection could not be made.

A request for a pod or container that does not run here is refused before anything starts
(:class:`streams.nodestream.SessionRefused`, carrying Kubernetes' code and message).
With ``tty`` the command gets a pseudo-terminal of its own (``_run_tty_exec``): its output on
stdout only, channel 4 resizing it.

Security: issue 17 will decide who may open sessions; whoever does, the command runs as the
container's own user (read from its process), never as the agent or the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import struct
import termios
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client

from streams.nodestream import Limits, Session, SessionRefused, SessionRunner, serve_sessions

if TYPE_CHECKING:
    from handlers.agent.pods import PodWorker
    from handlers.agent.seams import Container

log = structlog.get_logger(__name__)

STDIN, STDOUT, STDERR = 0, 1, 2
READ_CHUNK = 32 * 1024
CONNECT_TIMEOUT_S = 5.0
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


class PodStreams:
    """Opens exec and port-forward sessions on the pods this agent runs."""

    def __init__(
        self,
        nc: Client,
        *,
        node: str,
        workers: Callable[[], Sequence[PodWorker]],
        limits: Limits | None = None,
    ) -> None:
        self._nc = nc
        self.node = node
        self._workers = workers
        self._limits = limits

    async def run(self) -> None:
        """Answer session requests until cancelled (which ends every open session)."""
        await serve_sessions(self._nc, node=self.node, prepare=self.prepare, limits=self._limits)

    async def prepare(self, request: dict[str, Any]) -> SessionRunner:
        op = request.get("op")
        worker = self._worker(request)
        if op == "exec":
            return self._exec(worker, request)
        if op == "portforward":
            return self._portforward(worker, request)
        raise SessionRefused(f"unknown session operation {str(op)[:32]!r}")

    def _worker(self, request: dict[str, Any]) -> PodWorker:
        namespace, pod = str(request.get("namespace", "")), str(request.get("pod", ""))
        for worker in self._workers():
            if (worker.namespace, worker.name) == (namespace, pod) and (
                not request.get("uid") or worker.uid == request.get("uid")
            ):
                return worker
        raise SessionRefused(
            f'pod "{pod}" in namespace "{namespace}" does not run on node "{self.node}"',
            code=404, reason="NotFound",
        )  # fmt: skip

    # -- exec ------------------------------------------------------------------------------

    def _exec(self, worker: PodWorker, request: dict[str, Any]) -> SessionRunner:
        from handlers.agent.runtime import ContainerNotRunning

        name = str(request.get("container", ""))
        command = request.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) for a in command)
        ):
            raise SessionRefused("you must specify at least one command for the container")
        container = worker.running.get(name)
        if container is None:
            raise SessionRefused(f'container not found ("{name}")', code=404, reason="NotFound")
        try:
            argv = container.enter_argv(list(command))
        except ContainerNotRunning as exc:
            raise SessionRefused(str(exc)) from None
        stdin = bool(request.get("stdin"))
        if request.get("tty"):

            async def run(session: Session) -> dict[str, Any]:
                return await _run_tty_exec(session, container, argv)

            return run

        async def run(session: Session) -> dict[str, Any]:
            return await _run_exec(session, container, argv, stdin=stdin)

        return run

    # -- port-forward ----------------------------------------------------------------------

    def _portforward(self, worker: PodWorker, request: dict[str, Any]) -> SessionRunner:
        port = request.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise SessionRefused(f"invalid port {str(port)[:16]!r}")
        netns = next(
            (c.spec.netns for c in worker.running.values() if c.spec.netns is not None), None
        )
        if netns is None and worker.addresses is not None:
            netns = worker.addresses.netns
        if not worker.running:
            raise SessionRefused(f'pod "{worker.name}" has no running container')

        async def run(session: Session) -> dict[str, Any]:
            return await _run_portforward(session, worker.uid, port, netns)

        return run


async def _run_exec(
    session: Session, container: Container, argv: list[str], *, stdin: bool
) -> dict[str, Any]:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(container.env),
            cwd=container.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return {"error": f"cannot run {argv[-1]!r} in the container: {exc}"}
    log.info("exec.started", container=container.spec.name, pid=process.pid)

    async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
        if stream is None:
            return
        while chunk := await stream.read(READ_CHUNK):
            await session.send(channel, chunk)

    async def outputs() -> int:
        async with asyncio.TaskGroup() as group:
            group.create_task(pump(process.stdout, STDOUT))
            group.create_task(pump(process.stderr, STDERR))
        return await process.wait()

    async def feed() -> None:
        writer = process.stdin
        async for frame in session.frames():
            if writer is None or frame.channel != STDIN:
                continue  # resize and unknown channels: nothing to do without a terminal
            if frame.eof:
                writer.close()
                continue
            with contextlib.suppress(ConnectionError):
                writer.write(frame.data)
                await writer.drain()

    work = asyncio.create_task(outputs())
    feeder = asyncio.create_task(feed())
    try:
        await asyncio.wait({work, session.result}, return_when=asyncio.FIRST_COMPLETED)
        if work.done() and work.exception() is None:
            return {"exitCode": work.result()}
        return {"error": "the session ended before the command"}
    finally:
        feeder.cancel()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await process.wait()
        work.cancel()
        await asyncio.gather(work, feeder, return_exceptions=True)
        log.info("exec.ended", container=container.spec.name, exit_code=process.returncode)


# -- exec with a terminal ------------------------------------------------------------------

TTY_SIZE_WAIT_S = 3.0
"""How long a terminal's command waits for the client's first resize before it starts."""
# Re-opening the terminal by name, as the first process of a new session, makes it that
# session's controlling terminal (Linux gives one to a session leader that opens a tty without
# O_NOCTTY), so ^C and job control reach the command's foreground process group. This is a
# shell prologue rather than a preexec_fn: nothing may run between fork and exec in the agent.
_CTTY_PROLOGUE = 'exec "$@" 0<>"$0" 1>&0 2>&0'


async def _run_tty_exec(session: Session, container: Container, argv: list[str]) -> dict[str, Any]:
    """``argv`` with a pseudo-terminal as its stdin, stdout and stderr (kube's ``tty``): the
    terminal's output on channel 1 (no stderr: a terminal merges them), channel 0 typed into
    it, and channel 4's resizes set its window size (TIOCSWINSZ). The command starts once the
    client has said its terminal's size (kubectl does at once) so that it sees the right size
    from its first instruction, or after :data:`TTY_SIZE_WAIT_S`."""
    from core.kubeapi.streaming import RESIZE, terminal_size

    master, slave = os.openpty()
    os.set_blocking(master, False)
    sized = asyncio.Event()
    exited = asyncio.Event()

    def resize(data: bytes) -> None:
        try:
            columns, rows = terminal_size(data)
        except ValueError:
            return
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        sized.set()

    async def feed() -> None:
        async for frame in session.frames():
            if frame.channel == RESIZE and frame.data:
                resize(frame.data)
            elif frame.channel == STDIN and frame.eof:
                # The end of input on a terminal is its EOF character (^D), as typed.
                await _write_all(master, bytes((termios.tcgetattr(master)[6][termios.VEOF][0],)))
            elif frame.channel == STDIN and frame.data:
                await _write_all(master, frame.data)

    async def pump() -> None:
        while True:
            try:
                chunk = os.read(master, READ_CHUNK)
            except BlockingIOError:
                if exited.is_set():
                    return  # drained what the command wrote before it ended
                await _readable(master, exited)
                continue
            except OSError:
                return  # EIO: every process holding the terminal has closed it
            if not chunk:
                return
            await session.send(STDOUT, chunk)

    feeder = asyncio.create_task(feed())
    process: asyncio.subprocess.Process | None = None
    pumping: asyncio.Task[None] | None = None
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sized.wait(), TTY_SIZE_WAIT_S)
        try:
            process = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", _CTTY_PROLOGUE, os.ttyname(slave), *argv,
                stdin=slave, stdout=slave, stderr=slave,
                env=dict(container.env), cwd=container.cwd, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            return {"error": f"cannot run {argv[-1]!r} in the container: {exc}"}
        finally:
            os.close(slave)
        log.info("exec.started", container=container.spec.name, pid=process.pid, tty=True)
        pumping = asyncio.create_task(pump())
        waiting = asyncio.create_task(process.wait())
        await asyncio.wait({waiting, session.result}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            return {"error": "the session ended before the command"}
        exited.set()
        await pumping
        return {"exitCode": waiting.result()}
    finally:
        feeder.cancel()
        if pumping is not None:
            pumping.cancel()
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await process.wait()
        await asyncio.gather(feeder, *([pumping] if pumping else []), return_exceptions=True)
        os.close(master)
        if process is not None:
            log.info("exec.ended", container=container.spec.name, exit_code=process.returncode)


async def _readable(fd: int, exited: asyncio.Event) -> None:
    """Until ``fd`` can be read, or ``exited`` is set."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _resolve, ready)
    ended = asyncio.create_task(exited.wait())
    try:
        await asyncio.wait({ready, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(fd)
        ended.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to a non-blocking ``fd``, waiting while it is full."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _resolve, writable)
            try:
                await writable
            finally:
                loop.remove_writer(fd)


# -- port-forward --------------------------------------------------------------------------


def _connect_in(netns: str | None, port: int) -> socket.socket:
    """A connection to ``localhost:port`` in the named network namespace (None: the node's).

    ``setns`` moves only the calling thread, and a socket stays in the namespace it was made
    in: a thread of its own enters the pod's namespace, connects, and goes back."""
    if netns is None:
        return socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S)
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / netns, os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"cannot enter network namespace {netns}")
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S)
            finally:
                if libc.setns(own, _CLONE_NEWNET) != 0:
                    # This thread is stranded in the pod's namespace: its pool is discarded.
                    raise OSError(ctypes.get_errno(), "cannot leave the pod's namespace")
        finally:
            os.close(target)
    finally:
        os.close(own)


async def _run_portforward(
    session: Session, uid: str, port: int, netns: str | None
) -> dict[str, Any]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portforward")
    try:
        sock = await asyncio.get_running_loop().run_in_executor(pool, _connect_in, netns, port)
    except OSError as exc:
        # The cause as the kubelet's Go dialer spells it (``connect: connection refused``).
        cause = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return {
            "error": f"error forwarding port {port} to pod {uid}: failed to connect to "
            f"localhost:{port} inside the pod's network: dial tcp4 127.0.0.1:{port}: "
            f"connect: {cause}"
        }
    finally:
        pool.shutdown(wait=False)
    sock.settimeout(None)
    reader, writer = await asyncio.open_connection(sock=sock)

    async def upstream() -> None:
        async for frame in session.frames():
            if frame.channel != 0:
                continue
            if frame.eof:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(frame.data)
            await writer.drain()

    async def downstream() -> None:
        while chunk := await reader.read(READ_CHUNK):
            await session.send(0, chunk)
        await session.eof(0)

    # The connection is over when the pod closes it (its output has all been passed on);
    # the client's end of input is only a half-close.
    pushing = asyncio.create_task(upstream())
    pulling = asyncio.create_task(downstream())
    tasks = {pushing, pulling}
    try:
        await asyncio.wait({pulling, session.result}, return_when=asyncio.FIRST_COMPLETED)
        if pulling.done() and pulling.exception() is not None:
            return {"error": f"error forwarding port {port}: {pulling.exception()}"}
        return {}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
