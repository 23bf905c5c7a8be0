"""Mutual exclusion per key within one process, for any number of keys.

Why this exists: a decision locks every aggregate it reads (``streams.decide``), and a
scheduler's batch reads thousands of them; an ``asyncio.Lock`` per aggregate meant a lock object
made, kept in a table and pruned for every pod ever bound, and cost about 5 % of a scheduler
replica's throughput. Here a key nobody holds costs a dict entry while it is held and nothing
afterwards; only a key someone waits for gets a queue of futures. Ownership passes straight to
the first waiter (FIFO), so a waiter cannot be overtaken by a newcomer.
"""

from __future__ import annotations

import asyncio
from collections import deque


class KeyedLocks:
    """Per-key locks: :meth:`try_acquire` (no waiting), :meth:`acquire`, :meth:`release`."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, deque[asyncio.Future[None]]] = {}
        """Held keys, each with the futures of those waiting for it, in order."""

    def locked(self, key: str) -> bool:
        return key in self._held

    def __len__(self) -> int:
        """How many keys are held now."""
        return len(self._held)

    def try_acquire(self, key: str) -> bool:
        """Take ``key`` if nobody holds it; False (and nothing taken) otherwise."""
        if key in self._held:
            return False
        self._held[key] = deque()
        return True

    async def acquire(self, key: str) -> None:
        """Take ``key``, waiting behind whoever holds or waits for it."""
        if self.try_acquire(key):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held[key].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The key was handed over as this task was being cancelled: pass it on.
                self.release(key)
            else:
                waiter.cancel()  # release() skips it
            raise

    def release(self, key: str) -> None:
        """Give ``key`` back: to the first waiter still waiting, or to nobody."""
        waiters = self._held[key]
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        del self._held[key]
