"""A guard for long-running loops against cancellations that Python 3.11 loses.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives just as the awaited
future completes (CPython gh-86296, fixed in 3.12): the task is marked as cancelling, yet the
``await`` returns normally. nats-py waits for every request and KV operation that way, so a loop
cancelled during a request may carry on for ever, and whoever awaits it (a TaskGroup shutting
down, a test's teardown) waits for ever too. Loops call :func:`checkpoint` once per turn: a
cancellation that was requested but lost is raised there.
"""

from __future__ import annotations

import asyncio


def checkpoint() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop (even if the request
    was swallowed by an inner ``wait_for``)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
