"""Serving a subject until cancelled: the shared shape of every request/reply role.

The gateway and the query service (and the handlers that follow) subscribe in a queue group,
say they are ready, and run until their task is cancelled; then they unsubscribe so no request
is routed to a member that no longer answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

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
