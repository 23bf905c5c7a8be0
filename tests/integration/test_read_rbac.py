"""RBAC on every read of the NATS door, against a real nats-server: queries, history reads and
endpoints lookups are signed like commands, and a reader sees only what RBAC lets it see (a
``view`` user bound in namespace a reads a, is refused b, every namespace and Secrets), with
kube's Forbidden wording; unsigned reads are refused where signatures are required."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from core.access.commandauth import admin_identity, control_plane_identity
from core.errors import FleetError
from handlers.gateway import Gateway
from ops.client import Session, session
from projections.access import AccessModel
from projections.cluster import ClusterModel
from projections.endpoints import EndpointsService, query_subject
from projections.history import HistoryIndex
from projections.history_service import HistoryService, read_history
from projections.query import CLUSTER_QUERY_SUBJECT, QueryService
from projections.readaccess import ReadAccess
from projections.runtime import Projection
from streams.commandbus import CommandClient, CommandFailed, signature_headers
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from streams.querybus import request as signed_request
from streams.secretkeys import load_cluster_key
from tests.integration.support import cli
from tests.integration.test_signed_commands import binding, make_users, namespace, pod, user

pytestmark = pytest.mark.integration

ADMIN = Credentials(generate_seed())
CONTROL_PLANE = Credentials(generate_seed())
BOB = Credentials(generate_seed())

EVERY_POD_REFUSED = (
    'pods is forbidden: User "bob" cannot list resource "pods" in API group "" at the cluster scope'
)


def secret(name: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"password": "hunter2"},
    }


def service(name: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    }


@contextlib.asynccontextmanager
async def serving(*services: Any) -> AsyncIterator[None]:
    """Run each service's ``run(ready)`` until the block ends."""
    tasks = []
    for served in services:
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(served.run(ready)))
        await asyncio.wait_for(ready.wait(), 30)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def cluster(nc: Client, store: EventStore, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway that knows the admin's and the control plane's keys, the query, history and
    endpoints services reading with its RBAC (unsigned reads still answered: the test server
    is open), namespaces a and b with a pod, a service and a secret each, and bob, who may
    ``view`` namespace a."""
    gateway = await Gateway.create(
        nc,
        store,
        cluster_key=load_cluster_key(tmp_path / "pki" / "cluster.key"),
        identities={
            ADMIN.public_key: admin_identity("fleetlog-admin"),
            CONTROL_PLANE.public_key: control_plane_identity("control-plane"),
        },
    )
    projection = Projection(ClusterModel(), store)
    await projection.catch_up()
    await projection.follow()
    reads = ReadAccess(gateway.access)
    history = HistoryService(
        nc, store, HistoryIndex(tmp_path / "history.db"), projection, read_access=reads
    )
    async with serving(
        gateway,
        QueryService(nc, projection, secret_keys=gateway.secret_keys, read_access=reads),
        history,
        EndpointsService(nc, projection, read_access=reads),
    ):
        setup = CommandClient(nc, actor="test:setup")
        for ns in ("default", "a", "b"):
            await setup.send("Namespace", "apply", {"manifest": namespace(ns)})
        for ns in ("a", "b"):
            for manifest in (pod(f"web-{ns}", ns), service("web", ns), secret("db", ns)):
                await setup.send(manifest["kind"], "apply", {"manifest": manifest})
        await make_users(nc, user("bob", BOB), binding("bob-view", "view", "bob", ns="a"))
        try:
            yield gateway
        finally:
            await projection.stop()
    history.close()


@contextlib.asynccontextmanager
async def reading_as(
    server: str, credentials: Credentials, *, actor: str = "cli", impersonate: bool = False
) -> AsyncIterator[Session]:
    async with session(server, actor, credentials=credentials, impersonate=impersonate) as s:
        yield s


async def refusal(asked: Any) -> FleetError:
    with pytest.raises(FleetError) as refused:
        await asked
    return refused.value


async def test_a_view_user_reads_its_namespace_and_is_refused_another_all_and_secrets(
    nats_server: Any, cluster: Gateway
) -> None:
    async with reading_as(nats_server.url, BOB) as bob:
        assert [i["name"] for i in await bob.query("Pod", namespace="a")] == ["web-a"]
        assert [i["name"] for i in await bob.query("Pod", namespace="a", name="web-a")] == ["web-a"]
        other = await refusal(bob.query("Pod", namespace="b"))
        assert (other.code, str(other)) == (
            "forbidden",
            'pods is forbidden: User "bob" cannot list resource "pods" in API group "" '
            'in the namespace "b"',
        )
        one = await refusal(bob.query("Pod", namespace="b", name="web-b"))
        assert str(one).startswith('pods "web-b" is forbidden: User "bob" cannot get')
        every = await refusal(bob.query("Pod"))
        assert (every.code, str(every)) == ("forbidden", EVERY_POD_REFUSED)
        for name in (None, "db"):
            hidden = await refusal(bob.query("Secret", namespace="a", name=name))
            assert hidden.code == "forbidden" and "cannot " in str(hidden)
            assert 'resource "secrets"' in str(hidden)
        users = await refusal(bob.query("User"))
        assert 'cannot list resource "users" in API group "auth.fleetlog.dev"' in str(users)
        with pytest.raises(CommandFailed) as write:
            await bob.commands.send("Pod", "apply", {"manifest": pod("more", "a")})
        assert write.value.code == "forbidden"


async def test_a_view_user_reads_history_only_of_what_it_may_get(
    nats_server: Any, cluster: Gateway
) -> None:
    async with reading_as(nats_server.url, BOB) as bob:
        assert [e.envelope.type for e in await bob.history("Pod", "a", "web-a")][:1] == [
            "PodCreated"
        ]
        refused = await refusal(bob.history("Pod", "b", "web-b"))
        assert (refused.code, str(refused)) == (
            "forbidden",
            'pods "web-b" is forbidden: User "bob" cannot get resource "pods" in API group "" '
            'in the namespace "b"',
        )
        secret_history = await refusal(bob.history("Secret", "a", "db"))
        assert secret_history.code == "forbidden"


async def test_the_admin_reads_everything_and_may_read_as_bob(
    nats_server: Any, cluster: Gateway
) -> None:
    async with reading_as(nats_server.url, ADMIN) as admin:
        pods = await admin.query("Pod")
        assert sorted(i["name"] for i in pods) == ["web-a", "web-b"]
        (shown,) = await admin.query("Secret", namespace="b", name="db")
        assert shown["manifest"]["data"]["password"]
        assert await admin.history("Pod", "b", "web-b")
    async with reading_as(nats_server.url, ADMIN, actor="bob", impersonate=True) as as_bob:
        assert [i["name"] for i in await as_bob.query("Pod", namespace="a")] == ["web-a"]
        assert (await refusal(as_bob.query("Pod"))).code == "forbidden"
        assert (await refusal(as_bob.history("Pod", "b", "web-b"))).code == "forbidden"
    async with reading_as(
        nats_server.url, BOB, actor="fleetlog-admin", impersonate=True
    ) as bob_as_admin:
        refused = await refusal(bob_as_admin.query("Pod"))
        assert refused.code == "forbidden"
        assert 'User "bob" cannot impersonate resource "users"' in str(refused)


async def test_a_service_s_endpoints_are_read_with_the_right_to_see_the_service(
    nc: Client, nats_server: Any, cluster: Gateway
) -> None:
    async with reading_as(nats_server.url, BOB) as bob:

        async def endpoints(ns: str) -> dict[str, Any]:
            reply = await signed_request(bob.nc, query_subject(ns, "web"), b"", timeout=10)
            return msgpack.unpackb(reply.data, raw=False)

        assert (await endpoints("a"))["ok"]
        refused = await endpoints("b")
        assert refused["error"]["code"] == "forbidden"
        assert 'services "web" is forbidden: User "bob"' in refused["error"]["message"]
    unsigned = await nc.request(query_subject("b", "web"), b"", timeout=10)
    assert msgpack.unpackb(unsigned.data, raw=False)["ok"]  # an open server: as before


async def test_the_cli_prints_kubes_forbidden_and_fails_and_can_i_says_no(
    nats_server: Any, cluster: Gateway, tmp_path: Path
) -> None:
    seed_file = tmp_path / "bob.nk"
    seed_file.write_text(BOB.seed + "\n")
    as_bob = ("--credentials", str(seed_file))
    allowed = await cli(nats_server.url, *as_bob, "get", "pods", "-n", "a")
    assert allowed.exit_code == 0 and "web-a" in allowed.output
    for read in (
        ("get", "pods", "-n", "b"),
        ("get", "pod", "web-b", "-n", "b"),
        ("describe", "pod", "web-b", "-n", "b"),
        ("history", "pod/web-b", "-n", "b"),
        ("logs", "web-b", "-n", "b"),
        ("get", "secrets", "-n", "a"),
    ):
        denied = await cli(nats_server.url, *as_bob, *read)
        assert denied.exit_code == 1, read
        assert 'is forbidden: User "bob" cannot' in denied.output, read
    everywhere = await cli(nats_server.url, *as_bob, "get", "pods", "-A")
    assert (everywhere.exit_code, everywhere.output) == (1, f"error: {EVERY_POD_REFUSED}\n")
    can_i = await cli(nats_server.url, *as_bob, "auth", "can-i", "list", "pods", "-n", "b")
    assert (can_i.exit_code, can_i.output) == (1, "no\n")


async def test_a_signed_query_is_answered_only_to_its_signers_inbox(
    nc: Client, cluster: Gateway
) -> None:
    """A replayed query shows its replayer nothing: the answer goes to the signer's inbox or
    nowhere (so queries keep no nonce memory)."""
    payload = msgpack.packb({"kind": "Pod", "namespace": "a", "name": None, "continue": None})
    headers = signature_headers(
        BOB.seed.encode(), subject=CLUSTER_QUERY_SUBJECT, payload=payload, now_ns=time.time_ns()
    )
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(msg: Any) -> None:
        await answers.put(msg.data)

    elsewhere = "_INBOX_REPLAYER.1"
    subscription = await nc.subscribe(elsewhere, cb=collect)
    try:
        await nc.publish(CLUSTER_QUERY_SUBJECT, payload, reply=elsewhere, headers=headers)
        answer = msgpack.unpackb(await asyncio.wait_for(answers.get(), 10), raw=False)
    finally:
        await subscription.unsubscribe()
    assert answer["ok"] is False and answer["error"]["code"] == "unauthorized"
    assert "only to its signer's inbox" in answer["error"]["message"]
    assert "items" not in answer


async def test_unsigned_reads_are_refused_where_signatures_are_required(
    nc: Client, nats_server: Any, store: EventStore, tmp_path: Path
) -> None:
    access = AccessModel(store, builtin={ADMIN.public_key: admin_identity("fleetlog-admin")})
    projection = Projection(ClusterModel(), store)
    await projection.catch_up()
    walled = ReadAccess(access, require_signatures=True)
    history = HistoryService(
        nc, store, HistoryIndex(tmp_path / "history.db"), projection, read_access=walled
    )
    async with serving(QueryService(nc, projection, read_access=walled), history):
        request = msgpack.packb({"kind": "Pod", "namespace": "a"})
        unsigned = msgpack.unpackb(
            (await nc.request(CLUSTER_QUERY_SUBJECT, request, timeout=10)).data, raw=False
        )
        assert unsigned["error"]["code"] == "unauthorized"
        assert "not signed" in unsigned["error"]["message"]
        refused = await refusal(read_history(nc, store, "fleet.evt.pod.a.web"))
        assert refused.code == "unauthorized"  # refused, not read around from the log
        async with reading_as(nats_server.url, ADMIN) as admin:
            assert await admin.query("Pod", namespace="a") == []
            assert await admin.history("Pod", "a", "web") == []
    history.close()
    await projection.stop()


async def test_a_stale_or_tampered_signed_query_is_refused(
    nats_server: Any, cluster: Gateway
) -> None:
    payload = msgpack.packb({"kind": "Pod", "namespace": "a", "name": None, "continue": None})
    long_ago = time.time_ns() - 120 * 1_000_000_000
    stale = signature_headers(
        BOB.seed.encode(), subject=CLUSTER_QUERY_SUBJECT, payload=payload, now_ns=long_ago
    )
    fresh = signature_headers(
        BOB.seed.encode(), subject=CLUSTER_QUERY_SUBJECT, payload=payload, now_ns=time.time_ns()
    )
    other = msgpack.packb({"kind": "Pod", "namespace": "b", "name": None, "continue": None})
    async with reading_as(nats_server.url, BOB) as bob:

        async def ask(data: bytes, headers: dict[str, str]) -> dict[str, Any]:
            reply = await bob.nc.request(CLUSTER_QUERY_SUBJECT, data, timeout=10, headers=headers)
            return msgpack.unpackb(reply.data, raw=False)

        old = await ask(payload, stale)
        assert old["error"]["code"] == "unauthorized"
        assert "behind the query service's clock" in old["error"]["message"]
        tampered = await ask(other, fresh)
        assert tampered["error"]["code"] == "unauthorized"
        assert "does not match" in tampered["error"]["message"]
        assert (await ask(payload, fresh))["ok"]
