"""Rotates containers' output files in a process of its own, beside the node agent.

Why this exists: copy-truncate rotation (``handlers.agent.logship``'s module docstring) bounds a
file only by looking at it, so a writer as fast as ``yes`` (~1 GB/s) overshoots the maximum
size by what it writes until the rotator's next look. A rotation thread inside the agent was
late by 30-170 ms under load (issue 15's flaky ``yes`` test: files of 120-180 MB against 1 MiB):
it shared the agent's interpreter lock with the event loop shipping the flood (each of its ~10
system calls a pass took the lock back, each time behind the loop), it was a normal-priority
thread on a host whose two cores were busy, and a check that happened to find the file below
the size sent it back to its idle 0.1 s interval. So the rotation runs here:

* **A process of its own** (``python -m handlers.agent.logrotate``, started by the shipper, one
  per agent), single-threaded, so no work of the agent can hold it; scheduled ahead of the
  containers and the agent (real-time at the lowest priority where allowed, else nice
  :data:`NICE`), so a loaded host's busy processes do not delay it either. It dies with its
  agent (``PR_SET_PDEATHSIG``, and the end of its command pipe); a restarted agent starts a
  new one before it starts or adopts any container, and an agent whose rotator ended starts
  another.
* **Each file looked at when it would reach the size** (:func:`core.pods.containerlogs.next_check`):
  a flooded file every 2 ms, one being written to at least every 10 ms, and an idle one when
  it is next written to (inotify wakes the rotator; then it is looked at again 2 ms later to
  learn how fast it grows). The overshoot of the size is then what the writer adds in 2 ms
  plus the rotator's own delays (its wake-up, the copy of the last bytes), measured in
  docs/benchmarks.md.
* **From the first byte**: the pod worker names an instance's directory before it starts the
  container (``LogSink.expect``); its files are looked for every 10 ms until they appear, then
  watched, so a writer that floods from its start is caught within milliseconds, not when
  the agent's loop gets to tracking it (50-250 ms later under load: 50-250 MB of ``yes``).
* **Its own table file**: the rotated files kept (number, logical start, length), where the
  live file starts and the rotations done, per stream, in ``.rotated.json`` (written in place
  right after the truncation it describes, :func:`write_tables`); the shipper's positions stay
  in ``.shipped.json``. An instance rotated by an older agent has its tables in
  ``.shipped.json``: the shipper copies them when it resumes the instance
  (:func:`adopt_legacy_tables`).
* **The shipper and the rotator take turns per instance** with ``flock`` on the instance's
  directory (:func:`locked`): the shipper holds it while it reads the table and the files'
  bytes; the rotator while it changes the table and truncates (the copy of the bulk into the
  new rotated file happens before, outside the lock: no one reads that file yet).

The agent sends the directories to watch on the process' standard input, one JSON array a line
(``["track", path]``, ``["drop", path]``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import json
import math
import os
import select
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from inotify_simple import INotify, flags

from core.pods.containerlogs import (
    ContainerLogPolicy,
    flooded,
    growth_rate,
    next_check,
    plan_rotation,
)

log = structlog.get_logger(__name__)

TABLE_FILE = ".rotated.json"
LEGACY_STATE_FILE = ".shipped.json"
"""Where an older agent kept the tables, with the shipper's positions."""
STREAMS = ("stdout", "stderr")
SHORTEST_S = 0.002
"""A flooded file is looked at this often: the overshoot is what its writer adds meanwhile."""
WARM_S = 0.01
"""A file written to is looked at at least this often (if its writer starts flooding)."""
IDLE_POLL_S = 5.0
"""A file not written to is looked at when it is (inotify), and this often in case an event
was lost."""
LONGEST_S = 0.05
"""Without inotify, an idle file is looked at this often."""
ARRIVAL_S = 0.01
"""A file expected but not there yet is looked for this often ..."""
ARRIVAL_WAIT_S = 5.0
"""... for this long (a start takes milliseconds to a few tenths); then every LONGEST_S."""
REALTIME_PRIORITY = 1
"""The rotator runs ``SCHED_FIFO`` at the lowest real-time priority: it takes a core as soon
as it wakes (measured: late by 0.1 ms at p99 with both cores busy, against 4-8 ms at nice -10),
for the little it does (a ``stat`` per look, a rotation a few ms), and the kernel's real-time
throttling (``sched_rt_runtime_us``, 95%) keeps even a runaway one from taking a whole core."""
NICE = -10
"""Where real-time scheduling is refused: ahead of the containers and the agent (nice 0)."""
PR_SET_PDEATHSIG = 1
STOP_WAIT_S = 2.0
RETRY_S = 1.0
"""A rotator that could not be started is tried again this often."""


