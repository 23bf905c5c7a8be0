"""Per-key locks: exclusion per key, FIFO hand-over, cancellation never loses or leaks a key."""

from __future__ import annotations

import asyncio

import pytest

from streams.keylocks import KeyedLocks


async def test_a_key_is_held_by_one_at_a_time_and_others_are_free() -> None:
    locks = KeyedLocks()
    assert locks.try_acquire("a") and not locks.try_acquire("a")
    assert locks.try_acquire("b")
    locks.release("a")
    locks.release("b")
    assert len(locks) == 0 and not locks.locked("a")


async def test_waiters_get_the_key_in_the_order_they_asked() -> None:
    locks = KeyedLocks()
    await locks.acquire("k")
    order: list[int] = []

    async def take(n: int) -> None:
        await locks.acquire("k")
        order.append(n)
        await asyncio.sleep(0)
        locks.release("k")

    tasks = [asyncio.create_task(take(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert not locks.try_acquire("k")  # a newcomer cannot overtake the queue
    locks.release("k")
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and len(locks) == 0


async def test_a_waiter_cancelled_while_waiting_is_skipped() -> None:
    locks = KeyedLocks()
    await locks.acquire("k")
    cancelled = asyncio.create_task(locks.acquire("k"))
    after = asyncio.create_task(locks.acquire("k"))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    locks.release("k")
    await asyncio.wait_for(after, 1)
    locks.release("k")
    assert len(locks) == 0


async def test_a_waiter_cancelled_after_the_hand_over_passes_the_key_on() -> None:
    locks = KeyedLocks()
    await locks.acquire("k")
    first = asyncio.create_task(locks.acquire("k"))
    second = asyncio.create_task(locks.acquire("k"))
    await asyncio.sleep(0)
    locks.release("k")  # handed to ``first``, which has not resumed yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # ``first`` passed it on instead of keeping it
    locks.release("k")
    assert len(locks) == 0
