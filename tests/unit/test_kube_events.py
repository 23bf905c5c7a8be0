"""``describe`` shows Kubernetes-style events (``projections.kube_events``), not every fact of the log: a
deployment's page holds its controller's ``ScalingReplicaSet`` events however many status
updates it had; a pod's holds Scheduled, Created/Started, BackOff …; identical events are
counted as the API server's event correlator counts them; the table is kubectl's."""

from __future__ import annotations

from typing import Any

from ops import render
from projections import kube_events
from projections.kube_events import KubeEvent
from streams.envelope import Envelope, StoredEvent

S = 1_000_000_000
T0 = 1_800_000_000 * S
DEPLOYMENT_UID = "dep-1"
RS_UID = "rs-1"


def stored(
    seq: int,
    event_type: str,
    payload: dict[str, Any],
    *,
    kind: str = "Pod",
    name: str = "web",
    actor: str = "system:node/n1",
    at: int | None = None,
) -> StoredEvent:
    envelope = Envelope(
        f"id-{seq}", event_type, 1, kind, "default", name, seq,
        T0 + seq * S if at is None else at, actor, "c", "c", payload,
    )  # fmt: skip
    subject = f"fleet.evt.{kind.lower()}.default.{name}"
    return StoredEvent(seq=seq, subject=subject, stored_ns=0, envelope=envelope)


def owned_by(uid: str, kind: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"ownerReferences": [{"kind": kind, "uid": uid, "controller": True}]},
        "spec": spec,
    }


def brief(events: list[KubeEvent]) -> list[tuple[str, str, str, str]]:
    return [(e.type, e.reason, e.source, e.message) for e in events]


def test_a_pods_events_are_the_schedulers_and_the_kubelets() -> None:
    history = [
        stored(1, "PodCreated", {"manifest": {}, "uid": "u"}, actor="user:alice"),
        stored(
            2,
            "PodUnschedulable",
            {"message": "0/1 nodes are available: 1 Insufficient cpu."},
            actor="system:scheduler/default-scheduler",
        ),
        stored(3, "PodBound", {"node": "n1"}, actor="system:scheduler/default-scheduler"),
        stored(4, "PodAllocated", {"pod": "default/web", "requests": {}}),
        stored(5, "ContainerStarted", {"container": "main", "node": "n1"}),
        stored(6, "PodReady", {"reason": "all containers are ready"}),
        stored(7, "ContainerExited", {"container": "main", "exit_code": 1, "reason": "Error"}),
        stored(
            8,
            "ContainerRestarted",
            {"container": "main", "restart_count": 1, "backoff_seconds": 10, "reason": "Error"},
        ),
        stored(
            9,
            "ContainerRestarted",
            {"container": "main", "restart_count": 2, "reason": "LivenessProbeFailed"},
        ),
        stored(10, "ContainerExited", {"container": "side", "exit_code": 128,
                                       "reason": "StartError", "message": "no such file"}),
    ]  # fmt: skip
    assert brief(kube_events.pod_events(history, namespace="default", name="web", uid="u")) == [
        (
            "Warning",
            "FailedScheduling",
            "default-scheduler",
            "0/1 nodes are available: 1 Insufficient cpu.",
        ),
        ("Normal", "Scheduled", "default-scheduler", "Successfully assigned default/web to n1"),
        ("Normal", "Created", "kubelet", "Created container main"),
        ("Normal", "Started", "kubelet", "Started container main"),
        (
            "Warning",
            "BackOff",
            "kubelet",
            "Back-off restarting failed container main in pod web_default(u)",
        ),
        ("Normal", "Killing", "kubelet", "Container main failed liveness probe, will be restarted"),
        ("Warning", "Failed", "kubelet", "Error: no such file"),
    ]


def test_a_pod_that_cannot_run_says_why() -> None:
    failed = stored(
        3, "PodFailed", {"reason": "ImagePullUnsupported", "message": "container 'main' has no"}
    )
    done = stored(4, "PodSucceeded", {"reason": "Completed"})
    assert brief(kube_events.pod_events([failed, done], namespace="d", name="p", uid="u")) == [
        ("Warning", "Failed", "kubelet", "container 'main' has no")
    ]


