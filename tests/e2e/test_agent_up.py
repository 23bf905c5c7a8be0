"""End to end: ``fleetlog up`` runs a local node agent, so a pod with a command really runs on
this machine; its output is read back with ``fleetlog logs`` and deleting it stops it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

POD = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: hello}}
spec:
  containers:
    - name: main
      image: process
      command: ["{sys.executable}", "-c", "print('hello from fleetlog', flush=True); import time; time.sleep(600)"]
"""


def test_up_runs_a_pod_as_a_process_with_its_logs_and_stops_it_on_delete(
    cluster: Cluster,
) -> None:
    cluster.up(agent=True)
    cluster.cli("apply", "-f", "-", stdin=POD)

    def running() -> bool:
        return "Running" in cluster.cli("get", "pods").stdout

    wait_for(running)
    wait_for(lambda: "hello from fleetlog" in cluster.cli("logs", "hello", check=False).stdout)
    described = cluster.cli("describe", "pod", "hello").stdout
    assert "Started container main" in described and "kubelet" in described
    (state,) = cluster.data_dir.glob("agent/pods/*/main/0/container.json")
    pid = json.loads(state.read_text())["pid"]
    os.kill(pid, 0)  # the container is a live process of this machine
    cluster.cli("delete", "pod", "hello")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"

    wait_for(gone)
