"""The cgroup drivers' file protocol, against fake hierarchies (pure v2 and co-mounted v1 cannot
both exist on one machine), plus detection on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handlers.agent import cgroups
from handlers.agent.cgroups import (
    CgroupError,
    Limits,
    V1Driver,
    V2Driver,
    cpu_quota_us,
    cpu_shares,
    cpu_weight,
    detect,
    join_argv,
    v1_mounts,
)


def test_cpu_quota_from_millicores():
    assert cpu_quota_us(1000) == 100_000
    assert cpu_quota_us(250) == 25_000
    assert cpu_quota_us(1) == 1_000  # the kernel's minimum


def fake_v2(tmp_path: Path, controllers: str = "cpuset cpu io memory hugetlb pids") -> Path:
    mount = tmp_path / "cgroup"
    mount.mkdir()
    (mount / "cgroup.controllers").write_text(controllers + "\n")
    (mount / "cgroup.subtree_control").write_text("")
    return mount


def test_v2_enables_controllers_sets_limits_and_reads_usage(tmp_path: Path):
    mount = fake_v2(tmp_path)
    driver = V2Driver(mount)
    assert (mount / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (mount / "fleetlog" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    handle = driver.create("uid-1", "web", 3)
    leaf = mount / "fleetlog" / "uid-1" / "web.3"
    assert handle.paths == (str(leaf),) and handle.relative == "fleetlog/uid-1/web.3"
    assert (leaf.parent / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    (leaf / "memory.swap.max").write_text("max\n")
    (leaf / "memory.oom.group").write_text("0\n")
    driver.apply_limits(handle, cpu_millis=1500, memory_bytes=64 * 1024 * 1024)
    assert (leaf / "memory.max").read_text() == str(64 * 1024 * 1024)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "memory.oom.group").read_text() == "1"
    assert (leaf / "cpu.max").read_text() == "150000 100000"
    assert driver.procs_files(handle) == (str(leaf / "cgroup.procs"),)
    (leaf / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n")
    (leaf / "memory.current").write_text("10485760\n")
    (leaf / "memory.stat").write_text("anon 8388608\ninactive_file 1048576\n")
    usage = driver.usage(handle, pgid=1)
    assert (usage.cpu_ns, usage.memory_bytes, usage.working_set_bytes) == (
        2_500_000, 10_485_760, 9_437_184,
    )  # fmt: skip
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert driver.oom_kills(handle) == 1
    driver.apply_limits(handle, None, None)
    assert (leaf / "memory.max").read_text() == "max"
    assert (leaf / "cpu.max").read_text() == "max 100000"


def test_v2_without_the_memory_controller_is_refused(tmp_path: Path):
    with pytest.raises(CgroupError, match="memory"):
        V2Driver(fake_v2(tmp_path, "cpu io pids"))


def test_v1_mounts_are_read_from_mountinfo(tmp_path: Path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
        "31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "33 25 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
    )
    mounts = v1_mounts(mountinfo)
    assert mounts == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
    }


def test_v1_co_mounted_cpu_cpuacct(tmp_path: Path):
    cpu = tmp_path / "cpu,cpuacct"
    memory = tmp_path / "memory"
    cpu.mkdir()
    memory.mkdir()
    driver = V1Driver({"cpu": cpu, "cpuacct": cpu, "memory": memory})
    handle = driver.create("uid-2", "db", 0)
    assert handle.paths == (str(memory / "fleetlog/uid-2/db.0"), str(cpu / "fleetlog/uid-2/db.0"))
    mem_leaf, cpu_leaf = (Path(p) for p in handle.paths)
    (mem_leaf / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    driver.apply_limits(handle, cpu_millis=500, memory_bytes=1 << 27)
    assert (mem_leaf / "memory.limit_in_bytes").read_text() == str(1 << 27)
    assert (mem_leaf / "memory.memsw.limit_in_bytes").read_text() == str(1 << 27)
    assert (cpu_leaf / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu_leaf / "cpu.cfs_period_us").read_text() == "100000"
    (cpu_leaf / "cpuacct.usage").write_text("123456789\n")
    (mem_leaf / "memory.usage_in_bytes").write_text("4096000\n")
    (mem_leaf / "memory.stat").write_text("cache 0\ntotal_inactive_file 96000\n")
    (mem_leaf / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    usage = driver.usage(handle, pgid=1)
    assert (usage.cpu_ns, usage.memory_bytes, usage.working_set_bytes) == (
        123_456_789, 4_096_000, 4_000_000,
    )  # fmt: skip
    assert driver.oom_kills(handle) == 2


def test_join_argv_passes_paths_and_argv_verbatim():
    argv = join_argv(["/a b/cgroup.procs", "/c/cgroup.procs"], ["echo", "$HOME", "'x'"])
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[3:] == ["fleetlog-init", "2", "/a b/cgroup.procs", "/c/cgroup.procs",
                        "echo", "$HOME", "'x'"]  # fmt: skip
    assert join_argv([], ["true"]) == ["true"]


def test_detect_on_this_machine():
    driver = detect()
    assert driver.name in ("v1", "v2", "none")
    assert driver.message
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert driver.name in ("v2", "none")


def test_v2_resize_writes_the_weight_and_reads_back_what_the_files_hold(tmp_path: Path):
    driver = V2Driver(fake_v2(tmp_path))
    handle = driver.create("uid-3", "api", 0)
    leaf = Path(handle.paths[0])
    (leaf / "cpu.weight").write_text("100\n")
    driver.apply_limits(handle, cpu_millis=400, memory_bytes=256 << 20, cpu_request_millis=300)
    # The kubelet's conversions: 300m -> 307 shares -> weight 1 + (305 * 9999) // 262142.
    assert cpu_shares(300) == 307
    assert (leaf / "cpu.weight").read_text() == str(cpu_weight(307)) == "12"
    held = driver.limits(handle)
    assert (held.cpu_limit_millis, held.memory_limit_bytes) == (400, 256 << 20)
    # A weight stands for a range of shares (v2 keeps ~1/26 of v1's resolution): read back,
    # it gives shares of that same weight.
    assert held.cpu_shares is not None and cpu_weight(held.cpu_shares) == 12
    driver.apply_limits(handle, None, None)
    assert driver.limits(handle).cpu_limit_millis is None
    assert driver.limits(handle).memory_limit_bytes is None


def test_v1_resize_raises_memsw_before_the_memory_limit_and_lowers_it_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cpu, memory = tmp_path / "cpu", tmp_path / "memory"
    cpu.mkdir()
    memory.mkdir()
    driver = V1Driver({"cpu": cpu, "cpuacct": cpu, "memory": memory})
    handle = driver.create("uid-4", "db", 0)
    mem_leaf, cpu_leaf = (Path(p) for p in handle.paths)
    (mem_leaf / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    (mem_leaf / "memory.limit_in_bytes").write_text(str(128 << 20))
    # The kernel refuses a memory limit above memsw (EINVAL): the order of the writes matters.
    writes: list[str] = []
    real_write = cgroups._write

    def recording(path: Path, value: str) -> None:
        writes.append(path.name)
        real_write(path, value)

    monkeypatch.setattr(cgroups, "_write", recording)
    driver.apply_limits(handle, 400, 256 << 20, cpu_request_millis=300)
    raised = [w for w in writes if w.startswith("memory.")]
    writes.clear()
    driver.apply_limits(handle, 400, 64 << 20, cpu_request_millis=300)
    lowered = [w for w in writes if w.startswith("memory.")]
    assert raised == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    assert lowered == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    assert (cpu_leaf / "cpu.shares").read_text() == "307"
    (cpu_leaf / "cpu.cfs_quota_us").write_text("40000\n")
    assert driver.limits(handle) == Limits(400, 307, 64 << 20)


def test_a_new_cgroups_first_limits_leave_the_kernels_defaults_unwritten(tmp_path: Path):
    # v1: unlimited memory and memsw, a 100 ms CFS period and no quota are a new group's.
    cpu, memory = tmp_path / "cpu", tmp_path / "memory"
    cpu.mkdir()
    memory.mkdir()
    v1 = V1Driver({"cpu": cpu, "cpuacct": cpu, "memory": memory})
    handle = v1.create("uid-3", "app", 0)
    mem_leaf, cpu_leaf = (Path(p) for p in handle.paths)
    v1.apply_limits(handle, None, None, initial=True)
    assert sorted(p.name for p in (*mem_leaf.iterdir(), *cpu_leaf.iterdir())) == []
    # A limit asked for is written; what stays the default is not.
    limited = v1.create("uid-3", "app", 1)
    mem_leaf, cpu_leaf = (Path(p) for p in limited.paths)
    v1.apply_limits(limited, 250, None, cpu_request_millis=100, initial=True)
    assert (cpu_leaf / "cpu.cfs_quota_us").read_text() == "25000"
    assert (cpu_leaf / "cpu.shares").read_text() == "102"
    assert not (cpu_leaf / "cpu.cfs_period_us").exists()
    assert not (mem_leaf / "memory.limit_in_bytes").exists()
    # Only once, and only for a group made by create: a resize writes every value.
    v1.apply_limits(handle, None, None)
    assert (Path(handle.paths[0]) / "memory.limit_in_bytes").read_text() == "-1"
    assert (Path(handle.paths[1]) / "cpu.cfs_quota_us").read_text() == "-1"
    # A group left by an earlier attempt may hold other limits: written in full.
    left = v1.create("uid-3", "app", 1)
    (Path(left.paths[1]) / "cpu.cfs_quota_us").write_text("25000")
    v1.apply_limits(left, None, None, initial=True)
    assert (Path(left.paths[1]) / "cpu.cfs_quota_us").read_text() == "-1"
    assert (Path(left.paths[1]) / "cpu.cfs_period_us").read_text() == "100000"

    # v2: "max" in memory.max and cpu.max; memory.oom.group is set as ever.
    mount = fake_v2(tmp_path)
    v2 = V2Driver(mount)
    handle = v2.create("uid-4", "app", 0)
    leaf = Path(handle.paths[0])
    (leaf / "memory.oom.group").write_text("0\n")
    v2.apply_limits(handle, None, None, initial=True)
    assert (leaf / "memory.oom.group").read_text() == "1"
    assert not (leaf / "memory.max").exists() and not (leaf / "cpu.max").exists()
    again = v2.create("uid-4", "app", 0)  # its directory is there already: written in full
    v2.apply_limits(again, 500, None, initial=True)
    assert (leaf / "memory.max").read_text() == "max"
    assert (leaf / "cpu.max").read_text() == "50000 100000"


def test_home_procs_files_name_this_processs_own_cgroups(tmp_path: Path):
    own = tmp_path / "cgroup"
    own.write_text(
        "9:name=systemd:/\n4:memory:/sliced/agent\n2:cpu,cpuacct:/\n1:pids:/p\n0::/unified/a\n"
    )
    v1 = [(Path("/m"), "memory"), (Path("/cc"), "cpu"), (Path("/p"), "pids")]
    assert cgroups.home_procs_files(v1, self_cgroup=own) == (
        "/m/sliced/agent/cgroup.procs", "/cc/cgroup.procs", "/p/p/cgroup.procs",
    )  # fmt: skip
    v2 = [(Path("/sys/fs/cgroup"), "")]
    own.write_text("0::/system.slice/fleetlog-agent.service\n")
    assert cgroups.home_procs_files(v2, self_cgroup=own) == (
        "/sys/fs/cgroup/system.slice/fleetlog-agent.service/cgroup.procs",
    )


def test_joined_moves_this_process_in_and_back_and_says_when_it_cannot_leave(tmp_path: Path):
    inside = [tmp_path / "in1", tmp_path / "in2"]
    home = tmp_path / "home"
    me = str(os.getpid())
    for path in (*inside, home):
        path.write_text("")
    with cgroups.joined(tuple(map(str, inside)), (str(home),)):
        assert [p.read_text() for p in inside] == [me, me] and home.read_text() == ""
    assert home.read_text() == me
    with (
        pytest.raises(cgroups.HomeLost),
        cgroups.joined((str(inside[0]),), (str(tmp_path / "gone" / "cgroup.procs"),)),
    ):
        pass


def test_a_new_v1_cgroups_memory_limit_goes_in_the_order_its_read_default_gave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A new group's limit is the kernel's unlimited default: not read, and the writes go in
    the order the read would have given (memory first, then memsw)."""
    cpu, memory = tmp_path / "cpu", tmp_path / "memory"
    cpu.mkdir()
    memory.mkdir()
    driver = V1Driver({"cpu": cpu, "cpuacct": cpu, "memory": memory})
    writes: list[str] = []
    reads: list[str] = []
    real_write, real_read = cgroups._write, cgroups._read_int
    monkeypatch.setattr(cgroups, "_write", lambda p, v: (writes.append(p.name), real_write(p, v)))
    monkeypatch.setattr(cgroups, "_read_int", lambda p: (reads.append(p.name), real_read(p))[1])
    orders = []
    for restart, new in ((0, True), (1, False)):
        handle = driver.create("uid-5", "app", restart)
        mem_leaf = Path(handle.paths[0])
        (mem_leaf / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
        if not new:  # a group an earlier attempt left, holding the kernel's default
            (mem_leaf / "memory.limit_in_bytes").write_text("9223372036854771712\n")
            driver.apply_limits(handle, None, None, initial=True)  # it is not new any more
        assert driver.is_new(handle) is new
        writes.clear()
        reads.clear()
        driver.apply_limits(handle, None, 256 << 20, initial=True)
        orders.append([w for w in writes if w.startswith("memory.")])
        assert reads == ([] if new else ["memory.limit_in_bytes"])
        assert (mem_leaf / "memory.limit_in_bytes").read_text() == str(256 << 20)
        assert not driver.is_new(handle)
    assert orders[0] == orders[1] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_a_new_cgroups_baselines_are_what_reading_its_counters_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """On this machine's cgroups: the counters of a group just made, read once per driver,
    then known; a group that is not new is always read."""
    driver = detect(root_name=f"fleetlog-test-{os.getpid()}")
    if not driver.limits_enforced:
        pytest.skip(f"cgroups not writable here: {driver.message}")
    made = []
    try:
        for restart in range(3):
            handle = driver.create("uid-baselines", "app", restart)
            made.append(handle)
            assert driver.is_new(handle)
            read = (driver.oom_kills(handle), driver.memory_failures(handle))
            if restart > 0:  # known from the first: no file is read
                monkeypatch.setattr(driver, "oom_kills", lambda h: pytest.fail("read"))
                monkeypatch.setattr(driver, "memory_failures", lambda h: pytest.fail("read"))
            assert driver.baselines(handle, new=True) == read
            monkeypatch.undo()
        again = driver.create("uid-baselines", "app", 0)  # there already: not new
        assert not driver.is_new(again)
        counted: list[object] = []
        real = driver.oom_kills
        monkeypatch.setattr(driver, "oom_kills", lambda h: counted.append(h) or real(h))
        assert driver.baselines(again, new=False) == read
        assert counted == [again]
    finally:
        monkeypatch.undo()
        for handle in made:
            driver.remove(handle)
        if isinstance(driver, V1Driver):
            for mount in driver.hierarchies:
                (mount / driver.root_name).rmdir()
        elif isinstance(driver, V2Driver):
            driver.root.rmdir()
