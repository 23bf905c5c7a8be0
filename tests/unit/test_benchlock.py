"""The benchmarks' host lock: a second run waits until the first has ended, and says so."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

import pytest

from ops.benchlock import host_pod_networks


def test_a_second_run_waits_for_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "bench.lock"
    entered = threading.Event()

    def second_run() -> None:
        with host_pod_networks("bench_second", lock):
            entered.set()

    with lock.open("a") as first:  # another run holding the lock (flock: per open file)
        fcntl.flock(first, fcntl.LOCK_EX)
        waiter = threading.Thread(target=second_run)
        waiter.start()
        assert not entered.wait(0.3), "the second run went ahead while the first held the lock"
        fcntl.flock(first, fcntl.LOCK_UN)
    assert entered.wait(5), "the second run never got the lock once it was free"
    waiter.join()
    assert "bench_second: another benchmark is using pod networks" in capsys.readouterr().err


def test_a_free_lock_is_taken_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with host_pod_networks("bench_alone", tmp_path / "bench.lock"):
        pass
    assert capsys.readouterr().err == ""
