"""What the command benchmarks share: a ``fleetlog up`` in a process of their own, open or
behind the NATS wall, the identities that command it, and the CPU its processes use.

Why this exists: ``ops.bench_wall`` (the front door's cost per command) and
``ops.bench_commands --walled`` (bursts and sustained load through that door, as the
bootstrap admin or as an ordinary user) start the same walled ``up``: its embedded server
admitting nkeys with subject permissions, commands signed, verified and authorized by RBAC.
One set-up here, so both measure the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ops.natswall import ADMIN_USER
from streams.commandbus import CommandClient, CommandFailed, NoGateway
from streams.connection import Refused, Unreachable, connect, tls_context
from streams.identity import Credentials, read_seed_file


def pod_manifest(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "containers": [
                {"name": "main", "image": "nginx", "resources": {"requests": {"cpu": "100m"}}}
            ]
        },
    }


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of every live descendant (``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / tick
        todo.extend(children.get(current, ()))
    return total


async def settle(pid: int, *, busy: float = 0.3, timeout: float = 120.0) -> None:
    """Until ``up`` and its children used less than ``busy`` of a core over a second."""
    deadline = time.monotonic() + timeout
    before = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = tree_cpu_seconds(pid)
        if now - before < busy:
            return
        before = now


NAMESPACE = "default"
READY_TIMEOUT_S = 180.0
"""How long ``up`` may take to write its keys and answer (its first start makes them)."""


@dataclass
class Target:
    """A running ``up``: where to send, as whom, with what trust."""

    mode: str
    url: str
    pid: int
    credentials: Credentials | None = None
    tls: ssl.SSLContext | None = None
    nats_pid: int = 0
    """The nats-server's process (``up``'s child when walled, the benchmark's when open)."""
    actor: str = "bench"
    """Its commands' stated actor: who they act as unsigned (open); signed, the signer is."""

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU used so far by ``up`` with its server and gateways, and by the server alone."""
        nats = tree_cpu_seconds(self.nats_pid)
        up = tree_cpu_seconds(self.pid)
        return (up if self.mode == "walled" else up + nats), nats


@contextlib.asynccontextmanager
async def running(
    command: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None
) -> AsyncIterator[int]:
    """``command`` in a process of its own (in ``cwd``), stopped by PID on the way out."""
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child
            command, stdout=subprocess.DEVNULL, stderr=out, env=env, cwd=cwd
        )
    try:
        yield process.pid
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``process`` (by its PID), SIGKILL if it still runs after 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def up_command(workdir: Path, *options: str) -> list[str]:
    """``fleetlog up`` without agent and scheduler (the command path alone), data in
    ``workdir``: on its embedded server behind the wall unless ``options`` say otherwise."""
    return [
        sys.executable, "-m", "ops", "--log-level", "warning", "up", "--data-dir",
        str(workdir), "--no-agent", "--no-scheduler", *options,
    ]  # fmt: skip


async def until_answered(target: Target, *, timeout: float = READY_TIMEOUT_S) -> None:
    """Until ``up``'s gateway answers a command from ``target``'s identity."""
    deadline = time.monotonic() + timeout
    probe = {**pod_manifest("ready-probe"), "metadata": {"name": "ready-probe"}}
    while True:
        try:
            nc = await connect(
                target.url, name="bench-wait", credentials=target.credentials, tls=target.tls,
                reconnect=False,
            )  # fmt: skip
        except (Unreachable, Refused):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        try:
            client = CommandClient(nc, actor=target.actor)
            await client.send("Pod", "apply", {"manifest": probe}, timeout=5)
            return
        except (CommandFailed, NoGateway):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await nc.close()


async def until_exists(path: Path, *, timeout: float = READY_TIMEOUT_S) -> None:
    """Until ``up`` has written ``path`` (its keys, its CA: made at its start)."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(path.exists):
        if time.monotonic() > deadline:
            raise TimeoutError(f"fleetlog up did not write {path}")
        await asyncio.sleep(0.2)


async def admit_users(admin: Target, users: dict[str, Credentials]) -> None:
    """Users (name -> key) with ``edit`` in the bench namespace (one RoleBinding), so their
    commands are decided by RBAC's rules."""
    nc = await connect(admin.url, name="bench-admin", credentials=admin.credentials, tls=admin.tls)
    try:
        client = CommandClient(nc, actor=admin.actor)
        manifests: list[dict[str, object]] = [
            {
                "apiVersion": "auth.fleetlog.dev/v1", "kind": "User",
                "metadata": {"name": name},
                "spec": {"publicKey": user.public_key, "groups": []},
            }
            for name, user in users.items()
        ]  # fmt: skip
        manifests.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "bench-edit", "namespace": NAMESPACE},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "edit",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}
                    for name in users
                ],
            }
        )  # fmt: skip
        for manifest in manifests:
            await client.send(str(manifest["kind"]), "apply", {"manifest": manifest})
    finally:
        await nc.close()


async def walled_admin(data: Path, port: int, pid: int, *, tls: bool = False) -> Target:
    """The bootstrap admin (``fleetlog-admin``, group ``system:masters``) of the walled ``up``
    keeping its data in ``data`` with its server on ``port``, once ``up`` answers it."""
    await until_exists(data / "pki" / "nkeys" / "admin.nk")
    trust = None
    if tls:
        await until_exists(data / "pki" / "nats" / "ca.crt")
        trust = tls_context(data / "pki" / "nats" / "ca.crt")
    url = f"{'tls' if tls else 'nats'}://127.0.0.1:{port}"
    seed = read_seed_file(data / "pki" / "nkeys" / "admin.nk")
    admin = Target("walled", url, pid, seed, trust, actor=ADMIN_USER)
    await until_answered(admin)
    nats_pid = int((await asyncio.to_thread((data / "nats-server.pid").read_text)).strip())
    admin.nats_pid = nats_pid
    return admin
