"""Deployments, replica sets and pods against a real nats-server, with the scheduler and
simulated nodes running the pods: a deployment comes up, scales, rolls out within its surge and
unavailability bounds (checked on the log's event order), rolls back to a reused replica set,
replaces deleted pods, reports a quota refusal instead of hiding it, and is collected with its
replica sets and pods when deleted."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import FleetError
from core.workloads.deployment import POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION
from handlers.deployment_controller import ACTOR as DEPLOYMENT_ACTOR
from handlers.gateway import Gateway
from handlers.replicaset_controller import ACTOR as REPLICASET_ACTOR
from projections.cluster import ClusterModel, ObjectRecord
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.envelope import Envelope
from streams.eventstore import EventStore
from tests.integration.support import eventually, workload_roles

pytestmark = pytest.mark.integration


def deployment(
    name: str = "web",
    replicas: int = 3,
    image: str = "app:1",
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ]
                },
            },
            **spec,
        },
    }


def get(
    projection: Projection[ClusterModel], kind: str, name: str, namespace: str = "default"
) -> ObjectRecord | None:
    return projection.model.get(kind, namespace, name)


def replica_sets(
    projection: Projection[ClusterModel], namespace: str = "default"
) -> list[ObjectRecord]:
    return list(projection.model.list("ReplicaSet", namespace))


def pods(projection: Projection[ClusterModel], namespace: str = "default") -> list[ObjectRecord]:
    return list(projection.model.list("Pod", namespace))


def rolled_out(
    projection: Projection[ClusterModel],
    name: str,
    replicas: int,
    image: str,
    namespace: str = "default",
):
    async def check() -> bool:
        record = get(projection, "Deployment", name, namespace)
        if record is None:
            return False
        status = record.manifest.get("status") or {}
        generation = record.manifest["metadata"]["generation"]
        live = [p for p in pods(projection, namespace) if p.name.startswith(f"{name}-")]
        return (
            status.get("observedGeneration") == generation
            and status.get("updatedReplicas") == replicas
            and status.get("availableReplicas") == replicas
            and status.get("replicas") == replicas
            and len(live) == replicas
            and all(p.manifest["spec"]["containers"][0]["image"] == image for p in live)
        )

    return check


async def events_of(store: EventStore, after: int = 0, until: int | None = None) -> list[Envelope]:
    """The envelopes of the events after stream sequence ``after`` (up to ``until``)."""
    events: list[Envelope] = []
    await store.replay(lambda e: events.append(e.envelope), from_seq=after + 1, until_seq=until)
    return events


async def test_a_deployment_comes_up_scales_and_replaces_deleted_pods(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    async with workload_roles(nc, store, projection):
        created = await client.send("Deployment", "create", {"manifest": deployment(replicas=3)})
        await eventually(rolled_out(projection, "web", 3, "app:1"))
        [rs] = replica_sets(projection)
        owner = rs.manifest["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "Deployment",
            "web",
            created.uid,
            True,
        )
        pod_hash = rs.manifest["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL]
        assert rs.name == f"web-{pod_hash}" and rs.last_actor in (
            DEPLOYMENT_ACTOR,
            REPLICASET_ACTOR,
        )
        for pod in pods(projection):
            assert pod.manifest["metadata"]["labels"] == {
                "app": "web",
                POD_TEMPLATE_HASH_LABEL: pod_hash,
            }
            assert pod.manifest["metadata"]["ownerReferences"][0]["uid"] == rs.uid
        record = get(projection, "Deployment", "web")
        assert record.manifest["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
        conditions = {c["type"]: c for c in record.manifest["status"]["conditions"]}
        assert conditions["Available"]["status"] == "True"
        assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
        rs_status = get(projection, "ReplicaSet", rs.name).manifest["status"]
        assert rs_status["readyReplicas"] == 3 and rs_status["availableReplicas"] == 3

        await client.send("Deployment", "scale", {"name": "web", "replicas": 5, "reason": "load"})
        await eventually(rolled_out(projection, "web", 5, "app:1"))
        scaled = [
            e for e in await events_of(store) if e.type == "ScaledTo" and e.kind == "ReplicaSet"
        ]
        assert scaled[-1].payload["replicas"] == 5 and scaled[-1].actor == DEPLOYMENT_ACTOR

        victim = pods(projection)[0].name
        await client.send("Pod", "delete", {"name": victim, "reason": "test"})
        await eventually(
            lambda: _true(len(pods(projection)) == 5 and get(projection, "Pod", victim) is None)
        )
        await eventually(rolled_out(projection, "web", 5, "app:1"))

        # A node that goes away takes its pods along; the replica set replaces them elsewhere.
        lost = next(p.manifest["spec"]["nodeName"] for p in pods(projection))
        await client.send("Node", "delete", {"name": lost, "reason": "decommissioned"})

        async def replaced_elsewhere() -> bool:
            live = pods(projection)
            return len(live) == 5 and all(
                p.manifest["spec"].get("nodeName") not in (None, lost) for p in live
            )

        await eventually(replaced_elsewhere)
        await eventually(rolled_out(projection, "web", 5, "app:1"))

        await client.send("Deployment", "scale", {"name": "web", "replicas": 2})
        await eventually(rolled_out(projection, "web", 2, "app:1"))
        deletions = [
            e
            for e in await events_of(store)
            if e.type == "PodDeleted" and e.actor == REPLICASET_ACTOR
        ]
        assert len(deletions) == 3
        assert all("wants 2" in e.payload["reason"] for e in deletions)


async def _true(value: bool) -> bool:
    return value


async def test_a_rolling_update_keeps_surge_and_availability_then_rolls_back(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    async with workload_roles(nc, store, projection):
        await client.send(
            "Deployment", "create", {"manifest": deployment(replicas=4, strategy=strategy)}
        )
        await eventually(rolled_out(projection, "web", 4, "app:1"))
        start = projection.position
        await client.send(
            "Deployment",
            "apply",
            {"manifest": deployment(replicas=4, image="app:2", strategy=strategy)},
        )
        await eventually(rolled_out(projection, "web", 4, "app:2"))
        # Replay the rollout: never more than 4 + 1 pods, never fewer than 4 - 1 ready.
        live: dict[str, bool] = {}
        for event in await events_of(store, until=start):
            fold_pod(live, event)
        assert len(live) == 4 and all(live.values())
        most, fewest_ready = 0, 4
        for event in await events_of(store, after=start):
            if not fold_pod(live, event):
                continue
            most = max(most, len(live))
            fewest_ready = min(fewest_ready, sum(live.values()))
        assert most <= 5 and fewest_ready >= 3
        rollout = await events_of(store, after=start)
        created = [e.name for e in rollout if e.type == "PodCreated"]
        deleted = [e for e in rollout if e.type == "PodDeleted"]
        assert len(created) == 4, [(e.name, e.payload, e.actor) for e in deleted]
        assert most == 5  # the surge was used
        sets = {
            rs.manifest["spec"]["template"]["spec"]["containers"][0]["image"]: rs
            for rs in replica_sets(projection)
        }
        assert sets["app:1"].manifest["spec"]["replicas"] == 0
        assert sets["app:2"].manifest["metadata"]["annotations"][REVISION_ANNOTATION] == "2"

        # Rolling back to the first template reuses its replica set, as revision 3.
        await client.send(
            "Deployment", "apply", {"manifest": deployment(replicas=4, strategy=strategy)}
        )
        await eventually(rolled_out(projection, "web", 4, "app:1"))
        assert len(replica_sets(projection)) == 2
        sets = {
            rs.manifest["spec"]["template"]["spec"]["containers"][0]["image"]: rs
            for rs in replica_sets(projection)
        }
        assert sets["app:1"].manifest["metadata"]["annotations"][REVISION_ANNOTATION] == "3"
        record = get(projection, "Deployment", "web")
        assert record.manifest["metadata"]["annotations"][REVISION_ANNOTATION] == "3"


def fold_pod(live: dict[str, bool], event: Envelope) -> bool:
    """Fold a pod's existence and readiness into ``live`` (name -> ready); False if the
    event changes neither."""
    if event.kind != "Pod":
        return False
    if event.type == "PodCreated":
        live[event.name] = False
    elif event.type == "PodDeleted":
        live.pop(event.name, None)
    elif event.type in ("PodReady", "PodNotReady"):
        live[event.name] = event.type == "PodReady"
    else:
        return False
    return True


async def test_a_quota_refusal_is_reported_on_the_replica_set_and_the_deployment(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "small"},
        "spec": {"hard": {"pods": "2"}},
    }
    await client.send("ResourceQuota", "create", {"manifest": quota})
    async with workload_roles(nc, store, projection):
        await client.send("Deployment", "create", {"manifest": deployment(replicas=3)})

        async def reported() -> bool:
            record = get(projection, "Deployment", "web")
            if record is None:
                return False  # not folded yet (the projection may lag the reply under load)
            conditions = {
                c["type"]: c for c in (record.manifest.get("status") or {}).get("conditions") or []
            }
            failure = conditions.get("ReplicaFailure")
            return failure is not None and "exceeded quota: small" in failure["message"]

        await eventually(reported)
        assert len(pods(projection)) == 2
        [rs] = replica_sets(projection)
        [condition] = rs.manifest["status"]["conditions"]
        assert (condition["type"], condition["reason"]) == ("ReplicaFailure", "FailedCreate")
        assert "requested: pods=1, used: pods=2, limited: pods=2" in condition["message"]


async def test_deleting_a_deployment_takes_its_replica_sets_and_pods(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    async with workload_roles(nc, store, projection):
        await client.send("Deployment", "create", {"manifest": deployment(replicas=2)})
        await eventually(rolled_out(projection, "web", 2, "app:1"))
        await client.send("Deployment", "delete", {"name": "web"})
        await eventually(lambda: _true(not replica_sets(projection) and not pods(projection)))
        with pytest.raises(FleetError):
            await client.send("Deployment", "scale", {"name": "web", "replicas": 1})


def condition(record: ObjectRecord | None, kind: str) -> dict[str, Any]:
    conditions = ((record.manifest.get("status") or {}) if record else {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


async def test_a_stalled_rollout_is_reported_and_the_old_pods_keep_serving(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    async with workload_roles(nc, store, projection):
        await client.send(
            "Deployment",
            "create",
            {"manifest": deployment(replicas=2, progressDeadlineSeconds=2)},
        )
        await eventually(rolled_out(projection, "web", 2, "app:1"))
        stalled = deployment(replicas=2, image="app:2", progressDeadlineSeconds=2)
        requests = stalled["spec"]["template"]["spec"]["containers"][0]["resources"]
        requests["requests"]["cpu"] = "64"  # no node fits: the new pod stays Pending
        await client.send("Deployment", "apply", {"manifest": stalled})

        async def timed_out() -> bool:
            progressing = condition(get(projection, "Deployment", "web"), "Progressing")
            return progressing.get("reason") == "ProgressDeadlineExceeded"

        await eventually(timed_out)
        record = get(projection, "Deployment", "web")
        progressing = condition(record, "Progressing")
        assert progressing["status"] == "False"
        assert progressing["message"].endswith("has timed out progressing.")
        assert condition(record, "Available")["status"] == "True"
        live = pods(projection)
        old = [p for p in live if p.manifest["spec"]["containers"][0]["image"] == "app:1"]
        assert len(old) == 2 and len(live) == 3  # maxSurge 1 (25 % of 2, rounded up)


async def test_recreate_removes_every_old_pod_before_creating_a_new_one(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    strategy = {"type": "Recreate"}
    async with workload_roles(nc, store, projection):
        await client.send(
            "Deployment", "create", {"manifest": deployment(replicas=3, strategy=strategy)}
        )
        await eventually(rolled_out(projection, "web", 3, "app:1"))
        start = projection.position
        new = deployment(replicas=3, image="app:2", strategy=strategy)
        await client.send("Deployment", "apply", {"manifest": new})
        await eventually(rolled_out(projection, "web", 3, "app:2"))
        order = [e.type for e in await events_of(store, after=start) if e.kind == "Pod"]
        created = [i for i, t in enumerate(order) if t == "PodCreated"]
        deleted = [i for i, t in enumerate(order) if t == "PodDeleted"]
        assert len(created) == 3 and len(deleted) == 3
        assert max(deleted) < min(created)


async def test_an_orphaned_replica_set_and_its_pods_are_adopted_by_a_new_deployment(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    async with workload_roles(nc, store, projection):
        await client.send("Deployment", "create", {"manifest": deployment(replicas=2)})
        await eventually(rolled_out(projection, "web", 2, "app:1"))
        pods_before = {p.name for p in pods(projection)}
        [rs] = replica_sets(projection)
        await client.send("Deployment", "delete", {"name": "web", "propagationPolicy": "Orphan"})

        async def orphaned() -> bool:
            record = get(projection, "ReplicaSet", rs.name)
            return record is not None and not record.manifest["metadata"].get("ownerReferences")

        await eventually(orphaned)
        assert {p.name for p in pods(projection)} == pods_before
        recreated = await client.send("Deployment", "create", {"manifest": deployment(replicas=2)})

        async def adopted() -> bool:
            record = get(projection, "ReplicaSet", rs.name)
            refs = (record.manifest["metadata"].get("ownerReferences") or []) if record else []
            return [r["uid"] for r in refs] == [recreated.uid]

        await eventually(adopted)
        await eventually(rolled_out(projection, "web", 2, "app:1"))
        assert {p.name for p in pods(projection)} == pods_before  # nothing was replaced
        assert [r.name for r in replica_sets(projection)] == [rs.name]
        history = await store.read_subject(f"fleet.evt.replicaset.default.{rs.name}")
        adoptions = [
            e.envelope
            for e in history
            if e.envelope.type == "ReplicaSetUpdated"
            and any(
                path.startswith("metadata.ownerReferences")
                for path in e.envelope.payload["changed"]
            )
        ]
        # Orphaned by the garbage collector, then adopted by the deployment controller.
        assert [e.actor for e in adoptions][-1] == DEPLOYMENT_ACTOR


async def test_a_replica_set_adopts_matching_bare_pods_before_creating_any(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    bare = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stray", "labels": {"app": "solo"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    await client.send("Pod", "create", {"manifest": bare})
    rs_manifest = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "solo"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "solo"}},
            "template": {
                "metadata": {"labels": {"app": "solo"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            },
        },
    }
    async with workload_roles(nc, store, projection):
        created = await client.send("ReplicaSet", "create", {"manifest": rs_manifest})

        async def two_owned() -> bool:
            live = pods(projection)
            return len(live) == 2 and all(
                (p.manifest["metadata"].get("ownerReferences") or [{}])[0].get("uid") == created.uid
                for p in live
            )

        await eventually(two_owned)
        assert get(projection, "Pod", "stray") is not None


async def test_pods_count_as_available_only_after_min_ready_seconds(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    async with workload_roles(nc, store, projection):
        start = projection.position
        await client.send(
            "Deployment", "create", {"manifest": deployment(replicas=2, minReadySeconds=2)}
        )
        await eventually(rolled_out(projection, "web", 2, "app:1"))
        events = await events_of(store, after=start)
        ready_at = max(e.timestamp_ns for e in events if e.type == "PodReady")
        statuses = [e for e in events if e.type == "DeploymentStatusUpdated"]
        available_at = next(
            e.timestamp_ns for e in statuses if e.payload["status"].get("availableReplicas") == 2
        )
        assert available_at - ready_at >= 2 * 1_000_000_000
        assert any(
            e.payload["status"].get("readyReplicas") == 2
            and e.payload["status"].get("availableReplicas") == 0
            for e in statuses
        )
        [rs] = replica_sets(projection)
        assert rs.manifest["spec"]["minReadySeconds"] == 2
        assert rs.manifest["status"]["availableReplicas"] == 2
