"""What a node agent says about its machine: capacity, labels and conditions, as a Node manifest.

Why this exists: an agent registers its node through the gateway like any client, and the
capacity it declares is what the scheduler places pods against. Read from the machine (cpu
count, MemTotal) unless the operator declares it; the conditions say what the agent can
enforce, so an operator sees at a glance that a node only measures usage because it has no
writable cgroups.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MAX_PODS = 110


@dataclass(frozen=True)
class NodeCapacity:
    cpu: str
    memory: str
    pods: str = str(DEFAULT_MAX_PODS)


def machine_capacity(meminfo: Path = Path("/proc/meminfo")) -> NodeCapacity:
    """This machine's cpu count and memory (MemTotal), as Kubernetes quantities."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory_kib = 0
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
            break
    return NodeCapacity(cpu=str(cpus or 1), memory=f"{memory_kib}Ki")


def default_node_name() -> str:
    return socket.gethostname().split(".")[0].lower() or "node"


@dataclass(frozen=True, kw_only=True)
class NodeCondition:
    type: str
    status: str
    reason: str
    message: str = ""

    def as_manifest(self) -> dict[str, str]:
        # No timestamps: re-registering an unchanged node must append nothing.
        return {"type": self.type, "status": self.status, "reason": self.reason,
                "message": self.message}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class NodeDeclaration:
    """Everything the agent states about its node when it registers."""

    name: str
    capacity: NodeCapacity
    labels: dict[str, str] = field(default_factory=dict)
    conditions: tuple[NodeCondition, ...] = ()

    def registration(self, current: dict[str, Any] | None) -> dict[str, Any]:
        """The manifest to register with, given the node as the log has it (None: new).

        As the kubelet re-registers: a node that exists keeps its spec (``unschedulable``
        set by a cordon, taints and the pod range others gave it), its annotations and the
        labels users added; the agent states its own labels and its status. So restarting an
        agent never uncordons its node or drops a user's taint."""
        declared = self.manifest()
        if current is None:
            return declared
        metadata = dict(current.get("metadata") or {})
        for server_field in ("uid", "resourceVersion", "generation", "creationTimestamp"):
            metadata.pop(server_field, None)
        metadata["name"] = self.name
        metadata["labels"] = {**(metadata.get("labels") or {}), **declared["metadata"]["labels"]}
        registered = {**declared, "metadata": metadata}
        if current.get("spec"):
            registered["spec"] = current["spec"]
        return registered

    def manifest(self) -> dict[str, Any]:
        resources = {
            "cpu": self.capacity.cpu,
            "memory": self.capacity.memory,
            "pods": self.capacity.pods,
        }
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "node.fleetlog.dev/runtime": "process",
            **self.labels,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [c.as_manifest() for c in self.conditions],
            },
        }
