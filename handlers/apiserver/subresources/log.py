"""``pods/log``: ``kubectl logs`` (``-f``, ``--previous``, ``--tail``, ``--since``, ...).

Why this exists: a container's output leaves its node on the ``FLEET_LOGS`` stream (the agent's
shipper, ``handlers.agent.logship``), so the API server answers from that stream
(``streams.telemetry.open_logs``, the same reader as ``fleetlog logs``) and never has to reach
the node. The options are kube's ``PodLogOptions`` (``core.kubeapi.streaming.log_options``);
their errors, and a request that must name a container, are refused with kube's Status before
anything is sent.

Times: a line's time (``timestamps=true``, ``sinceSeconds``, ``sinceTime``) is when its chunk
was shipped (stored on the stream), within the shipper's period of when it was written.

``follow`` ends when the followed instance ends: once the pod's status says the container has
terminated (or the pod is gone or re-created), whatever is still being shipped is passed on
until nothing has come for ``DRAIN_S``; it also ends when the client leaves, and a newer
instance replacing the one followed ends it at once (the reader sees that).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from core.kubeapi.paths import ResourcePath
from core.kubeapi.status import bad_request, method_not_allowed
from core.kubeapi.streaming import (
    LogOptions,
    choose_container,
    container_status,
    log_options,
    timestamp,
)
from projections.cluster import ObjectRecord
from streams.telemetry import LogsNotFound, open_logs

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources

POLL_S = 0.5
"""How often a follow looks at the pod's status for the container's end."""
DRAIN_S = 1.5
"""After the container has ended: how long without a new chunk before the follow ends."""


async def serve_log(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    if request.method != "GET":
        raise method_not_allowed(path.target)
    options = log_options(request.query, now_ns=time.time_ns())
    record = await resources.current(path)
    name = path.name or ""
    container = choose_container(record.manifest, options.container, name)
    restarts = container_status(record.manifest, container).get("restartCount")
    try:
        chunks = await open_logs(
            resources.nc, record.namespace, record.name, container,
            pod_uid=record.uid,
            restart_count=restarts if isinstance(restarts, int) else None,
            previous=options.previous, tail=options.tail_lines, follow=options.follow,
            since_ns=options.since_ns,
        )  # fmt: skip
    except LogsNotFound as exc:
        raise bad_request(exc.message, path.target) from None
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    try:
        await _copy(resources, path, record, container, chunks, options, response)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left
    finally:
        await chunks.aclose()  # also when aiohttp cancels the handler of a client that left
    return response


async def _copy(
    resources: Resources,
    path: ResourcePath,
    record: ObjectRecord,
    container: str,
    chunks: AsyncIterator[tuple[int, bytes]],
    options: LogOptions,
    response: web.StreamResponse,
) -> None:
    queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(maxsize=64)

    async def read() -> None:
        async for item in chunks:
            await queue.put(item)
        await queue.put(None)

    reader = asyncio.create_task(read())
    left = options.limit_bytes
    line_start = True
    ended_at: float | None = None
    try:
        while True:
            wait = POLL_S if ended_at is None else DRAIN_S
            try:
                item = await asyncio.wait_for(queue.get(), timeout=wait)
            except TimeoutError:
                if ended_at is not None:
                    return
                if options.follow and _instance_ended(resources, path, record, container):
                    ended_at = time.monotonic()
                continue
            if item is None:
                return
            at_ns, data = item
            if options.timestamps:
                data, line_start = _stamp(data, at_ns, line_start)
            if left is not None:
                data = data[:left]
                left -= len(data)
            await response.write(data)
            if left == 0:
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


def _instance_ended(
    resources: Resources, path: ResourcePath, record: ObjectRecord, container: str
) -> bool:
    now = resources.record(path)
    if now is None or now.uid != record.uid:
        return True
    state = container_status(now.manifest, container).get("state") or {}
    return "terminated" in state


def _stamp(data: bytes, at_ns: int, line_start: bool) -> tuple[bytes, bool]:
    """``data`` with the time before each line that begins in it."""
    prefix = (timestamp(at_ns) + " ").encode()
    out = bytearray()
    for line in data.splitlines(keepends=True):
        if line_start:
            out += prefix
        out += line
        line_start = line.endswith(b"\n")
    return bytes(out), line_start
