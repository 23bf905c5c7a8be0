"""The pods' ``resolv.conf`` files from inodes made ahead (``handlers.agent.poddns``): what a
pod's directory and file are what ``mkdir`` and ``write_text`` made without spares."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
from pathlib import Path

from handlers.agent.poddns import RESOLV_CONF, SPARE_PODS, PodResolvers
from tests.integration.support import eventually


def _pid_gone() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


UID = "6f1c2d3e-0a1b-4c5d-8e9f-001122334455"


async def test_an_idle_agent_makes_spares_and_a_pods_file_takes_them(tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.1\n")
    etc_netns = tmp_path / "etc-netns"
    etc_netns.mkdir()
    resolvers = PodResolvers(
        prefix="t9x", resolv_conf=host, etc_netns=etc_netns, run_netns=tmp_path / "run-netns"
    )
    resolvers.cluster_dns = ("10.96.0.10",)
    spares = resolvers.spares_dir
    spares.mkdir()
    (spares / "1").write_text("an earlier agent's")  # removed, not taken
    # A pid that is no process's now ...
    dead = etc_netns / f".spares-{_pid_gone()}-other"
    dead.mkdir()  # ... a killed agent's spares: removed
    alive = etc_netns / f".spares-{os.getppid()}-other"
    alive.mkdir()  # a live agent's (its pid alive): kept
    task = asyncio.create_task(resolvers.keep_spares())
    try:

        async def filled() -> bool:
            return spares.is_dir() and len(os.listdir(spares)) == 2 * SPARE_PODS

        await eventually(filled)
        made = {os.stat(spares / name).st_ino for name in os.listdir(spares)}
        netns = f"t9x-{UID}"
        spec = {"containers": [{"name": "main"}]}
        target = await resolvers.prepare(
            uid=UID, namespace="default", name="web", spec=spec, netns=netns
        )
        assert target == netns
        directory, file = etc_netns / netns, etc_netns / netns / RESOLV_CONF
        assert directory.stat().st_ino in made and file.stat().st_ino in made
        assert "nameserver 10.96.0.10" in file.read_text()
        assert os.listdir(directory) == [RESOLV_CONF]
        (tmp_path / "plain-dir").mkdir()
        (tmp_path / "plain-file").write_text("x")
        for path, plain in ((directory, "plain-dir"), (file, "plain-file")):
            assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(
                (tmp_path / plain).stat().st_mode
            )
        assert len(os.listdir(spares)) == 2 * SPARE_PODS - 2
        file.write_text("kept\n")  # a pod's file is never replaced
        await resolvers.prepare(uid=UID, namespace="default", name="web", spec=spec, netns=netns)
        assert file.read_text() == "kept\n"
        assert resolvers.held() == {UID}  # the spares are no pod's
        await asyncio.sleep(0.5)  # written within the last second: nothing made meanwhile
        assert len(os.listdir(spares)) == 2 * SPARE_PODS - 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not spares.exists()
    assert not dead.exists() and alive.is_dir()
    assert file.read_text() == "kept\n"
