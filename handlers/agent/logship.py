"""Rotates container output on the node's disk and ships it to the ``FLEET_LOGS`` stream.

Why this exists: the runtime writes each container instance's output to
``<root>/pods/<pod_uid>/<container>/<restart_count>/stdout`` and ``…/stderr``, which only this
node can read; ``fleetlog logs`` must work from anywhere, and after the node is gone. The
shipper tails those files (one loop polling every ~0.2 s, woken early when a container exits)
and publishes complete lines in chunks of at most 32 KiB (``streams.telemetry``). And since a
container may write as fast as the disk takes it, both the files and the shipping are bounded
(the rules: :mod:`core.pods.containerlogs`).

Rotation, copy-truncate style, as the kubelet bounds a container's log:

* The container writes to ``stdout`` with ``O_APPEND`` and never reopens it, so a file cannot
  be renamed under it. A rotator looks at each live file and, once it reached
  ``--container-log-max-size``, copies it to ``stdout.<n>`` (``copy_file_range``: in the
  kernel) and truncates it; the writer's next write lands at the new end, offset 0. Rotated
  files beyond ``--container-log-max-files - 1`` are removed, oldest first. A flooded file
  (found at twice the size or more, or written at 64 MiB/s or faster) is emptied without a
  copy. The rotator is a process of its own (:mod:`handlers.agent.logrotate`, which says why
  and how often it looks): nothing the agent does, nor an unreachable server, delays it.
* The price of copy-truncate: bytes written between the last size check and the truncation
  (microseconds) are lost, and a fast writer overshoots the size by what it writes between
  two checks. docs/architecture.md has the costs measured.

Positions are logical (bytes of the stream since the instance started, across rotations):
the rotator's ``.rotated.json`` keeps, per stream, the logical start of the live file and the
rotated files kept (number, logical start, length), so a position names the same byte before
and after a rotation, and offsets on the wire only grow. The shipper reads it, and the files'
bytes, holding the instance's lock (:func:`handlers.agent.logrotate.locked`), so no rotation
happens in between.

Shipping, bounded per container: a token bucket (1 MiB/s after a 4 MiB burst, stdout and stderr
together) and at most 4 MiB of one stream waiting. Output beyond that, or rotated away before
it was shipped, is skipped, and the reader sees ``[fleetlog: N bytes of output dropped]`` in
its place. A container writing as fast as it can is therefore shipped a few seconds behind at
most, and its pod's shipping ends seconds after the pod is deleted.

Delivery is at-least-once with the duplicates removed:

* Every chunk carries ``Nats-Msg-Id: <uid>:<container>:<restart>:<stream>:<offset>``.
* The shipper keeps its position in ``.shipped.json`` beside the files. Before publishing, it
  records the chunk boundaries it is about to send (and a drop about to be announced); after
  the acks, the new offsets. An agent that dies in between resends exactly the same chunks
  (same boundaries, same Msg-Ids), so JetStream drops them inside its duplicate window and the
  reader drops them after it.
* ``.shipped.json`` also names the pod, so a restarted agent resumes every unfinished instance
  under ``<root>`` on its own; the agent's ``track`` calls for adopted containers are then
  no-ops. A new instance's first ``.shipped.json`` is written off the event loop, together
  with those of every other instance tracked in the same turn of the loop (one worker-thread
  job for a burst of containers, not a file write each on the loop, where every write also
  waits for the interpreter lock behind the burst's container starts); nothing is shipped
  from an instance before its file exists (:meth:`LogShipper.saved`).
* Every save writes a temporary file and renames it over ``.shipped.json``: a new inode each
  time, which on this project's hosts cost 85-290 µs of cpu (ext4 skipping recently deleted
  inodes: ``handlers.agent.spares``), against ~10 µs for renaming one made earlier. So, as the
  start workers do, the shipper keeps empty files made ahead in ``<root>/.ship-spares/``
  (made by a thread of the shipper once no state was saved for a second; removed when the shipper
  starts and when it stops) and renames one to the temporary's name before writing it. The
  file written, its mode (``0o666`` less the umask, as ``open`` makes it) and the rename are
  as before; without spares (none left, a refused rename) the write makes its own.

An unfinished last line waits for its newline; when the container has exited (``finish``) it
is shipped with a newline added. A line cut by a rotation is shipped in two pieces marked
partial, which the reader joins. File I/O on the event loop is small (a stat per file per
pass, reads of at most 1 MiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client

from core.pods.containerlogs import (
    Allowance,
    ContainerLogPolicy,
    ShippingLimits,
    dropped_marker,
    plan_shipping,
    refill,
    spend,
)
from handlers.agent.logrotate import (
    RotatorProcess,
    Table,
    adopt_legacy_tables,
    locked,
    read_tables,
    rotate,
    write_tables,
)
from handlers.agent.spares import Spares
from streams import jsapi
from streams.cancellation import checkpoint
from streams.telemetry import MAX_CHUNK_BYTES, OUTPUT_STREAMS, log_headers, log_subject, plan_chunks

log = structlog.get_logger(__name__)

STATE_FILE = ".shipped.json"
DEFAULT_POLL_S = 0.2
SPARE_CHECK_S = 0.1
"""How often the spares thread looks whether to make spares."""
READ_LIMIT = 1024 * 1024
SPARES_DIR = ".ship-spares"
"""Under the shipper's root: the state files' temporaries made ahead."""
SPARE_SAVES = 128
"""Spare temporaries kept: the first saves of a burst of 128 new container instances."""
SPARE_IDLE_S = 1.0
"""No spare is made until no state was saved for this long (not during a burst)."""
SPARE_CHUNK = 16
"""Spares made per pass of the spares thread."""
STATE_MODE = 0o666
"""The mode a state file's temporary is opened with (``Path.write_text``'s)."""


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
class _Output:
    """One output stream of an instance: how far it is shipped (logical positions; where its
    files are is the rotator's table, :class:`handlers.agent.logrotate.Table`)."""

    offset: int = 0
    """Shipped (or announced as dropped) up to here."""
    pending: list[int] = field(default_factory=list)
    """Chunk ends chosen (and persisted) but not yet acknowledged."""
    dropped_to: int | None = None
    """A drop of ``[offset, dropped_to)`` chosen but not yet announced."""
    mid_line: bool = False
    """The last chunk shipped ended inside a line (kept in memory only)."""
    rotations: int = 0
    """The rotations of its table seen so far (for :attr:`LogShipper.rotations`)."""

    def as_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "pending": self.pending, "dropped_to": self.dropped_to}

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> _Output:
        dropped_to = saved.get("dropped_to")
        return cls(
            offset=int(saved.get("offset", 0)),
            pending=[int(end) for end in saved.get("pending", [])],
            dropped_to=int(dropped_to) if dropped_to is not None else None,
        )


