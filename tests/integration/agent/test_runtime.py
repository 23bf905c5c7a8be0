"""The process runtime with real processes: output, environment, stop, OOM, limits, usage,
adoption after an agent restart, the PID-reuse guard, start errors, isolation."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.agent.cgroups import ProcDriver, proc_start_ticks
from handlers.agent.isolation import Bubblewrap
from handlers.agent.runtime import STATE_FILE, ContainerStartError, ProcessRuntime
from tests.integration.agent.runtime_support import (
    PY,
    TrackedRuntime,
    alive,
    py,
    read,
    spec,
    tracked_runtime,
    until,
    wait_for_output,
)

MiB = 1024 * 1024


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[TrackedRuntime]:
    yield from tracked_runtime(tmp_path)


async def test_output_env_cwd_and_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AGENT_SECRET", "hunter2")  # the agent's own env must not leak
    runtime = TrackedRuntime(tmp_path / "node")
    try:
        await _check_output_env_cwd_and_args(runtime, tmp_path)
    finally:
        runtime.cleanup()


async def _check_output_env_cwd_and_args(runtime: TrackedRuntime, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    code = textwrap.dedent(
        """
        import os, sys
        print("args", sys.argv[1:])
        print("cwd", os.getcwd())
        print("env", os.environ.get("GREETING"), os.environ.get("HOSTNAME"),
              os.environ.get("AGENT_SECRET"))
        print("oops", file=sys.stderr)
        sys.exit(3)
        """
    )
    container = await runtime.start(
        spec([PY, "-c", code, "one", "two words"], env={"GREETING": "hello"},
             working_dir=str(workdir), pod_name="web-1")
    )  # fmt: skip
    assert container.pgid == container.pid == os.getpgid(container.pid)
    status = await asyncio.wait_for(runtime.wait(container), 10)
    assert (status.exit_code, status.signal, status.oom_killed, status.reason) == (
        3, None, False, "Error",
    )  # fmt: skip
    out = read(container.stdout_path).splitlines()
    assert out == [
        "args ['one', 'two words']",
        f"cwd {workdir}",
        "env hello web-1 None",
    ]
    assert read(container.stderr_path) == "oops\n"
    # What a program prints may be a secret: its owner's alone.
    assert {
        stat.S_IMODE(p.stat().st_mode) for p in (container.stdout_path, container.stderr_path)
    } == {0o600}
    assert container.stdout_path == runtime.instance_dir(container.spec) / "stdout"
    runtime.remove(container)
    assert not container.state_path.exists()
    assert container.stdout_path.exists()  # output is kept


async def test_exit_zero_is_completed_and_default_cwd(runtime: TrackedRuntime):
    container = await runtime.start(py("import os; print(os.getcwd())"))
    status = await asyncio.wait_for(runtime.wait(container), 10)
    assert (status.exit_code, status.reason) == (0, "Completed")
    assert read(container.stdout_path).strip() == str(runtime.work_dir(container.spec))


async def test_sigterm_ends_a_cooperative_container_before_its_grace(runtime: TrackedRuntime):
    code = textwrap.dedent(
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("up", flush=True)
        time.sleep(60)
        """
    )
    container = await runtime.start(py(code))
    await wait_for_output(container.stdout_path, "up")
    started = time.monotonic()
    status = await runtime.stop(container, grace_seconds=30)
    # Well before the grace ran out (a loaded CI host can take seconds to run the handler
    # and tear the interpreter down), and by its own exit, not SIGKILL.
    assert time.monotonic() - started < 15
    assert (status.exit_code, status.signal, status.reason) == (0, None, "Completed")
    # A second stop (or wait) answers the same.
    assert await runtime.stop(container, 1) == status
    assert await runtime.wait(container) == status


