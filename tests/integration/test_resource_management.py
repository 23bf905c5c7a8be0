"""Resource defaults and quotas through a real gateway on a real nats-server: LimitRanger
defaults are stored in the pod, a quota refuses what would exceed it (appending nothing), two
gateways racing for the last of a quota cannot both win, and a delete frees the quota in the
same append as the PodDeleted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from core.api.commands import command_message
from core.policy.admission import LIMIT_RANGER_ANNOTATION
from core.policy.aggregates import ResourceQuota
from handlers.gateway import Gateway
from handlers.quota_controller import QuotaController
from projections.cluster import ClusterModel
from projections.policies import NamespacePolicies, Policies, _Reply
from projections.runtime import Projection
from streams.commandbus import CommandClient, CommandFailed
from streams.eventstore import EventStore
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef, command_subject, event_filter, event_subject
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

QUOTA_REF = AggregateRef("ResourceQuota", "default", "compute")


def pod(name: str, **resources: dict[str, str]) -> dict[str, Any]:
    main: dict[str, Any] = {"name": "main", "image": "nginx"}
    if resources:
        main["resources"] = resources
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [main]},
    }


def quota(**hard: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "compute"},
        "spec": {"hard": hard},
    }


async def stored_pod(store: EventStore, name: str) -> dict[str, Any]:
    history = await store.read_subject(event_subject("Pod", "default", name))
    assert history[0].envelope.type == "PodCreated"
    manifest: dict[str, Any] = history[0].envelope.payload["manifest"]
    return manifest


async def test_cluster_defaults_are_stored_in_the_pod_and_its_created_event(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("Pod", "create", {"manifest": pod("web")})
    manifest = await stored_pod(store, "web")
    assert manifest["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    }
    assert manifest["metadata"]["annotations"][LIMIT_RANGER_ANNOTATION] == (
        "LimitRanger plugin set: cpu, memory request for container main; "
        "cpu, memory limit for container main"
    )
    # Re-applying the original manifest changes nothing (the admitted resources are kept).
    again = await client.send("Pod", "apply", {"manifest": pod("web")})
    assert again.unchanged


async def test_a_limit_range_created_just_before_applies_and_its_max_is_enforced(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    limits = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "limits"},
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "300m"},
                    "defaultRequest": {"cpu": "150m"},
                    "max": {"cpu": "1"},
                }
            ]
        },
    }
    await client.send("LimitRange", "create", {"manifest": limits})
    # What read-your-writes rests on: the last event of a kind in a namespace, by wildcard.
    assert await store.last_seq(event_filter("LimitRange", "default")) > 0
    await client.send("Pod", "create", {"manifest": pod("web")})  # no wait: read-your-writes
    manifest = await stored_pod(store, "web")
    assert manifest["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "150m"},
        "limits": {"cpu": "300m"},
    }
    before = await store.stream_last_seq()
    with pytest.raises(CommandFailed) as refused:
        await client.send("Pod", "create", {"manifest": pod("big", limits={"cpu": "2"})})
    assert refused.value.code == "forbidden"
    assert "maximum cpu usage per Container is 1, but limit is 2" in str(refused.value)
    assert await store.stream_last_seq() == before


async def test_quota_rejection_names_quota_request_and_what_is_left_and_appends_nothing(
    store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("ResourceQuota", "create", {"manifest": quota(**{"requests.cpu": "2"})})
    first = await client.send("Pod", "create", {"manifest": pod("a", requests={"cpu": "1800m"})})
    assert first.events == ["PodCreated", "QuotaCharged"]
    before = await store.stream_last_seq()
    with pytest.raises(CommandFailed) as refused:
        await client.send("Pod", "create", {"manifest": pod("b", requests={"cpu": "500m"})})
    assert refused.value.code == "forbidden"
    assert refused.value.message == (
        "exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=1800m, "
        "limited: requests.cpu=2, left: requests.cpu=200m"
    )
    assert await store.stream_last_seq() == before
    assert await store.read_subject(event_subject("Pod", "default", "b")) == []


async def test_delete_frees_the_quota_in_the_same_append_and_status_used_follows(
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    hard = {"pods": "1", "requests.memory": "1Gi"}
    await client.send("ResourceQuota", "create", {"manifest": quota(**hard)})
    await client.send("Pod", "create", {"manifest": pod("a")})
    await projection.wait_for_log_end()
    record = projection.model.get("ResourceQuota", "default", "compute")
    assert record is not None
    assert record.manifest["status"] == {
        "hard": hard,
        "used": {"pods": "1", "requests.memory": "128Mi"},
    }
    with pytest.raises(CommandFailed, match="exceeded quota: compute, requested: pods=1"):
        await client.send("Pod", "create", {"manifest": pod("b")})
    deleted = await client.send("Pod", "delete", {"name": "a"})
    assert deleted.events == ["PodDeleted", "QuotaReleased"]
    assert (await client.send("Pod", "create", {"manifest": pod("b")})).events == [
        "PodCreated",
        "QuotaCharged",
    ]
    await projection.wait_for_log_end()
    record = projection.model.get("ResourceQuota", "default", "compute")
    assert record is not None and record.manifest["status"]["used"]["pods"] == "1"


@contextlib.asynccontextmanager
async def second_gateway(nc: Client, store: EventStore) -> AsyncIterator[Gateway]:
    other = await Gateway.create(nc, store)
    ready = asyncio.Event()
    task = asyncio.create_task(other.run(ready))
    await ready.wait()
    try:
        yield other
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


def create_command(name: str) -> bytes:
    message = command_message(
        idempotency_key=f"create-{name}",
        actor="user:alice",
        body={"manifest": pod(name, requests={"cpu": "600m"})},
    )
    return bytes(msgpack.packb(message, use_bin_type=True))


async def test_two_gateways_racing_for_the_last_of_a_quota_exactly_one_wins(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("ResourceQuota", "create", {"manifest": quota(**{"requests.cpu": "1"})})
    async with second_gateway(nc, store) as other:
        for each in (gateway, other):  # both decide on the same cached ledger
            loaded = await each.repository.load(QUOTA_REF, fresh=True)
            assert isinstance(loaded.aggregate, ResourceQuota)
        replies = await asyncio.gather(
            gateway.handle(command_subject("Pod", "create"), create_command("a")),
            other.handle(command_subject("Pod", "create"), create_command("b")),
        )
    winners = [r for r in replies if r["ok"]]
    losers = [r for r in replies if not r["ok"]]
    assert len(winners) == 1 and len(losers) == 1, replies
    assert winners[0]["events"] == ["PodCreated", "QuotaCharged"]
    assert losers[0]["error"]["code"] == "forbidden"
    assert losers[0]["error"]["message"].startswith(
        "exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m"
    )
    fresh = (await AggregateRepository(store).load(QUOTA_REF)).aggregate
    assert isinstance(fresh, ResourceQuota)
    assert fresh.used["requests.cpu"] == 600 and len(fresh.charges) == 1
    loser = "b" if replies[0]["ok"] else "a"
    assert await store.read_subject(event_subject("Pod", "default", loser)) == []


async def test_the_quota_controller_counts_earlier_pods_and_releases_finished_ones(
    nc: Client,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    for name in ("early-1", "early-2"):
        manifest = pod(name)
        manifest["spec"]["nodeName"] = "n1"  # bound (no scheduler runs here), so it can fail
        await client.send("Pod", "create", {"manifest": manifest})
    controller = await QuotaController.create(
        nc, AggregateRepository(store), projection, period_seconds=0.1, retry_seconds=0.2
    )
    task = asyncio.create_task(controller.run())
    try:
        await client.send("ResourceQuota", "create", {"manifest": quota(pods="3")})

        def used() -> str | None:
            record = projection.model.get("ResourceQuota", "default", "compute")
            return (
                ((record.manifest.get("status") or {}).get("used") or {}).get("pods")
                if record
                else None
            )

        await eventually(lambda: _now(used() == "2"))
        charged = [
            e.envelope
            for e in await store.read_subject(event_subject("ResourceQuota", "default", "compute"))
            if e.envelope.type == "QuotaCharged"
        ]
        assert {e.payload["pod"] for e in charged} == {"default/early-1", "default/early-2"}
        assert {e.payload["reason"] for e in charged} == {"counted: existed before the quota"}
        await client.send("Pod", "create", {"manifest": pod("third")})
        with pytest.raises(CommandFailed, match="exceeded quota: compute"):
            await client.send("Pod", "create", {"manifest": pod("fourth")})
        # Three charged, as the projection sees it (else, under load, the 2 it still showed
        # before folding the third's charge would pass for the release below).
        await eventually(lambda: _now(used() == "3"))

        # A pod that fails no longer counts: the controller gives its charge back.
        repository = AggregateRepository(store)
        ref = AggregateRef("Pod", "default", "early-1")
        loaded = await repository.load(ref, fresh=True)
        loaded.aggregate.fail(reason="Evicted", at=datetime.now(tz=UTC))
        token = "test.fail.early-1"
        await repository.save(
            [loaded],
            Provenance(
                actor="test:kubelet",
                correlation_id=token,
                causation_id=token,
                token=token,
                now_ns=time.time_ns(),
            ),
        )
        await eventually(lambda: _now(used() == "2"))
        released = (await store.read_subject(event_subject("ResourceQuota", "default", "compute")))[
            -1
        ]
        assert released.envelope.type == "QuotaReleased"
        assert released.envelope.payload == {
            "pod": "default/early-1",
            "reason": "pod Failed",
            "used": released.envelope.payload["used"],
        }
        assert released.envelope.actor == "system:resourcequota-controller"
        await client.send("Pod", "create", {"manifest": pod("fourth")})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _now(value: bool) -> bool:
    return value


def limit_range(**item: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "limits"},
        "spec": {"limits": [{"type": "Container", **item}]},
    }


def packed(message: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


async def test_policies_wait_for_a_policy_event_their_projection_has_not_applied(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    """Read-your-writes when the policy came through another gateway: the question to the
    server, not this gateway's own view, says what must be waited for."""
    policies = NamespacePolicies(nc, store)
    await policies.start()
    try:
        await policies.limit_ranges.stop()  # its view falls behind, as a busy gateway's may
        await client.send("LimitRange", "create", {"manifest": limit_range(max={"cpu": "1"})})
        asking = asyncio.create_task(policies.in_namespace("default"))
        await asyncio.sleep(0.3)
        assert not asking.done(), "answered without the LimitRange the log already holds"
        await policies.limit_ranges.follow()
        answer = await asyncio.wait_for(asking, 5)
        assert [m["metadata"]["name"] for m in answer.limit_ranges] == ["limits"]
        assert answer.quotas == []
    finally:
        await policies.stop()


