"""Serving a subject until cancelled: the shared shape of every request/reply role.

The gateway and the query service (and the handlers that follow) subscribe in a queue group,
say they are ready, and run until their task is cancelled; then they unsubscribe so no request
is routed to a member that no longer answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from core.errors import FleetError

log = structlog.get_logger(__name__)


async def serve(
    nc: Client,
    subject: str,
    *,
    queue: str,
    handler: Callable[[Msg], Awaitable[None]],
    ready: asyncio.Event | None = None,
) -> None:
    """Deliver requests on ``subject`` (queue group ``queue``) to ``handler`` until cancelled."""
    sub = await nc.subscribe(subject, queue=queue, cb=handler)
    log.info("serving", subject=subject, queue=queue)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Future()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MessageAnswer = Callable[[dict[str, Any], Msg], Awaitable[dict[str, Any]]]
"""An answer that also sees the request's message (its subject, headers and reply inbox: who
asks, for a service that answers each reader what it may see)."""


def msgpack_answers(
    nc: Client, answer: Answer, *, failure_event: str
) -> Callable[[Msg], Awaitable[None]]:
    """A request handler for a query service: the request's msgpack map goes to ``answer``,
    whose map is the reply. A refused question (:class:`FleetError`) is answered with its code;
    anything else that fails is logged as ``failure_event`` and answered as an invalid query,
    and the service goes on."""

    async def without_message(request: dict[str, Any], msg: Msg) -> dict[str, Any]:
        return await answer(request)

    return msgpack_message_answers(nc, without_message, failure_event=failure_event)


def msgpack_message_answers(
    nc: Client, answer: MessageAnswer, *, failure_event: str
) -> Callable[[Msg], Awaitable[None]]:
    """:func:`msgpack_answers` for an ``answer`` that is handed the message too."""

    async def handle(msg: Msg) -> None:
        try:
            reply = await answer(msgpack.unpackb(msg.data, raw=False), msg)
        except FleetError as exc:
            reply = {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # a bad query must not stop the service
            log.warning(failure_event, error=str(exc))
            reply = {"ok": False, "error": {"code": "invalid", "message": f"bad query: {exc}"}}
        if msg.reply:
            await nc.publish(msg.reply, msgpack.packb(reply, use_bin_type=True))

    return handle
