"""The pod aggregate: what may happen to a pod, and in which order.

Why this exists: a pod is bound once, started only on its node, restarted only as its restart
policy allows, and ends Succeeded or Failed for good; these rules guard every writer (the
gateway, the scheduler, the node agents) alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from core.api import payloads
from core.errors import (
    InvalidTransition,
)
from core.meta.aggregate import Resource, describe_aggregate
from core.pods.lifecycle import container_outcomes, restart_reason_allowed
from core.pods.status import EVOLVE as POD_EVOLVE
from core.pods.status import MESH_SIDECAR

_POD_MUTABLE_PREFIXES = (
    "metadata.labels",
    "metadata.annotations",
    # Ownership changes as in Kubernetes: the garbage collector orphans a pod by removing the
    # reference to its deleted owner.
    "metadata.ownerReferences",
    # Who manages which field (server-side apply) changes with every write through the API.
    "metadata.managedFields",
    "status",
)


def _pod_field_is_mutable(path: str) -> bool:
    if path.startswith(_POD_MUTABLE_PREFIXES):
        return True
    for containers in ("spec.containers[", "spec.initContainers["):
        if path.startswith(containers) and path.endswith("].image"):
            return True
    return path in ("spec.activeDeadlineSeconds", "spec.tolerations")


class Pod(Resource):
    KIND = "Pod"
    EVOLVE = POD_EVOLVE

    class Nominated(Resource.Event, payloads.PodNominated):
        SUFFIX: ClassVar[str] = "Nominated"

    def nominate(self, *, node: str, victims: list[str], message: str, at: datetime) -> None:
        """Preemption chose ``node`` for this pod once ``victims`` are gone."""
        self.require_exists()
        if self.node_name is not None:
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} is bound; it cannot be nominated"
            )
        self.trigger_event(
            self.Nominated, node=node, victims=list(victims), message=message, timestamp=at
        )

    # What each event does to the manifest is the pod's evolve (``core.pods.status.EVOLVE``).

    class Bound(Resource.Event, payloads.PodBound):
        SUFFIX: ClassVar[str] = "Bound"

    class Unschedulable(Resource.Event, payloads.PodUnschedulable):
        SUFFIX: ClassVar[str] = "Unschedulable"

    class ContainerStarted(Resource.Event, payloads.ContainerStarted):
        TYPE: ClassVar[str] = "ContainerStarted"

    class Ready(Resource.Event, payloads.PodReadinessChanged):
        SUFFIX: ClassVar[str] = "Ready"

    class NotReady(Resource.Event, payloads.PodReadinessChanged):
        SUFFIX: ClassVar[str] = "NotReady"

    class ContainerExited(Resource.Event, payloads.ContainerExited):
        TYPE: ClassVar[str] = "ContainerExited"

    class ContainerRestarted(Resource.Event, payloads.ContainerRestarted):
        TYPE: ClassVar[str] = "ContainerRestarted"

    class ContainerWaiting(Resource.Event, payloads.ContainerWaiting):
        TYPE: ClassVar[str] = "ContainerWaiting"

    class Succeeded(Resource.Event, payloads.PodTerminated):
        SUFFIX: ClassVar[str] = "Succeeded"

    class Failed(Resource.Event, payloads.PodTerminated):
        SUFFIX: ClassVar[str] = "Failed"

    class IPAssigned(Resource.Event, payloads.PodIPAssigned):
        TYPE: ClassVar[str] = "PodIPAssigned"

    class Resized(Resource.Event, payloads.PodResized):
        SUFFIX: ClassVar[str] = "Resized"

    class ResizeAllocated(Resource.Event, payloads.PodResizeAllocated):
        SUFFIX: ClassVar[str] = "ResizeAllocated"

    class ResizePending(Resource.Event, payloads.PodResizePending):
        SUFFIX: ClassVar[str] = "ResizePending"

    class ResizeActuated(Resource.Event, payloads.PodResizeActuated):
        SUFFIX: ClassVar[str] = "ResizeActuated"

    def resize(self, *, before: dict[str, Any], after: dict[str, Any], at: datetime) -> None:
        """Record new desired resources (validated by ``core.pods.resize``); a pod that has
        finished is not resized (nothing of it runs any more)."""
        self.require_exists()
        self._require_not_terminal("be resized")
        if after:
            self.trigger_event(self.Resized, before=before, after=after, timestamp=at)

    def allocate_resize(
        self, *, node: str, allocated: dict[str, Any], restarts: list[str], at: datetime
    ) -> None:
        """The node admitted the resize (its ledger changes in the same append)."""
        self._require_on(node, "admit a resize")
        self.trigger_event(
            self.ResizeAllocated, node=node, allocated=allocated, restarts=list(restarts),
            timestamp=at,
        )  # fmt: skip

    def defer_resize(
        self,
        *,
        node: str,
        reason: str,
        message: str,
        at: datetime,
        allocated: dict[str, Any] | None = None,
    ) -> None:
        """The node cannot take the resize (Infeasible or Deferred), still holding
        ``allocated`` for the containers; the same again is not recorded twice."""
        self._require_on(node, "refuse a resize")
        for kept in (self.manifest.get("status") or {}).get("conditions") or []:
            if (
                kept.get("type") == "PodResizePending"
                and kept.get("reason") == reason
                and kept.get("message") == message
            ):
                return
        self.trigger_event(
            self.ResizePending, node=node, reason=reason, message=message,
            allocated=dict(allocated or {}), timestamp=at,
        )  # fmt: skip

    def actuate_resize(
        self, *, node: str, resources: dict[str, Any], error: str, at: datetime
    ) -> None:
        """The agent applied the allocated resources (``error``: not all of them)."""
        self._require_on(node, "apply a resize")
        self.trigger_event(
            self.ResizeActuated, node=node, resources=resources, error=error, timestamp=at
        )

    def assign_ips(
        self,
        *,
        node: str,
        pod_ips: list[str],
        host_ip: str,
        host_network: bool = False,
        message: str = "",
        at: datetime,
    ) -> None:
        """Record the pod's addresses on ``node`` (before its containers start); the same
        addresses again change nothing. A pod gets new ones only if its network had to be
        made again (its namespace was lost with the machine's restart), as in Kubernetes."""
        self._require_on(node, "get an address")
        self._require_not_terminal("get an address")
        status = self.manifest.get("status") or {}
        known = [entry.get("ip") for entry in status.get("podIPs") or []]
        if known == list(pod_ips) and status.get("hostIP") == host_ip:
            return
        self.trigger_event(
            self.IPAssigned,
            node=node,
            pod_ips=list(pod_ips),
            host_ip=host_ip,
            host_network=host_network,
            message=message,
            timestamp=at,
        )

    @property
    def pod_ips(self) -> list[str]:
        return [str(e.get("ip")) for e in (self.manifest.get("status") or {}).get("podIPs") or []]

    @property
    def node_name(self) -> str | None:
        node = self.manifest.get("spec", {}).get("nodeName")
        return str(node) if node else None

    def container_status(self, container: str) -> dict[str, Any] | None:
        for status in (self.manifest.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == container:
                return dict(status)
        return None

    @property
    def ready(self) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (self.manifest.get("status") or {}).get("conditions") or []
        )

    def _require_on(self, node: str | None, what: str) -> None:
        self.require_exists()
        if self.node_name is None:
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} is not bound to a node; it cannot {what}",
                field="spec.nodeName",
            )
        if node is not None and node != self.node_name:
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} is bound to node {self.node_name!r}, not {node!r}; "
                f"it cannot {what} there",
                field="spec.nodeName",
            )

    def start_container(
        self, *, container: str, restart_count: int = 0, node: str, at: datetime
    ) -> None:
        """Record that ``container`` runs on ``node``; only a bound pod starts, and only on its
        node. The same start (container and restart count) again changes nothing."""
        self._require_on(node, "start")
        self._require_container(container)
        current = self.container_status(container)
        if current is not None:
            known = int(current.get("restartCount") or 0)
            # The instance already started, or started and ended since: a repeat of its start.
            ended = "terminated" in (current.get("state") or {})
            if restart_count == known and (current.get("started") or ended):
                return
            if restart_count < known:
                raise InvalidTransition(
                    f"container {container!r} of {describe_aggregate(self.id)} has restarted "
                    f"{known} times; a start with restart count {restart_count} is out of date"
                )
        self._require_not_terminal(f"start container {container!r}")
        self.trigger_event(
            self.ContainerStarted,
            container=container,
            restart_count=restart_count,
            node=node,
            timestamp=at,
        )

    def mark_ready(self, *, reason: str = "", at: datetime) -> None:
        """Every container is ready; a pod already Ready changes nothing."""
        self._require_on(None, "become ready")
        self._require_not_terminal("become ready")
        names = [c.get("name") for c in self.manifest.get("spec", {}).get("containers") or []]
        waiting = [n for n in names if not (self.container_status(str(n)) or {}).get("started")]
        if waiting:
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} cannot be ready: containers not started: "
                + ", ".join(str(n) for n in waiting)
            )
        if not self.ready:
            self.trigger_event(self.Ready, reason=reason, timestamp=at)

    def mark_not_ready(self, *, reason: str, at: datetime) -> None:
        """The pod stopped being Ready; a pod that is not Ready changes nothing."""
        self._require_on(None, "become not ready")
        if self.ready:
            self.trigger_event(self.NotReady, reason=reason, timestamp=at)

    @property
    def phase(self) -> str:
        return str((self.manifest.get("status") or {}).get("phase") or "Pending")

    @property
    def terminal(self) -> bool:
        """Succeeded or Failed: no container of the pod runs again."""
        return self.phase in ("Succeeded", "Failed")

    def _require_not_terminal(self, what: str) -> None:
        if self.terminal:
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} has {self.phase.lower()}; it cannot {what}",
                field="status.phase",
            )

    def _require_container(self, container: str) -> None:
        """``container`` is one of the spec's, or the node's mesh sidecar (``MESH_SIDECAR``,
        which a meshed pod's node runs without a spec entry)."""
        if container == MESH_SIDECAR:
            return
        names = [c.get("name") for c in self.manifest.get("spec", {}).get("containers") or []]
        if container not in names:
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} has no container {container!r}",
                field="spec.containers",
            )

    def _in_spec(self, container: str) -> bool:
        return any(
            c.get("name") == container
            for c in self.manifest.get("spec", {}).get("containers") or []
        )

    def exit_container(
        self,
        *,
        container: str,
        exit_code: int,
        reason: str,
        node: str,
        restart_count: int = 0,
        signal: int | None = None,
        started_at_ns: int | None = None,
        finished_at_ns: int | None = None,
        message: str = "",
        at: datetime,
    ) -> None:
        """Record that instance ``restart_count`` of ``container`` ended on ``node``. It may
        end running or before it ran (a start that failed); the same end again changes
        nothing; an instance other than the current one is refused."""
        self._require_on(node, "report a container exit")
        self._require_container(container)
        current = self.container_status(container) or {}
        known = int(current.get("restartCount") or 0)
        if restart_count == known and "terminated" in (current.get("state") or {}):
            return
        if restart_count != known:
            raise InvalidTransition(
                f"container {container!r} of {describe_aggregate(self.id)} is at restart {known}; "
                f"an exit of restart {restart_count} is "
                + ("out of date" if restart_count < known else "of an instance never started")
            )
        self._require_not_terminal(f"report an exit of container {container!r}")
        self.trigger_event(
            self.ContainerExited, container=container, exit_code=exit_code, signal=signal,
            reason=reason, node=node, restart_count=restart_count, started_at_ns=started_at_ns,
            finished_at_ns=finished_at_ns, message=message, timestamp=at,
        )  # fmt: skip

    def wait_container(
        self, *, container: str, reason: str, message: str, node: str, at: datetime
    ) -> None:
        """Record that ``container`` cannot start on ``node`` and waits, with the reason and
        message the kubelet would show; the same wait again changes nothing."""
        self._require_on(node, "report a waiting container")
        self._require_container(container)
        self._require_not_terminal(f"report container {container!r} waiting")
        state = (self.container_status(container) or {}).get("state") or {}
        if state.get("waiting") == {"reason": reason, "message": message}:
            return
        self.trigger_event(
            self.ContainerWaiting, container=container, reason=reason, message=message,
            node=node, timestamp=at,
        )  # fmt: skip

    def restart_container(
        self,
        *,
        container: str,
        restart_count: int,
        backoff_seconds: float,
        reason: str,
        node: str,
        at: datetime,
    ) -> None:
        """Record the decision to run instance ``restart_count`` (the ended one's count + 1)
        of an ended container after ``backoff_seconds``. The restart policy must allow it
        (probe failures restart under Always and OnFailure); the same restart again changes
        nothing."""
        self._require_on(node, "restart a container")
        self._require_container(container)
        current = self.container_status(container) or {}
        known = int(current.get("restartCount") or 0)
        state = current.get("state") or {}
        ended = state.get("terminated")
        if restart_count == known and ended is None and "lastState" in current:
            return  # this restart was recorded: the container waits for or runs it
        if ended is None:
            raise InvalidTransition(
                f"container {container!r} of {describe_aggregate(self.id)} has not ended; "
                "only an ended container is restarted"
            )
        if restart_count != known + 1:
            raise InvalidTransition(
                f"container {container!r} of {describe_aggregate(self.id)} ended at restart "
                f"{known}; its restart must have count {known + 1}, not {restart_count}"
            )
        self._require_not_terminal(f"restart container {container!r}")
        policy = str(self.manifest.get("spec", {}).get("restartPolicy") or "Always")
        if container == MESH_SIDECAR and not self._in_spec(container):
            policy = "Always"  # a native sidecar's own policy, whatever the pod's
        exit_code = int(ended.get("exitCode") or 0)
        if not restart_reason_allowed(policy, exit_code, reason):
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} has restartPolicy {policy}; container "
                f"{container!r} that ended with exit code {exit_code} ({reason}) is not restarted",
                field="spec.restartPolicy",
            )
        self.trigger_event(
            self.ContainerRestarted, container=container, restart_count=restart_count,
            backoff_seconds=backoff_seconds, reason=reason, node=node, timestamp=at,
        )  # fmt: skip

    def succeed(self, *, reason: str = "", message: str = "", at: datetime) -> None:
        """The pod is done: every container ended with exit code 0 and none will run again.
        Succeeding again changes nothing; a Failed pod cannot succeed."""
        self._require_on(None, "succeed")
        if self.phase == "Succeeded":
            return
        self._require_not_terminal("succeed")
        outcomes = container_outcomes(self.manifest)
        if not all(o.state == "terminated" and o.exit_code == 0 for o in outcomes):
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} cannot succeed: "
                "not every container ended with exit code 0"
            )
        self.trigger_event(self.Succeeded, reason=reason, message=message, timestamp=at)

    def fail(self, *, reason: str, message: str = "", at: datetime) -> None:
        """The pod is done and failed (a container failed and will not be restarted, or the
        pod was stopped: deadline, eviction). Failing again changes nothing; a Succeeded pod
        cannot fail."""
        self._require_on(None, "fail")
        if self.phase == "Failed":
            return
        self._require_not_terminal("fail")
        self.trigger_event(self.Failed, reason=reason, message=message, timestamp=at)

    def bind(
        self,
        *,
        node: str,
        score: int | None,
        feasible_nodes: int | None,
        at: datetime,
        evaluated_nodes: int | None = None,
        plugin_scores: dict[str, int] | None = None,
        weights: dict[str, int] | None = None,
    ) -> None:
        """Place the pod on ``node``; a pod is bound once (binding is not a move). The score
        breakdown is recorded so ``describe`` can say why this node."""
        self.require_unbound()
        self.trigger_event(
            self.Bound, node=node, score=score, feasible_nodes=feasible_nodes,
            evaluated_nodes=evaluated_nodes, plugin_scores=dict(plugin_scores or {}),
            weights=dict(weights or {}), timestamp=at,
        )  # fmt: skip

    def require_unbound(self) -> None:
        """The pod exists and is on no node yet (what binding it asks)."""
        self.require_exists()
        if self.node_name is not None:
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} is already bound to node {self.node_name!r}",
                field="spec.nodeName",
            )

    def mark_unschedulable(self, *, message: str, reasons: dict[str, int], at: datetime) -> None:
        """Record why no node fits; the same message again is not recorded twice."""
        self.require_exists()
        if self.node_name is not None:
            raise InvalidTransition(
                f"{describe_aggregate(self.id)} is bound; it cannot be unschedulable"
            )
        for condition in (self.manifest.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("message") == message:
                return
        self.trigger_event(self.Unschedulable, message=message, reasons=reasons, timestamp=at)

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        for path in changed:
            if not _pod_field_is_mutable(path):
                raise InvalidTransition(
                    "a pod's spec may not change after creation except spec.containers[*].image, "
                    "spec.initContainers[*].image, spec.activeDeadlineSeconds and additions to "
                    f"spec.tolerations; this update changes {path}",
                    field=path,
                )
        if "spec.tolerations" in changed:
            old = self.manifest.get("spec", {}).get("tolerations") or []
            new = manifest.get("spec", {}).get("tolerations") or []
            if any(toleration not in new for toleration in old):
                raise InvalidTransition(
                    "existing tolerations of a pod may not be removed or changed",
                    field="spec.tolerations",
                )
