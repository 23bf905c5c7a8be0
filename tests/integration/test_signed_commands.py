"""Signed commands, the verified actor, impersonation and RBAC at the gateway, against a real
nats-server: each user connects with its own nkey and its CommandClient signs every command;
forged, tampered, replayed and stale commands and unknown or revoked signers are refused
(``unauthorized``) and audited, nothing appended; RBAC denials read as kube's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from core.access.commandauth import admin_identity, control_plane_identity
from core.access.signing import Signature, check_digest, sign
from core.api.commands import command_message
from handlers.gateway import Gateway
from streams.audit import AuditRecord, read_audit
from streams.commandbus import (
    ACCESS_REVIEW_SUBJECT,
    WHOAMI_SUBJECT,
    CommandClient,
    CommandFailed,
)
from streams.connection import connect
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from streams.subjects import command_subject
from tests.integration.support import cli, eventually

pytestmark = pytest.mark.integration

ADMIN = Credentials(generate_seed())
CONTROL_PLANE = Credentials(generate_seed())


def pod(name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def user(name: str, credentials: Credentials, *groups: str, revoked: bool = False) -> Any:
    return {
        "apiVersion": "auth.fleetlog.dev/v1",
        "kind": "User",
        "metadata": {"name": name},
        "spec": {"publicKey": credentials.public_key, "groups": list(groups), "revoked": revoked},
    }


def binding(name: str, role: str, who: str, *, ns: str = "") -> dict[str, Any]:
    kind = "RoleBinding" if ns else "ClusterRoleBinding"
    metadata = {"name": name, **({"namespace": ns} if ns else {})}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": who}],
    }


@pytest.fixture
async def signing_gateway(nc: Client, store: EventStore) -> AsyncIterator[Gateway]:
    """A gateway that knows the admin's and the control plane's keys (unsigned commands are
    still accepted: the test server is open), with namespaces a and b."""
    service = await Gateway.create(
        nc,
        store,
        identities={
            ADMIN.public_key: admin_identity("fleetlog-admin"),
            CONTROL_PLANE.public_key: control_plane_identity("control-plane"),
        },
    )
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    await ready.wait()
    setup = CommandClient(nc, actor="test:setup")
    for name in ("default", "a", "b"):
        await setup.send("Namespace", "apply", {"manifest": namespace(name)})
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def connect_as(nats_server: Any) -> AsyncIterator[Any]:
    opened: list[Client] = []

    async def open_(credentials: Credentials, actor: str = "cli", **options: Any) -> Any:
        nc = await connect(nats_server.url, name="signed", credentials=credentials)
        opened.append(nc)
        return CommandClient(nc, actor=actor, **options)

    yield open_
    for nc in opened:
        with contextlib.suppress(Exception):
            await nc.close()


async def audit_of(nc: Client, predicate: Any) -> AuditRecord:
    found: list[AuditRecord] = []

    async def present() -> bool:
        found[:] = [r for r in await read_audit(nc) if predicate(r)]
        return bool(found)

    await eventually(present)
    return found[-1]


async def make_users(nc: Client, *users: dict[str, Any]) -> None:
    admin = CommandClient(nc, actor="test:setup")
    for manifest in users:
        await admin.send(manifest["kind"], "apply", {"manifest": manifest})


def payload_for(manifest: dict[str, Any], actor: str = "cli") -> bytes:
    message = command_message(
        idempotency_key=f"key-{time.time_ns()}", actor=actor, body={"manifest": manifest}
    )
    return msgpack.packb(message, use_bin_type=True)


async def test_the_actor_is_the_verified_signer_and_the_audit_keeps_the_signature(
    nc: Client, store: EventStore, signing_gateway: Gateway, connect_as: Any
) -> None:
    alice = Credentials(generate_seed())
    await make_users(nc, user("alice", alice), binding("alice-edit", "edit", "alice", ns="a"))
    client = await connect_as(alice, actor="user:whatever-i-say")
    outcome = await client.send("Pod", "create", {"manifest": pod("p", "a")})
    event = await store.get_event(outcome.seqs[0])
    assert event is not None and event.envelope.actor == "alice"
    record = await audit_of(nc, lambda r: r.name == "p" and r.outcome == "accepted")
    assert record.actor == "alice" and record.signature["signer"] == alice.public_key
    assert record.authorization == [
        'RBAC: allowed by RoleBinding "alice-edit/a" of ClusterRole "edit" to User "alice"'
    ]
    signature = Signature(
        signer=record.signature["signer"],
        signed_at_ns=int(record.signature["signed_at"]),
        nonce=record.signature["nonce"],
        signature=record.signature["signature"],
    )
    # Provable later from the audit record alone (raises when it does not verify).
    check_digest(signature, subject=record.signature["subject"], digest=record.signature["digest"])


async def test_forged_tampered_replayed_and_stale_commands_are_refused_and_audited(
    nc: Client, store: EventStore, signing_gateway: Gateway
) -> None:
    alice, stranger = Credentials(generate_seed()), Credentials(generate_seed())
    await make_users(nc, user("alice", alice), binding("alice-edit", "edit", "alice", ns="a"))
    subject = command_subject("Pod", "create")
    before = await store.stream_last_seq()

    async def send(payload: bytes, signature: Signature) -> dict[str, Any]:
        reply = await nc.request(subject, payload, timeout=5, headers=signature.headers())
        answer: dict[str, Any] = msgpack.unpackb(reply.data, raw=False)
        return answer

    def signed(credentials: Credentials, payload: bytes, *, at: int, nonce: str) -> Signature:
        return sign(
            credentials.seed.encode(), subject=subject, payload=payload, signed_at_ns=at,
            nonce=nonce,
        )  # fmt: skip

    now = time.time_ns()
    forged = payload_for(pod("forged", "a"), actor="alice")
    answer = await send(forged, signed(stranger, forged, at=now, nonce="n-forged"))
    assert answer["error"]["code"] == "unauthorized"
    assert "not a user of this cluster" in answer["error"]["message"]

    genuine = payload_for(pod("genuine", "a"))
    tampered = payload_for(pod("tampered", "a"))
    answer = await send(tampered, signed(alice, genuine, at=now, nonce="n-tampered"))
    assert answer["error"]["code"] == "unauthorized"
    assert "does not match the command" in answer["error"]["message"]

    stale_at = now - 120 * 1_000_000_000
    stale = payload_for(pod("stale", "a"))
    answer = await send(stale, signed(alice, stale, at=stale_at, nonce="n-stale"))
    assert answer["error"]["code"] == "unauthorized"
    assert "behind the gateway's clock" in answer["error"]["message"]
    assert await store.stream_last_seq() == before  # nothing appended by any of them

    once = payload_for(pod("once", "a"))
    signature = signed(alice, once, at=time.time_ns(), nonce="n-once")
    assert (await send(once, signature))["ok"]
    answer = await send(once, signature)
    assert answer["error"]["code"] == "unauthorized"
    assert "replay" in answer["error"]["message"]

    refused = await audit_of(nc, lambda r: r.code == "unauthorized" and "replay" in r.message)
    assert refused.signature["signer"] == alice.public_key and refused.outcome == "rejected"
    for name in ("forged", "tampered", "stale"):
        record = await audit_of(nc, lambda r, n=name: r.name == n)
        assert (record.outcome, record.code) == ("rejected", "unauthorized")


async def test_a_revoked_user_is_refused(
    nc: Client, signing_gateway: Gateway, connect_as: Any
) -> None:
    bob = Credentials(generate_seed())
    await make_users(nc, user("bob", bob), binding("bob-edit", "edit", "bob", ns="a"))
    client = await connect_as(bob)
    await client.send("Pod", "create", {"manifest": pod("before", "a")})
    await make_users(nc, user("bob", bob, revoked=True))

    async def refused() -> bool:
        try:
            await client.send("Pod", "create", {"manifest": pod(f"p{time.time_ns()}", "a")})
        except CommandFailed as exc:
            return exc.code == "unauthorized" and "not a user" in exc.message
        return False

    await eventually(refused)


async def test_a_view_user_may_not_write_and_a_namespace_binding_stops_at_its_namespace(
    nc: Client, store: EventStore, signing_gateway: Gateway, connect_as: Any
) -> None:
    viewer, carol = Credentials(generate_seed()), Credentials(generate_seed())
    await make_users(
        nc,
        user("viewer", viewer),
        binding("viewer-view", "view", "viewer"),
        user("carol", carol),
        binding("carol-edit", "edit", "carol", ns="a"),
    )
    before = await store.stream_last_seq()
    viewing = await connect_as(viewer)
    with pytest.raises(CommandFailed) as refused:
        await viewing.send("Pod", "apply", {"manifest": pod("v", "a")})
    assert refused.value.code == "forbidden"
    assert refused.value.message == (
        'User "viewer" cannot create resource "pods" in API group "" in the namespace "a"'
    )
    editing = await connect_as(carol)
    with pytest.raises(CommandFailed) as elsewhere:
        await editing.send("Pod", "create", {"manifest": pod("c", "b")})
    assert elsewhere.value.message == (
        'User "carol" cannot create resource "pods" in API group "" in the namespace "b"'
    )
    with pytest.raises(CommandFailed) as scaling:
        await editing.send("Node", "cordon", {"name": "n1"})
    assert scaling.value.message == (
        'User "carol" cannot patch resource "nodes" in API group "" at the cluster scope'
    )
    assert await store.stream_last_seq() == before
    denied = await audit_of(nc, lambda r: r.outcome == "denied" and r.actor == "viewer")
    assert denied.code == "forbidden" and denied.authorization == [denied.message]
    await editing.send("Pod", "create", {"manifest": pod("c", "a")})


async def test_impersonation_needs_the_impersonate_permission(
    nc: Client, store: EventStore, signing_gateway: Gateway, connect_as: Any
) -> None:
    dave = Credentials(generate_seed())
    await make_users(
        nc,
        user("dave", dave),
        binding("dave-admin", "admin", "dave", ns="a"),
        user("erin", Credentials(generate_seed())),
    )
    as_erin = await connect_as(dave, actor="erin", impersonate=True)
    with pytest.raises(CommandFailed) as refused:
        await as_erin.send("Pod", "create", {"manifest": pod("i", "a")})
    assert refused.value.code == "forbidden"
    assert refused.value.message == (
        'User "dave" cannot impersonate resource "users" in API group "" at the cluster scope'
    )
    record = await audit_of(nc, lambda r: r.outcome == "denied" and r.impersonator == "dave")
    assert record.actor == "erin"

    admin_as_dave = await connect_as(ADMIN, actor="dave", impersonate=True)
    outcome = await admin_as_dave.send("Pod", "create", {"manifest": pod("j", "a")})
    event = await store.get_event(outcome.seqs[0])
    assert event is not None and event.envelope.actor == "dave"
    accepted = await audit_of(nc, lambda r: r.name == "j" and r.outcome == "accepted")
    assert (accepted.impersonator, accepted.actor) == ("fleetlog-admin", "dave")
    # The impersonated user's own rights decide the command: dave may not write in b.
    with pytest.raises(CommandFailed) as not_there:
        await admin_as_dave.send("Pod", "create", {"manifest": pod("k", "b")})
    assert not_there.value.code == "forbidden"


async def test_control_plane_components_act_as_the_component_they_name(
    nc: Client, store: EventStore, signing_gateway: Gateway, connect_as: Any
) -> None:
    controller = await connect_as(CONTROL_PLANE, actor="system:replicaset-controller")
    outcome = await controller.send("Pod", "create", {"manifest": pod("rs-1", "b")})
    event = await store.get_event(outcome.seqs[0])
    assert event is not None and event.envelope.actor == "system:replicaset-controller"
    record = await audit_of(nc, lambda r: r.name == "rs-1" and r.outcome == "accepted")
    assert record.authorization == [
        'allowed as control-plane component "system:replicaset-controller"'
    ]


async def test_unsigned_commands_are_refused_where_signatures_are_required(
    nc: Client, store: EventStore
) -> None:
    service = await Gateway.create(nc, store, require_signatures=True)
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    await ready.wait()
    try:
        with pytest.raises(CommandFailed) as refused:
            await CommandClient(nc, actor="fleetlog-admin").send(
                "Namespace", "apply", {"manifest": namespace("x")}
            )
        assert refused.value.code == "unauthorized"
        assert "not signed" in refused.value.message
        assert await store.stream_last_seq() == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


async def test_whoami_and_can_i_answer_with_the_verified_identity(
    nc: Client, signing_gateway: Gateway, connect_as: Any
) -> None:
    frank = Credentials(generate_seed())
    await make_users(
        nc, user("frank", frank, "dev"), binding("frank-view", "view", "frank", ns="a")
    )
    client = await connect_as(frank, actor="user:os-name")
    me = (await client.review(WHOAMI_SUBJECT, {})).extra
    assert (me["user"], me["groups"], me["verified"]) == (
        "frank",
        ["dev", "system:authenticated"],
        True,
    )

    async def can_i(verb: str, resource: str, ns: str, who: CommandClient = client) -> bool:
        body = {"verb": verb, "resource": resource, "namespace": ns}
        return bool((await who.review(ACCESS_REVIEW_SUBJECT, body)).extra["allowed"])

    assert await can_i("get", "pods", "a")
    assert not await can_i("create", "pods", "a")
    assert not await can_i("get", "pods", "b")
    assert not await can_i("update", "deployments/scale", "a")
    with pytest.raises(CommandFailed) as refused:
        await can_i("get", "pods", "a", await connect_as(frank, actor="erin", impersonate=True))
    assert refused.value.code == "forbidden"
    admin_as_frank = await connect_as(ADMIN, actor="frank", impersonate=True)
    assert (await admin_as_frank.review(WHOAMI_SUBJECT, {})).extra["impersonator"] == (
        "fleetlog-admin"
    )
    assert not await can_i("create", "pods", "a", admin_as_frank)
    assert await can_i("delete", "nodes", "", await connect_as(ADMIN))


async def test_the_cli_signs_and_can_i_answers_yes_or_no_with_its_exit_code(
    nc: Client, nats_server: Any, signing_gateway: Gateway, tmp_path: Path
) -> None:
    grace = Credentials(generate_seed())
    await make_users(nc, user("grace", grace), binding("grace-edit", "edit", "grace", ns="a"))
    seed_file = tmp_path / "grace.nk"
    seed_file.write_text(grace.seed + "\n")
    as_grace = ("--credentials", str(seed_file))
    allowed = await cli(nats_server.url, *as_grace, "auth", "can-i", "create", "pods", "-n", "a")
    assert (allowed.exit_code, allowed.output) == (0, "yes\n")
    denied = await cli(nats_server.url, *as_grace, "auth", "can-i", "create", "pods", "-n", "b")
    assert (denied.exit_code, denied.output) == (1, "no\n")
    whoami = await cli(nats_server.url, *as_grace, "auth", "whoami")
    assert "Username\tgrace" in whoami.output
    impersonating = await cli(nats_server.url, *as_grace, "--as", "root", "auth", "whoami")
    assert impersonating.exit_code == 1
    assert 'User "grace" cannot impersonate resource "users"' in impersonating.output


async def test_audit_verify_proves_each_signed_commands_sender_and_names_a_forged_record(
    nats_server: Any, nc: Client, store: EventStore, signing_gateway: Gateway, connect_as: Any
) -> None:
    import dataclasses

    from streams.audit import audit_subject

    alice = Credentials(generate_seed())
    await make_users(nc, user("alice", alice), binding("alice-edit", "edit", "alice", ns="a"))
    client = await connect_as(alice)
    await client.send("Pod", "create", {"manifest": pod("proven", "a")})
    record = await audit_of(nc, lambda r: r.name == "proven" and r.outcome == "accepted")
    clean = await cli(nats_server.url, "audit", "verify")
    assert clean.exit_code == 0, clean.output
    lines = clean.output.splitlines()
    assert lines[-1] == "no breaks"
    assert "signed commands in the audit trail, each proves its sender" in lines[-2]
    # A record claiming alice asked for something she never signed: her signature, another
    # payload (its digest).
    forged = dataclasses.replace(
        record, name="never", signature={**record.signature, "digest": "0" * 64}
    )
    subject = audit_subject(forged.outcome, forged.kind, forged.verb, forged.actor)
    seq = (await nc.jetstream().publish(subject, forged.encode())).seq
    broken = await cli(nats_server.url, "audit", "verify")
    assert broken.exit_code == 1
    assert f"SIGNATURE  audit seq {seq}  alice  the signature does not match" in broken.output
    assert "1 command signature(s) that do not verify" in broken.output.splitlines()
    as_json = json.loads(
        (await cli(nats_server.url, "audit", "verify", "-o", "json")).output.splitlines()[0]
    )
    assert not as_json["ok"] and [f["audit_seq"] for f in as_json["signatures"]["failures"]] == [
        seq
    ]
