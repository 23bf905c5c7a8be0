"""``fleetlog up --gateways N`` as real processes: it runs N-1 ``fleetlog gateway`` children
configured as it is, starts another when one dies, and stops them when it stops."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e


def gateway_children(parent: int) -> dict[int, list[str]]:
    """PID -> command line of every ``fleetlog gateway`` child of ``parent``."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and "gateway" in argv:
            found[int(entry.name)] = argv
    return found


def test_up_runs_supervised_gateway_processes_configured_as_itself(cluster: Cluster) -> None:
    cluster.up(
        options=["--no-scheduler", "--gateways", "3", "--service-cluster-ip-range", "100.70.0.0/16"]
    )
    assert cluster.process is not None
    up_pid = cluster.process.pid
    wait_for(lambda: len(gateway_children(up_pid)) == 2)
    children = gateway_children(up_pid)
    for argv in children.values():
        assert argv[argv.index("--service-cluster-ip-range") + 1] == "100.70.0.0/16"
        assert argv[argv.index("--server") + 1] == cluster.server

    manifests = "\n---\n".join(
        f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\nspec:\n  containers:\n"
        f"  - name: main\n    image: nginx\n    command: [serve]"
        for i in range(30)
    )
    cluster.cli("apply", "-f", "-", stdin=manifests)
    assert cluster.cli("get", "pods").stdout.count("\np") == 30

    # A gateway that dies is replaced; commands keep being answered meanwhile.
    victim = next(iter(children))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(gateway_children(up_pid)) == 2 and victim not in gateway_children(up_pid))
    cluster.cli("delete", "pod", "p0")

    survivors = gateway_children(up_pid)
    assert cluster.down() == 0
    for pid in survivors:
        assert not Path(f"/proc/{pid}").exists()
