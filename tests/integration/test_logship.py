"""The log shipper against a real nats-server: it tails files while they are written, ships
only complete lines (until the container exits), splits overlong lines, resumes after an
agent restart without a line shown twice, reads across rotations, and skips what is beyond
its limits with a marker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from core.pods.containerlogs import ContainerLogPolicy, ShippingLimits
from handlers.agent.logrotate import TABLE_FILE
from handlers.agent.logship import (
    SPARE_SAVES,
    SPARES_DIR,
    STATE_FILE,
    ContainerInstance,
    LogShipper,
)
from streams.telemetry import LOGS_STREAM, MAX_CHUNK_BYTES, read_logs
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

UID = "0b5c7f6e-uid"


def instance_dir(root: Path, restart: int = 0) -> Path:
    directory = root / "pods" / UID / "main" / str(restart)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def instance(directory: Path, restart: int = 0) -> ContainerInstance:
    return ContainerInstance(
        namespace="default",
        pod="web",
        pod_uid=UID,
        container="main",
        restart_count=restart,
        directory=directory,
    )


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


async def logs(nc: Client, **options: object) -> bytes:
    return b"".join([c async for c in read_logs(nc, "default", "web", "main", **options)])


async def stored_messages(nc: Client) -> int:
    reply = await nc.request(f"$JS.API.STREAM.INFO.{LOGS_STREAM}", b"", timeout=5)
    return json.loads(reply.data)["state"]["messages"]


@contextlib.asynccontextmanager
async def running(shipper: LogShipper) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(shipper.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_lines_are_shipped_as_they_are_written(nc: Client, tmp_path: Path) -> None:
    directory = instance_dir(tmp_path)
    stdout, stderr = directory / "stdout", directory / "stderr"
    stdout.write_bytes(b"")
    shipper = LogShipper(nc, tmp_path, poll_interval=0.05)
    async with running(shipper):
        shipper.track(instance(directory))
        append(stdout, b"starting\nlisten")
        append(stderr, b"warning: no config\n")

        async def shipped(expected: bytes) -> bool:
            return await logs(nc, pod_uid=UID) == expected

        await eventually(lambda: shipped(b"starting\nwarning: no config\n"))
        await asyncio.sleep(0.2)  # the unfinished line stays on the node ...
        assert await logs(nc, pod_uid=UID) == b"starting\nwarning: no config\n"
        append(stdout, b"ing on :8080\n")  # ... until its newline arrives
        await eventually(lambda: shipped(b"starting\nwarning: no config\nlistening on :8080\n"))
        append(stdout, b"bye")  # the container exits without a final newline
        await asyncio.wait_for(shipper.finish(instance(directory)), 10)
        assert (await logs(nc, pod_uid=UID)).endswith(b"listening on :8080\nbye\n")
        assert json.loads((directory / STATE_FILE).read_text())["finished"] is True
        assert await logs(nc, pod_uid=UID, tail=2) == b"listening on :8080\nbye\n"


async def test_a_long_line_is_split_and_read_back_whole(nc: Client, tmp_path: Path) -> None:
    directory = instance_dir(tmp_path)
    line = b"".join(b"%07d," % i for i in range(3 * MAX_CHUNK_BYTES // 8)) + b"\n"
    (directory / "stdout").write_bytes(b"before\n" + line + b"after\n")
    shipper = LogShipper(nc, tmp_path, poll_interval=0.05)
    async with running(shipper):
        await asyncio.wait_for(shipper.finish(instance(directory)), 10)
    assert await stored_messages(nc) >= 4
    assert await logs(nc, pod_uid=UID) == b"before\n" + line + b"after\n"
    assert await logs(nc, pod_uid=UID, tail=2) == line + b"after\n"
    assert await logs(nc, pod_uid=UID, tail=1) == b"after\n"


async def test_a_restarted_shipper_resumes_without_duplicates(nc: Client, tmp_path: Path) -> None:
    directory = instance_dir(tmp_path)
    stdout = directory / "stdout"
    stdout.write_bytes(b"".join(b"line %05d\n" % i for i in range(20_000)))  # ~ 7 chunks

    # The first agent is killed while publishing: what it recorded at the third publish is
    # what the next one finds (the chunk boundaries were written down before sending).
    first = LogShipper(nc, tmp_path, poll_interval=0.05)
    real_publish = first._js.publish
    calls = 0
    crash_state = tmp_path / "state-at-crash.json"

    async def publish(*a: object, **kw: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            shutil.copy(directory / STATE_FILE, crash_state)
        return await real_publish(*a, **kw)

    first._js.publish = publish  # type: ignore[method-assign]
    async with running(first):
        first.track(instance(directory))
        await eventually(lambda: _is_shipped(directory, stdout))
    shipped_before = await stored_messages(nc)
    assert calls > 3
    shutil.copy(crash_state, directory / STATE_FILE)
    assert json.loads(crash_state.read_text())["streams"]["stdout"]["pending"]
    append(stdout, b"after the restart\n")

    second = LogShipper(nc, tmp_path, poll_interval=0.05)
    async with running(second):
        await asyncio.sleep(0.05)
        assert second.resume_all() == 0  # run() found it already
        second.track(instance(directory))  # what the agent does for an adopted container: no-op
        await eventually(lambda: _is_shipped(directory, stdout))
    assert second.published > 1  # it resent chunks the first one had sent ...
    assert await stored_messages(nc) == shipped_before + 1  # ... and JetStream kept one copy
    text = (await logs(nc, pod_uid=UID)).decode().splitlines()
    assert text == [f"line {i:05d}" for i in range(20_000)] + ["after the restart"]


async def _is_shipped(directory: Path, stdout: Path) -> bool:
    return await asyncio.to_thread(_shipped, directory, stdout)


def _shipped(directory: Path, stdout: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((directory / STATE_FILE).read_text())["streams"]["stdout"]
        return state["offset"] == stdout.stat().st_size and not state["pending"]
    return False


async def test_cancelling_flushes_and_a_new_shipper_picks_up(nc: Client, tmp_path: Path) -> None:
    directory = instance_dir(tmp_path, restart=2)
    stdout = directory / "stdout"
    stdout.write_bytes(b"a\n")
    first = LogShipper(nc, tmp_path, poll_interval=30)  # it would not poll again by itself
    async with running(first):
        first.track(instance(directory, 2))
        await eventually(lambda: _is_shipped(directory, stdout))
        append(stdout, b"b\n")
    # cancelled: the last pass on the way out shipped "b"
    assert await logs(nc, pod_uid=UID) == b"a\nb\n"
    append(stdout, b"c\n")
    second = LogShipper(nc, tmp_path, poll_interval=0.05)
    async with running(second):
        await eventually(lambda: _is_shipped(directory, stdout))  # found from .shipped.json
    assert await logs(nc, pod_uid=UID) == b"a\nb\nc\n"
    assert await stored_messages(nc) == 3


async def test_rotated_output_is_read_back_whole_and_in_order(nc: Client, tmp_path: Path) -> None:
    directory = instance_dir(tmp_path)
    stdout = directory / "stdout"
    stdout.write_bytes(b"")
    policy = ContainerLogPolicy(max_size=8 * 1024, max_files=3)
    shipper = LogShipper(nc, tmp_path, policy=policy, poll_interval=0.02)
    lines = [b"line %06d %s\n" % (i, b"x" * (i % 50)) for i in range(4_000)]
    complete = 0  # bytes of whole lines written so far

    async def caught_up() -> bool:  # rotation removes what is left unshipped too long
        return shipper._tracked[directory].outputs["stdout"].offset >= complete

    async with running(shipper):
        shipper.track(instance(directory))
        for start in range(0, len(lines), 100):
            batch = b"".join(lines[start : start + 100])
            # Each write ends mid-line, so rotations cut lines in two; the reader joins them.
            append(stdout, batch[:-3])
            complete += len(batch) - len(lines[start + 99])
            await eventually(caught_up)
            await asyncio.to_thread(shipper.rotate_once)
            append(stdout, batch[-3:])
            complete += len(lines[start + 99])
            await asyncio.sleep(0.01)
            kept = sorted(p.name for p in directory.iterdir() if p.name.startswith("stdout."))
            assert len(kept) <= policy.max_files - 1, kept
        await asyncio.wait_for(shipper.finish(instance(directory)), 20)
    assert shipper.rotations >= 10
    assert shipper.dropped == 0
    assert await logs(nc, pod_uid=UID) == b"".join(lines)
    assert await logs(nc, pod_uid=UID, tail=3) == b"".join(lines[-3:])
    on_disk = sum(p.stat().st_size for p in directory.iterdir() if p.name.startswith("stdout"))
    assert on_disk <= policy.max_size * policy.max_files


async def test_output_beyond_the_shipping_limits_is_skipped_with_a_marker(
    nc: Client, tmp_path: Path
) -> None:
    directory = instance_dir(tmp_path)
    lines = [b"line %07d\n" % i for i in range(400_000)]  # 5.2 MB written at once
    written = b"".join(lines)
    (directory / "stdout").write_bytes(written)
    limits = ShippingLimits(rate=64 * 1024, burst=64 * 1024, backlog=64 * 1024)
    shipper = LogShipper(nc, tmp_path, limits=limits, poll_interval=0.05)
    async with running(shipper):
        await asyncio.wait_for(shipper.finish(instance(directory)), 20)
    shown = await logs(nc, pod_uid=UID)
    marker, _, rest = shown.partition(b"\n")
    dropped = int(marker.removeprefix(b"[fleetlog: ").removesuffix(b" bytes of output dropped]"))
    assert dropped == shipper.dropped
    assert dropped + len(rest) == len(written)  # nothing shipped twice, nothing lost unsaid
    assert written.endswith(rest) and rest.startswith(b"line ")  # the newest, from a line start
    assert len(rest) <= limits.backlog
    assert await stored_messages(nc) <= 1 + limits.backlog // MAX_CHUNK_BYTES + 1


async def test_a_burst_of_new_instances_is_written_down_off_the_loop_in_one_job(
    nc: Client, tmp_path: Path
) -> None:
    """Tracking a burst of new instances writes no file on the event loop (each write there
    waits for the interpreter lock behind the burst's container starts): their first state
    files are written together by one worker-thread job, before anything of them is shipped,
    and a restarted shipper resumes every one of them."""
    directories = []
    for n in range(20):
        directory = tmp_path / "pods" / f"uid-{n}" / "main" / "0"
        directory.mkdir(parents=True)
        (directory / "stdout").write_bytes(f"hello {n}\n".encode())
        directories.append(directory)
    shipper = LogShipper(nc, tmp_path, poll_interval=0.05)
    for n, directory in enumerate(directories):
        new = ContainerInstance(
            namespace="default", pod=f"web-{n}", pod_uid=f"uid-{n}", container="main",
            restart_count=0, directory=directory,
        )  # fmt: skip
        shipper.track(new)
    assert not [d for d in directories if (d / STATE_FILE).exists()]
    await shipper.saved()
    written = [json.loads((d / STATE_FILE).read_text()) for d in directories]
    assert [state["pod"] for state in written] == [f"web-{n}" for n in range(20)]
    assert all(state["streams"]["stdout"]["offset"] == 0 for state in written)
    assert LogShipper(nc, tmp_path).resume_all() == 20
    async with running(shipper):
        await eventually(lambda: _is_shipped(directories[-1], directories[-1] / "stdout"))
    read = [c async for c in read_logs(nc, "default", "web-19", "main", pod_uid="uid-19")]
    assert b"".join(read) == b"hello 19\n"


async def test_an_instance_tracked_while_a_batch_is_being_written_is_written_too(
    nc: Client, tmp_path: Path
) -> None:
    """The next turn's new instances make a batch of their own, even while the previous
    batch is still being written."""
    shipper = LogShipper(nc, tmp_path, poll_interval=0.05)
    directories = []
    for n in range(2):
        directory = tmp_path / "pods" / f"uid-{n}" / "main" / "0"
        directory.mkdir(parents=True)
        directories.append(directory)
        shipper.track(
            ContainerInstance(namespace="default", pod=f"web-{n}", pod_uid=f"uid-{n}",
                              container="main", restart_count=0, directory=directory)
        )  # fmt: skip
        await asyncio.sleep(0)  # the first batch is handed to a worker thread
    await shipper.saved()
    assert [(d / STATE_FILE).exists() for d in directories] == [True, True]


async def test_an_idle_shipper_makes_spare_temporaries_and_a_save_takes_one(
    nc: Client, tmp_path: Path
) -> None:
    spares = tmp_path / SPARES_DIR
    spares.mkdir()
    (spares / "1").write_text("an earlier shipper's")  # removed, not taken
    shipper = LogShipper(nc, tmp_path, poll_interval=0.05)
    async with running(shipper):

        async def filled() -> bool:
            return spares.is_dir() and len(os.listdir(spares)) == SPARE_SAVES

        await eventually(filled)
        made = {os.stat(spares / name).st_ino for name in os.listdir(spares)}
        directory = instance_dir(tmp_path)
        shipper.track(instance(directory))
        await asyncio.wait_for(shipper.saved(), 10)
        state = directory / STATE_FILE
        assert state.stat().st_ino in made  # the temporary was a spare, renamed into place
        assert len(os.listdir(spares)) == SPARE_SAVES - 1
        assert json.loads(state.read_text())["pod_uid"] == UID
        (tmp_path / "plain").write_text("{}")  # what the temporary's write_text made before
        assert stat.S_IMODE(state.stat().st_mode) == stat.S_IMODE(
            (tmp_path / "plain").stat().st_mode
        )
        assert not (directory / f"{STATE_FILE}.tmp").exists()
        # Saved within the last second: no spare is made again during a burst.
        await asyncio.sleep(0.3)
        assert len(os.listdir(spares)) == SPARE_SAVES - 1
    assert not spares.exists()  # removed when the shipper stops


async def test_an_instance_an_older_agent_rotated_is_resumed_from_its_tables(
    nc: Client, tmp_path: Path
) -> None:
    """An older agent kept the rotation tables in ``.shipped.json``: the shipper copies them
    to the rotator's ``.rotated.json`` and goes on from the position it finds, in the rotated
    file where that is."""
    directory = instance_dir(tmp_path)
    lines = [b"line %04d\n" % i for i in range(200)]
    rotated, live = b"".join(lines[:100]), b"".join(lines[100:])
    (directory / "stdout.1").write_bytes(rotated)
    (directory / "stdout").write_bytes(live)
    shipped = len(b"".join(lines[:50]))
    stdout = {"offset": shipped, "pending": [], "dropped_to": None, "base": len(rotated),
              "rotated": [[1, 0, len(rotated)]], "next_number": 2}  # fmt: skip
    state = {"namespace": "default", "pod": "web", "pod_uid": UID, "container": "main",
             "restart_count": 0, "streams": {"stdout": stdout, "stderr": {}}}  # fmt: skip
    (directory / STATE_FILE).write_text(json.dumps(state))
    shipper = LogShipper(nc, tmp_path, poll_interval=0.05)
    async with running(shipper):
        await asyncio.wait_for(shipper.finish(instance(directory)), 10)
    assert await logs(nc, pod_uid=UID) == b"".join(lines[50:])
    tables = json.loads((directory / TABLE_FILE).read_text())["streams"]["stdout"]
    assert (tables["base"], tables["rotated"], tables["next_number"]) == (
        len(rotated), [[1, 0, len(rotated)]], 2,
    )  # fmt: skip
    assert "base" not in json.loads((directory / STATE_FILE).read_text())["streams"]["stdout"]
