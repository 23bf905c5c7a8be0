"""Helpers for the runtime tests: a runtime whose containers are all killed by PID afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from handlers.agent.cgroups import proc_stat_fields
from handlers.agent.runtime import ContainerSpec, ProcessRuntime, RunningContainer

PY = sys.executable


class TrackedRuntime(ProcessRuntime):
    """A ProcessRuntime that remembers every container it started or adopted."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen: list[RunningContainer] = []
        self.extra_pids: list[int] = []

    async def start(self, spec: ContainerSpec) -> RunningContainer:
        container = await super().start(spec)
        self.seen.append(container)
        return container

    def adopt_all(self) -> list[RunningContainer]:
        adopted = super().adopt_all()
        self.seen.extend(adopted)
        return adopted

    def cleanup(self) -> None:
        """Teardown: SIGKILL each container's process group by its id, then remove it."""
        for container in self.seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if alive(container.pid):
                    os.killpg(container.pgid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.remove(container)
        for pid in self.extra_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def spec(argv: list[str], **overrides: object) -> ContainerSpec:
    values: dict[str, object] = {
        "pod_uid": f"test-{uuid.uuid4()}",
        "pod_namespace": "default",
        "pod_name": "pod-a",
        "name": "main",
        "restart_count": 0,
        "argv": argv,
    }
    values.update(overrides)
    return ContainerSpec(**values)  # type: ignore[arg-type]


def py(code: str, **overrides: object) -> ContainerSpec:
    return spec([PY, "-c", code], **overrides)


def tracked_runtime(tmp_path: Path) -> Iterator[TrackedRuntime]:
    """The body of each test module's ``runtime`` fixture."""
    tracked = TrackedRuntime(tmp_path / "node")
    try:
        yield tracked
    finally:
        tracked.cleanup()


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def until(check: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        await asyncio.sleep(0.02)


async def wait_for_output(path: Path, needle: str, timeout: float = 10) -> str:
    """The file's text once it contains ``needle`` (or anything, for an empty needle)."""
    await until(lambda: bool(read(path)) and needle in read(path), timeout, f"{needle!r} in {path}")
    return read(path)
