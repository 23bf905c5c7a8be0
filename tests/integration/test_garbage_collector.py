"""The garbage collector against a real nats-server: owners take their dependents along (or
orphan them on request), chains cascade, namespaces take their objects along, and only the
leader acts. Deployments stand in for replica sets (the deployment controller comes later)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.errors import FleetError
from handlers.garbage_collector import ACTOR, GarbageCollector
from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.subjects import event_subject
from tests.integration.support import eventually

pytestmark = pytest.mark.integration


def deployment(name: str, owner: tuple[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if owner is not None:
        metadata["ownerReferences"] = [owner_ref("Deployment", *owner)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "nginx"}]},
            },
        },
    }


def owner_ref(kind: str, name: str, uid: str) -> dict[str, Any]:
    api = "apps/v1" if kind == "Deployment" else "v1"
    return {"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": True}


def pod(name: str, owner: tuple[str, str] | None = None, namespace: str = "default") -> dict:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner is not None:
        metadata["ownerReferences"] = [owner_ref("Deployment", *owner)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


async def create(client: CommandClient, manifest: dict[str, Any]) -> str:
    """Create an object and return its uid."""
    return (await client.send(manifest["kind"], "create", {"manifest": manifest})).uid


async def last_event(store: EventStore, kind: str, name: str, namespace: str = "default") -> Any:
    events = await store.read_subject(event_subject(kind, namespace, name))
    return events[-1].envelope if events else None


def gone(projection: Projection[ClusterModel], kind: str, name: str, namespace: str = "default"):
    async def check() -> bool:
        # Absent from a projection that folded the log as far as it went when asked: else an
        # object whose creation it has not folded yet (under load) would count as deleted.
        caught_up = await projection.wait_for_log_end()
        return caught_up and projection.model.get(kind, namespace, name) is None

    return check


@contextlib.asynccontextmanager
async def collecting(
    nc: Any, store: EventStore, projection: Projection[ClusterModel]
) -> AsyncIterator[GarbageCollector]:
    collector = await GarbageCollector.create(
        nc, store, projection, period_seconds=0.1, retry_seconds=0.2
    )
    task = asyncio.create_task(collector.run())
    try:
        yield collector
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_deleting_an_owner_deletes_its_dependents_and_records_who_and_why(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    web = await create(client, deployment("web"))
    other = await create(client, deployment("other"))
    for name in ("web-1", "web-2"):
        await create(client, pod(name, ("web", web)))
    await create(client, pod("other-1", ("other", other)))
    await create(client, pod("loner"))
    async with collecting(nc, store, projection) as collector:
        await client.send("Deployment", "delete", {"name": "web", "reason": "retired"})
        for name in ("web-1", "web-2"):
            await eventually(gone(projection, "Pod", name))
            deleted = await last_event(store, "Pod", name)
            assert deleted.type == "PodDeleted" and deleted.actor == ACTOR
            assert deleted.payload["reason"] == (
                f'garbage collected: owner Deployment "web" (uid {web}) was deleted'
            )
            # Caused by the owner's deletion event, in the same correlation.
            owner_deleted = await last_event(store, "Deployment", "web")
            web_events = await store.read_subject(event_subject("Deployment", "default", "web"))
            assert deleted.causation_id == f"seq:{web_events[-1].seq}"
            assert deleted.correlation_id == owner_deleted.correlation_id
        owner_deleted = await last_event(store, "Deployment", "web")
        assert owner_deleted.payload["propagation_policy"] == "Background"
        await asyncio.sleep(0.3)
        assert projection.model.get("Pod", "default", "other-1") is not None
        assert projection.model.get("Pod", "default", "loner") is not None
        assert collector.collected == 2

        # A dependent created after its owner is gone (its uid no longer exists) goes too.
        await create(client, pod("late", ("web", web)))
        await eventually(gone(projection, "Pod", "late"))
        # ... and so does one naming a uid that never existed.
        await create(client, pod("phantom", ("web", "00000000-0000-0000-0000-000000000000")))
        await eventually(gone(projection, "Pod", "phantom"))
        assert "does not exist" in (await last_event(store, "Pod", "phantom")).payload["reason"]


async def test_orphan_keeps_dependents_and_removes_only_that_reference(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    web = await create(client, deployment("web"))
    keeper = await create(client, deployment("keeper"))
    await create(client, pod("web-1", ("web", web)))
    both = pod("shared", ("web", web))
    both["metadata"]["ownerReferences"].append(
        {**owner_ref("Deployment", "keeper", keeper), "controller": False}
    )
    await create(client, both)
    async with collecting(nc, store, projection) as collector:
        await client.send("Deployment", "delete", {"name": "web", "propagationPolicy": "Orphan"})
        assert (await last_event(store, "Deployment", "web")).payload[
            "propagation_policy"
        ] == "Orphan"

        async def unowned() -> bool:
            record = projection.model.get("Pod", "default", "web-1")
            return record is not None and "ownerReferences" not in record.manifest["metadata"]

        await eventually(unowned)
        updated = await last_event(store, "Pod", "web-1")
        assert updated.type == "PodUpdated" and updated.actor == ACTOR
        assert updated.payload["changed"] == ["metadata.ownerReferences"]

        async def keeps_the_other_owner() -> bool:
            refs = (
                projection.model.get("Pod", "default", "shared")
                .manifest["metadata"]
                .get("ownerReferences")
            )
            return [r["uid"] for r in refs or []] == [keeper]

        await eventually(keeps_the_other_owner)
        await asyncio.sleep(0.3)
        assert projection.model.get("Pod", "default", "web-1") is not None
        assert collector.collected == 0 and collector.orphaned == 2


async def test_a_three_level_chain_cascades_and_a_restart_catches_up_from_the_log(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    top = await create(client, deployment("top"))
    middle = await create(client, deployment("middle", ("top", top)))
    for name in ("leaf-1", "leaf-2"):
        await create(client, pod(name, ("middle", middle)))
    orphaner = await create(client, deployment("orphaner"))
    await create(client, pod("kept", ("orphaner", orphaner)))
    # Deleted while no collector runs: a collector started later finds the fates in the log.
    await client.send("Deployment", "delete", {"name": "orphaner", "propagationPolicy": "Orphan"})
    await client.send("Deployment", "delete", {"name": "top", "propagationPolicy": "Foreground"})
    async with collecting(nc, store, projection):
        await eventually(gone(projection, "Deployment", "middle"))
        middle_deleted = await last_event(store, "Deployment", "middle")
        assert middle_deleted.actor == ACTOR
        assert middle_deleted.payload["propagation_policy"] == "Foreground"
        for name in ("leaf-1", "leaf-2"):
            await eventually(gone(projection, "Pod", name))
            leaf = await last_event(store, "Pod", name)
            assert leaf.actor == ACTOR and f'"middle" (uid {middle})' in leaf.payload["reason"]

        async def orphaned() -> bool:
            record = projection.model.get("Pod", "default", "kept")
            return record is not None and "ownerReferences" not in record.manifest["metadata"]

        await eventually(orphaned)


async def test_deleting_a_namespace_deletes_everything_in_it_but_default_is_protected(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    await client.send("Namespace", "create", {"manifest": namespace})
    await create(client, pod("p", namespace="team"))
    await create(client, {**deployment("d"), "metadata": {"name": "d", "namespace": "team"}})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "team"},
        "spec": {"ports": [{"port": 80}]},
    }
    await create(client, service)
    await create(client, pod("outside"))
    async with collecting(nc, store, projection):
        await client.send("Namespace", "delete", {"name": "team"})
        for kind, name in (("Pod", "p"), ("Deployment", "d"), ("Service", "s")):
            await eventually(gone(projection, kind, name, "team"))
            deleted = await last_event(store, kind, name, "team")
            assert deleted.actor == ACTOR
            assert deleted.payload["reason"] == 'namespace "team" was deleted'
        assert projection.model.get("Pod", "default", "outside") is not None

        # Creating in a deleted namespace is refused by admission.
        with pytest.raises(FleetError) as refused:
            await create(client, pod("again", namespace="team"))
        assert refused.value.code == "not_found"

        # default and kube-system may not be deleted; nothing is appended.
        before = await store.read_subject(event_subject("Namespace", "", "default"))
        with pytest.raises(FleetError) as forbidden:
            await client.send("Namespace", "delete", {"name": "default"})
        assert forbidden.value.code == "forbidden"
        assert 'namespace "default" may not be deleted' in forbidden.value.message
        after = await store.read_subject(event_subject("Namespace", "", "default"))
        assert len(after) == len(before)
        assert projection.model.get("Pod", "default", "outside") is not None


async def test_only_the_leader_collects_and_a_follower_takes_over(
    nc, store: EventStore, gateway: Gateway, client: CommandClient, projection
) -> None:
    first = await create(client, deployment("first"))
    await create(client, pod("first-1", ("first", first)))
    second = await create(client, deployment("second"))
    await create(client, pod("second-1", ("second", second)))
    a = await GarbageCollector.create(nc, store, projection, period_seconds=0.1)
    running_a = asyncio.create_task(a.run())
    try:
        await eventually(lambda: _leads(a))
        async with collecting(nc, store, projection) as b:
            await asyncio.sleep(0.3)
            assert not b.leader.is_leader
            await client.send("Deployment", "delete", {"name": "first"})
            await eventually(gone(projection, "Pod", "first-1"))
            await asyncio.sleep(0.3)
            assert (a.collected, b.collected) == (1, 0)
            # The leader stops (and resigns): the follower takes over.
            running_a.cancel()
            await asyncio.gather(running_a, return_exceptions=True)
            await eventually(lambda: _leads(b))
            await client.send("Deployment", "delete", {"name": "second"})
            await eventually(gone(projection, "Pod", "second-1"))
            await asyncio.sleep(0.3)
            assert (a.collected, b.collected) == (1, 1)
    finally:
        running_a.cancel()
        await asyncio.gather(running_a, return_exceptions=True)


async def _leads(collector: GarbageCollector) -> bool:
    return collector.leader.is_leader
