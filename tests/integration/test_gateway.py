"""The command gateway against a real nats-server: accepted commands, idempotency, every kind of
bad input (each answered with a structured error and appending nothing), and scale-out."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest

from core.meta.features import FeatureGates
from handlers.gateway import MAX_COMMAND_BYTES, Gateway
from streams.commandbus import CommandClient, CommandFailed
from streams.connection import connect
from streams.eventstore import EventStore
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef, command_subject, event_subject

pytestmark = pytest.mark.integration


def pod(name: str = "web", image: str = "nginx:1.27", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": image, "command": ["serve"]}], **spec},
    }


def deployment(name: str = "web", replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "nginx"}]},
            },
        },
    }


async def test_apply_creates_then_configures_then_leaves_unchanged(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    created = await client.send("Pod", "apply", {"manifest": pod()})
    assert created.events == ["PodCreated"] and created.version == 1 and created.uid
    relabelled = pod()
    relabelled["metadata"]["labels"]["tier"] = "front"
    updated = await client.send("Pod", "apply", {"manifest": relabelled})
    assert updated.events == ["PodUpdated"] and updated.version == 2
    same = await client.send("Pod", "apply", {"manifest": relabelled})
    assert same.unchanged and same.seqs == [] and same.version == 2
    events = await store.read_subject(event_subject("Pod", "default", "web"))
    assert [e.envelope.type for e in events] == ["PodCreated", "PodUpdated"]
    stored = events[0].envelope
    assert stored.actor == "user:alice"
    assert stored.payload["manifest"]["spec"]["restartPolicy"] == "Always"  # defaults applied
    added = [t["key"] for t in stored.payload["manifest"]["spec"]["tolerations"]]
    assert added == ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
    changed = events[1].envelope.payload["changed"]
    # A person's apply is the "fleetlog" field manager's update (core.kubeapi.fieldsets).
    assert [p for p in changed if not p.startswith("metadata.managedFields")] == [
        "metadata.labels.tier"
    ]
    managers = events[1].envelope.payload["manifest"]["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managers] == [("fleetlog", "Update")]


async def test_retried_command_is_applied_once(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    first = await client.send("Pod", "create", {"manifest": pod()}, idempotency_key="retry-key-1")
    again = await client.send("Pod", "create", {"manifest": pod()}, idempotency_key="retry-key-1")
    assert again.replayed and again.seqs == first.seqs
    assert len(await store.read_subject(event_subject("Pod", "default", "web"))) == 1


async def test_concurrent_duplicates_of_one_command_apply_once(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    outcomes = await asyncio.gather(
        *(
            client.send("Pod", "create", {"manifest": pod()}, idempotency_key="dup-key-42")
            for _ in range(5)
        )
    )
    assert len({tuple(o.seqs) for o in outcomes}) == 1
    assert len(await store.read_subject(event_subject("Pod", "default", "web"))) == 1


async def expect_rejected(
    store: EventStore, send: Any, code: str, field: str | None = None
) -> CommandFailed:
    before = await store.stream_last_seq()
    with pytest.raises(CommandFailed) as caught:
        await send
    assert caught.value.code == code, caught.value
    if field is not None:
        assert caught.value.field == field
    assert await store.stream_last_seq() == before, "a rejected command appended something"
    return caught.value


async def test_a_create_with_only_generate_name_gets_kubes_generated_name_and_a_retry_the_same(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    manifest = pod()
    manifest["metadata"] = {"generateName": "web-", "labels": {"app": "web"}}
    first = await client.send(
        "Pod", "create", {"manifest": manifest}, idempotency_key="generated-1"
    )
    stored = await store.get_event(first.seqs[0])
    assert stored is not None and stored.envelope.type == "PodCreated"
    name = stored.envelope.payload["manifest"]["metadata"]["name"]
    assert re.fullmatch(r"web-[bcdfghjklmnpqrstvwxz2456789]{5}", name), name
    assert stored.envelope.payload["manifest"]["metadata"]["generateName"] == "web-"
    again = await client.send(
        "Pod", "create", {"manifest": manifest}, idempotency_key="generated-1"
    )
    assert again.replayed and again.seqs == first.seqs
    other = await client.send(
        "Pod", "create", {"manifest": manifest}, idempotency_key="generated-2"
    )
    other_event = await store.get_event(other.seqs[0])
    assert other_event is not None
    assert other_event.envelope.payload["manifest"]["metadata"]["name"] != name
    long_prefix = {**manifest, "metadata": {"generateName": "w" * 62 + "-"}}
    longest = await client.send("Pod", "create", {"manifest": long_prefix})
    longest_event = await store.get_event(longest.seqs[0])
    assert longest_event is not None
    assert len(longest_event.envelope.payload["manifest"]["metadata"]["name"]) == 63


async def test_generate_name_is_refused_where_no_name_is_made(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    manifest = pod()
    manifest["metadata"] = {"generateName": "web-"}
    error = await expect_rejected(
        store, client.send("Pod", "apply", {"manifest": manifest}), "invalid",
        "metadata.generateName",
    )  # fmt: skip
    assert "cannot use generateName with apply" in error.message
    nameless = pod()
    nameless["metadata"] = {"labels": {"app": "web"}}
    error = await expect_rejected(
        store, client.send("Pod", "create", {"manifest": nameless}), "invalid"
    )
    assert "name or generateName is required" in error.message


async def test_a_key_reused_for_another_command_is_never_mistaken_for_a_retry(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    first = await client.send(
        "Pod", "create", {"manifest": pod("a")}, idempotency_key="shared-key-1"
    )
    other = await client.send(
        "Pod", "create", {"manifest": pod("b")}, idempotency_key="shared-key-1"
    )
    assert not other.replayed and other.seqs != first.seqs
    assert len(await store.read_subject(event_subject("Pod", "default", "b"))) == 1


async def test_retry_on_another_gateway_after_later_changes_applies_once(
    gateway: Gateway, nats_server: Any, client: CommandClient, store: EventStore
) -> None:
    await client.send("Deployment", "apply", {"manifest": deployment()})
    scaled = await client.send(
        "Deployment", "scale", {"name": "web", "replicas": 4}, idempotency_key="scale-key-9"
    )
    await client.send("Deployment", "scale", {"name": "web", "replicas": 6})
    other_nc = await connect(nats_server.url, name="cold-gateway")
    async with EventStore(other_nc) as other_store:
        cold = await Gateway.create(other_nc, other_store)
        body = {"name": "web", "replicas": 4}
        from core.api.commands import command_message

        retry = msgpack.packb(
            command_message(idempotency_key="scale-key-9", actor="user:alice", body=body)
        )
        answer = await cold.handle(command_subject("deployment", "scale"), retry)
    await other_nc.close()
    assert answer["ok"] and answer["replayed"] and answer["seqs"] == scaled.seqs
    history = await store.read_subject(event_subject("Deployment", "default", "web"))
    assert [e.envelope.payload.get("replicas") for e in history[1:]] == [4, 6]


async def test_malformed_msgpack_is_refused(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    await expect_rejected(
        store, client.send_raw(command_subject("pod", "apply"), b"\xc1\xff\x00garbage"), "malformed"
    )
    await expect_rejected(
        store, client.send_raw(command_subject("pod", "apply"), msgpack.packb([1, 2])), "malformed"
    )


async def test_unknown_kind_and_verb_are_refused(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    error = await expect_rejected(
        store, client.send("Gizmo", "apply", {"manifest": {}}), "unknown_kind"
    )
    assert "pod" in error.message
    await expect_rejected(store, client.send("Pod", "explode", {}), "unknown_verb")


async def test_schema_violation_names_the_field(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    bad = pod()
    bad["spec"]["containers"][0]["imagePullSecretz"] = "x"
    error = await expect_rejected(store, client.send("Pod", "apply", {"manifest": bad}), "invalid")
    assert error.field == "spec.containers[0].imagePullSecretz"
    bad_quantity = pod()
    bad_quantity["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "lots"}}
    error = await expect_rejected(
        store, client.send("Pod", "apply", {"manifest": bad_quantity}), "invalid_quantity"
    )
    assert error.field == "spec.containers[0].resources.limits.cpu"
    await expect_rejected(
        store, client.send("Pod", "apply", {"manifest": pod(), "extra": 1}), "invalid", "body.extra"
    )
    await expect_rejected(
        store, client.send("Deployment", "apply", {"manifest": pod()}), "invalid", "kind"
    )


async def test_every_field_error_travels_in_the_reply_unknown_fields_first(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    bad = pod(hostNetwork="yes")
    bad["spec"]["containers"][0]["ports"] = [{"containerPort": 70000}]
    bad["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    error = await expect_rejected(store, client.send("Pod", "apply", {"manifest": bad}), "invalid")
    assert [(e.field, e.message) for e in error.errors] == [
        ("spec.containers[0].imagePullPolcy", 'unknown field "imagePullPolcy"'),
        (
            "spec.containers[0].ports[0].containerPort",
            "Invalid value 70000: must be between 1 and 65535, inclusive",
        ),
        ("spec.hostNetwork", 'Invalid value "yes": must be true or false'),
    ]
    assert error.field == "spec.containers[0].imagePullPolcy"


SLA_TOLERATION = {"key": "example.com/sla", "operator": "Gt", "value": "950"}


async def test_alpha_toleration_operators_are_refused_by_default(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    error = await expect_rejected(
        store,
        client.send("Pod", "apply", {"manifest": pod(tolerations=[SLA_TOLERATION])}),
        "invalid",
        "spec.tolerations[0].operator",
    )
    assert error.message == 'Unsupported value "Gt": supported values: "Equal", "Exists"'


async def test_a_gateway_with_the_feature_gate_on_admits_them(
    nc: Any, client: CommandClient, store: EventStore
) -> None:
    service = await Gateway.create(
        nc, store, features=FeatureGates.parse("TaintTolerationComparisonOperators=true")
    )
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    try:
        await ready.wait()
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        await client.send("Namespace", "apply", {"manifest": namespace})
        outcome = await client.send("Pod", "apply", {"manifest": pod(tolerations=[SLA_TOLERATION])})
        assert outcome.events == ["PodCreated"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


async def test_hostile_names_are_refused(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    for name in ["a.b.*", "web >", "", "ÿ-unicode", "x" * 300, "UPPER"]:
        await expect_rejected(
            store, client.send("Pod", "apply", {"manifest": pod(name)}), "invalid", "metadata.name"
        )


async def test_hostile_names_in_delete_and_scale_are_refused(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    for name in ["a.b.*", "web >", "", "x" * 300]:
        await expect_rejected(
            store, client.send("Pod", "delete", {"name": name}), "invalid", "body.name"
        )
    await expect_rejected(
        store,
        client.send("Deployment", "scale", {"name": "web", "namespace": "Bad NS", "replicas": 1}),
        "invalid",
        "body.namespace",
    )


async def test_oversize_command_is_refused(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    huge = pod()
    huge["metadata"]["annotations"] = {"blob": "x" * (MAX_COMMAND_BYTES + 1)}
    await expect_rejected(
        store, client.send("Pod", "apply", {"manifest": huge}), "payload_too_large"
    )


async def test_invalid_transitions_are_refused(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    await client.send("Pod", "create", {"manifest": pod()})
    await expect_rejected(
        store, client.send("Pod", "create", {"manifest": pod()}), "already_exists"
    )
    changed = pod()
    changed["spec"]["containers"][0]["command"] = ["other"]
    await expect_rejected(
        store,
        client.send("Pod", "apply", {"manifest": changed}),
        "invalid_transition",
        "spec.containers[0].command[0]",
    )
    await expect_rejected(store, client.send("Pod", "delete", {"name": "ghost"}), "not_found")
    await expect_rejected(
        store, client.send("Pod", "scale", {"name": "web", "replicas": 3}), "unsupported"
    )
    await client.send("Pod", "delete", {"name": "web"})
    await expect_rejected(store, client.send("Pod", "delete", {"name": "web"}), "not_found")


async def test_missing_namespace_is_refused(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    elsewhere = pod()
    elsewhere["metadata"]["namespace"] = "nowhere"
    await expect_rejected(
        store,
        client.send("Pod", "apply", {"manifest": elsewhere}),
        "not_found",
        "metadata.namespace",
    )


async def test_expected_version_guards_against_lost_updates(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    await client.send("Deployment", "apply", {"manifest": deployment()})
    await client.send("Deployment", "scale", {"name": "web", "replicas": 5}, expected_version=1)
    await expect_rejected(
        store,
        client.send("Deployment", "scale", {"name": "web", "replicas": 7}, expected_version=1),
        "conflict",
    )


async def test_expected_version_is_judged_on_the_log_not_a_stale_cache(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    await client.send("Deployment", "apply", {"manifest": deployment()})
    # Another writer (a controller with its own repository) moves the object on; this
    # gateway's cached copy still says version 1.
    other = AggregateRepository(store)
    ref = AggregateRef("Deployment", "default", "web")
    async with other.lock(ref):
        loaded = await other.load(ref)
        loaded.aggregate.scale(replicas=3, reason="elsewhere", at=datetime.now(tz=UTC))
        provenance = Provenance(
            actor="test:other",
            correlation_id="other-scale-1",
            causation_id="other-scale-1",
            token="other-scale-1",
            now_ns=time.time_ns(),
        )
        await other.save([loaded], provenance)
    outcome = await client.send(
        "Deployment", "scale", {"name": "web", "replicas": 4}, expected_version=2
    )
    assert outcome.events == ["ScaledTo"] and outcome.version == 3
    # A precondition on an object that is gone is "not found", not a version conflict.
    await client.send("Deployment", "delete", {"name": "web"})
    await expect_rejected(
        store,
        client.send("Deployment", "delete", {"name": "web"}, expected_version=3),
        "not_found",
    )


async def test_scale_records_who_and_why(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    await client.send("Deployment", "apply", {"manifest": deployment(replicas=2)})
    outcome = await client.send(
        "Deployment", "scale", {"name": "web", "replicas": 4, "reason": "load test"}
    )
    assert outcome.events == ["ScaledTo"]
    last = (await store.read_subject(event_subject("Deployment", "default", "web")))[-1].envelope
    assert last.payload == {"replicas": 4, "previous": 2, "reason": "load test"}
    assert last.actor == "user:alice"
    assert (await client.send("Deployment", "scale", {"name": "web", "replicas": 4})).unchanged


async def test_deleted_name_can_be_created_again_with_a_new_uid(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    first = await client.send("Pod", "create", {"manifest": pod()})
    await client.send("Pod", "delete", {"name": "web", "reason": "done"})
    second = await client.send("Pod", "create", {"manifest": pod()})
    assert second.version == 3 and second.uid != first.uid


async def test_two_gateways_share_the_command_stream(
    gateway: Gateway, nats_server: Any, store: EventStore, client: CommandClient
) -> None:
    other_nc = await connect(nats_server.url, name="second-gateway")
    async with EventStore(other_nc) as other_store:
        second = await Gateway.create(other_nc, other_store)
        ready = asyncio.Event()
        task = asyncio.create_task(second.run(ready))
        await ready.wait()
        try:
            before_first, before_second = gateway.handled, second.handled
            outcomes = await asyncio.gather(
                *(client.send("Pod", "create", {"manifest": pod(f"p{i}")}) for i in range(200))
            )
            assert all(o.events == ["PodCreated"] for o in outcomes)
            assert gateway.handled > before_first and second.handled > before_second
            assert gateway.handled - before_first + second.handled - before_second == 200
            # Both gateways deciding on the same aggregate: the stale one re-decides after a conflict.
            await client.send("Deployment", "apply", {"manifest": deployment()})
            results = await asyncio.gather(
                *(
                    client.send("Deployment", "scale", {"name": "web", "replicas": n})
                    for n in range(3, 23)
                )
            )
            assert all(not r.unchanged for r in results)
            history = await store.read_subject(event_subject("Deployment", "default", "web"))
            assert [e.envelope.version for e in history] == list(range(1, 22))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await other_nc.close()


async def test_a_create_retried_on_a_cold_gateway_is_replayed_and_keeps_the_chain(
    gateway: Gateway, nats_server: Any, client: CommandClient, store: EventStore
) -> None:
    """The cold gateway does not hold the pod, so it decides the create again (at its own
    time); the store finds the first attempt's events. The answer is theirs, marked replayed,
    and what that gateway writes next chains to the stored event, not to its own decision."""
    created = await client.send(
        "Pod", "create", {"manifest": pod()}, idempotency_key="create-key-7"
    )
    from core.api.commands import command_message
    from streams.integrity import verify_log

    other_nc = await connect(nats_server.url, name="cold-gateway")
    async with EventStore(other_nc) as other_store:
        cold = await Gateway.create(other_nc, other_store)
        retry = msgpack.packb(
            command_message(
                idempotency_key="create-key-7", actor="user:alice", body={"manifest": pod()}
            )
        )
        answer = await cold.handle(command_subject("pod", "create"), retry)
        assert answer["ok"] and answer["replayed"]
        assert (answer["seqs"], answer["uid"], answer["version"]) == (
            created.seqs, created.uid, created.version,
        )  # fmt: skip
        delete = msgpack.packb(
            command_message(
                idempotency_key="delete-key-7", actor="user:alice", body={"name": "web"}
            )
        )
        deleted = await cold.handle(command_subject("pod", "delete"), delete)
        assert deleted["ok"] and deleted["events"][0] == "PodDeleted"
    await other_nc.close()
    history = await store.read_subject(event_subject("Pod", "default", "web"))
    assert [e.envelope.type for e in history] == ["PodCreated", "PodDeleted"]
    report = await verify_log(store)
    assert report.ok, report.breaks


async def test_nodes_are_cordoned_and_uncordoned_with_who_and_why(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-1.example.com"}}
    await client.send("Node", "apply", {"manifest": node})
    cordoned = await client.send(
        "Node", "cordon", {"name": "worker-1.example.com", "reason": "kernel upgrade"}
    )
    assert cordoned.events == ["NodeCordoned"]
    assert (await client.send("Node", "cordon", {"name": "worker-1.example.com"})).unchanged
    assert (await client.send("Node", "uncordon", {"name": "worker-1.example.com"})).events == [
        "NodeUncordoned"
    ]
    history = await store.read_subject(event_subject("Node", "", "worker-1.example.com"))
    assert [e.envelope.type for e in history] == ["NodeCreated", "NodeCordoned", "NodeUncordoned"]
    assert history[1].envelope.payload == {"reason": "kernel upgrade"}
    await expect_rejected(store, client.send("Pod", "cordon", {"name": "web"}), "unsupported")
    await expect_rejected(store, client.send("Node", "cordon", {"name": "ghost"}), "not_found")


async def test_status_records_a_controllers_view_and_refuses_what_is_not_status(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    await client.send("Deployment", "apply", {"manifest": deployment()})
    status = {"observedGeneration": 1, "replicas": 1, "availableReplicas": 1}
    revision = {"deployment.kubernetes.io/revision": "1"}
    outcome = await client.send(
        "Deployment",
        "status",
        {"name": "web", "status": status, "annotations": revision},
    )
    assert outcome.events == ["DeploymentStatusUpdated"]
    again = await client.send(
        "Deployment", "status", {"name": "web", "status": status, "annotations": revision}
    )
    assert again.unchanged
    # A user's apply keeps the recorded status, the controller's annotations and generation.
    await client.send("Deployment", "apply", {"manifest": deployment(replicas=3)})
    stored = (await store.read_subject(event_subject("Deployment", "default", "web")))[-1]
    manifest = stored.envelope.payload["manifest"]
    assert manifest["status"] == status
    assert manifest["metadata"]["annotations"] == revision
    assert manifest["metadata"]["generation"] == 2
    await expect_rejected(
        store,
        client.send("Deployment", "status", {"name": "web", "status": {"replicas": "one"}}),
        "invalid",
        "body.status.replicas",
    )
    await expect_rejected(
        store,
        client.send(
            "Deployment",
            "status",
            {"name": "web", "status": status, "annotations": {"owner": "mallory"}},
        ),
        "invalid_transition",
        "body.annotations",
    )
    await expect_rejected(
        store,
        client.send("Service", "status", {"name": "web", "status": status}),
        "unsupported",
    )


async def test_rbac_objects_are_stored_and_a_bindings_role_ref_is_fixed(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    rbac = "rbac.authorization.k8s.io"
    binding = {
        "apiVersion": f"{rbac}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "devs", "namespace": "default"},
        "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": rbac, "kind": "Group", "name": "devs"}],
    }
    created = await client.send("RoleBinding", "apply", {"manifest": binding})
    assert created.events == ["RoleBindingCreated"]
    changed = {**binding, "roleRef": {**binding["roleRef"], "name": "admin"}}
    with pytest.raises(CommandFailed) as refused:
        await client.send("RoleBinding", "apply", {"manifest": changed})
    assert "cannot change roleRef" in refused.value.message
    bad_role = {
        "apiVersion": f"{rbac}/v1",
        "kind": "Role",
        "metadata": {"name": "r"},
        "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}],
    }
    with pytest.raises(CommandFailed) as invalid:
        await client.send("Role", "apply", {"manifest": bad_role})
    assert "namespaced rules cannot apply to non-resource URLs" in str(invalid.value)
    events = await store.read_subject(event_subject("RoleBinding", "default", "devs"))
    assert [e.envelope.type for e in events] == ["RoleBindingCreated"]
    assert await store.read_subject(event_subject("Role", "default", "r")) == []


async def test_a_namespace_created_through_another_gateway_is_found_by_one_that_cached_its_absence(
    nats_server: Any, gateway: Gateway, client: CommandClient
) -> None:
    """A gateway that once found a namespace absent (cached, or read from a replica that lags)
    does not refuse the next pod in it once the namespace exists: a "not found" is only said
    on the stream leader's word."""
    from core.api.commands import command_message

    def create(key: str) -> bytes:
        return msgpack.packb(
            command_message(
                idempotency_key=key,
                actor="user:alice",
                body={"manifest": {**pod(), "metadata": {"name": "web", "namespace": "late"}}},
            )
        )

    other_nc = await connect(nats_server.url, name="other-gateway")
    async with EventStore(other_nc) as other_store:
        other = await Gateway.create(other_nc, other_store)
        refused = await other.handle(command_subject("pod", "create"), create("early-create"))
        assert not refused["ok"] and 'namespace "late" not found' in refused["error"]["message"]
        await client.send(
            "Namespace",
            "apply",
            {"manifest": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "late"}}},
        )
        made = await other.handle(command_subject("pod", "create"), create("later-create"))
        assert made["ok"], made
    await other_nc.close()
