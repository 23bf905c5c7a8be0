"""The node agent's seams: what the pod workers need of a container runtime and a log sink.

Why this exists: the agent decides *what* runs (which pods, restarts, probes) and records it;
starting processes and shipping their output are replaceable parts behind it. These Protocols
say exactly what the agent asks of them, so a newcomer sees the contract without reading
``handlers.agent.runtime`` (the process runtime, the only one today) or
``handlers.agent.logship`` (the shipper to ``FLEET_LOGS``), and another runtime (containerd, a
simulated one) knows what to offer.

* :class:`Container` — one started (or adopted) container instance: its spec, when it
  started, where its output is written, and how to run a command inside it (exec probes,
  ``kubectl exec``).
* :class:`ContainerRuntime` — start, wait, stop, remove, measure and adopt such instances.
  A runtime acts only on the instances it handed out; a worker gives each one back to the
  runtime that started it.
* :class:`LogSink` — told when an instance starts (track its output) and when it has exited
  (ship what is left).
* :class:`PodNetwork` — a pod's network namespace and address (``handlers.agent.network``:
  the bridge network, or the node's own network where namespaces cannot be made).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from handlers.agent.cgroups import Limits, Usage
    from handlers.agent.logship import ContainerInstance
    from handlers.agent.network import PodAddresses
    from handlers.agent.runtime import ContainerSpec, ExitStatus


class Container(Protocol):
    """A started (or adopted) container instance, as the pod worker and the probes use it."""

    @property
    def spec(self) -> ContainerSpec: ...

    @property
    def started_ns(self) -> int: ...

    @property
    def directory(self) -> Path:
        """Where the instance's ``stdout`` and ``stderr`` are written."""
        ...

    @property
    def env(self) -> Mapping[str, str]:
        """The environment the instance runs with (an exec probe gets the same)."""
        ...

    @property
    def cwd(self) -> str: ...

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` as run inside this container (its cgroup, its isolation)."""
        ...

    def enter_argv(self, argv: list[str]) -> list[str]:
        """``argv`` as ``kubectl exec`` runs it: inside this running container's own
        namespaces, cgroup and user (``ContainerNotRunning`` once it has ended)."""
        ...


class ContainerRuntime(Protocol):
    """What the node agent and its pod workers ask of the machine."""

    def limits_condition(self) -> tuple[bool, str, str]:
        """(enforced, reason, message) for the node's ``ResourceLimitsEnforced`` condition."""
        ...

    async def start(self, spec: ContainerSpec) -> Container:
        """Start one instance; ``ContainerStartError`` (with the status to report) when it
        cannot run."""
        ...

    def instance_dir(self, spec: ContainerSpec) -> Path:
        """Where the instance ``spec`` describes keeps its files (its output among them)."""
        ...

    async def wait(self, container: Container) -> ExitStatus:
        """Until the instance has ended; how it ended."""
        ...

    async def stop(self, container: Container, grace_seconds: float) -> ExitStatus:
        """Ask it to end, force it after ``grace_seconds``; how it ended."""
        ...

    def remove(self, container: Container) -> None:
        """Forget the instance (killing anything left of it), keeping its output."""
        ...

    def usage(self, container: Container) -> Usage:
        """Its cumulative cpu time and current memory."""
        ...

    def resize(
        self,
        container: Container,
        *,
        cpu_limit_millis: int | None,
        cpu_request_millis: int | None,
        memory_limit_bytes: int | None,
    ) -> Limits:
        """Change a running instance's limits in place (no restart); what it holds after.
        ``CgroupError`` when the kernel refuses."""
        ...

    def limits(self, container: Container) -> Limits:
        """What the instance's cgroup holds now."""
        ...

    def adopt_all(self) -> Sequence[Container]:
        """The instances an earlier agent started that are still running."""
        ...


class LogSink(Protocol):
    """Where container output goes: the pod worker says when an instance starts and ends."""

    def expect(self, directory: Path) -> None:
        """An instance is about to be started with its output in ``directory`` (which need
        not exist yet): bound its files from its first byte."""
        ...

    def forget(self, directory: Path) -> None:
        """The instance expected in ``directory`` was not started after all."""
        ...

    def track(self, instance: ContainerInstance) -> None:
        """Start shipping the instance's output (tracking it twice changes nothing)."""
        ...

    def finish(self, instance: ContainerInstance) -> Awaitable[None]:
        """The instance has exited: ship what is left; awaiting the result is optional."""
        ...


class PodNetwork(Protocol):
    """What the agent and its pod workers ask of the node's pod network."""

    @property
    def isolated(self) -> bool:
        """Whether pods get namespaces of their own (False: every pod uses the node's)."""
        ...

    @property
    def host_ip(self) -> str:
        """The node's address as its pods reach it (``status.hostIP``)."""
        ...

    def condition(self) -> tuple[bool, str, str]:
        """(ready, reason, message) for the node's ``PodNetworkReady`` condition."""
        ...

    async def start(self) -> None:
        """Check what an earlier agent left (its ledger) against what exists."""
        ...

    async def set_pod_cidr(self, pod_cidr: str | None) -> None:
        """The node's range (``spec.podCIDR``, once assigned): build what it needs."""
        ...

    async def wait_ready(self) -> None:
        """Until pods can get their networks (the node has its range and bridge)."""
        ...

    async def attach(
        self, *, uid: str, namespace: str, name: str, host_network: bool
    ) -> PodAddresses:
        """The pod's network, made or found; ``NetworkNotReady`` until :meth:`wait_ready`."""
        ...

    async def detach(self, uid: str) -> None:
        """Remove the pod's network (its containers have stopped)."""
        ...

    def started(self, uid: str) -> None:
        """The pod's containers have been started (or tried): what waited for the burst's
        starts (the warm pool's refill) may go on."""
        ...

    async def stop(self) -> None:
        """The agent stops: remove what was made ahead for pods to come (the pods' own
        networks stay, their containers run on)."""
        ...

    def known(self) -> set[str]:
        """The pods (by uid) a network is held for."""
        ...
