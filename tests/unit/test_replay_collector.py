"""The cyclic collector around a replay: paused while the read model is built, resumed after
(whether the replay completed or failed), and left alone inside a region that paused it."""

from __future__ import annotations

import gc

import pytest

from projections.runtime import collector_paused


def test_the_collector_is_paused_during_a_replay_and_resumed_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_failed_replay_resumes_collection() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the log went away")
    assert gc.isenabled()


def test_a_replay_inside_a_paused_region_leaves_thecollector_paused() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
