"""Real processes for the fault tests: nats-servers this test owns (killed and restarted by
PID), and the fleetlog roles (``up --nats-url``, ``scheduler``, ``sim``, ``agent``) run
against them, each logging to its own file.

Why this exists: an outage test must take the server away under the roles' feet and bring it
back on the same port and data directory, which the ``cluster`` fixture (an ``up`` with its
embedded server) cannot do; the chaos test needs the same for three clustered servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nats
from nats.js.api import StorageType, StreamConfig

from streams.server import EmbeddedServer, free_port


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout:.0f}s"
        time.sleep(0.5)


def nats_cluster(base: Path, size: int = 3) -> list[EmbeddedServer]:
    """``size`` nats-servers with JetStream, clustered on loopback (free ports, own dirs)."""
    ports = [free_port() for _ in range(size)]
    routes = ", ".join(f"nats://127.0.0.1:{port}" for port in ports)
    return [
        EmbeddedServer(
            data_dir=base / f"n{index}",
            port=free_port(),
            name=f"n{index}",
            extra_config=(
                f"cluster {{ name: fleetlog, listen: 127.0.0.1:{ports[index]}, "
                f"routes: [{routes}] }}\n"
            ),
        )
        for index in range(size)
    ]


def wait_for_jetstream_cluster(url: str, replicas: int = 3, timeout: float = 60) -> None:
    """Until the servers at ``url`` elected a JetStream leader and can place an R3 stream
    (``up`` sets its streams up at once and stops if it cannot)."""

    async def ready() -> None:
        nc = await nats.connect(url.split(","), connect_timeout=2)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    js = nc.jetstream(timeout=2)
                    await js.add_stream(
                        StreamConfig(
                            name="READY", subjects=["ready.>"], num_replicas=replicas,
                            storage=StorageType.MEMORY,
                        )
                    )  # fmt: skip
                    await js.delete_stream("READY")
                    return
                except Exception:
                    assert time.monotonic() < deadline, "the JetStream cluster did not form"
                    await asyncio.sleep(0.5)
        finally:
            await nc.close()

    asyncio.run(ready())


def start(server: EmbeddedServer) -> None:
    asyncio.run(server.start())


def kill(server: EmbeddedServer) -> None:
    """SIGKILL, by PID: the server gets no chance to close anything."""
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()


def stop(server: EmbeddedServer) -> None:
    asyncio.run(server.stop())


class Fleet:
    """The fleetlog processes of one test, against ``url`` (one server or several)."""

    def __init__(self, base: Path, url: str) -> None:
        self.base = base
        self.url = url
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, list[str]] = {}
        # The seal key every role of this test shares: `up` makes it on its first start.
        self.env = {
            **os.environ,
            "FLEETLOG_SERVER": url,
            "FLEETLOG_USER": "user:e2e",
            "FLEETLOG_SEAL_KEY": str(base / "seal.key"),
        }

    def log(self, role: str) -> str:
        return (self.base / f"{role}.log").read_text(errors="replace")

    def spawn(self, role: str, *args: str) -> None:
        """Start ``fleetlog ARGS`` as ``role`` (appending to its log, so a restart keeps it).
        An ``up`` serves its Kubernetes API on a free port: tests run at once must not all
        want 6443."""
        if args[:1] == ("up",) and "--api-port" not in args and "--no-api" not in args:
            args = (*args, "--api-port", "0")
        self.commands[role] = list(args)
        with (self.base / f"{role}.log").open("ab") as log:
            self.processes[role] = subprocess.Popen(
                [sys.executable, "-m", "ops", "--log-level", "info", *args],
                stdout=log,
                stderr=log,
                env=self.env,
            )

    def up(self, *options: str) -> None:
        self.spawn(
            "up", "up", "--nats-url", self.url, "--data-dir", str(self.base / "data"),
            "--no-agent", *options,
        )  # fmt: skip
        wait_for(
            lambda: self.alive("up") and self.cli("get", "namespaces", check=False).returncode == 0,
            90,
            "fleetlog up ready",
        )

    def kill(self, role: str) -> None:
        process = self.processes[role]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, role: str) -> None:
        self.spawn(role, *self.commands[role])

    def alive(self, role: str) -> bool:
        process = self.processes[role]
        assert process.poll() is None, f"{role} exited ({process.returncode}):\n{self.log(role)}"
        return True

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ops", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"fleetlog {' '.join(args)} failed: {result.stderr}")
        return result

    def cli_once_served(self, *args: str, stdin: str | None = None, timeout: float = 60) -> None:
        """Run a command as a user would right after an outage: while the roles are still
        reconnecting it is refused ("no gateway is serving"), so it is sent again (every
        command here is idempotent: apply, scale) until it is served."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.cli(*args, stdin=stdin, check=False)
            if result.returncode == 0:
                return
            assert time.monotonic() < deadline, f"fleetlog {' '.join(args)}: {result.stderr}"
            time.sleep(0.5)

    def pods(self) -> list[dict[str, Any]]:
        listed = self.cli("get", "pods", "-A", "-o", "json", check=False)
        if listed.returncode != 0:
            return []
        items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
        return items

    def stop_all(self) -> None:
        """SIGTERM every role still running (SIGKILL if it does not stop), by PID."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Containers of a real agent outlive it by design: stop each by its process group.
        for state in self.base.glob("**/pods/*/*/*/container.json"):
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError, OSError):
                os.killpg(int(json.loads(state.read_text())["pgid"]), signal.SIGKILL)


def deployment(name: str, replicas: int, *, node_type: str = "simulated") -> str:
    """A deployment whose pods only fit the simulated nodes (the sim starts them)."""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{type: {node_type}}}
      containers: [{{name: main, image: registry.invalid/{name}:1}}]
"""


def running_by_owner(pods: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Running pods counted by the deployment their replica set belongs to (the app label)."""
    counts: dict[str, int] = {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") == "Running":
            app = (pod["metadata"].get("labels") or {}).get("app", "")
            counts[app] = counts.get(app, 0) + 1
    return counts
