"""Kube's escalation checks at the gateway, against a real nats-server with signed commands:
a user allowed to write roles and bindings still cannot grant more than it holds (unless RBAC
gives it ``escalate`` or ``bind``); the refusal reads as kube-apiserver's, appends nothing and
is audited ``denied`` with the reason."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client

from handlers.gateway import Gateway
from streams.commandbus import CommandFailed
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from tests.integration import test_signed_commands as signed
from tests.integration.test_signed_commands import ADMIN, audit_of, binding, make_users, user

pytestmark = pytest.mark.integration

# The signed-commands tests' gateway (it knows the admin's key) and their signed clients.
signing_gateway = signed.signing_gateway
connect_as = signed.connect_as

RBAC = "rbac.authorization.k8s.io"


def role(name: str, ns: str, *rules: dict[str, Any]) -> dict[str, Any]:
    kind = "Role" if ns else "ClusterRole"
    metadata = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": metadata, "rules": list(rules)}


def rule(verbs: list[str], group: str, resource: str, *names: str) -> dict[str, Any]:
    found: dict[str, Any] = {"apiGroups": [group], "resources": [resource], "verbs": verbs}
    if names:
        found["resourceNames"] = list(names)
    return found


async def write(client: Any, manifest: dict[str, Any], verb: str = "apply") -> Any:
    return await client.send(manifest["kind"], verb, {"manifest": manifest})


async def test_a_namespace_admin_cannot_bind_cluster_admin_nor_write_a_wider_role(
    nc: Client, store: EventStore, signing_gateway: Gateway, connect_as: Any
) -> None:
    alice = Credentials(generate_seed())
    await make_users(nc, user("alice", alice), binding("alice-admin", "admin", "alice", ns="a"))
    client = await connect_as(alice)
    before = await store.stream_last_seq()

    with pytest.raises(CommandFailed) as bound:
        await write(client, binding("mine", "cluster-admin", "alice", ns="a"))
    assert bound.value.code == "forbidden"
    assert bound.value.message == (
        'rolebindings.rbac.authorization.k8s.io "mine" is forbidden: user "alice" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
        "currently held:\n"
        '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}\n'
        '{NonResourceURLs:["*"], Verbs:["*"]}'
    )
    with pytest.raises(CommandFailed) as wider:
        await write(client, role("secrets-all", "a", rule(["*"], "", "secrets")))
    assert wider.value.code == "forbidden"
    assert wider.value.message == (
        'roles.rbac.authorization.k8s.io "secrets-all" is forbidden: user "alice" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
        'currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["*"]}'
    )
    assert await store.stream_last_seq() == before  # nothing appended

    denied = await audit_of(nc, lambda r: r.outcome == "denied" and r.name == "mine")
    assert denied.code == "forbidden" and denied.actor == "alice"
    assert denied.message == bound.value.message
    assert denied.authorization == [
        'RBAC: allowed by RoleBinding "alice-admin/a" of ClusterRole "admin" to User "alice"',
        f"escalation check: {bound.value.message}",
    ]

    # What admin holds it may hand on: edit (admin ⊇ edit), and a role within its rights.
    await write(client, binding("bob-edit", "edit", "bob", ns="a"))
    await write(client, role("secret-reader", "a", rule(["get", "list"], "", "secrets")))
    accepted = await audit_of(nc, lambda r: r.outcome == "accepted" and r.name == "bob-edit")
    assert accepted.authorization[-1] == (
        'escalation check: ClusterRole "edit" grants nothing not held'
    )
    # ... and only in its own namespace.
    with pytest.raises(CommandFailed) as elsewhere:
        await write(client, binding("bob-edit", "edit", "bob", ns="b"))
    assert elsewhere.value.code == "forbidden"


async def test_bind_on_a_named_role_lets_a_user_bind_that_role(
    nc: Client, store: EventStore, signing_gateway: Gateway, connect_as: Any
) -> None:
    carol = Credentials(generate_seed())
    binder = role(
        "cluster-admin-binder",
        "",
        rule(["create", "patch"], RBAC, "rolebindings"),
        rule(["bind"], RBAC, "clusterroles", "cluster-admin"),
    )
    await make_users(
        nc,
        user("carol", carol),
        binder,
        binding("carol-binder", "cluster-admin-binder", "carol", ns="a"),
    )
    client = await connect_as(carol)
    await write(client, binding("ops-root", "cluster-admin", "ops", ns="a"))
    accepted = await audit_of(nc, lambda r: r.outcome == "accepted" and r.name == "ops-root")
    assert accepted.authorization[-1] == (
        'bind clusterroles "cluster-admin": RBAC: allowed by RoleBinding "carol-binder/a" of '
        'ClusterRole "cluster-admin-binder" to User "carol"'
    )
    with pytest.raises(CommandFailed) as other:
        await write(client, binding("ops-edit", "edit", "ops", ns="a"))
    assert other.value.code == "forbidden"
    assert "is attempting to grant RBAC permissions not currently held" in other.value.message


async def test_escalate_lets_a_user_write_a_wider_role(
    nc: Client, store: EventStore, signing_gateway: Gateway, connect_as: Any
) -> None:
    dave = Credentials(generate_seed())
    writer = role("role-writer", "", rule(["create", "patch"], RBAC, "roles"))
    escalator = role("role-escalator", "", rule(["create", "patch", "escalate"], RBAC, "roles"))
    await make_users(
        nc,
        user("dave", dave),
        writer,
        escalator,
        binding("dave-writes", "role-writer", "dave", ns="a"),
        binding("dave-escalates", "role-escalator", "dave", ns="b"),
    )
    client = await connect_as(dave)
    with pytest.raises(CommandFailed) as refused:
        await write(client, role("pods", "a", rule(["get"], "", "pods")))
    assert refused.value.message.endswith('\n{APIGroups:[""], Resources:["pods"], Verbs:["get"]}')
    await write(client, role("everything", "b", rule(["*"], "*", "*")))
    accepted = await audit_of(nc, lambda r: r.outcome == "accepted" and r.name == "everything")
    assert accepted.authorization[-1].startswith(
        'escalate roles: RBAC: allowed by RoleBinding "dave-escalates/b"'
    )


async def test_a_binding_to_a_missing_role_is_not_found_and_masters_are_exempt(
    nc: Client, store: EventStore, signing_gateway: Gateway, connect_as: Any
) -> None:
    erin = Credentials(generate_seed())
    await make_users(nc, user("erin", erin), binding("erin-admin", "admin", "erin", ns="a"))
    client = await connect_as(erin)
    with pytest.raises(CommandFailed) as missing:
        await write(client, binding("ghostly", "ghost", "erin", ns="a"))
    assert missing.value.code == "not_found"
    assert missing.value.message == 'clusterroles.rbac.authorization.k8s.io "ghost" not found'
    admin = await connect_as(ADMIN)
    await write(admin, binding("ghostly", "ghost", "erin", ns="a"))
    record = await audit_of(nc, lambda r: r.outcome == "accepted" and r.name == "ghostly")
    assert record.authorization == ['allowed by group "system:masters"']
