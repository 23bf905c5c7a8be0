"""NATS outages under load: every long-running role rides through them.

The server is killed (SIGKILL, by PID) while a deployment is being rolled out and started
again on the same port and data directory after 1 s, 10 s or 60 s. Afterwards ``up``, a
``scheduler`` replica, ``sim`` and a node ``agent`` are all still running, each said the
outage once (one ``nats.disconnected``, one ``nats.reconnected``) and printed no traceback, the
deployment started before the outage converges and a command sent after it takes effect. The
embedded server of ``up`` is supervised: killed, it is started again and ``up`` serves on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from streams.server import EmbeddedServer, free_port
from tests.e2e.fleet import Fleet, deployment, kill, running_by_owner, start, stop, wait_for

ROLES = ("up", "scheduler", "sim", "agent")


def ride_through(tmp_path: Path, outage_seconds: float) -> None:
    server = EmbeddedServer(data_dir=tmp_path / "nats", port=free_port())
    start(server)
    fleet = Fleet(tmp_path, server.url)
    try:
        fleet.up("--no-scheduler")
        fleet.spawn("scheduler", "scheduler", "--name", "replica-a")
        fleet.spawn("sim", "sim", "--nodes", "4", "--start-delay", "0.2", "--heartbeat", "2")
        fleet.spawn(
            "agent", "agent", "--name", "real-node", "--root", str(tmp_path / "agent"),
            "--no-pod-network", "--cluster-dns", "", "--heartbeat", "2",
        )  # fmt: skip
        wait_for(lambda: len(fleet.cli("get", "nodes").stdout.splitlines()) == 6, 60, "5 nodes")
        fleet.cli("apply", "-f", "-", stdin=deployment("before", 12))
        kill(server)
        time.sleep(outage_seconds)
        start(server)

        fleet.cli_once_served("apply", "-f", "-", stdin=deployment("after", 3))
        fleet.cli_once_served("scale", "deployment/before", "--replicas", "10")

        def converged() -> bool:
            pods = fleet.pods()
            names = [pod["metadata"]["name"] for pod in pods]
            assert len(names) == len(set(names))
            return running_by_owner(pods) == {"before": 10, "after": 3} and len(pods) == 13

        wait_for(converged, 120, "both deployments converged after the outage")
        for role in ROLES:
            assert fleet.alive(role)
            text = fleet.log(role)
            assert "Traceback" not in text, f"{role}:\n{text}"
            assert text.count("nats.disconnected") == 1, f"{role}:\n{text}"
            assert text.count("nats.reconnected") == 1, f"{role}:\n{text}"
    finally:
        fleet.stop_all()
        stop(server)


@pytest.mark.parametrize("outage_seconds", [1, 10])
def test_every_role_rides_through_a_nats_outage(tmp_path: Path, outage_seconds: float) -> None:
    ride_through(tmp_path, outage_seconds)


@pytest.mark.slow
def test_every_role_rides_through_a_minute_long_nats_outage(tmp_path: Path) -> None:
    ride_through(tmp_path, 60)


def test_up_restarts_its_embedded_server_when_it_dies(tmp_path: Path) -> None:
    port = free_port()
    fleet = Fleet(tmp_path, f"nats://127.0.0.1:{port}")
    data = tmp_path / "data"
    fleet.spawn("up", "up", "--data-dir", str(data), "--port", str(port), "--no-agent")
    pid_file = data / "nats-server.pid"
    try:
        wait_for(
            lambda: fleet.alive("up") and fleet.cli("get", "ns", check=False).returncode == 0,
            90,
            "fleetlog up ready",
        )
        fleet.spawn("sim", "sim", "--nodes", "2", "--start-delay", "0.2")
        fleet.cli("apply", "-f", "-", stdin=deployment("web", 2))
        first = int(pid_file.read_text())
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: pid_file.exists() and pid_file.read_text().strip() not in ("", str(first)),
            60,
            "the embedded server started again",
        )
        fleet.cli_once_served("scale", "deployment/web", "--replicas", "4")
        wait_for(
            lambda: running_by_owner(fleet.pods()) == {"web": 4}, 90, "web scaled after restart"
        )
        assert fleet.alive("up") and fleet.alive("sim")
        text = fleet.log("up")
        assert "nats_server.restarted" in text and "Traceback" not in text, text
    finally:
        fleet.stop_all()
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