async def test_sigterm_ignored_then_whole_group_killed_after_grace(
    runtime: TrackedRuntime, tmp_path: Path
):
    child_file = tmp_path / "child.pid"
    code = textwrap.dedent(
        f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        open({str(child_file)!r}, "w").write(str(pid))
        time.sleep(60)
        """
    )
    container = await runtime.start(py(code))
    child = int(await wait_for_output(child_file, ""))
    runtime.extra_pids.append(child)
    assert alive(child)
    waiter = asyncio.create_task(runtime.wait(container))  # a concurrent waiter sees it too
    started = time.monotonic()
    status = await runtime.stop(container, grace_seconds=0.5)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3
    assert (status.exit_code, status.signal, status.oom_killed) == (137, 9, False)
    assert await asyncio.wait_for(waiter, 5) == status
    await until(lambda: not alive(child), 3, "the forked child's end")


async def test_memory_hog_is_oom_killed(runtime: TrackedRuntime):
    if not runtime.cgroups.limits_enforced:
        pytest.skip(f"cgroups not writable here: {runtime.cgroups.message}")
    code = "x = bytearray(300 * 1024 * 1024); print('survived', len(x))"
    container = await runtime.start(py(code, memory_limit_bytes=64 * MiB))
    status = await asyncio.wait_for(runtime.wait(container), 20)
    assert status.oom_killed, status
    assert (status.reason, status.exit_code, status.signal) == ("OOMKilled", 137, 9)
    assert "survived" not in read(container.stdout_path)


async def test_limits_are_written_to_the_cgroup(runtime: TrackedRuntime):
    if not runtime.cgroups.limits_enforced:
        pytest.skip(f"cgroups not writable here: {runtime.cgroups.message}")
    container = await runtime.start(
        py("import time; time.sleep(30)", cpu_limit_millis=250, memory_limit_bytes=128 * MiB)
    )
    paths = [Path(p) for p in container.cgroup.paths]
    if runtime.cgroups.name == "v2":
        (leaf,) = paths
        assert read(leaf / "cpu.max").split() == ["25000", "100000"]
        assert read(leaf / "memory.max").strip() == str(128 * MiB)
    else:
        cpu = next(p for p in paths if (p / "cpu.cfs_quota_us").exists())
        memory = next(p for p in paths if (p / "memory.limit_in_bytes").exists())
        assert read(cpu / "cpu.cfs_quota_us").strip() == "25000"
        assert read(cpu / "cpu.cfs_period_us").strip() == "100000"
        assert read(memory / "memory.limit_in_bytes").strip() == str(128 * MiB)
    # The process joins its cgroup before the command runs (start returns a bit earlier).
    proc = Path(f"/proc/{container.pid}/cgroup")
    await until(lambda: container.cgroup.relative in read(proc), 5, "joining the cgroup")
    await runtime.stop(container, 0)
    runtime.remove(container)
    assert not any(p.exists() for p in paths)


async def test_usage_is_readable(runtime: TrackedRuntime):
    code = textwrap.dedent(
        """
        import time
        data = bytearray(20 * 1024 * 1024)
        # Spin until this process has used 0.3 s of CPU, not of wall time: on a loaded
        # host a wall-clock loop gets less than that.
        while time.process_time() < 0.3:
            pass
        print("busy done", flush=True)
        time.sleep(30)
        """
    )
    container = await runtime.start(py(code))
    await wait_for_output(container.stdout_path, "busy done")
    usage = runtime.usage(container)
    assert usage.cpu_ns >= 200_000_000, usage
    assert usage.memory_bytes >= 20 * MiB, usage
    assert 0 < usage.working_set_bytes <= usage.memory_bytes
    assert usage.source == ("cgroup" if runtime.cgroups.limits_enforced else "proc")


async def test_measure_only_driver(tmp_path: Path):
    runtime = TrackedRuntime(tmp_path / "node", cgroups=ProcDriver("test: no cgroups"))
    try:
        assert runtime.limits_condition() == (
            False, "CgroupsNotWritable",
            "resource limits are not enforced (test: no cgroups); usage is measured from /proc "
            "per process group",
        )  # fmt: skip
        code = textwrap.dedent(
            """
            import os, time
            if os.fork() == 0:
                # 0.3 s of CPU, not of wall time (a loaded host gives a wall-clock loop less).
                while time.process_time() < 0.3:
                    pass
                print("child done", flush=True)
                time.sleep(30)
            time.sleep(30)
            """
        )
        container = await runtime.start(py(code, memory_limit_bytes=64 * MiB))
        await wait_for_output(container.stdout_path, "child done")
        usage = runtime.usage(container)
        assert usage.source == "proc"
        assert usage.cpu_ns >= 200_000_000 and usage.memory_bytes > 0
        status = await runtime.stop(container, 2)
        assert status.signal == signal.SIGTERM
    finally:
        runtime.cleanup()


async def test_adopt_after_agent_restart(tmp_path: Path):
    """A container started by another agent process is adopted; its exit is seen."""
    root = tmp_path / "node"
    flag = tmp_path / "finish"
    code = f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.02)\n"
    starter = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from handlers.agent.runtime import ContainerSpec, ProcessRuntime
        async def main():
            runtime = ProcessRuntime(Path({str(root)!r}))
            spec = ContainerSpec(
                pod_uid="uid-adopt", pod_namespace="default", pod_name="p", name="main",
                restart_count=2, argv=[sys.executable, "-c", {code!r}],
            )
            container = await runtime.start(spec)
            print(container.pid)
        asyncio.run(main())
        """
    )
    # The first "agent" is a process of its own that exits: the container is not our child.
    agent = await asyncio.create_subprocess_exec(
        PY, "-c", starter, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[3]
    )
    out, _ = await asyncio.wait_for(agent.communicate(), 30)
    assert agent.returncode == 0
    pid = int(out.split()[-1])
    restarted = TrackedRuntime(root)
    restarted.extra_pids.append(pid)
    try:
        (adopted,) = restarted.adopt_all()
        assert (adopted.pid, adopted.adopted, adopted.spec.restart_count) == (pid, True, 2)
        assert restarted.adopt_all() == [adopted]  # no duplicates
        assert restarted.is_running(adopted)
        flag.touch()
        status = await asyncio.wait_for(restarted.wait(adopted), 10)
        # Not our child: the code went to its new parent.
        assert (status.exit_code, status.reason, status.oom_killed) == (None, "Unknown", False)
        restarted.remove(adopted)
        assert TrackedRuntime(root).adopt_all() == []
    finally:
        restarted.cleanup()


