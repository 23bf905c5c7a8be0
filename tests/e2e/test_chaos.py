"""Chaos on a real cluster of three NATS servers: fleetlog's streams at three replicas, a
1,000-pod workload, and processes killed (SIGKILL, by PID) at random while it rolls out.

Killed during the workload, each then started again: one of the three nats-servers (chosen at
random), a ``scheduler`` replica, ``sim`` (the simulated nodes and their pods' starts) and
``up`` itself (gateway, controllers, projections). The run must end where an undisturbed run
ends: every deployment with exactly its replicas Running, one replica set each, no duplicate
pod, every acknowledged command in effect (a scale sent mid-chaos included), and a log whose
hash chains ``audit verify`` finds unbroken.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from tests.e2e.fleet import (
    Fleet,
    deployment,
    kill,
    nats_cluster,
    running_by_owner,
    start,
    stop,
    wait_for,
    wait_for_jetstream_cluster,
)

DEPLOYMENTS = {"d0": 250, "d1": 250, "d2": 250, "d3": 200}
FINAL = {**DEPLOYMENTS, "d3": 250}  # d3 is scaled to 250 during the chaos: 1,000 pods


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_thousand_pods_converge_through_killed_servers_and_handlers(tmp_path: Path) -> None:
    rng = random.Random()
    servers = nats_cluster(tmp_path / "nats")
    for server in servers:
        start(server)
    url = ",".join(server.url for server in servers)
    wait_for_jetstream_cluster(url)
    fleet = Fleet(tmp_path, url)
    try:
        fleet.up("--replicas", "3", "--no-scheduler")
        for replica in ("scheduler-a", "scheduler-b"):
            fleet.spawn(replica, "scheduler", "--name", replica)
        fleet.spawn(
            "sim", "sim", "--nodes", "12", "--cpu", "64", "--start-delay", "0.2", "--heartbeat", "3"
        )
        wait_for(lambda: len(fleet.cli("get", "nodes").stdout.splitlines()) == 13, 90, "nodes")
        manifests = "---\n".join(deployment(name, n) for name, n in DEPLOYMENTS.items())
        fleet.cli("apply", "-f", "-", stdin=manifests)

        victim = rng.choice(servers)
        print(f"chaos: killing nats-server {victim.name}")
        time.sleep(rng.uniform(1, 4))
        kill(victim)
        time.sleep(rng.uniform(2, 6))
        fleet.cli_once_served("scale", "deployment/d3", "--replicas", "250")
        start(victim)

        for role in rng.sample(["scheduler-b", "sim", "up"], 3):
            time.sleep(rng.uniform(1, 4))
            print(f"chaos: killing {role}")
            fleet.kill(role)
            time.sleep(rng.uniform(0.5, 2))
            if role == "up":
                fleet.up("--replicas", "3", "--no-scheduler")
            else:
                fleet.restart(role)

        seen: dict[str, object] = {}

        def converged() -> bool:
            pods = fleet.pods()
            names = [pod["metadata"]["name"] for pod in pods]
            assert len(names) == len(set(names)), "a pod name appears twice"
            seen.update(pods=len(pods), running=running_by_owner(pods))
            return running_by_owner(pods) == FINAL and len(pods) == sum(FINAL.values())

        try:
            wait_for(converged, 600, "1,000 pods Running after the chaos")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen {seen}") from None

        pods = fleet.pods()
        assert all(pod["spec"]["nodeName"].startswith("sim-node-") for pod in pods)
        replica_sets = json.loads(fleet.cli("get", "rs", "-o", "json").stdout)["items"]
        assert sorted(rs["metadata"]["name"].rsplit("-", 1)[0] for rs in replica_sets) == sorted(
            FINAL
        )
        owners = {rs["metadata"]["name"] for rs in replica_sets}
        per_owner: dict[str, int] = {}
        for pod in pods:
            (owner,) = [ref["name"] for ref in pod["metadata"]["ownerReferences"]]
            assert owner in owners
            per_owner[owner] = per_owner.get(owner, 0) + 1
        assert sorted(per_owner.values()) == sorted(FINAL.values())
        verified = fleet.cli("audit", "verify", check=False)
        assert verified.returncode == 0 and verified.stdout.splitlines()[-1] == "no breaks", (
            verified.stdout + verified.stderr
        )
        for role in ("up", "scheduler-a", "scheduler-b", "sim"):
            assert fleet.alive(role)
            assert "Traceback" not in fleet.log(role), fleet.log(role)
    finally:
        fleet.stop_all()
        for server in servers:
            stop(server)
