"""The collector is kept off long-running roles' hot paths once they have loaded their state."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from ops.cli.cluster import _serve_agent, _until_signal
from ops.gctuning import YOUNG_THRESHOLD, YOUNG_THRESHOLD_ENV, tune_gc, young_threshold


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_what_is_alive_and_collects_the_young_less_often() -> None:
    gc.unfreeze()
    state = [{"node": i} for i in range(1000)]  # a read model, loaded
    tune_gc()
    assert gc.get_freeze_count() >= len(state)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


@pytest.mark.usefixtures("restore_gc")
def test_an_operator_sets_the_young_threshold_as_gogc_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(YOUNG_THRESHOLD_ENV, "20000")
    tune_gc()
    assert gc.get_threshold()[0] == 20_000 != YOUNG_THRESHOLD


@pytest.mark.parametrize("text", ["", "lots", "-5", "0", "99", "1e5", "99999999999"])
def test_an_unusable_young_threshold_is_said_and_the_default_kept(text: str) -> None:
    assert young_threshold({YOUNG_THRESHOLD_ENV: text}) == YOUNG_THRESHOLD


def test_no_young_threshold_given_is_the_default() -> None:
    assert young_threshold({}) == YOUNG_THRESHOLD


async def test_a_role_is_tuned_once_ready_before_it_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def role(ready: asyncio.Event) -> None:
        seen.append("caught up")
        ready.set()
        await release.wait()

    def on_ready() -> None:
        seen.append("tuned")
        assert "role ready" not in capsys.readouterr().err
        release.set()  # the role ends: the foreground run returns

    await asyncio.wait_for(_until_signal(role, "role ready", on_ready=on_ready), 10)
    assert seen == ["caught up", "tuned"]
    assert "role ready" in capsys.readouterr().err


async def test_a_role_failing_before_ready_is_never_tuned() -> None:
    tuned: list[bool] = []

    async def role(ready: asyncio.Event) -> None:
        raise RuntimeError("no log")

    with pytest.raises(RuntimeError, match="no log"):
        await _until_signal(role, "role ready", on_ready=lambda: tuned.append(True))
    assert tuned == []


@pytest.mark.usefixtures("restore_gc")
async def test_the_node_agent_is_tuned_once_ready() -> None:
    gc.set_threshold(700, 10, 10)
    seen: list[int] = []

    async def agent(ready: asyncio.Event) -> None:
        ready.set()
        deadline = asyncio.get_running_loop().time() + 5
        while gc.get_threshold()[0] != YOUNG_THRESHOLD:
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)
        seen.append(gc.get_threshold()[0])

    await asyncio.wait_for(_serve_agent(agent, "n1"), 30)
    assert seen == [YOUNG_THRESHOLD]
