"""Fixtures of the end-to-end tests: a ``fleetlog up`` cluster of real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
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


def pod_network_unavailable() -> str:
    """Why a local agent here would run pods in the host network ("" when it would not)."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"eprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return "" if made.returncode == 0 else f"cannot make network namespaces: {made.stderr}"