def test_a_nodes_events() -> None:
    lifecycle = "system:node-lifecycle-controller"
    history = [
        stored(1, "NodeCreated", {"manifest": {}, "uid": "n"}, kind="Node", name="n1"),
        stored(2, "NodeReady", {"status": "True", "reason": "KubeletReady"}, kind="Node",
               name="n1", actor=lifecycle),
        stored(3, "PodAllocated", {"pod": "default/web", "requests": {}}, kind="Node", name="n1"),
        stored(4, "NodeCordoned", {"reason": "kernel"}, kind="Node", name="n1", actor="user:bob"),
        stored(5, "NodeNotReady", {"status": "Unknown", "reason": "NodeStatusUnknown"},
               kind="Node", name="n1", actor=lifecycle),
        stored(6, "NodeUncordoned", {}, kind="Node", name="n1", actor="user:bob"),
    ]  # fmt: skip
    assert brief(kube_events.node_events(history, name="n1")) == [
        ("Normal", "RegisteredNode", "node-controller", "Node n1 event: Registered Node n1 in "
         "Controller"),
        ("Normal", "NodeReady", "node-controller", "Node n1 status is now: NodeReady"),
        ("Normal", "NodeNotSchedulable", "user:bob", "Node n1 status is now: NodeNotSchedulable"),
        ("Normal", "NodeNotReady", "node-controller", "Node n1 status is now: NodeNotReady"),
        ("Normal", "NodeSchedulable", "user:bob", "Node n1 status is now: NodeSchedulable"),
    ]  # fmt: skip


def test_a_deployments_events_are_its_controllers_scaling_of_its_replica_sets() -> None:
    controller = kube_events.DEPLOYMENT_CONTROLLER
    rs = {"kind": "ReplicaSet", "actor": controller}
    events = [
        stored(1, "ReplicaSetCreated",
               {"manifest": owned_by(DEPLOYMENT_UID, "Deployment", replicas=3), "uid": "a"},
               name="web-a", **rs),
        # Status updates of the replica set (and of the deployment) make no events.
        stored(2, "ReplicaSetStatusUpdated", {"status": {"replicas": 3}}, name="web-a", **rs),
        # Another deployment's replica set, and a user scaling one directly: not ours.
        stored(3, "ReplicaSetCreated",
               {"manifest": owned_by("other", "Deployment", replicas=2), "uid": "b"},
               name="api-b", **rs),
        stored(4, "ScaledTo", {"replicas": 3, "previous": 2}, name="api-b", **rs),
        stored(5, "ScaledTo", {"replicas": 4, "previous": 3}, name="web-a", kind="ReplicaSet",
               actor="user:alice"),
        stored(6, "ScaledTo", {"replicas": 5, "previous": 3}, name="web-a", **rs),
        # A new template: a new replica set created empty, then scaled, the old one down.
        stored(7, "ReplicaSetCreated",
               {"manifest": owned_by(DEPLOYMENT_UID, "Deployment", replicas=0), "uid": "c"},
               name="web-c", **rs),
        stored(8, "ScaledTo", {"replicas": 2, "previous": 0}, name="web-c", **rs),
        stored(9, "ScaledTo", {"replicas": 4, "previous": 5}, name="web-a", **rs),
        stored(10, "ReplicaSetDeleted", {}, name="web-a", **rs),
        stored(11, "ReplicaSetCreated",
               {"manifest": owned_by("other", "Deployment", replicas=1), "uid": "d"},
               name="web-a", **rs),
        stored(12, "ScaledTo", {"replicas": 0, "previous": 1}, name="web-a", **rs),
    ]  # fmt: skip
    messages = [e.message for e in kube_events.deployment_events(events, uid=DEPLOYMENT_UID)]
    assert messages == [
        "Scaled up replica set web-a from 0 to 3",
        "Scaled up replica set web-a from 3 to 5",
        "Scaled up replica set web-c from 0 to 2",
        "Scaled down replica set web-a from 5 to 4",
    ]
    shown = kube_events.deployment_events(events, uid=DEPLOYMENT_UID)
    assert {(e.type, e.reason, e.source) for e in shown} == {
        ("Normal", "ScalingReplicaSet", "deployment-controller")
    }


