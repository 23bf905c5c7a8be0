"""The payload models of the event catalog (``core.api.events``): the shape of each event's data.

Why this is apart from the catalog: the models are pydantic, and only writers need them (the
aggregates subclass them, so a misspelt or missing field is refused when an event is decided).
Readers decode and upcast envelopes with ``core.api.events`` alone and never load pydantic.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from core.api.events import CATALOG


class EventPayload(BaseModel):
    """Base of every event payload: strict, so a misspelt field is a bug found at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceCreated(EventPayload):
    """An object came into existence with this manifest (defaults already applied)."""

    manifest: dict[str, Any]
    uid: str


class ResourceUpdated(EventPayload):
    """An object's manifest was replaced; ``changed`` lists the field paths that differ."""

    manifest: dict[str, Any]
    changed: list[str] = Field(default_factory=list)


class ResourceDeleted(EventPayload):
    """An object was deleted (its name may be used again by a later create).

    ``propagation_policy`` is what the deleter asked for its dependents (Background,
    Foreground or Orphan): the garbage collector reads it from here. Events written before the
    field existed read as Background, Kubernetes' default."""

    reason: str = ""
    propagation_policy: str = "Background"


class ScaledTo(EventPayload):
    """A scalable workload's desired replica count was set, by someone, for a reason.

    ``why`` is what an autoscaler decided it from (``core.autoscaling.horizontal``'s why
    record: the metric values, per-pod figures, pod counts, the recommendation before limits,
    the window or policy that held it), so the decision is explained by the log alone after
    the metrics stream has forgotten the samples. Absent from older events and manual scales."""

    replicas: int = Field(ge=0)
    previous: int = Field(ge=0)
    reason: str = ""
    why: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _without_absent_why(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A manual scale is stored exactly as before the field existed.
        data: dict[str, Any] = handler(self)
        if data.get("why", "") is None:
            del data["why"]
        return data


class StatusUpdated(EventPayload):
    """A controller recorded what it observed of a workload (``status``), and set the
    annotations it owns (``deployment.kubernetes.io/revision`` …; an empty value removes one).

    ``why`` (autoscalers' only) is an HPA's why record when an evaluation changed no replica
    count but changed its reason (a condition's reason): the recorded "no change"; or a VPA
    recommender's inputs for the recommendation it records.
    Absent otherwise, so every other status event is stored exactly as before the field."""

    status: dict[str, Any]
    annotations: dict[str, str] = Field(default_factory=dict)
    why: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _without_absent_why(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("why", "") is None:
            del data["why"]
        return data


class NodeSchedulingChanged(EventPayload):
    """A node was cordoned (no new pods) or uncordoned, by someone, for a reason."""

    reason: str = ""


class NodeConditionChanged(EventPayload):
    """The node lifecycle controller changed a node's Ready condition (and with it the
    not-ready/unreachable taints), recording what it saw: the last heartbeat and the grace."""

    status: str
    reason: str
    message: str = ""
    last_heartbeat_ns: int | None = None
    grace_seconds: float | None = None


class PodBound(EventPayload):
    """The scheduler placed the pod on a node (appended atomically with the node's
    ``PodAllocated``); ``score`` and ``feasible_nodes`` say how the choice was made."""

    node: str
    score: int | None = None
    feasible_nodes: int | None = None
    evaluated_nodes: int | None = None
    plugin_scores: dict[str, int] = Field(default_factory=dict)
    """Each score plugin's normalized score (0-100) for the chosen node, before weighting."""
    weights: dict[str, int] = Field(default_factory=dict)
    """The weight of each score plugin; ``score`` is the sum of weight x plugin score."""


class PodNominated(EventPayload):
    """No node fits the pod, but one will once lower-priority pods are preempted: the pod is
    nominated to ``node`` (``status.nominatedNodeName``) and ``victims`` are evicted for it."""

    node: str
    victims: list[str] = Field(default_factory=list)
    message: str = ""


class PodUnschedulable(EventPayload):
    """No node can take the pod now; ``message`` is the Kubernetes-style summary
    ("0/5 nodes are available: 3 Insufficient cpu, …") and ``reasons`` the counts."""

    message: str
    reasons: dict[str, int] = Field(default_factory=dict)


class ContainerStarted(EventPayload):
    """A container of a bound pod started running on its node (recorded by the node's agent, or
    by the simulator for simulated nodes); ``restart_count`` is 0 for the first start."""

    container: str
    restart_count: int = Field(default=0, ge=0)
    node: str


class ContainerExited(EventPayload):
    """A container instance of a bound pod ended on its node: how (exit code, and the signal
    that killed it: the exit code is then 128 + signal, as the kubelet reports it) and the
    runtime's reason (Completed, Error, OOMKilled). ``restart_count`` names the instance that
    ended; the times are those of the process, when the agent knows them."""

    container: str
    exit_code: int
    signal: int | None = None
    reason: str
    node: str
    restart_count: int = Field(default=0, ge=0)
    started_at_ns: int | None = None
    finished_at_ns: int | None = None
    message: str = ""


class ContainerWaiting(EventPayload):
    """A container of a bound pod cannot be started and waits (the kubelet's waiting state:
    ``ImagePullBackOff`` for an image fleetlog cannot run): ``reason`` and ``message`` are what
    ``get pods`` and ``describe`` show; the pod is not failed, so its controller does not
    replace it, as Kubernetes leaves a pod whose image cannot be pulled Pending."""

    container: str
    reason: str
    message: str = ""
    node: str


class ContainerRestarted(EventPayload):
    """The agent decided to start a new instance of an ended container: ``restart_count`` is
    the new instance's count, ``backoff_seconds`` how long it waits first (CrashLoopBackOff
    when > 0), ``reason`` why the previous one ended (Error, OOMKilled, Completed,
    LivenessProbeFailed, StartupProbeFailed). ContainerStarted follows when it runs."""

    container: str
    restart_count: int = Field(ge=1)
    backoff_seconds: float = Field(default=0.0, ge=0)
    reason: str
    node: str


class PodResized(EventPayload):
    """The pod's desired container resources changed in place (the ``resize`` command, kube's
    ``pods/resize``): each changed container's ``resources`` ``before`` and ``after``, by
    container name. Its node's agent then admits and applies it (``core.pods.resize``)."""

    before: dict[str, dict[str, Any]]
    after: dict[str, dict[str, Any]]


class PodResizeAllocated(EventPayload):
    """The node admitted a resize: ``allocated`` (container -> resources) is reserved on the
    node's ledger in the same append; ``restarts`` are the containers whose ``resizePolicy``
    makes them restart to apply it. ``PodResizeInProgress`` until it is actuated."""

    node: str
    allocated: dict[str, dict[str, Any]]
    restarts: list[str] = Field(default_factory=list)


class PodResizePending(EventPayload):
    """The node cannot take a resize: ``reason`` Infeasible (beyond the node's allocatable)
    or Deferred (not beside the other pods now; tried again), the kubelet's ``message``."""

    node: str
    reason: str
    message: str = ""
    allocated: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """What the node still holds for each container (``allocatedResources``), so the
    scheduler and quotas count those, not the desired resources, while it waits."""


class PodResizeActuated(EventPayload):
    """The agent applied the allocated resources: ``resources`` (container -> what its cgroup
    holds now, kube's ``containerStatuses[].resources``). With ``error``, part of it could not
    be applied (a memory limit below the usage) and the resize stays in progress."""

    node: str
    resources: dict[str, dict[str, Any]]
    error: str = ""


class PodTerminated(EventPayload):
    """A pod reached a terminal phase (Succeeded or Failed): no container of it will run
    again."""

    reason: str = ""
    message: str = ""


class PodReadinessChanged(EventPayload):
    """A pod became Ready (every container ready) or stopped being Ready, and why."""

    reason: str = ""


class PodAllocated(EventPayload):
    """A node's resources were reserved for a pod: amounts in base units (cpu in millicores,
    memory and ephemeral storage in bytes, ``pods`` 1, extended resources as counts)."""

    pod: str
    requests: dict[str, int]


class PodReleased(EventPayload):
    """A pod's reservation on a node was given back (the pod ended or was deleted)."""

    pod: str
    reason: str = ""


class QuotaCharged(EventPayload):
    """A pod's usage was charged to its namespace's quota (appended atomically with the
    pod's ``PodCreated``): ``amounts`` in base units (cpu millicores, memory bytes, pods 1);
    ``used`` is the quota's total after the charge, recorded for the audit trail."""

    pod: str
    amounts: dict[str, int]
    used: dict[str, int] = Field(default_factory=dict)
    reason: str = ""
    """Empty for an admission charge; why the quota controller counted a pod otherwise."""


class QuotaReleased(EventPayload):
    """A pod's charge was given back to the quota (the pod was deleted or finished);
    ``used`` is the quota's total after the release."""

    pod: str
    reason: str = ""
    used: dict[str, int] = Field(default_factory=dict)


class NodePodCIDRAssigned(EventPayload):
    """The node IPAM controller gave the node a range of the cluster CIDR for its pods
    (``spec.podCIDR``), appended atomically with the creation of that range's ``PodCIDR``
    object, which no other node can then hold; ``cluster_cidr`` is the range it came from."""

    pod_cidr: str
    cluster_cidr: str


class NodePodCIDRRefused(EventPayload):
    """The node IPAM controller could not give the node a pod range: the one its manifest
    states is outside the cluster CIDR or held by another node, or the cluster CIDR is full
    (Kubernetes' ``CIDRNotAvailable``). ``pod_cidr`` is the range asked for, if one was."""

    pod_cidr: str | None = None
    reason: str
    message: str


class PodIPAssigned(EventPayload):
    """The node agent gave the pod its network before its containers start: its own network
    namespace with ``pod_ips`` from the node's range, or (``host_network``) the node's own
    network, when the pod asks for it or the node cannot make namespaces. ``host_ip`` is the
    node's address as its pods reach it; ``message`` notes what was not done (an SCTP
    ``hostPort`` is not forwarded, the node has no pod network)."""

    node: str
    pod_ips: list[str]
    host_ip: str
    host_network: bool = False
    message: str = ""


def _payload_models() -> dict[str, type[EventPayload]]:
    """Each catalog entry's model, found by the name the catalog gives: a name that is not a
    model here fails the import, so the catalog and the models cannot drift apart."""
    models = {
        name: model
        for name, model in globals().items()
        if isinstance(model, type) and issubclass(model, EventPayload)
    }
    return {entry.name: models[entry.payload] for entry in CATALOG.values()}


PAYLOAD_MODELS: dict[str, type[EventPayload]] = _payload_models()
"""The payload model of every event type, by type name."""
