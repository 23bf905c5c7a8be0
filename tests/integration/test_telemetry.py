"""Logs and usage on their age-limited streams, against a real nats-server: the latest sample
per subject, picking a container instance, --tail, --previous, --follow, and duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from nats.aio.client import Client

from streams.definitions import (
    ensure,
    logs_stream,
    logs_stream_config,
    metrics_stream,
    metrics_stream_config,
)
from streams.telemetry import (
    LOGS_STREAM,
    METRICS_STREAM,
    ContainerUsage,
    LogsNotFound,
    latest_usage,
    log_headers,
    log_subject,
    publish_node_usage,
    publish_pod_usage,
    read_logs,
)

pytestmark = pytest.mark.integration


async def stream_config(nc: Client, name: str) -> dict:
    reply = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5)
    return json.loads(reply.data)["config"]


async def test_the_streams_are_age_limited_and_capped_per_subject(nc: Client) -> None:
    for spec in (logs_stream(), metrics_stream()):
        await ensure(nc, spec)  # again: nothing to change
    for config in (logs_stream_config(), metrics_stream_config()):
        stored = await stream_config(nc, config["name"])
        assert {k: stored.get(k) for k in config} == config
    logs = await stream_config(nc, LOGS_STREAM)
    metrics = await stream_config(nc, METRICS_STREAM)
    assert logs["max_age"] == 24 * 3600 * 10**9 and logs["storage"] == "file"
    assert logs["max_msgs_per_subject"] > 0 and logs["subjects"] == ["fleet.logs.>"]
    assert metrics["max_age"] == 3600 * 10**9 and metrics["max_msgs_per_subject"] == 360
    assert metrics["subjects"] == ["fleet.metrics.>"]


async def test_latest_usage_is_the_last_sample_of_every_pod_and_node(nc: Client) -> None:
    assert await latest_usage(nc, "pod") == [] and await latest_usage(nc, "node") == []
    for at, cpu in ((1, 100), (2, 250)):
        await publish_pod_usage(
            nc, "default", "web.1", {"main": ContainerUsage(cpu, 64 << 20)}, at_ns=at
        )
        await publish_pod_usage(
            nc,
            "shop",
            "db",
            {"a": ContainerUsage(cpu, 1 << 20), "b": ContainerUsage(1, 1 << 20)},
            at_ns=at,
        )
        await publish_node_usage(
            nc,
            "node-a",
            cpu_millicores=cpu,
            memory_bytes=1 << 30,
            cpu_capacity_millicores=4000,
            memory_capacity_bytes=8 << 30,
            pods=2,
            at_ns=at,
        )
    pods = await latest_usage(nc, "pod")
    assert [(p.namespace, p.name, p.at_ns, p.cpu_millicores) for p in pods] == [
        ("default", "web.1", 2, 250),
        ("shop", "db", 2, 251),
    ]
    assert pods[1].memory_bytes == 2 << 20
    assert [p.name for p in await latest_usage(nc, "pod", namespace="shop")] == ["db"]
    (node,) = await latest_usage(nc, "node")
    assert (node.name, node.cpu_millicores, node.cpu_capacity_millicores, node.pods) == (
        "node-a",
        250,
        4000,
        2,
    )


async def put(
    nc: Client,
    text: str,
    *,
    uid: str = "u1",
    restart: int = 0,
    stream: str = "stdout",
    offset: int,
    msg_id: str | None = None,
) -> None:
    data = text.encode()
    headers = log_headers(
        pod_uid=uid, restart=restart, stream=stream, offset=offset, data=data, partial=False
    )
    if msg_id:
        headers["Nats-Msg-Id"] = msg_id
    await nc.jetstream().publish(log_subject("default", "web", "main"), data, headers=headers)


async def read(nc: Client, **options: object) -> str:
    chunks = [c async for c in read_logs(nc, "default", "web", "main", **options)]
    return b"".join(chunks).decode()


async def test_logs_of_the_current_and_the_previous_instance(nc: Client) -> None:
    assert await read(nc, pod_uid="u1") == ""
    with pytest.raises(LogsNotFound, match='previous terminated container "main" in pod "web"'):
        await read(nc, pod_uid="u1", previous=True)
    await put(nc, "old-1\nold-2\n", restart=0, offset=0)
    await put(nc, "err-0\n", restart=0, stream="stderr", offset=0)
    with pytest.raises(LogsNotFound):
        await read(nc, pod_uid="u1", previous=True)
    await put(nc, "new-1\nnew-2\n", restart=1, offset=0)
    await put(nc, "new-3\n", restart=1, offset=12)
    await put(nc, "other pod\n", uid="u0", restart=5, offset=0)  # an earlier pod of that name
    assert await read(nc, pod_uid="u1") == "new-1\nnew-2\nnew-3\n"
    assert await read(nc, pod_uid="u1", previous=True) == "old-1\nold-2\nerr-0\n"
    assert await read(nc, pod_uid="u1", tail=2) == "new-2\nnew-3\n"
    assert await read(nc, pod_uid="u1", tail=1) == "new-3\n"
    assert await read(nc, pod_uid="u1", tail=0) == ""
    assert await read(nc, pod_uid="u1", previous=True, tail=1) == "err-0\n"
    # The pod's status knows of a third instance that has written nothing yet.
    assert await read(nc, pod_uid="u1", restart_count=2) == ""
    assert await read(nc, pod_uid="u1", restart_count=2, previous=True) == ("new-1\nnew-2\nnew-3\n")
    assert await read(nc, pod_uid="u0") == "other pod\n"


async def test_a_chunk_resent_after_the_duplicate_window_is_shown_once(nc: Client) -> None:
    await put(nc, "a\nb\n", offset=0)
    await put(nc, "c\n", offset=4)
    await put(nc, "c\n", offset=4)  # an agent restart long after: not caught by the Msg-Id
    await put(nc, "d\n", offset=6)
    assert await read(nc, pod_uid="u1") == "a\nb\nc\nd\n"
    assert await read(nc, pod_uid="u1", tail=2) == "c\nd\n"


async def test_follow_prints_new_lines_until_the_instance_is_replaced(nc: Client) -> None:
    await put(nc, "one\ntwo\n", offset=0)
    seen: list[bytes] = []
    got = asyncio.Event()

    async def follow() -> None:
        async for chunk in read_logs(
            nc, "default", "web", "main", pod_uid="u1", tail=1, follow=True
        ):
            seen.append(chunk)
            got.set()

    task = asyncio.create_task(follow())
    try:
        async with asyncio.timeout(10):
            await got.wait()
            assert b"".join(seen) == b"two\n"
            got.clear()
            await put(nc, "three\n", offset=8)
            await put(nc, "elsewhere\n", uid="u2", offset=0)
            await got.wait()
            assert b"".join(seen) == b"two\nthree\n"
            await put(nc, "restarted\n", restart=1, offset=0)
            await task  # a newer instance ends the follow
        assert b"".join(seen) == b"two\nthree\n"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_follow_waits_for_a_container_that_has_written_nothing(nc: Client) -> None:
    chunks = read_logs(nc, "default", "web", "main", pod_uid="u1", follow=True)
    first = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(0.3)
    assert not first.done()
    await put(nc, "hello\n", restart=3, offset=0)
    assert await asyncio.wait_for(first, 10) == b"hello\n"
    await chunks.aclose()
