"""Fixtures of the end-to-end tests: a ``fleetlog up`` cluster of real processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.server import free_port
from tests.e2e.test_cli import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster whose processes (up, nats-server, containers) are killed by PID afterwards."""
    running = Cluster(tmp_path / "data", free_port())
    try:
        yield running
    finally:
        running.kill_leftovers()


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)