@dataclass
class Table:
    """One output stream's files, in logical positions (bytes since the instance started)."""

    base: int = 0
    """Where the live file's first byte is."""
    rotated: list[list[int]] = field(default_factory=list)
    """``[number, start, length]`` of each rotated file kept, oldest first."""
    next_number: int = 1
    rotations: int = 0
    """Rotations done (the shipper counts them for stats and tests)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "rotated": self.rotated,
            "next_number": self.next_number,
            "rotations": self.rotations,
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Table:
        return cls(
            base=int(saved.get("base", 0)),
            rotated=[[int(n), int(s), int(length)] for n, s, length in saved.get("rotated", [])],
            next_number=int(saved.get("next_number", 1)),
            rotations=int(saved.get("rotations", 0)),
        )

    def available(self, position: int) -> int:
        """The first byte at or after ``position`` still on disk."""
        for _, start, length in self.rotated:
            if position < start:
                return start
            if position < start + length:
                return position
        return max(position, self.base)

    def segment(self, position: int) -> tuple[str, int, int | None]:
        """(file name suffix, position in that file, logical end of that file or None for the
        live file) of the byte at ``position`` (which :meth:`available` returned)."""
        for number, start, length in self.rotated:
            if start <= position < start + length:
                return f".{number}", position - start, start + length
        return "", position - self.base, None


def read_tables(directory: Path, name: str = TABLE_FILE) -> dict[str, Table]:
    """The instance's tables (hold :func:`locked`), those of files never rotated if it has
    none; ``name`` :data:`LEGACY_STATE_FILE` reads an older agent's."""
    try:
        streams = json.loads((directory / name).read_bytes())["streams"]
        return {s: Table.from_json(streams.get(s) or {}) for s in STREAMS}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("logrotate.table_unreadable", path=str(directory / name), error=str(exc))
    return {s: Table() for s in STREAMS}


def adopt_legacy_tables(directory: Path) -> None:
    """An instance an older agent rotated keeps its tables in ``.shipped.json``: copy them to
    ``.rotated.json`` (once, before anything else writes either)."""
    with locked(directory):
        if (directory / TABLE_FILE).exists():
            return
        tables = read_tables(directory, LEGACY_STATE_FILE)
        if any(t.base or t.rotated for t in tables.values()):
            write_tables(directory, tables)


