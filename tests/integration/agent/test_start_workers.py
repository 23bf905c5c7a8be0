"""Containers started by the agent's start workers (``handlers.agent.startworker``): the
worker is their parent and reports how they ended, a restarted agent adopts them, and a
worker that ends neither takes its containers along nor leaves the runtime unable to start."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.agent.cgroups import proc_stat_fields
from tests.integration.agent.runtime_support import (
    PY,
    TrackedRuntime,
    alive,
    py,
    until,
    wait_for_output,
)

REPO = Path(__file__).parents[3]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[TrackedRuntime]:
    tracked = TrackedRuntime(tmp_path / "node", start_workers=1)
    try:
        yield tracked
    finally:
        tracked.cleanup()


async def _worker_of(runtime: TrackedRuntime) -> int:
    await until(lambda: bool(runtime.start_workers()), 30, "a start worker's greeting")
    (worker,) = runtime.start_workers()
    return worker


def _parent(pid: int) -> int:
    fields = proc_stat_fields(pid)
    assert fields is not None
    return int(fields[1])


async def test_the_worker_starts_the_container_and_reports_its_exit(
    runtime: TrackedRuntime, tmp_path: Path
):
    worker = await _worker_of(runtime)
    flag = tmp_path / "finish"
    container = await runtime.start(
        py(
            "import os, sys, time\n"
            "print('up', os.getpgid(0) == os.getpid(), flush=True)\n"
            f"while not os.path.exists({str(flag)!r}): time.sleep(0.02)\n"
            "print('oops', file=sys.stderr); sys.exit(3)",
            env={"GREETING": "hello"},
        )
    )
    assert await wait_for_output(container.stdout_path, "up") == "up True\n"
    # Started by the worker, not by this process (the agent): the worker is its parent.
    assert _parent(container.pid) == worker != os.getpid()
    assert not container.adopted
    flag.touch()
    status = await asyncio.wait_for(runtime.wait(container), 10)
    # The code is known, as for a child of the agent's own.
    assert (status.exit_code, status.signal, status.reason) == (3, None, "Error")
    assert container.stderr_path.read_text() == "oops\n"

    stopped = await runtime.start(py("import time; print('up', flush=True); time.sleep(60)"))
    await wait_for_output(stopped.stdout_path, "up")
    status = await asyncio.wait_for(runtime.stop(stopped, 5), 15)
    assert (status.exit_code, status.signal, status.reason) == (143, signal.SIGTERM, "Error")

    failed = await runtime.start(py("raise SystemExit(0)"))
    status = await asyncio.wait_for(runtime.wait(failed), 10)
    assert (status.exit_code, status.reason) == (0, "Completed")


async def test_a_start_error_from_the_worker_is_a_start_error(runtime: TrackedRuntime):
    from handlers.agent.runtime import ContainerStartError
    from tests.integration.agent.runtime_support import spec

    await _worker_of(runtime)
    with pytest.raises(ContainerStartError) as raised:
        await runtime.start(spec(["no-such-command-here"]))
    assert (raised.value.status.exit_code, raised.value.status.reason) == (127, "StartError")
    assert "executable file not found" in raised.value.status.message


async def test_a_restarted_agent_adopts_what_its_worker_started(tmp_path: Path):
    """The worker dies with its agent; the container runs on and the next agent adopts it."""
    root = tmp_path / "node"
    flag = tmp_path / "finish"
    code = f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.02)\n"
    starter = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from pathlib import Path
        from handlers.agent.runtime import ContainerSpec, ProcessRuntime
        async def main():
            runtime = ProcessRuntime(Path({str(root)!r}), start_workers=1)
            deadline = time.monotonic() + 30
            while not runtime.start_workers():
                assert time.monotonic() < deadline, "no greeting from the start worker"
                await asyncio.sleep(0.02)
            spec = ContainerSpec(
                pod_uid="uid-adopt", pod_namespace="default", pod_name="p", name="main",
                restart_count=1, argv=[sys.executable, "-c", {code!r}],
            )
            container = await runtime.start(spec)
            print(container.pid, runtime.start_workers()[0])
        asyncio.run(main())
        """
    )
    agent = await asyncio.create_subprocess_exec(
        PY, "-c", starter, stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    out, _ = await asyncio.wait_for(agent.communicate(), 60)
    assert agent.returncode == 0
    pid, worker = (int(word) for word in out.split()[-2:])
    restarted = TrackedRuntime(root)
    restarted.extra_pids += [pid, worker]
    try:
        await until(lambda: not alive(worker), 10, "the worker's end with its agent")
        (adopted,) = restarted.adopt_all()
        assert (adopted.pid, adopted.adopted, adopted.spec.restart_count) == (pid, True, 1)
        assert restarted.is_running(adopted)
        flag.touch()
        status = await asyncio.wait_for(restarted.wait(adopted), 10)
        assert (status.exit_code, status.reason) == (None, "Unknown")
    finally:
        restarted.cleanup()


async def test_a_worker_that_ends_leaves_its_containers_watched(
    runtime: TrackedRuntime, tmp_path: Path
):
    worker = await _worker_of(runtime)
    flag = tmp_path / "finish"
    container = await runtime.start(
        py(
            "import os, time\nprint('up', flush=True)\n"
            f"while not os.path.exists({str(flag)!r}): time.sleep(0.02)\n"
        )
    )
    await wait_for_output(container.stdout_path, "up")
    waiting = asyncio.ensure_future(runtime.wait(container))
    os.kill(worker, signal.SIGKILL)
    await until(lambda: not runtime.start_workers(), 10, "the worker's end noticed")
    await asyncio.sleep(0.2)
    assert runtime.is_running(container) and not waiting.done()
    flag.touch()
    status = await asyncio.wait_for(waiting, 10)
    # Its parent is gone: the code went to the new one.
    assert (status.exit_code, status.reason) == (None, "Unknown")
    # Later starts run in this process's threads: their codes are known again.
    later = await runtime.start(py("raise SystemExit(4)"))
    assert _parent(later.pid) == os.getpid() or not alive(later.pid)
    status = await asyncio.wait_for(runtime.wait(later), 10)
    assert (status.exit_code, status.reason) == (4, "Error")


def test_a_start_in_the_parents_cgroups_runs_the_command_itself(tmp_path: Path):
    """``join_in_parent`` (a start worker's starts): the command is spawned as it is, no
    ``/bin/sh`` prologue, born in the container's cgroups; the starter is back in its own."""
    from handlers.agent.runtime import _popen_spawn
    from tests.integration.agent.runtime_support import spec

    runtime = TrackedRuntime(tmp_path / "node")
    if not runtime.cgroups.limits_enforced:
        pytest.skip(f"cgroups not writable here: {runtime.cgroups.message}")
    own = Path("/proc/self/cgroup").read_text()
    spawned: list[list[str]] = []
    born: list[str] = []

    def spawn(argv: list[str], **kwargs: object) -> tuple[int, object]:
        spawned.append(argv)
        pid, popen = _popen_spawn(argv, **kwargs)  # type: ignore[arg-type]
        born.append(Path(f"/proc/{pid}/cgroup").read_text())  # before it could join itself
        return pid, popen

    container = runtime.launch(spec(["sleep", "30"]), spawn=spawn, join_in_parent=True)
    runtime.seen.append(container)
    try:
        assert spawned == [["sleep", "30"]]
        relative = container.cgroup.relative
        assert born[0].count(relative) == len(container.cgroup.paths), born[0]
        assert Path("/proc/self/cgroup").read_text() == own
        for path in container.cgroup.paths:
            assert str(container.pid) in (Path(path) / "cgroup.procs").read_text().split()
            assert str(os.getpid()) not in (Path(path) / "cgroup.procs").read_text().split()
    finally:
        runtime.cleanup()


async def test_an_idle_worker_makes_spares_and_a_start_takes_them(
    runtime: TrackedRuntime, tmp_path: Path
):
    """The inodes of a start made ahead (``handlers.agent.spares``): an idle worker makes
    them beside ``pods/``, a start renames them into place, and what the container finds is
    what it found without them; the worker takes them away when it ends."""
    from handlers.agent.spares import DIRS_PER_START, FILES_PER_START, SPARE_STARTS, SPARES_DIR

    worker = await _worker_of(runtime)
    spares = runtime.root / SPARES_DIR / str(worker)
    wanted = SPARE_STARTS * (DIRS_PER_START + FILES_PER_START)
    await until(
        lambda: spares.is_dir() and len(os.listdir(spares)) == wanted, 30, "the spares made"
    )
    (runtime.root / "pods").mkdir()  # the agent's; a first start would make it too
    before = set(os.listdir(spares))
    container = await runtime.start(py("print('up', flush=True)\nimport time; time.sleep(60)"))
    # A new pod's instance: its pod, container, instance and working directories, its
    # stdout, stderr and the state file's temporary were spares (refills add new names).
    assert len(before - set(os.listdir(spares))) == DIRS_PER_START + FILES_PER_START
    assert await wait_for_output(container.stdout_path, "up") == "up\n"
    directory = container.directory
    assert sorted(os.listdir(directory)) == ["container.json", "stderr", "stdout"]
    for name in ("stdout", "stderr", "container.json"):
        assert oct((directory / name).stat().st_mode & 0o777) == oct(0o600)
    assert runtime.work_dir(container.spec).is_dir()
    assert not os.listdir(runtime.root / "pods" / container.spec.pod_uid / "main" / "work")
    # The state file is whole: a restarted agent would adopt the container from it.
    assert [c.pid for c in TrackedRuntime(runtime.root).adopt_all()] == [container.pid]

    assert runtime._workers is not None
    runtime._workers.close()
    await until(lambda: not alive(worker), 10, "the worker's end")
    assert not spares.exists()


async def test_a_new_runtime_removes_the_spares_of_a_killed_worker(tmp_path: Path):
    from handlers.agent.spares import SPARES_DIR

    root = tmp_path / "node"
    left = root / SPARES_DIR / "12345"
    left.mkdir(parents=True)
    (left / "1").mkdir()
    runtime = TrackedRuntime(root, start_workers=1)
    try:
        assert not left.exists()
    finally:
        runtime.cleanup()
        assert runtime._workers is not None
        runtime._workers.close()
