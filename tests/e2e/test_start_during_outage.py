"""Roles started while NATS is down: each waits for the server and then does its work.

A node ``agent``, a ``scheduler`` replica, ``sim`` and a ``gateway`` process are started before
any nats-server runs; the server comes up 15 s later (then ``up``, without a scheduler of its
own). Each role must have said once that the server is unreachable (and once that it is
reachable again), printed no traceback and still be running; the agent must have registered
its node and run a pod on it (bound by the ``scheduler`` replica), the simulated nodes must
have registered and started a deployment's pods.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from streams.server import EmbeddedServer, free_port
from tests.e2e.fleet import Fleet, deployment, running_by_owner, start, stop, wait_for

ROLES = ("agent", "scheduler", "sim", "gateway")

POD = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: hello, namespace: default}}
spec:
  nodeSelector: {{kubernetes.io/hostname: late-node}}
  containers:
    - name: main
      image: process
      command: ["{sys.executable}", "-c", "print('up after the outage', flush=True); import time; time.sleep(600)"]
"""


def test_roles_started_while_nats_is_down_wait_for_it_and_then_work(tmp_path: Path) -> None:
    server = EmbeddedServer(data_dir=tmp_path / "nats", port=free_port())
    fleet = Fleet(tmp_path, server.url)
    try:
        fleet.spawn(
            "agent", "agent", "--name", "late-node", "--root", str(tmp_path / "agent"),
            "--no-pod-network", "--cluster-dns", "", "--heartbeat", "2",
        )  # fmt: skip
        fleet.spawn("scheduler", "scheduler", "--name", "replica-a")
        fleet.spawn("sim", "sim", "--nodes", "2", "--start-delay", "0.2", "--heartbeat", "2")
        fleet.spawn("gateway", "gateway")
        time.sleep(15)
        for role in ROLES:  # past the old 10 s limit of the first connection
            assert fleet.alive(role)
        start(server)
        fleet.up("--no-scheduler")

        wait_for(lambda: len(fleet.cli("get", "nodes").stdout.splitlines()) == 4, 90, "3 nodes")
        fleet.cli_once_served("apply", "-f", "-", stdin=POD)
        fleet.cli_once_served("apply", "-f", "-", stdin=deployment("web", 2))

        def pod_ran() -> bool:
            logs = fleet.cli("logs", "hello", check=False).stdout
            return "up after the outage" in logs

        try:
            wait_for(pod_ran, 90, "the agent's pod ran")
        except AssertionError as exc:
            shown = fleet.cli("describe", "pod", "hello", check=False).stdout
            logs = "\n".join(
                f"== {role}\n{fleet.log(role)[-4000:]}" for role in ("agent", "scheduler")
            )
            raise AssertionError(f"{exc}\n{shown}\n{logs}") from None

        def web_ran() -> bool:
            return running_by_owner(fleet.pods()).get("web") == 2

        wait_for(web_ran, 90, "the sim's pods ran")
        for role in ROLES:
            assert fleet.alive(role)
            text = fleet.log(role)
            assert "Traceback" not in text, f"{role}:\n{text}"
            assert text.count("nats.unreachable") == 1, f"{role}:\n{text}"
            assert text.count("nats.reachable") == 1, f"{role}:\n{text}"
    finally:
        fleet.stop_all()
        stop(server)