def test_a_replica_sets_events_are_the_pods_its_controller_made_and_removed() -> None:
    controller = kube_events.REPLICASET_CONTROLLER
    own = [
        stored(1, "ReplicaSetCreated", {"manifest": {}, "uid": RS_UID}, kind="ReplicaSet", actor=controller),
        stored(5, "ReplicaSetStatusUpdated", {"status": {"conditions": [
            {"type": "ReplicaFailure", "status": "True", "message": "exceeded quota: compute"}
        ]}}, kind="ReplicaSet", actor=controller),
        stored(6, "ReplicaSetStatusUpdated", {"status": {"replicas": 2, "conditions": [
            {"type": "ReplicaFailure", "status": "True", "message": "exceeded quota: compute"}
        ]}}, kind="ReplicaSet", actor=controller),
        stored(8, "ReplicaSetStatusUpdated", {"status": {"replicas": 2}}, kind="ReplicaSet", actor=controller),
    ]  # fmt: skip
    pods = [
        stored(2, "PodCreated", {"manifest": owned_by(RS_UID, "ReplicaSet"), "uid": "p1"},
               name="web-x1", actor=controller),
        stored(3, "PodCreated", {"manifest": owned_by(RS_UID, "ReplicaSet"), "uid": "p2"},
               name="web-x2", actor=controller),
        stored(4, "PodCreated", {"manifest": owned_by("other", "ReplicaSet"), "uid": "p3"},
               name="api-y", actor=controller),
        stored(7, "ContainerStarted", {"container": "main", "node": "n1"}, name="web-x1"),
        stored(9, "PodDeleted", {"reason": "scale down"}, name="web-x2", actor=controller),
        stored(10, "PodDeleted", {}, name="web-x1", actor="system:garbage-collector"),
        stored(11, "PodDeleted", {}, name="api-y", actor=controller),
    ]  # fmt: skip
    events = kube_events.replica_set_events(own, pods, uid=RS_UID)
    assert sorted(brief(events), key=str) == sorted(
        [
            (
                "Warning",
                "FailedCreate",
                "replicaset-controller",
                "Error creating: exceeded quota: compute",
            ),
            ("Normal", "SuccessfulCreate", "replicaset-controller", "Created pod: web-x1"),
            ("Normal", "SuccessfulCreate", "replicaset-controller", "Created pod: web-x2"),
            ("Normal", "SuccessfulDelete", "replicaset-controller", "Deleted pod: web-x2"),
        ],
        key=str,
    )


def test_identical_events_are_counted_and_ordered_by_the_last() -> None:
    def event(seq: int, reason: str, message: str = "m") -> KubeEvent:
        return KubeEvent("Normal", reason, "kubelet", message, T0 + seq * S, seq)

    shown = kube_events.correlate(
        [event(1, "Created"), event(1, "Started"), event(5, "BackOff"), event(9, "Created"),
         event(9, "Started"), event(12, "BackOff"), event(13, "BackOff")]
    )  # fmt: skip
    assert [(s.reason, s.count, s.first_ns, s.last_ns) for s in shown] == [
        ("Created", 2, T0 + S, T0 + 9 * S),
        ("Started", 2, T0 + S, T0 + 9 * S),
        ("BackOff", 3, T0 + 5 * S, T0 + 13 * S),
    ]


def test_the_events_section_is_kubectls_table() -> None:
    shown = kube_events.correlate(
        [
            KubeEvent("Normal", "Scheduled", "default-scheduler", "Successfully assigned x", T0, 1),
            KubeEvent("Warning", "BackOff", "kubelet", "Back-off restarting ", T0 + 60 * S, 2),
            KubeEvent("Warning", "BackOff", "kubelet", "Back-off restarting ", T0 + 290 * S, 3),
        ]
    )
    assert render.event_lines(shown, T0 + 300 * S) == [
        "Events:",
        "  Type     Reason     Age               From               Message",
        "  ----     ------     ----              ----               -------",
        "  Normal   Scheduled  5m                default-scheduler  Successfully assigned x",
        "  Warning  BackOff    10s (x2 over 4m)  kubelet            Back-off restarting",
    ]
    assert render.event_lines([], T0) == ["Events:       <none>"]


def test_describe_of_a_deployment_shows_scaling_not_status_updates() -> None:
    item = {
        "kind": "Deployment", "name": "web", "namespace": "default", "uid": DEPLOYMENT_UID,
        "created_ns": T0, "version": 90, "last_seq": 90,
        "manifest": {"metadata": {"name": "web"}, "spec": {"replicas": 3}},
    }  # fmt: skip
    own = [stored(1, "DeploymentCreated", {"manifest": {}, "uid": DEPLOYMENT_UID},
                  kind="Deployment", actor="user:alice")]  # fmt: skip
    own += [
        stored(seq, "DeploymentStatusUpdated", {"status": {"replicas": 3}}, kind="Deployment",
               actor=kube_events.DEPLOYMENT_CONTROLLER)
        for seq in range(3, 83)
    ]  # fmt: skip
    related = [
        stored(2, "ReplicaSetCreated",
               {"manifest": owned_by(DEPLOYMENT_UID, "Deployment", replicas=3), "uid": "a"},
               kind="ReplicaSet", name="web-a", actor=kube_events.DEPLOYMENT_CONTROLLER),
    ]  # fmt: skip
    page = render.describe(item, own, T0 + 200 * S, related=related)
    events = page.split("Events:\n")[1].splitlines()
    assert [line.split()[:2] for line in events] == [
        ["Type", "Reason"],
        ["----", "------"],
        ["Normal", "ScalingReplicaSet"],
    ]
    assert events[2].endswith("deployment-controller  Scaled up replica set web-a from 0 to 3")
    assert "DeploymentStatusUpdated" not in page
