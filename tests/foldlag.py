"""An opt-in pytest plugin that makes every projection in the test process lag the log: each
followed event is folded ``FLEETLOG_TEST_FOLD_LAG_S`` seconds (default 0.02) after the one
before it, in order. Under load a projection (and what listens to it: the mesh handler, the
controllers) folds a command's events some time after the command's reply; a test that reads
the model right after the reply, or takes "absent" for "deleted", passes on a quiet machine
and fails at random beside other work. With the lag such assumptions fail every time:

    .venv/bin/python -m pytest -p tests.foldlag tests/integration/test_garbage_collector.py

Never on by default (CI does not load it): it finds order assumptions, it is not a test.
A catch-up (``Projection.catch_up``) is not slowed, only the follow after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from projections.runtime import Projection
from streams.envelope import StoredEvent

LAG_S = float(os.environ.get("FLEETLOG_TEST_FOLD_LAG_S", "0.02"))


@pytest.fixture(autouse=True)
async def lagging_projections(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Each projection following the log during the test folds through a queue drained at
    one event per ``LAG_S``; the drains are cancelled after the test."""
    follow = Projection.follow
    drains: list[asyncio.Task[None]] = []

    async def lagging_follow(self: Projection) -> None:  # type: ignore[type-arg]
        queue: asyncio.Queue[StoredEvent] = asyncio.Queue()
        fold = Projection._apply

        async def drain() -> None:
            while True:
                event = await queue.get()
                await asyncio.sleep(LAG_S)
                fold(self, event)

        drains.append(asyncio.get_running_loop().create_task(drain()))
        # ``follow`` subscribes with ``self._apply``: the instance's attribute wins.
        self._apply = queue.put_nowait  # type: ignore[method-assign]
        await follow(self)

    monkeypatch.setattr(Projection, "follow", lagging_follow)
    yield
    for task in drains:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
