"""The admission chain's shape: which admission plugins fleetlog has, the order they run in,
and what each one reports of what it did.

Why this exists: kube-apiserver admits a request through an ordered list of named plugins,
every mutating one first and then every validating one, each phase in the one order of its
plugin list (``AllOrderedPlugins``), so that a default is in place before anything judges the
object, and the quota is charged last, on the object as it will be stored. fleetlog's gateway
does the same with its stages (``handlers.gateway.admission``); this module holds the order and
the notes, so that the order is one table and a command's audit record can say, stage by
stage, what admission changed, refused, warned about or recorded (``mutated by LimitRanger:
defaulted cpu limit for container app``, ``denied by PodSecurity: ...``).

A plugin may have both halves (LimitRanger defaults resources, then enforces its bounds;
Priority resolves a pod's priority, then keeps PriorityClasses to one global default): each
half is a stage of its own, with the plugin's name.

Pure: stages are ordered by name and phase; what they do is the gateway's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeVar

Phase = Literal["mutating", "validating"]
PHASES: Final[tuple[Phase, ...]] = ("mutating", "validating")
Action = Literal["mutated", "denied", "warned", "audited"]

PLUGIN_ORDER: Final[tuple[str, ...]] = (
    "NamespaceLifecycle",
    "LimitRanger",
    "NodeRestriction",
    "PodSecurity",
    "Priority",
    "DefaultTolerationSeconds",
    "VerticalPodAutoscaler",
    "ResourceQuota",
)
"""The plugins fleetlog has, in kube-apiserver's order (``VerticalPodAutoscaler`` is the VPA's
admission webhook, where ``MutatingAdmissionWebhook`` stands). ``ResourceQuota`` is last, as in
Kubernetes; fleetlog charges it in the append itself (atomically with the pod's creation, so
racing gateways cannot exceed a quota), after every stage of the chain."""


class Stage(Protocol):
    """What the order needs to know of a stage: its plugin and its phase."""

    @property
    def name(self) -> str: ...

    @property
    def phase(self) -> Phase: ...


S = TypeVar("S", bound=Stage)


def chain_order(stages: Iterable[S]) -> list[S]:
    """``stages`` as the chain runs them: mutating before validating, each phase in
    :data:`PLUGIN_ORDER`. A stage of an unknown plugin, or two stages for one plugin's
    phase, is a wiring mistake (ValueError)."""
    chosen: dict[tuple[int, int], S] = {}
    for stage in stages:
        if stage.name not in PLUGIN_ORDER:
            raise ValueError(
                f"unknown admission plugin {stage.name!r}; known: {', '.join(PLUGIN_ORDER)}"
            )
        key = (PHASES.index(stage.phase), PLUGIN_ORDER.index(stage.name))
        if key in chosen:
            raise ValueError(f"two {stage.phase} stages for {stage.name}")
        chosen[key] = stage
    return [chosen[key] for key in sorted(chosen)]


@dataclass(frozen=True, slots=True)
class StageNote:
    """What one stage did to one command, as the audit record shows it."""

    stage: str
    action: Action
    detail: str = ""

    def __str__(self) -> str:
        head = f"{self.action} by {self.stage}"
        return f"{head}: {self.detail}" if self.detail else head