async def test_adopted_container_can_be_stopped(runtime: TrackedRuntime, tmp_path: Path):
    container = await runtime.start(py("import time; print('up', flush=True); time.sleep(60)"))
    await wait_for_output(container.stdout_path, "up")
    restarted = TrackedRuntime(runtime.root)
    try:
        (adopted,) = restarted.adopt_all()
        assert adopted.pid == container.pid
        status = await restarted.stop(adopted, 2)
        assert status.signal == signal.SIGTERM and status.exit_code == 143
        assert not alive(container.pid)
    finally:
        restarted.cleanup()


async def test_state_pointing_at_a_dead_or_reused_pid_is_dropped(runtime: TrackedRuntime):
    done = await runtime.start(py("pass"))
    await runtime.wait(done)
    sleeper = await runtime.start(py("import time; time.sleep(60)", name="sleeper"))
    state = json.loads(read(sleeper.state_path))
    # 1) the recorded process is gone; 2) the pid is alive but is another process (our own
    # pid, with the start time of something else); 3) another boot.
    for name, pid, ticks, boot in (
        ("gone", done.pid, done.start_ticks, state["boot_id"]),
        ("reused", os.getpid(), (proc_start_ticks(os.getpid()) or 0) + 1, state["boot_id"]),
        ("reboot", sleeper.pid, sleeper.start_ticks, "another-boot"),
    ):
        directory = runtime.root / "pods" / "uid-stale" / name / "0"
        directory.mkdir(parents=True)
        forged = dict(state, pid=pid, pgid=pid, start_ticks=ticks, boot_id=boot)
        forged["spec"] = dict(state["spec"], pod_uid="uid-stale", name=name)
        forged["cgroup"] = dict(state["cgroup"], paths=[])
        (directory / STATE_FILE).write_text(json.dumps(forged))
    (runtime.root / "pods" / "uid-stale" / "junk" / "0").mkdir(parents=True)
    (runtime.root / "pods" / "uid-stale" / "junk" / "0" / STATE_FILE).write_text("{not json")
    restarted = TrackedRuntime(runtime.root)
    try:
        adopted = restarted.adopt_all()
        assert [c.spec.name for c in adopted] == ["sleeper"]
        assert not list((runtime.root / "pods" / "uid-stale").glob(f"*/0/{STATE_FILE}"))
        assert alive(os.getpid()) and alive(sleeper.pid)  # dropping kills nothing by pid
    finally:
        restarted.cleanup()


async def test_missing_executable_is_a_clear_start_error(runtime: TrackedRuntime, tmp_path: Path):
    with pytest.raises(ContainerStartError) as caught:
        await runtime.start(spec(["no-such-binary-fleetlog"]))
    status = caught.value.status
    assert (status.exit_code, status.reason) == (127, "StartError")
    assert status.message == 'exec: "no-such-binary-fleetlog": executable file not found in $PATH'
    script = tmp_path / "not-exec.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ContainerStartError) as caught:
        await runtime.start(spec([str(script)]))
    assert caught.value.status.exit_code == 126
    with pytest.raises(ContainerStartError, match="does not exist"):
        await runtime.start(spec([PY, "-c", "pass"], working_dir=str(tmp_path / "nowhere")))
    assert runtime.seen == []


async def test_isolation_unavailable_is_a_clear_start_error(tmp_path: Path):
    runtime = ProcessRuntime(tmp_path / "node", isolation=Bubblewrap(None))
    assert not runtime.isolation_available
    with pytest.raises(ContainerStartError, match="bubblewrap"):
        await runtime.start(py("pass", isolate=True))


async def test_bubblewrap_isolation(runtime: TrackedRuntime):
    if not runtime.isolation_available:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    code = textwrap.dedent(
        """
        import os, socket, time
        print("pid", os.getpid())
        print("host", socket.gethostname())
        for path in ("/etc/fleetlog-test", "probe.txt"):
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError as exc:
                print("denied", path, exc.errno)
        print("procs", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), flush=True)
        time.sleep(60)
        """
    )
    container = await runtime.start(py(code, isolate=True, pod_name="isolated-pod"))
    text = await wait_for_output(container.stdout_path, "procs")
    lines = dict(line.split(" ", 1) for line in text.splitlines())
    assert int(lines["pid"]) < 10  # a private pid namespace
    assert lines["host"] == "isolated-pod"
    assert text.count("denied /etc/fleetlog-test 30") == 1  # EROFS
    assert "wrote probe.txt" in text
    assert (runtime.work_dir(container.spec) / "probe.txt").exists()
    assert max(json.loads(lines["procs"])) < 10  # no host processes visible
    status = await runtime.stop(container, 2)  # SIGTERM reaches the workload inside
    assert status.signal == signal.SIGTERM or status.exit_code == 143
