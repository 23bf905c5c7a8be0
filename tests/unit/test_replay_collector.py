"""The cyclic collector around a replay: paused while the read model is built, and what a
completed replay built is frozen (so the next collection does not walk the whole model)."""

from __future__ import annotations

import gc

import pytest

from projections.runtime import _collector_paused


def test_a_completed_replay_freezes_what_it_built() -> None:
    gc.unfreeze()
    assert gc.isenabled()
    with _collector_paused():
        assert not gc.isenabled()
        built = [{"name": f"pod-{i}", "labels": {"app": "web"}} for i in range(1000)]
    try:
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(built)
    finally:
        gc.unfreeze()


def test_a_failed_replay_freezes_nothing_and_resumes_collection() -> None:
    gc.unfreeze()
    with pytest.raises(RuntimeError), _collector_paused():
        _ = [{"name": f"pod-{i}"} for i in range(1000)]
        raise RuntimeError("the log went away")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_replay_inside_a_paused_region_leaves_the_collector_paused() -> None:
    gc.disable()
    try:
        with _collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
