"""Deciding node health from heartbeats, the way Kubernetes' node lifecycle controller does.

Nodes prove they are alive by renewing a lease (a heartbeat that never enters the log of
record). Every monitor period the controller asks :func:`assess` which nodes changed state:

* a node whose last heartbeat is older than the grace period (Kubernetes default 50 s) becomes
  Ready=Unknown ("Kubelet stopped posting node status.") and gets the ``unreachable`` taints;
* a node that never heartbeated becomes Unknown once the start-up grace (60 s) after its
  creation has passed;
* a node heartbeating again within the grace becomes Ready=True and loses the taints.

Pure: the current instant is passed in, and the answer is a list of transitions to record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_GRACE_SECONDS = 50.0
DEFAULT_STARTUP_GRACE_SECONDS = 60.0
DEFAULT_MONITOR_PERIOD_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """What the controller knows of one node."""

    name: str
    ready: str  # "True", "False", "Unknown", or "" when no condition was recorded yet
    created_ns: int
    last_heartbeat_ns: int | None


@dataclass(frozen=True, slots=True)
class Transition:
    """A Ready condition to record for a node, with the inputs that led to it."""

    name: str
    status: str
    reason: str
    message: str
    last_heartbeat_ns: int | None
    grace_seconds: float


def assess(
    nodes: Iterable[NodeHealth],
    *,
    now_ns: int,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    startup_grace_seconds: float = DEFAULT_STARTUP_GRACE_SECONDS,
) -> list[Transition]:
    """The Ready transitions due at ``now_ns``, in node-name order."""
    grace_ns = int(grace_seconds * 1e9)
    startup_ns = int(startup_grace_seconds * 1e9)
    out: list[Transition] = []
    for node in sorted(nodes, key=lambda n: n.name):
        heartbeat = node.last_heartbeat_ns
        if heartbeat is not None and now_ns - heartbeat <= grace_ns:
            if node.ready != "True":
                out.append(
                    Transition(
                        node.name, "True", "KubeletReady", "node is posting status",
                        heartbeat, grace_seconds,
                    )
                )  # fmt: skip
            continue
        if heartbeat is None:
            overdue = now_ns - node.created_ns > startup_ns
            message = "Kubelet never posted node status."
            grace = startup_grace_seconds
        else:
            overdue = True
            message = "Kubelet stopped posting node status."
            grace = grace_seconds
        if overdue and node.ready != "Unknown":
            out.append(
                Transition(node.name, "Unknown", "NodeStatusUnknown", message, heartbeat, grace)
            )
    return out
