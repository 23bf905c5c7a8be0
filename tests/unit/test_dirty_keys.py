"""The controller loop's queue of due keys: each key once, in the order it became due."""

from __future__ import annotations

from handlers.controller import DirtyKeys


def test_keys_come_out_once_in_the_order_they_became_due() -> None:
    dirty: DirtyKeys[tuple[str, str]] = DirtyKeys()
    dirty.update([("ns", "b"), ("ns", "a"), ("ns", "b")])
    dirty.add(("ns", "c"))
    dirty.add(("ns", "a"))
    assert len(dirty) == 3 and ("ns", "a") in dirty
    assert [dirty.pop() for _ in range(3)] == [("ns", "b"), ("ns", "a"), ("ns", "c")]
    assert not dirty and ("ns", "a") not in dirty


def test_a_key_taken_may_become_due_again_and_clear_empties() -> None:
    dirty: DirtyKeys[tuple[str, str]] = DirtyKeys()
    dirty.add(("ns", "a"))
    assert dirty.pop() == ("ns", "a")
    dirty.add(("ns", "a"))
    assert len(dirty) == 1
    dirty.clear()
    assert not dirty
    dirty.add(("ns", "a"))
    assert dirty.pop() == ("ns", "a")