def write_tables(directory: Path, tables: dict[str, Table]) -> None:
    """Write ``.rotated.json`` (hold :func:`locked`) in place, with one ``pwrite`` (spaces
    after the JSON where the last was longer): a process that dies leaves the old or the new,
    and no inode is made. A new file and a rename, as ``.shipped.json`` is saved, took up to
    45 ms with the disk busy (reading the inode tables behind a flood's writeback), all that
    time the flood's file growing unlooked at."""
    data = json.dumps({"streams": {s: t.as_json() for s, t in tables.items()}}).encode()
    fd = os.open(directory / TABLE_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data.ljust(os.fstat(fd).st_size), 0)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """The instance's tables and files to oneself: an exclusive ``flock`` on its directory
    (released with the descriptor, also when the holder dies)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def rotate(
    directory: Path, stream: str, policy: ContainerLogPolicy, size: int, *, flood: bool = False
) -> bool:
    """Rotate ``directory/stream`` (found at ``size`` bytes) if it reached the maximum size;
    True if it was. Copies the newest bytes to ``stream.<n>`` (none for a flood: ``flood``,
    its writer's rate, or a file found at twice the size), truncates
    the live file, writes the new table, removes rotated files beyond the count.

    The truncation comes as soon as the last bytes are copied, before the table is written:
    the writer's output between the last look and the truncation is the overshoot. A rotator that
    dies between the two leaves the old table with a shorter live file, which the shipper
    takes for a truncation by someone else (it goes on from where it was, logged).
    """
    if size < policy.max_size:
        return False
    try:
        fd = os.open(directory / stream, os.O_RDWR)
    except FileNotFoundError:
        return False
    out: int | None = None
    target: Path | None = None
    try:
        size = os.fstat(fd).st_size
        table = read_tables(directory)[stream]  # only rotators change it: one at a time
        numbers = [n for n, _, _ in table.rotated]
        plan = plan_rotation(size=size, rotated=numbers, policy=policy, flood=flood)
        if plan is None:
            return False
        number = table.next_number
        if plan.copies:  # the bulk outside the lock: the shipper does not know this file yet
            target = directory / f"{stream}.{number}"
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            _copy(fd, out, plan.keep_from, size)
        with locked(directory):
            # What was written meanwhile, then at once the truncation: only bytes written
            # between this fstat and the truncation are lost.
            tables = read_tables(directory)
            table = tables[stream]
            now = os.fstat(fd).st_size
            if now < size or table.next_number != number:  # another rotator was first
                if target is not None:
                    os.unlink(target)
                return False
            if out is not None:
                _copy(fd, out, size, now)
            os.ftruncate(fd, 0)
            if out is not None:
                table.rotated.append([number, table.base + plan.keep_from, now - plan.keep_from])
                table.next_number = number + 1
            table.base += now
            gone = [n for n, _, _ in table.rotated if n in plan.remove]
            table.rotated = [entry for entry in table.rotated if entry[0] not in plan.remove]
            table.rotations += 1
            write_tables(directory, tables)
            for n in gone:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(directory / f"{stream}.{n}")
        return True
    finally:
        if out is not None:
            os.close(out)
        os.close(fd)


def _copy(source: int, target: int, start: int, end: int) -> None:
    """Append ``source``'s bytes ``[start, end)`` to ``target``, in the kernel."""
    position = start
    while position < end:
        copied = os.copy_file_range(source, target, end - position, position)
        if copied == 0:
            break  # the source ended early
        position += copied


@dataclass
class _Watch:
    path: str
    directory: Path
    stream: str
    due: float
    since: float
    """When it was first watched."""
    appeared: bool = False
    """The file was seen (before: it is expected, its container not started yet)."""
    size: int = 0
    at: float = 0.0
    rate: float = 0.0
    """Its estimated rate of growth (:func:`growth_rate`)."""
    wd: int | None = None
    """Its inotify watch while it is idle (its next write wakes the rotator)."""
    woken: bool = False
    """Its last check was for a write to an idle file: look again soon, to learn the rate."""


class Rotator:
    """Looks at each watched live file when it is due (:func:`next_check`), or at once when an
    idle one is written to, and rotates it; the rotator process' loop."""

    def __init__(self, policy: ContainerLogPolicy, *, notify: bool = True) -> None:
        self.policy = policy
        self._watches: dict[str, _Watch] = {}
        self._armed: dict[int, _Watch] = {}
        self._due: list[tuple[float, str]] = []
        self.rotations = 0
        self.inotify: INotify | None = None
        if notify:
            try:
                self.inotify = INotify(nonblocking=True)
            except OSError as exc:  # no inotify: idle files are polled every LONGEST_S
                log.warning("logrotate.no_inotify", error=str(exc))

    def track(self, directory: Path, now: float) -> None:
        """Watch ``directory``'s files. Until they appear only the first is looked for (they
        are made together): half the looks while a burst of containers is being started."""
        for n, stream in enumerate(STREAMS):
            path = str(directory / stream)
            if path not in self._watches:
                watch = _Watch(path, directory, stream, due=math.inf, since=now)
                self._watches[path] = watch
                if n == 0:
                    self._schedule(watch, now)

    def drop(self, directory: Path) -> None:
        for stream in STREAMS:
            watch = self._watches.pop(str(directory / stream), None)
            if watch is not None:
                self._disarm(watch)

    @property
    def watched(self) -> int:
        return len(self._watches)

    @property
    def armed(self) -> int:
        return len(self._armed)

    def next_due(self) -> float | None:
        while self._due:
            due, path = self._due[0]
            watch = self._watches.get(path)
            if watch is not None and watch.due == due:
                return due
            heapq.heappop(self._due)  # dropped, or rescheduled since
        return None

    def run_due(self, now: float) -> None:
        """Look at every file due by ``now``."""
        while (due := self.next_due()) is not None and due <= now:
            _, path = heapq.heappop(self._due)
            self._check(self._watches[path])
            now = time.monotonic()

    def notified(self) -> None:
        """Idle files were written to (the inotify descriptor is readable): due now."""
        if self.inotify is None:
            return
        now = time.monotonic()
        for event in self.inotify.read(timeout=0):
            if event.wd == -1:  # the queue overflowed: any idle file may have been written
                for watch in list(self._armed.values()):
                    self._woken(watch, now)
                continue
            watch = self._armed.get(event.wd)
            if watch is not None:
                self._woken(watch, now)

    def _woken(self, watch: _Watch, now: float) -> None:
        self._disarm(watch)  # one wake-up: from now on it is looked at on a schedule
        watch.woken = True
        self._schedule(watch, now)

    def _check(self, watch: _Watch) -> None:
        now = time.monotonic()
        try:
            size = os.stat(watch.path).st_size
        except FileNotFoundError:
            if watch.appeared and not watch.directory.is_dir():
                self.drop(watch.directory)  # its pod's files are gone
                return
            waited = now - watch.since
            self._schedule(watch, now + (ARRIVAL_S if waited < ARRIVAL_WAIT_S else LONGEST_S))
            return
        if not watch.appeared:  # its container starts about now
            watch.appeared, watch.size, watch.at = True, 0, watch.since
            for stream in STREAMS[1:]:  # looked for with this one: looked at from now on
                sibling = self._watches.get(str(watch.directory / stream))
                if sibling is not None and not sibling.appeared and sibling.due == math.inf:
                    self._schedule(sibling, now)
        grown = max(0, size - watch.size)
        watch.rate = growth_rate(
            watch.rate, grown=grown, elapsed=now - watch.at, resolution=SHORTEST_S
        )
        woken, watch.woken = watch.woken, False
        try:
            flood = flooded(watch.rate)
            if size >= self.policy.max_size and rotate(
                watch.directory, watch.stream, self.policy, size, flood=flood
            ):
                self.rotations += 1
                now, size, grown = time.monotonic(), 0, 1  # about: the writer may have added
        except OSError as exc:  # never let the loop die: the disk would fill
            log.warning("logrotate.rotate_failed", path=watch.path, error=str(exc))
        watch.size, watch.at = size, now
        if woken:  # written after a quiet: how fast, the next look tells
            self._schedule(watch, now + SHORTEST_S)
        elif grown:
            self._disarm(watch)  # armed, its write seen by a poll: events would flood us
            wait = next_check(
                size=size, rate=watch.rate, policy=self.policy, shortest=SHORTEST_S,
                longest=WARM_S,
            )  # fmt: skip
            self._schedule(watch, now + wait)
        else:
            self._idle(watch, size, now)

    def _idle(self, watch: _Watch, size: int, now: float) -> None:
        """Not written since the last look: wake on its next write (a poll now and then in
        case an event is lost), or without inotify poll it every :data:`LONGEST_S`."""
        if not self._arm(watch):
            self._schedule(watch, now + LONGEST_S)
            return
        try:  # written between the last look and the arming: no event for that
            if os.stat(watch.path).st_size != size:
                self._woken(watch, now)
                return
        except FileNotFoundError:
            pass
        self._schedule(watch, now + IDLE_POLL_S)

    def _arm(self, watch: _Watch) -> bool:
        if watch.wd is not None:
            return True
        if self.inotify is None:
            return False
        try:
            watch.wd = self.inotify.add_watch(watch.path, flags.MODIFY)
        except OSError:  # gone, or too many watches: polled instead
            return False
        self._armed[watch.wd] = watch
        return True

    def _disarm(self, watch: _Watch) -> None:
        wd, watch.wd = watch.wd, None
        if wd is None or self.inotify is None:
            return
        self._armed.pop(wd, None)
        with contextlib.suppress(OSError):  # its file is gone: the kernel removed the watch
            self.inotify.rm_watch(wd)

    def _schedule(self, watch: _Watch, due: float) -> None:
        watch.due = due
        heapq.heappush(self._due, (due, watch.path))


# -- the process --------------------------------------------------------------------------------


def serve(policy: ContainerLogPolicy, commands: int, greeting: int | None = None) -> None:
    """Watch what the agent says on ``commands`` (a pipe) until it closes it; say "ready" on
    ``greeting`` once listening."""
    rotator = Rotator(policy)
    os.set_blocking(commands, False)
    selector = selectors.DefaultSelector()
    selector.register(commands, selectors.EVENT_READ, "commands")
    if rotator.inotify is not None:
        selector.register(rotator.inotify.fileno(), selectors.EVENT_READ, "inotify")
    pending = b""
    _greet(greeting)
    while True:
        due = rotator.next_due()
        timeout = None if due is None else max(0.0, due - time.monotonic())
        ready = {key.data for key, _ in selector.select(timeout)}
        if "inotify" in ready:
            rotator.notified()
        if "commands" in ready:
            try:
                data = os.read(commands, 1 << 16)
            except BlockingIOError:
                data = None
            if data == b"":
                return  # the agent is gone
            if data:
                pending += data
                *lines, pending = pending.split(b"\n")
                now = time.monotonic()
                for line in lines:
                    _command(rotator, line, now)
        rotator.run_due(time.monotonic())


def _greet(greeting: int | None) -> None:
    """Tell the agent the rotator watches what it is told from now on (on a pipe that is
    closed then: nothing else is written where no one reads)."""
    if greeting is None:
        return
    with contextlib.suppress(OSError):
        os.write(greeting, b"ready\n")
    os.close(greeting)


def _command(rotator: Rotator, line: bytes, now: float) -> None:
    try:
        verb, path = json.loads(line)
    except ValueError:
        log.warning("logrotate.bad_command", line=line[:200])
        return
    if verb == "track":
        rotator.track(Path(path), now)
    elif verb == "drop":
        rotator.drop(Path(path))


def _raise_priority() -> None:
    """Real-time (``SCHED_FIFO``, the lowest priority) where allowed, else nice
    :data:`NICE`, else as the agent (logged)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
        return
    except OSError as exc:  # no CAP_SYS_NICE, or a cgroup without real-time time
        refused = str(exc)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except OSError as exc:
        log.warning("logrotate.normal_priority", realtime=refused, nice=str(exc))


def main() -> None:
    max_size, max_files, agent = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != agent:
        return  # the agent ended before the death signal was armed
    _raise_priority()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent's terminal's ^C is the agent's
    greeting = os.dup(sys.stdout.fileno())  # the agent's pipe; logs (on stdout) go to stderr
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    policy = ContainerLogPolicy(max_size=max_size, max_files=max_files)
    serve(policy, sys.stdin.fileno(), greeting)


# -- the agent's side ---------------------------------------------------------------------------


class RotatorProcess:
    """The agent's handle on its rotator process: starts it, tells it what to watch (without
    ever blocking the caller), starts another if it ended, stops it."""

    def __init__(self, policy: ContainerLogPolicy) -> None:
        self.policy = policy
        self._process: subprocess.Popen[bytes] | None = None
        self._watched: set[Path] = set()
        self._unsent = b""
        self._tried: float | None = None
        """When a start was last tried (None: never, or stopped)."""
        self._greeted = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the process (from the thread that lives as long as the agent: the death
        signal is armed for the end of the thread that forked it). One that cannot be started
        is logged and tried again by :meth:`check`."""
        self._tried = time.monotonic()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "handlers.agent.logrotate", str(self.policy.max_size),
                 str(self.policy.max_files), str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            log.error("logship.rotator_not_started", error=str(exc))
            return
        assert self._process.stdin is not None
        os.set_blocking(self._process.stdin.fileno(), False)
        self.starts += 1
        self._unsent = b"".join(_line("track", d) for d in sorted(self._watched))
        self.flush()

    @property
    def started(self) -> bool:
        return self._process is not None

    def greeted(self, timeout: float) -> bool:
        """Whether it serves (waiting up to ``timeout`` for its greeting: its interpreter's
        start, ~0.1 s); blocking, for a worker thread."""
        process = self._process
        if self._greeted or process is None or process.stdout is None:
            return self._greeted
        readable, _, _ = select.select([process.stdout.fileno()], [], [], timeout)
        if readable:
            self._greeted = os.read(process.stdout.fileno(), 64).startswith(b"ready")
        return self._greeted

    def track(self, directory: Path) -> None:
        if directory not in self._watched:
            self._watched.add(directory)
            self._send(_line("track", directory))

    def drop(self, directory: Path) -> None:
        if directory in self._watched:
            self._watched.discard(directory)
            self._send(_line("drop", directory))

    def check(self) -> None:
        """Start another rotator if this one ended (logged: files grew unbounded meanwhile)
        or could not be started (at most once a :data:`RETRY_S`)."""
        if self._process is None:
            if self._tried is not None and time.monotonic() - self._tried >= RETRY_S:
                self.start()
            return
        if self._process.poll() is None:
            self.flush()
            return
        log.error("logship.rotator_ended", pid=self._process.pid, code=self._process.returncode)
        self._close()
        self.start()

    def flush(self) -> None:
        process = self._process
        if not self._unsent or process is None or process.stdin is None:
            return
        try:
            written = os.write(process.stdin.fileno(), self._unsent)
        except BlockingIOError:
            return  # its pipe is full: the rest on the next pass
        except BrokenPipeError:
            return  # ended: check() starts another, which is sent everything
        self._unsent = self._unsent[written:]

    def _send(self, line: bytes) -> None:
        self._unsent += line
        self.flush()

    def stop(self) -> None:
        """Close its pipe (it ends at once), wait briefly, kill it if it did not."""
        process = self._process
        self._tried = None
        if process is None:
            return
        self._close()
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _close(self) -> None:
        process, self._process = self._process, None
        self._greeted = False
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


def _line(verb: str, directory: Path) -> bytes:
    return json.dumps([verb, str(directory)]).encode() + b"\n"


if __name__ == "__main__":
    main()
