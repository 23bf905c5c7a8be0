"""Byte-stream sessions over a real nats-server: open, echo, refusal, flow control, and a side
that vanishes or misbehaves (``streams.nodestream``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from streams.connection import connect
from streams.nodestream import (
    HDR_CHANNEL,
    HDR_OP,
    Limits,
    NodeUnreachable,
    ProtocolViolation,
    Session,
    SessionLost,
    SessionRefused,
    SessionRunner,
    open_session,
    serve_sessions,
)
from tests.conftest import RunningServer

FAST = Limits(max_frame=1024, window=4096, ping_s=0.2, peer_timeout_s=2.0, open_timeout_s=5.0)


class Agent:
    """A node's side that echoes channel 0 back on channel 1 and records how sessions end."""

    def __init__(self) -> None:
        self.ended: list[BaseException | dict[str, Any]] = []
        self.done = asyncio.Event()
        self.sessions: list[Session] = []
        self.hold = asyncio.Event()
        """Set: the echo consumes what arrives; clear: it does not read (a slow consumer)."""
        self.hold.set()

    async def prepare(self, request: dict[str, Any]) -> SessionRunner:
        if request.get("op") != "echo":
            raise SessionRefused('pod "x" is not here', code=404, reason="NotFound")

        async def run(session: Session) -> dict[str, Any]:
            self.sessions.append(session)
            try:
                await self.hold.wait()
                async for frame in session.frames():
                    if frame.eof:
                        return {"exitCode": 0}
                    await session.send(1, frame.data)
                    await self.hold.wait()
                error = session.result.exception()
                self.ended.append(error if error is not None else session.result.result())
                return {}
            finally:
                self.done.set()

        return run


@pytest.fixture
async def agent(nc: Client) -> AsyncIterator[Agent]:
    node = Agent()
    task = asyncio.create_task(serve_sessions(nc, node="node-1", prepare=node.prepare, limits=FAST))
    await asyncio.sleep(0.1)
    await nc.flush()
    try:
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _echoes(session: Session, count: int) -> bytes:
    received = b""
    async for frame in session.frames():
        received += frame.data
        if len(received) >= count:
            break
    return received


async def test_a_session_carries_bytes_both_ways_and_ends_with_the_result(
    nc: Client, agent: Agent
) -> None:
    session = await open_session(nc, node="node-1", request={"op": "echo"}, limits=FAST)
    payload = bytes(range(256)) * 40  # larger than a frame and than the window
    sender = asyncio.create_task(session.send(0, payload))
    assert await asyncio.wait_for(_echoes(session, len(payload)), 30) == payload
    await sender
    await session.eof(0)
    assert await asyncio.wait_for(session.result, 30) == {"exitCode": 0}


async def test_an_unknown_node_and_a_refusal_are_clear_errors(nc: Client, agent: Agent) -> None:
    started = time.monotonic()
    with pytest.raises(NodeUnreachable, match='node "nowhere" has no agent answering'):
        await open_session(nc, node="nowhere", request={"op": "echo"}, limits=FAST)
    assert time.monotonic() - started < FAST.open_timeout_s  # no responders: no waiting
    with pytest.raises(SessionRefused) as refused:
        await open_session(nc, node="node-1", request={"op": "other"}, limits=FAST)
    assert (refused.value.code, refused.value.reason) == (404, "NotFound")
    assert refused.value.message == 'pod "x" is not here'


async def test_a_slow_reader_holds_the_writer_back(nc: Client, agent: Agent) -> None:
    agent.hold.clear()
    session = await open_session(nc, node="node-1", request={"op": "echo"}, limits=FAST)
    writer = asyncio.create_task(session.send(0, b"x" * (FAST.window * 3)))
    await asyncio.sleep(1.0)
    assert not writer.done()  # the window is full and nobody consumes
    agent.hold.set()
    assert len(await asyncio.wait_for(_echoes(session, FAST.window * 3), 30)) == FAST.window * 3
    await asyncio.wait_for(writer, 30)
    await session.end()


async def test_the_agent_notices_an_opener_that_vanishes(
    nc: Client, agent: Agent, nats_server: RunningServer
) -> None:
    other = await connect(nats_server.url, name="opener")
    await open_session(other, node="node-1", request={"op": "echo"}, limits=FAST)
    await asyncio.sleep(0.3)
    await other.close()  # no end frame: the connection just goes
    await asyncio.wait_for(agent.done.wait(), 30)
    assert isinstance(agent.ended[0], SessionLost)


async def test_the_opener_notices_an_agent_that_vanishes(
    nc: Client, nats_server: RunningServer
) -> None:
    other = await connect(nats_server.url, name="agent")
    node = Agent()
    task = asyncio.create_task(
        serve_sessions(other, node="node-2", prepare=node.prepare, limits=FAST)
    )
    await asyncio.sleep(0.1)
    await other.flush()
    session = await open_session(nc, node="node-2", request={"op": "echo"}, limits=FAST)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # A cancelled agent says goodbye; one whose connection drops cannot: both end the session.
    assert await asyncio.wait_for(session.result, 30) == {
        "error": 'the agent of node "node-2" stopped'
    }
    second = Agent()
    task = asyncio.create_task(
        serve_sessions(other, node="node-2", prepare=second.prepare, limits=FAST)
    )
    await asyncio.sleep(0.1)
    await other.flush()
    session = await open_session(nc, node="node-2", request={"op": "echo"}, limits=FAST)
    await other.close()
    with pytest.raises(SessionLost):
        await asyncio.wait_for(session.result, 30)
    assert [f async for f in session.frames()] == []  # the iteration ends too
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def test_an_oversize_frame_is_refused_and_ends_the_session(nc: Client, agent: Agent) -> None:
    session = await open_session(nc, node="node-1", request={"op": "echo"}, limits=FAST)
    # A misbehaving opener: one frame past the limit, straight onto the agent's inbox.
    await nc.publish(
        session.peer, b"x" * (FAST.max_frame + 1), headers={HDR_OP: "data", HDR_CHANNEL: "0"}
    )
    await asyncio.wait_for(agent.done.wait(), 30)
    assert isinstance(agent.ended[0], ProtocolViolation)
    outcome = await asyncio.wait_for(session.result, 30)
    assert outcome == {
        "error": f"a frame of {FAST.max_frame + 1} bytes is larger than the session's "
        f"{FAST.max_frame}-byte limit"
    }
