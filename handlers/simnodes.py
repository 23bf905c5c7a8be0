"""Simulated nodes (kwok-like): many nodes with declared capacity in one process.

They register through the command gateway like any client would (``Node`` apply, actor
``system:sim``) and then renew their heartbeat leases on a period, so the node lifecycle
controller sees them Ready, and sees them go Unknown when the simulator stops. This is how the
control plane is exercised at scale on one machine (5,000 nodes take a few seconds to register
and a fraction of a core to keep alive). Moving bound pods to Running after a delay joins here
when the scheduler binds pods.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client

from streams.commandbus import CommandClient
from streams.leases import NodeLeases

log = structlog.get_logger(__name__)

ACTOR = "system:sim"
IN_FLIGHT = 200


@dataclass(frozen=True)
class SimNodeSpec:
    """The shape of every simulated node."""

    prefix: str = "sim-node"
    cpu: str = "4"
    memory: str = "32Gi"
    pods: str = "110"
    labels: dict[str, str] = field(default_factory=dict)
    taints: Sequence[dict[str, str]] = ()
    zones: int = 3

    def name(self, index: int) -> str:
        return f"{self.prefix}-{index}"

    def manifest(self, index: int) -> dict[str, Any]:
        name = self.name(index)
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        labels = {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": f"zone-{index % max(1, self.zones)}",
            "type": "simulated",
            **self.labels,
        }
        spec: dict[str, Any] = {"taints": list(self.taints)} if self.taints else {}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
            "status": {"capacity": capacity, "allocatable": capacity},
        }


class SimulatedNodes:
    def __init__(self, nc: Client, leases: NodeLeases, spec: SimNodeSpec, count: int) -> None:
        self._commands = CommandClient(nc, actor=ACTOR)
        self._leases = leases
        self.spec = spec
        self.count = count

    @classmethod
    async def create(cls, nc: Client, spec: SimNodeSpec, count: int) -> SimulatedNodes:
        return cls(nc, await NodeLeases.open(nc), spec, count)

    async def register(self) -> None:
        """Apply every node's manifest through the gateway (idempotent: unchanged if present)."""
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def apply(index: int) -> None:
            async with slots:
                await self._commands.send("Node", "apply", {"manifest": self.spec.manifest(index)})

        async with asyncio.TaskGroup() as tasks:
            for index in range(self.count):
                tasks.create_task(apply(index))
        log.info("sim.registered", nodes=self.count, prefix=self.spec.prefix)

    async def heartbeat_once(self) -> None:
        now = time.time_ns()
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def renew(index: int) -> None:
            async with slots:
                await self._leases.renew(self.spec.name(index), now)

        async with asyncio.TaskGroup() as tasks:
            for index in range(self.count):
                tasks.create_task(renew(index))

    async def keep_alive(self, heartbeat_seconds: float = 10.0) -> None:
        """Heartbeat every node on a period until cancelled."""
        while True:
            await self.heartbeat_once()
            await asyncio.sleep(heartbeat_seconds)