@dataclass
class _Tracked:
    instance: ContainerInstance
    outputs: dict[str, _Output] = field(
        default_factory=lambda: {stream: _Output() for stream in OUTPUT_STREAMS}
    )
    finishing: bool = False
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    allowance: Allowance | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    """Held while the positions change or are saved (the loop, the first save's thread)."""
    place: Callable[[Path], None] | None = None
    """Puts a spare empty file at the temporary's path before a save (the shipper's)."""

    def state(self, finished: bool = False) -> dict[str, Any]:
        i = self.instance
        return {
            "namespace": i.namespace,
            "pod": i.pod,
            "pod_uid": i.pod_uid,
            "container": i.container,
            "restart_count": i.restart_count,
            "streams": {s: self.outputs[s].as_json() for s in OUTPUT_STREAMS},
            "finished": finished,
        }

    def save(self, finished: bool = False) -> None:
        with self.lock:
            _save(self.instance.directory, self.state(finished), self.place)


class LogShipper:
    """Rotates and tails the output files of the container instances it is told about; see
    the module docstring. Call :meth:`track` when an instance starts, :meth:`finish` once it
    has exited (the pod workers' :class:`handlers.agent.seams.LogSink`), and run :meth:`run`
    for as long as the agent runs."""

    def __init__(
        self,
        nc: Client,
        root: Path,
        *,
        policy: ContainerLogPolicy | None = None,
        limits: ShippingLimits | None = None,
        poll_interval: float = DEFAULT_POLL_S,
        chunk_bytes: int = MAX_CHUNK_BYTES,
        publish_timeout: float = 5.0,
        flush_timeout: float = 3.0,
    ) -> None:
        self._js = jsapi.jetstream(nc)
        self.root = Path(root)
        self.policy = policy or ContainerLogPolicy()
        self.limits = limits or ShippingLimits()
        self.poll_interval = poll_interval
        self.chunk_bytes = chunk_bytes
        self.publish_timeout = publish_timeout
        self.flush_timeout = flush_timeout
        self._tracked: dict[Path, _Tracked] = {}
        self._registry = threading.Lock()  # self._tracked is read by other threads (tests rotate)
        self._rotator = RotatorProcess(self.policy)
        self._wake = asyncio.Event()
        self._unsaved: list[_Tracked] = []
        """New instances whose first state file is still to be written (one job per turn)."""
        self._collecting: asyncio.Future[None] | None = None
        """Done when the batch being collected this turn is written."""
        self._writing: set[asyncio.Future[None]] = set()
        """Batches being written by a worker thread."""
        self.published = 0  # chunks acknowledged (including duplicates), for tests and stats
        self.dropped = 0  # bytes skipped and announced
        self.rotations = 0  # rotations of the tracked files' tables seen
        self._spares: Spares | None = None
        self._spares_lock = threading.Lock()  # taken by savers, refilled by the spares thread
        self._last_save = 0.0
        """``time.monotonic()`` of the last save that asked for a spare."""

    # -- what the agent calls ------------------------------------------------------------------

    def expect(self, directory: Path) -> None:
        """An instance is about to start writing in ``directory``: the rotator watches it from
        now on (a flood from the container's first write is bounded, not only once the
        instance is tracked)."""
        self._rotator.track(directory)

    def forget(self, directory: Path) -> None:
        """The instance expected in ``directory`` was not started."""
        with self._registry:
            if directory in self._tracked:
                return
        self._rotator.drop(directory)

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

    async def saved(self) -> None:
        """Until the first state file of every instance tracked so far is written."""
        while self._collecting is not None or self._writing:
            waited = self._collecting if self._collecting is not None else next(iter(self._writing))
            await asyncio.shield(waited)

    def _save_later(self, tracked: _Tracked) -> None:
        """Write ``tracked``'s first state file in the next batch (see the module docstring);
        without a running loop, now."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            with contextlib.suppress(OSError):
                tracked.save()
            return
        self._unsaved.append(tracked)
        if self._collecting is None:
            self._collecting = loop.create_future()
            loop.call_soon(self._write_unsaved)

    def _write_unsaved(self) -> None:
        batch, self._unsaved = self._unsaved, []
        done, self._collecting = self._collecting, None
        if done is None:
            return
        self._writing.add(done)
        job = asyncio.ensure_future(asyncio.to_thread(_save_all, batch))

        def finished(_: asyncio.Future[None]) -> None:
            self._writing.discard(done)
            if not done.done():
                done.set_result(None)

        job.add_done_callback(finished)

    def tracks_under(self, directory: Path) -> bool:
        """Whether some instance under ``directory`` (a pod's) is still being shipped."""
        with self._registry:
            return any(path.is_relative_to(directory) for path in self._tracked)

    async def run(self) -> None:
        """Ship until cancelled, with a rotator process (and a thread making spares) beside;
        on cancellation, one last pass (bounded by ``flush_timeout``)."""
        self._open_spares()
        self.resume_all()
        stop = threading.Event()
        spare_maker = threading.Thread(
            target=self._refill_until, args=(stop,), name="fleetlog-shipspares", daemon=True
        )
        spare_maker.start()
        self.start_rotator()
        try:
            while True:
                checkpoint()
                self._rotator.check()
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
            stop.set()
            await asyncio.to_thread(self.stop_rotator)
            await asyncio.to_thread(spare_maker.join, 5.0)
            for tracked in self._tracked.values():
                _release(tracked)
            with self._spares_lock:
                spares, self._spares = self._spares, None
            if spares is not None:
                spares.remove()

    # -- spare temporaries (see the module docstring) ------------------------------------------

    def _open_spares(self) -> None:
        directory = self.root / SPARES_DIR
        shutil.rmtree(directory, ignore_errors=True)  # an earlier shipper's: its names not ours
        spares = Spares(
            directory, starts=SPARE_SAVES, dirs_per_start=0, files_per_start=1,
            file_mode=STATE_MODE,
        )  # fmt: skip
        with self._spares_lock:
            self._spares = spares if spares.usable else None

    def _place_spare(self, path: Path) -> None:
        self._last_save = time.monotonic()
        with self._spares_lock:
            if self._spares is not None:
                self._spares.place_file(path)

    def refill_spares(self) -> None:
        """Make a few spare temporaries if no state was saved for a while (the spares
        thread's, every :data:`SPARE_CHECK_S`)."""
        for _ in range(SPARE_CHUNK):
            if time.monotonic() - self._last_save < SPARE_IDLE_S:
                return
            with self._spares_lock:
                if self._spares is None or not self._spares.wanted:
                    return
                self._spares.refill(1)

    def _refill_until(self, stop: threading.Event) -> None:
        while not stop.wait(SPARE_CHECK_S):
            try:
                self.refill_spares()
            except Exception as exc:  # spares are an optimisation: saves make their own
                log.warning("logship.spares_failed", error=repr(exc))

    # -- rotation (the rotator process', :mod:`handlers.agent.logrotate`) ------------------------

    def start_rotator(self) -> None:
        """Start the rotator process if it is not running (the agent does it first thing, so
        that its start overlaps the agent's; :meth:`run` otherwise). Call it on the thread
        that runs the agent: the rotator dies with that thread."""
        if not self._rotator.started:
            self._rotator.start()
            log.info("logship.rotator_started", pid=self._rotator.pid)

    async def rotator_ready(self, timeout: float) -> bool:
        """Until the rotator watches what it is told (False: not within ``timeout``, logged;
        it is then used when it is)."""
        if await asyncio.to_thread(self._rotator.greeted, timeout):
            return True
        log.warning("logship.rotator_not_ready", waited=timeout)
        return False

    def stop_rotator(self) -> None:
        """Stop the rotator process (blocking briefly; for a worker thread)."""
        self._rotator.stop()

    @property
    def rotator_pid(self) -> int | None:
        """The rotator process' pid while the shipper runs."""
        return self._rotator.pid

    def rotate_once(self) -> bool:
        """Rotate every live file over the maximum size now, in this thread (tests; the
        rotator process takes turns with it); True if one was."""
        with self._registry:
            tracked = list(self._tracked.values())
        rotated = False
        for one in tracked:
            for stream in OUTPUT_STREAMS:
                try:
                    size = _size(one.instance.directory / stream)
                    rotated = rotate(one.instance.directory, stream, self.policy, size) or rotated
                except OSError as exc:
                    log.warning("logship.rotate_failed", directory=str(one.instance.directory),
                                stream=stream, error=str(exc))  # fmt: skip
        return rotated

    # -- shipping ------------------------------------------------------------------------------

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
        """One pass over every tracked instance; True if some file had more output waiting
        that its container's allowance lets through now (the caller should pass again)."""
        busy = False
        await self.saved()  # an instance's position is on disk before any of it is sent
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
                with contextlib.suppress(OSError):  # removed meanwhile: nothing left to say
                    tracked.save(finished=True)
                self._drop(tracked)
                log.debug("logship.finished", directory=str(directory))
        return busy

    def _track(self, instance: ContainerInstance) -> _Tracked:
        tracked = self._tracked.get(instance.directory)
        if tracked is not None:
            return tracked
        tracked = _Tracked(instance, place=self._place_spare)
        state_path = instance.directory / STATE_FILE
        try:
            state = json.loads(state_path.read_text())
            for stream in OUTPUT_STREAMS:
                tracked.outputs[stream] = _Output.from_json(state["streams"].get(stream) or {})
            adopt_legacy_tables(instance.directory)  # before this shipper's first save
        except FileNotFoundError:
            self._save_later(tracked)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("logship.state_unreadable", path=str(state_path), error=str(exc))
        with self._registry:
            self._tracked[instance.directory] = tracked
        self._rotator.track(instance.directory)
        return tracked

    def _drop(self, tracked: _Tracked) -> None:
        with self._registry:
            self._tracked.pop(tracked.instance.directory, None)
        self._rotator.drop(tracked.instance.directory)
        _release(tracked)

    def _table(self, tracked: _Tracked, stream: str, size: int) -> Table:
        """``stream``'s table (hold :func:`locked`), for its live file of ``size`` bytes."""
        directory = tracked.instance.directory
        output = tracked.outputs[stream]
        tables = read_tables(directory)
        table = tables[stream]
        if table.rotations > output.rotations:
            self.rotations += table.rotations - output.rotations
            output.rotations = table.rotations
        if output.offset - table.base > size:
            # Truncated by someone else: what it holds now comes after what was shipped.
            log.warning("logship.file_shrank", path=str(directory / stream), size=size,
                        offset=output.offset - table.base)  # fmt: skip
            table.base = output.offset
            write_tables(directory, tables)
        return table

    async def _ship(self, tracked: _Tracked) -> tuple[bool, bool]:
        """Ship new output of both files: (more is waiting, everything up to EOF is shipped)."""
        more = False
        complete = True
        for stream in OUTPUT_STREAMS:
            stream_more, stream_complete = await self._ship_stream(tracked, stream)
            more = more or stream_more
            complete = complete and stream_complete
        return more, complete

    def _plan(self, tracked: _Tracked, stream: str, table: Table, size: int) -> tuple[bool, bool]:
        """Choose what to send next (a drop to announce, chunk ends; the caller saves them);
        returns (more output is waiting, everything up to EOF is shipped)."""
        output = tracked.outputs[stream]
        directory = tracked.instance.directory
        end = table.base + size
        if end == output.offset:
            return False, True
        tracked.allowance = refill(tracked.allowance, now=time.monotonic(), limits=self.limits)
        budget = min(int(tracked.allowance.tokens), READ_LIMIT)
        plan = plan_shipping(
            position=output.offset, end=end, oldest=table.available(output.offset),
            budget=budget, limits=self.limits,
        )  # fmt: skip
        # Skips may land where a rotation kept only a file's newest bytes: on from what is kept.
        start = table.available(plan.start)
        until = min(end, start + budget)
        if budget < min(self.chunk_bytes, end - start):
            return False, False  # the allowance refills while the loop sleeps
        name, at, segment_end = table.segment(start)
        limit = until - start if segment_end is None else min(until, segment_end) - start
        path = directory / f"{stream}{name}"
        data = _read(path, at, limit)
        if start > output.offset and at > 0 and _read(path, at - 1, 1) != b"\n":
            # Resume at the start of a line, not in the middle of one.
            newline = data.find(b"\n", 0, self.chunk_bytes)
            if newline != -1:
                data, start = data[newline + 1 :], start + newline + 1
        at_eof = segment_end is None and start + len(data) >= end
        cut = segment_end is not None and start + len(data) >= segment_end
        ends = plan_chunks(
            data, limit=self.chunk_bytes, final=cut or (tracked.finishing and at_eof)
        )
        if start > output.offset:
            output.dropped_to = start
        elif not ends:
            return until < end, False  # only an unfinished line so far
        output.pending = [start + e for e in ends]
        return until < end or not at_eof, False

    async def _ship_stream(self, tracked: _Tracked, stream: str) -> tuple[bool, bool]:
        instance = tracked.instance
        output = tracked.outputs[stream]
        more = False
        planned = False
        with tracked.lock:
            with locked(instance.directory):  # no rotation until the bytes are read
                size = _size(instance.directory / stream)
                table = self._table(tracked, stream, size)
                if not output.pending and output.dropped_to is None:
                    more, complete = self._plan(tracked, stream, table, size)
                    if complete or (not output.pending and output.dropped_to is None):
                        return more, complete
                    planned = True
                begin = output.dropped_to if output.dropped_to is not None else output.offset
                name, at, segment_end = table.segment(begin)
                data = b""
                if output.pending:
                    path = instance.directory / f"{stream}{name}"
                    data = _read(path, at, output.pending[-1] - begin)
                    if len(data) < output.pending[-1] - begin:
                        # Rotated away before it could be resent: announce it as dropped.
                        output.pending = []
                        output.dropped_to = max(begin, table.available(begin))
                        data = b""
            if planned:
                tracked.save()  # the boundaries, before sending
        subject = log_subject(instance.namespace, instance.pod, instance.container)
        try:
            if output.dropped_to is not None:
                count = output.dropped_to - output.offset
                marker = dropped_marker(count, mid_line=output.mid_line)
                await self._publish(tracked, subject, stream, output.offset, marker, partial=False)
                log.info("logship.dropped", directory=str(instance.directory), stream=stream,
                         bytes=count)  # fmt: skip
                self.dropped += count
                with tracked.lock:
                    output.offset, output.dropped_to = output.dropped_to, None
                    output.mid_line = False
            base = output.offset
            while output.pending:
                end = output.pending[0]
                chunk = data[output.offset - base : end - base]
                newline = chunk.endswith(b"\n")
                partial = not newline and (len(chunk) >= self.chunk_bytes or end == segment_end)
                if not newline and not partial:
                    chunk += b"\n"  # the unfinished last line of an exited container
                await self._publish(tracked, subject, stream, output.offset, chunk, partial=partial)
                tracked.allowance = spend(tracked.allowance or Allowance(0, 0), end - output.offset)
                with tracked.lock:  # a state saved by another thread sees both or neither
                    output.pending.pop(0)
                    output.offset, output.mid_line = end, partial
        except Exception as exc:  # NATS down or slow: retried on the next pass
            log.warning(
                "logship.publish_failed", directory=str(instance.directory), error=repr(exc)
            )
            return False, False
        finally:
            with contextlib.suppress(OSError):
                tracked.save()
        if more:
            return True, False
        with locked(instance.directory):
            end_now = read_tables(instance.directory)[stream].base + _size(
                instance.directory / stream
            )
        return False, output.offset == end_now

    async def _publish(
        self, tracked: _Tracked, subject: str, stream: str, offset: int, data: bytes, *,
        partial: bool,
    ) -> None:  # fmt: skip
        instance = tracked.instance
        headers = log_headers(
            pod_uid=instance.pod_uid, restart=instance.restart_count, stream=stream,
            offset=offset, data=data, partial=partial,
        )  # fmt: skip
        headers["Nats-Msg-Id"] = (
            f"{instance.pod_uid}:{instance.container}:{instance.restart_count}:{stream}:{offset}"
        )
        await self._js.publish(subject, data, timeout=self.publish_timeout, headers=headers)
        self.published += 1


def _release(tracked: _Tracked) -> None:
    for waiter in tracked.waiters:
        if not waiter.done():
            waiter.set_result(None)
    tracked.waiters.clear()


def _read(path: Path, offset: int, length: int) -> bytes:
    if length <= 0:
        return b""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(length)
    except FileNotFoundError:
        return b""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _save_all(batch: list[_Tracked]) -> None:
    """The first state files of a batch of new instances (a worker thread's job)."""
    for tracked in batch:
        with contextlib.suppress(OSError):  # removed meanwhile: nothing to resume
            tracked.save()


def _save(
    directory: Path, state: dict[str, Any], place: Callable[[Path], None] | None = None
) -> None:
    """Replace the state file atomically (a crash leaves the old one or the new one)."""
    path = directory / STATE_FILE
    temporary = directory / f"{STATE_FILE}.tmp"
    if place is not None:
        place(temporary)  # a spare empty file there, if there is one (not a new inode)
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)
