"""Ships container output from the node's disk to the ``FLEET_LOGS`` stream.

Why this exists: the runtime writes each container instance's output to
``<root>/pods/<pod_uid>/<container>/<restart_count>/stdout`` and ``…/stderr``, which only this
node can read; ``fleetlog logs`` must work from anywhere, and after the node is gone. The
shipper tails those files (one loop polling every ~0.2 s, woken early when a container exits)
and publishes complete lines in chunks of at most 32 KiB (``streams.telemetry``).

Delivery is at-least-once with the duplicates removed:

* Every chunk carries ``Nats-Msg-Id: <uid>:<container>:<restart>:<stream>:<offset>``.
* The shipper keeps its position in ``.shipped.json`` beside the files. Before publishing, it
  records the chunk boundaries it is about to send; after the acks, the new offsets. An agent
  that dies in between resends exactly the same chunks (same boundaries, same Msg-Ids), so
  JetStream drops them inside its duplicate window and the reader drops them after it.
* ``.shipped.json`` also names the pod, so a restarted agent resumes every unfinished instance
  under ``<root>`` on its own; the agent's ``track`` calls for adopted containers are then
  no-ops.

An unfinished last line waits for its newline; when the container has exited (``finish``) it
is shipped with a newline added. File I/O is small (a stat per file per pass, reads of at most
1 MiB) and done on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client

from streams import jsapi
from streams.cancellation import checkpoint
from streams.telemetry import MAX_CHUNK_BYTES, OUTPUT_STREAMS, log_headers, log_subject, plan_chunks

log = structlog.get_logger(__name__)

STATE_FILE = ".shipped.json"
DEFAULT_POLL_S = 0.2
READ_LIMIT = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerInstance:
    """One run of one container: what its chunks are published under."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    restart_count: int
    directory: Path


@dataclass
class _Tracked:
    instance: ContainerInstance
    offsets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTPUT_STREAMS, 0))
    # Absolute chunk ends chosen (and persisted) but not yet acknowledged, per stream.
    pending: dict[str, list[int]] = field(
        default_factory=lambda: {stream: [] for stream in OUTPUT_STREAMS}
    )
    finishing: bool = False
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def state(self, finished: bool = False) -> dict[str, Any]:
        i = self.instance
        return {
            "namespace": i.namespace,
            "pod": i.pod,
            "pod_uid": i.pod_uid,
            "container": i.container,
            "restart_count": i.restart_count,
            "streams": {
                s: {"offset": self.offsets[s], "pending": self.pending[s]} for s in OUTPUT_STREAMS
            },
            "finished": finished,
        }


