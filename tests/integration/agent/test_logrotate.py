"""The node's log rotator (``handlers.agent.logrotate``) on real files and processes: an idle
file wakes it on its next write, a writer that floods after a quiet is bounded within
milliseconds of its output, the rotator runs ahead of normal processes, and one that ends is
replaced by another that watches every directory the first did."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.pods.containerlogs import ContainerLogPolicy
from handlers.agent.logrotate import (
    NICE,
    SHORTEST_S,
    TABLE_FILE,
    Rotator,
    RotatorProcess,
    read_tables,
)
from tests.integration.agent.test_container_logs import ROTATOR_SLACK_S, written_bytes
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

POLICY = ContainerLogPolicy(max_size=1024 * 1024, max_files=3)


def instance_dir(root: Path, name: str = "uid") -> Path:
    directory = root / "pods" / name / "main" / "0"
    directory.mkdir(parents=True)
    for stream in ("stdout", "stderr"):
        (directory / stream).write_bytes(b"")
    return directory


@pytest.fixture
def rotator() -> Iterator[RotatorProcess]:
    process = RotatorProcess(POLICY)
    process.start()
    try:
        assert process.greeted(10)
        yield process
    finally:
        process.stop()


def test_an_idle_file_wakes_the_rotator_on_its_next_write(tmp_path: Path) -> None:
    directory = instance_dir(tmp_path)
    rotator = Rotator(POLICY)
    assert rotator.inotify is not None
    try:
        rotator.track(directory, time.monotonic())
        rotator.run_due(time.monotonic())  # both files looked at: empty, so idle
        assert rotator.armed == 2
        due = rotator.next_due()
        assert due is not None and due - time.monotonic() > 0.5  # no polling meanwhile

        with (directory / "stdout").open("ab") as out:
            out.write(b"x" * (2 * POLICY.max_size))
        readable, _, _ = select.select([rotator.inotify], [], [], 5)
        assert readable  # the write woke it ...
        rotator.notified()
        due = rotator.next_due()
        assert due is not None and due <= time.monotonic()  # ... and the file is due now
        assert rotator.armed == 1  # stdout is looked at on a schedule from now on
        rotator.run_due(time.monotonic())
        assert rotator.rotations == 1 and (directory / "stdout").stat().st_size == 0
        assert read_tables(directory)["stdout"].base == 2 * POLICY.max_size
    finally:
        rotator.inotify.close()


def test_a_writer_flooding_after_a_quiet_is_bounded_within_milliseconds(
    rotator: RotatorProcess, tmp_path: Path
) -> None:
    directory = instance_dir(tmp_path)
    rotator.track(directory)
    time.sleep(0.3)  # looked at, found quiet: watched for its next write
    yes = shutil.which("yes") or "/usr/bin/yes"
    with (directory / "stdout").open("ab") as out:
        writer = subprocess.Popen([yes], stdout=out)
    try:
        began, written = time.monotonic(), written_bytes(writer.pid)
        sizes = []
        while time.monotonic() - began < 1.0:
            sizes.append((directory / "stdout").stat().st_size)
            time.sleep(0.001)
        rate = (written_bytes(writer.pid) - written) / (time.monotonic() - began)
    finally:
        writer.kill()
        writer.wait()
    table = json.loads((directory / TABLE_FILE).read_text())["streams"]["stdout"]
    assert table["rotations"] > 10
    assert max(sizes) <= POLICY.max_size + rate * (SHORTEST_S + ROTATOR_SLACK_S), (rate, sizes)


def test_the_rotator_runs_ahead_of_normal_processes(rotator: RotatorProcess) -> None:
    assert rotator.pid is not None
    if os.geteuid() == 0:  # allowed to: real-time, at the lowest priority
        assert os.sched_getscheduler(rotator.pid) == os.SCHED_FIFO
        assert os.sched_getparam(rotator.pid).sched_priority == 1
    else:  # else nice NICE where allowed, as the agent otherwise
        assert os.getpriority(os.PRIO_PROCESS, rotator.pid) in (NICE, os.getpriority(0, 0))


async def test_a_rotator_that_ended_is_replaced_and_told_everything(
    rotator: RotatorProcess, tmp_path: Path
) -> None:
    first = instance_dir(tmp_path, "a")
    second = instance_dir(tmp_path, "b")
    rotator.track(first)
    rotator.track(second)
    rotator.drop(first)
    pid = rotator.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def replaced() -> bool:
        rotator.check()  # what the shipper does every pass
        return rotator.starts == 2

    await eventually(replaced, timeout=10)
    assert rotator.pid not in (None, pid)
    assert await asyncio.to_thread(rotator.greeted, 10)
    for directory in (first, second):
        (directory / "stdout").write_bytes(b"y\n" * POLICY.max_size)

    async def rotated() -> bool:
        return (second / "stdout").stat().st_size == 0

    await eventually(rotated, timeout=10)
    await asyncio.sleep(0.2)
    assert (first / "stdout").stat().st_size == 2 * POLICY.max_size  # dropped: not watched