async def test_a_question_sent_before_a_policy_was_written_does_not_answer_a_later_command(
    nc: Client,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Questions are shared only by commands that arrived before one was sent: a command
    arriving while a question is out waits for the next one."""
    policies = NamespacePolicies(nc, store)
    await policies.start()
    asked = policies._multi_last
    answered, release = asyncio.Event(), asyncio.Event()

    async def held(request: bytes) -> Any:
        reply = await asked(request)
        if not answered.is_set():  # the first question: answered by the server, held here
            answered.set()
            await release.wait()
        return reply

    monkeypatch.setattr(policies, "_multi_last", held)
    try:
        await policies.limit_ranges.stop()
        first = asyncio.create_task(policies.in_namespace("default"))
        await asyncio.wait_for(answered.wait(), 5)  # the server has answered: no LimitRange
        await client.send("LimitRange", "create", {"manifest": limit_range(max={"cpu": "1"})})
        later = asyncio.create_task(policies.in_namespace("default"))
        await asyncio.sleep(0)
        release.set()
        assert (await asyncio.wait_for(first, 5)).limit_ranges == []
        await asyncio.sleep(0.3)
        assert not later.done(), "a later command was answered by an earlier question"
        await policies.limit_ranges.follow()
        assert len((await asyncio.wait_for(later, 5)).limit_ranges) == 1
        assert policies.questions == 2
    finally:
        await policies.stop()


async def test_concurrent_commands_share_one_question(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    await client.send("ResourceQuota", "create", {"manifest": quota(pods="10")})
    await client.send("LimitRange", "create", {"manifest": limit_range(max={"cpu": "1"})})
    policies = NamespacePolicies(nc, store)
    await policies.start()
    try:
        answers = await asyncio.gather(*(policies.in_namespace("default") for _ in range(20)))
        assert policies.questions == 1
        assert all(len(a.limit_ranges) == 1 and len(a.quotas) == 1 for a in answers)
        assert (await policies.in_namespace("other")) == Policies([], [])
        assert policies.questions == 2
    finally:
        await policies.stop()


async def test_a_namespace_the_server_will_not_list_falls_back_to_one_question_per_kind(
    nc: Client,
    store: EventStore,
    gateway: Gateway,
    client: CommandClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """nats-server answers ``multi_last`` over more than 1,024 subjects with "413 Too Many
    Results"; the latest sequence of each kind is then asked for with ``last_by_subj``."""
    await client.send("LimitRange", "create", {"manifest": limit_range(max={"cpu": "1"})})
    policies = NamespacePolicies(nc, store)
    await policies.start()

    async def refused(request: bytes) -> Any:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return _Reply(done, status="413")

    monkeypatch.setattr(policies, "_multi_last", refused)
    try:
        answer = await policies.in_namespace("default")
        assert [m["metadata"]["name"] for m in answer.limit_ranges] == ["limits"]
    finally:
        await policies.stop()


async def test_a_retried_create_keeps_its_first_outcome_after_a_limit_range_would_refuse_it(
    nc: Client, store: EventStore, gateway: Gateway, client: CommandClient
) -> None:
    """A create is admitted as a new pod without reading the log; when that admission refuses
    it, the log is read, so a retry of a create that landed is answered with its events and a
    create of an existing pod is ``already_exists`` (not refused by the newer policy)."""
    subject = command_subject("Pod", "create")
    limits = {"limits": {"cpu": "500m"}}
    manifest = pod("web", **limits)
    command = command_message(
        idempotency_key="create-web-0001", actor="user:alice", body={"manifest": manifest}
    )
    first = await gateway.handle(subject, packed(command))
    assert first["ok"], first
    await client.send("LimitRange", "create", {"manifest": limit_range(max={"cpu": "100m"})})
    async with second_gateway(nc, store) as cold:  # never saw the pod: nothing cached
        retry = await cold.handle(subject, packed(command))
        assert retry["ok"] and retry.get("replayed") and retry["seqs"] == first["seqs"], retry
        again = await cold.handle(subject, packed({**command, "id": "create-web-0002"}))
        assert again["error"]["code"] == "already_exists", again
        new_pod = {**command, "id": "create-new-0001", "body": {"manifest": pod("new", **limits)}}
        refused = await cold.handle(subject, packed(new_pod))
        assert refused["error"]["code"] == "forbidden", refused
    assert len(await store.read_subject(event_subject("Pod", "default", "web"))) == 1