class LogShipper:
    """Tails the output files of the container instances it is told about; see the module
    docstring. Call :meth:`track` when an instance starts, :meth:`finish` once it has exited
    (the pod workers' :class:`handlers.agent.seams.LogSink`), and run :meth:`run` for as long
    as the agent runs."""

    def __init__(
        self,
        nc: Client,
        root: Path,
        *,
        poll_interval: float = DEFAULT_POLL_S,
        chunk_bytes: int = MAX_CHUNK_BYTES,
        publish_timeout: float = 5.0,
        flush_timeout: float = 3.0,
    ) -> None:
        self._js = jsapi.jetstream(nc)
        self.root = Path(root)
        self.poll_interval = poll_interval
        self.chunk_bytes = chunk_bytes
        self.publish_timeout = publish_timeout
        self.flush_timeout = flush_timeout
        self._tracked: dict[Path, _Tracked] = {}
        self._wake = asyncio.Event()
        self.published = 0  # chunks acknowledged (including duplicates), for tests and stats

    # -- what the agent calls ------------------------------------------------------------------

    def track(self, instance: ContainerInstance) -> None:
        """Start shipping an instance's output (resuming from ``.shipped.json`` if present).
        Tracking an instance already tracked changes nothing."""
        self._track(instance)

    def finish(self, instance: ContainerInstance) -> asyncio.Future[None]:
        """The instance has exited: ship what is left (an unfinished last line too), then stop
        tracking it. The returned future resolves when that is done, or when the shipper stops
        first (the next agent then ships the rest); awaiting it is optional."""
        tracked = self._track(instance)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tracked.finishing = True
        tracked.waiters.append(future)
        self._wake.set()
        return future

    async def run(self) -> None:
        """Ship until cancelled; on cancellation, one last pass (bounded by ``flush_timeout``)."""
        self.resume_all()
        try:
            while True:
                checkpoint()
                busy = await self.ship_once()
                if busy:
                    await asyncio.sleep(0)
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self._wake.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.flush_timeout):
                    await self.ship_once()
            raise
        finally:
            for tracked in self._tracked.values():
                _release(tracked)

    # -- the work ------------------------------------------------------------------------------

    def resume_all(self) -> int:
        """Track every unfinished instance found under ``<root>/pods`` (after an agent restart);
        return how many were found."""
        found = 0
        for path in sorted(self.root.glob(f"pods/*/*/*/{STATE_FILE}")):
            try:
                state = json.loads(path.read_text())
                if state.get("finished"):
                    continue
                instance = ContainerInstance(
                    namespace=state["namespace"],
                    pod=state["pod"],
                    pod_uid=state["pod_uid"],
                    container=state["container"],
                    restart_count=int(state["restart_count"]),
                    directory=path.parent,
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("logship.state_unreadable", path=str(path), error=str(exc))
                continue
            if instance.directory not in self._tracked:
                self._track(instance)
                found += 1
        if found:
            log.info("logship.resumed", instances=found)
        return found

    async def ship_once(self) -> bool:
        """One pass over every tracked instance; True if some file had more than one read's
        worth of output waiting (the caller should pass again at once)."""
        busy = False
        for directory, tracked in list(self._tracked.items()):
            if not directory.is_dir():
                log.info("logship.directory_gone", directory=str(directory))
                self._drop(tracked)
                continue
            try:
                more, complete = await self._ship(tracked)
            except OSError as exc:
                log.warning("logship.read_failed", directory=str(directory), error=str(exc))
                continue
            busy = busy or more
            if complete and tracked.finishing:
                _save(directory, tracked.state(finished=True))
                self._drop(tracked)
                log.debug("logship.finished", directory=str(directory))
        return busy

    def _track(self, instance: ContainerInstance) -> _Tracked:
        tracked = self._tracked.get(instance.directory)
        if tracked is not None:
            return tracked
        tracked = _Tracked(instance)
        state_path = instance.directory / STATE_FILE
        try:
            state = json.loads(state_path.read_text())
            for stream in OUTPUT_STREAMS:
                saved = state["streams"].get(stream) or {}
                tracked.offsets[stream] = int(saved.get("offset", 0))
                tracked.pending[stream] = [int(end) for end in saved.get("pending", [])]
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                _save(instance.directory, tracked.state())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("logship.state_unreadable", path=str(state_path), error=str(exc))
        self._tracked[instance.directory] = tracked
        return tracked

    def _drop(self, tracked: _Tracked) -> None:
        self._tracked.pop(tracked.instance.directory, None)
        _release(tracked)

    async def _ship(self, tracked: _Tracked) -> tuple[bool, bool]:
        """Ship new output of both files: (more is waiting, everything up to EOF is shipped)."""
        more = False
        complete = True
        for stream in OUTPUT_STREAMS:
            stream_more, stream_complete = await self._ship_stream(tracked, stream)
            more = more or stream_more
            complete = complete and stream_complete
        return more, complete

    async def _ship_stream(self, tracked: _Tracked, stream: str) -> tuple[bool, bool]:
        instance = tracked.instance
        path = instance.directory / stream
        offset = tracked.offsets[stream]
        pending = tracked.pending[stream]
        more = False
        data: bytes | None = None
        if not pending:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return False, True
            if size < offset:
                log.warning("logship.file_shrank", path=str(path), size=size, offset=offset)
                offset = tracked.offsets[stream] = 0
            if size == offset:
                return False, True
            data = _read(path, offset, min(size - offset, READ_LIMIT))
            at_eof = offset + len(data) >= size
            more = not at_eof
            ends = plan_chunks(data, limit=self.chunk_bytes, final=tracked.finishing and at_eof)
            if not ends:
                return more, False  # only an unfinished line so far
            pending[:] = [offset + end for end in ends]
            _save(instance.directory, tracked.state())  # the boundaries, before sending
        if data is None:
            data = _read(path, offset, pending[-1] - offset)
        base = offset
        subject = log_subject(instance.namespace, instance.pod, instance.container)
        try:
            while pending:
                end = pending[0]
                chunk = data[offset - base : end - base]
                partial = not chunk.endswith(b"\n") and len(chunk) >= self.chunk_bytes
                if not chunk.endswith(b"\n") and not partial:
                    chunk += b"\n"  # the unfinished last line of an exited container
                headers = log_headers(
                    pod_uid=instance.pod_uid,
                    restart=instance.restart_count,
                    stream=stream,
                    offset=offset,
                    data=chunk,
                    partial=partial,
                )
                headers["Nats-Msg-Id"] = (
                    f"{instance.pod_uid}:{instance.container}:{instance.restart_count}:"
                    f"{stream}:{offset}"
                )
                await self._js.publish(
                    subject, chunk, timeout=self.publish_timeout, headers=headers
                )
                self.published += 1
                pending.pop(0)
                offset = tracked.offsets[stream] = end
        except Exception as exc:  # NATS down or slow: retried on the next pass
            log.warning(
                "logship.publish_failed", directory=str(instance.directory), error=repr(exc)
            )
            return False, False
        finally:
            _save(instance.directory, tracked.state())
        return more, not more and offset == _size(path)


def _release(tracked: _Tracked) -> None:
    for waiter in tracked.waiters:
        if not waiter.done():
            waiter.set_result(None)
    tracked.waiters.clear()


def _read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(length)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _save(directory: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically (a crash leaves the old one or the new one)."""
    path = directory / STATE_FILE
    temporary = directory / f"{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)
