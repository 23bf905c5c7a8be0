"""The node agent's seams: what the pod workers need of a container runtime and a log sink.

Why this exists: the agent decides *what* runs (which pods, restarts, probes) and records it;
starting processes and shipping their output are replaceable parts behind it. These Protocols
say exactly what the agent asks of them, so a newcomer sees the contract without reading
``handlers.agent.runtime`` (the process runtime, the only one today) or
``handlers.agent.logship`` (the shipper to ``FLEET_LOGS``), and another runtime (containerd, a
simulated one) knows what to offer.

* :class:`Container` — one started (or adopted) container instance: its spec, when it
  started, where its output is written, and how to run a command inside it (exec probes).
* :class:`ContainerRuntime` — start, wait, stop, remove, measure and adopt such instances.
  A runtime acts only on the instances it handed out; a worker gives each one back to the
  runtime that started it.
* :class:`LogSink` — told when an instance starts (track its output) and when it has exited
  (ship what is left).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from handlers.agent.cgroups import Usage
    from handlers.agent.logship import ContainerInstance
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


class ContainerRuntime(Protocol):
    """What the node agent and its pod workers ask of the machine."""

    def limits_condition(self) -> tuple[bool, str, str]:
        """(enforced, reason, message) for the node's ``ResourceLimitsEnforced`` condition."""
        ...

    async def start(self, spec: ContainerSpec) -> Container:
        """Start one instance; ``ContainerStartError`` (with the status to report) when it
        cannot run."""
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

    def adopt_all(self) -> Sequence[Container]:
        """The instances an earlier agent started that are still running."""
        ...


class LogSink(Protocol):
    """Where container output goes: the pod worker says when an instance starts and ends."""

    def track(self, instance: ContainerInstance) -> None:
        """Start shipping the instance's output (tracking it twice changes nothing)."""
        ...

    def finish(self, instance: ContainerInstance) -> Awaitable[None]:
        """The instance has exited: ship what is left; awaiting the result is optional."""
        ...
