"""The Kubernetes door authenticates its own callers and authorizes them with the cluster's
RBAC, against a real nats-server and the real kubectl: client certificates from the door's CA
and bearer tokens (a User's ``spec.tokenHash``) map onto the same identities as the NATS door;
reads are authorized at the door, writes at the gateway (the door impersonates the caller with
its control-plane key), and the audit names the caller; unknown, revoked and anonymous callers
get 401; ``kubectl auth whoami|can-i`` answer from the door; API Priority and Fairness headers
go with every answer and a full level answers 429 with Retry-After."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client

from core.access.commandauth import admin_identity, control_plane_identity
from core.access.rbac import Request, User
from core.access.users import token_hash
from core.kubeapi.tables import Columns
from handlers.apiserver import APIServer, ensure_pki
from handlers.apiserver.certs import PKI, issue_client_certificate, user_kubeconfig
from handlers.apiserver.server import FLOW_SCHEMA_UID_HEADER, PRIORITY_LEVEL_UID_HEADER
from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.audit import read_audit
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from tests.e2e.test_kubectl import kubectl_binary
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

CONTROL_PLANE = Credentials(generate_seed())
ADMIN = Credentials(generate_seed())
RBAC = "rbac.authorization.k8s.io"


def user(name: str, *, token: str, groups: tuple[str, ...] = (), revoked: bool = False) -> Any:
    return {
        "apiVersion": "auth.fleetlog.dev/v1",
        "kind": "User",
        "metadata": {"name": name},
        "spec": {
            "publicKey": Credentials(generate_seed()).public_key,
            "groups": list(groups),
            "revoked": revoked,
            "tokenHash": token_hash(token),
        },
    }


def view_in(namespace: str, who: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{who}-view", "namespace": namespace},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": who}],
    }


def pod(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


@dataclass
class Door:
    server: APIServer
    pki: PKI
    directory: Path
    nc: Client

    def kubeconfig(self, name: str, credentials: dict[str, str]) -> Path:
        path = self.directory / f"{name}.kubeconfig"
        user_kubeconfig(
            path, server=self.server.url, ca_pem=self.pki.ca_cert.read_bytes(),
            cluster="door", user=name, credentials=credentials,
        )  # fmt: skip
        return path

    def certificate_kubeconfig(self, name: str, *groups: str) -> Path:
        cert, key = issue_client_certificate(self.pki, user=name, groups=groups)
        data = {
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        }
        return self.kubeconfig(name, data)

    def token_kubeconfig(self, name: str, token: str) -> Path:
        return self.kubeconfig(name, {"token": token})

    def admin_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(self.pki.admin_cert, self.pki.admin_key)
        return context


async def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> Any:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "KUBECACHEDIR": str(kubeconfig.parent / f"cache-{kubeconfig.stem}"),
    }
    return await asyncio.to_thread(
        subprocess.run,
        [kubectl_binary(), *args],
        input=stdin, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


@pytest.fixture
async def door(
    nats_server: Any, nc: Client, store: EventStore, tmp_path: Path
) -> AsyncIterator[Door]:
    """A gateway that knows the control plane's and the admin's keys, and a door whose commands
    are signed with the control plane's key and that asks the gateway's users and policy;
    namespaces a and b, each with a pod."""
    gateway = await Gateway.create(
        nc,
        store,
        identities={
            ADMIN.public_key: admin_identity("fleetlog-admin"),
            CONTROL_PLANE.public_key: control_plane_identity("control-plane"),
        },
    )
    ready = asyncio.Event()
    task = asyncio.create_task(gateway.run(ready))
    await ready.wait()
    setup = CommandClient(nc, actor="test:setup")
    for name in ("a", "b"):
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        await setup.send("Namespace", "apply", {"manifest": namespace})
        await setup.send("Pod", "apply", {"manifest": pod(f"p-{name}", name)})
    door_nc = await connect(nats_server.url, name="door", credentials=CONTROL_PLANE)
    projection = Projection(ClusterModel(), store)
    await projection.catch_up()
    await projection.follow()
    pki = ensure_pki(tmp_path / "pki", service_ip="10.96.0.1")
    columns = {"Pod": Columns(["NAME"], [], lambda i, now, w: [i["name"]])}
    server = APIServer(
        nc=door_nc, projection=projection, store=store, pki=pki, columns=columns, port=0,
        access=gateway.access, max_in_flight=4, queue_wait_s=0.5,
    )  # fmt: skip
    await server.start()
    try:
        yield Door(server, pki, tmp_path, door_nc)
    finally:
        await server.stop()
        await projection.stop()
        await door_nc.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


async def grant(nc: Client, *manifests: dict[str, Any]) -> None:
    setup = CommandClient(nc, actor="test:setup")
    for manifest in manifests:
        await setup.send(manifest["kind"], "apply", {"manifest": manifest})


@pytest.mark.parametrize("credential", ["certificate", "token"])
async def test_a_view_user_reads_its_namespace_only_and_cannot_write(
    door: Door, nc: Client, credential: str
) -> None:
    if credential == "certificate":
        await grant(nc, view_in("a", "carol"))
        config = door.certificate_kubeconfig("carol", "team")
    else:
        await grant(
            nc, user("carol", token="s3cret-token", groups=("team",)), view_in("a", "carol")
        )
        config = door.token_kubeconfig("carol", "s3cret-token")

    listed = await kubectl(config, "get", "pods", "-n", "a", "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["pod/p-a"]
    other = await kubectl(config, "get", "pods", "-n", "b")
    assert other.returncode == 1
    assert (
        'Error from server (Forbidden): pods is forbidden: User "carol" cannot list resource '
        '"pods" in API group "" in the namespace "b"'
    ) in other.stderr
    everywhere = await kubectl(config, "get", "pods", "-A")
    assert "at the cluster scope" in everywhere.stderr and everywhere.returncode == 1
    created = await kubectl(config, "create", "-f", "-", stdin=json.dumps(pod("new", "a")))
    assert created.returncode == 1
    assert "(Forbidden)" in created.stderr
    assert 'User "carol" cannot create resource "pods" in API group "" in the namespace "a"' in (
        created.stderr
    )
    logs = await kubectl(config, "exec", "-n", "a", "p-a", "--", "true")
    assert 'cannot create resource "pods/exec"' in logs.stderr

    whoami = await kubectl(config, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info == {"username": "carol", "groups": ["team", "system:authenticated"]}
    assert (await kubectl(config, "auth", "can-i", "list", "pods", "-n", "a")).stdout == "yes\n"
    denied = await kubectl(config, "auth", "can-i", "list", "pods", "-n", "b")
    assert (denied.stdout, denied.returncode) == ("no\n", 1)
    # ``--list``: the rules RBAC grants in the namespace (view's, there; none beyond the
    # built-in discovery ones in b).
    listed_a = await kubectl(config, "auth", "can-i", "--list", "-n", "a")
    assert listed_a.returncode == 0, listed_a.stderr
    rows = [line.split() for line in listed_a.stdout.splitlines()]
    assert rows[0] == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    assert ["pods", "[]", "[]", "[get", "list", "watch]"] in rows
    assert not any(row[0] == "secrets" for row in rows)
    listed_b = await kubectl(config, "auth", "can-i", "--list", "-n", "b")
    assert not any(row.split()[0] == "pods" for row in listed_b.stdout.splitlines()[1:])


async def test_a_write_through_the_door_is_decided_and_audited_as_its_caller(
    door: Door, nc: Client
) -> None:
    edit = {**view_in("a", "dave"), "metadata": {"name": "dave-edit", "namespace": "a"}}
    edit["roleRef"] = {**edit["roleRef"], "name": "edit"}
    await grant(nc, edit)
    config = door.certificate_kubeconfig("dave")
    created = await kubectl(config, "create", "-f", "-", stdin=json.dumps(pod("made", "a")))
    assert created.returncode == 0, created.stderr
    found: list[Any] = []

    async def audited() -> bool:
        found[:] = [r for r in await read_audit(nc) if r.name == "made" and r.outcome]
        return bool(found)

    await eventually(audited)
    record = found[-1]
    assert record.actor == "dave"
    assert record.impersonator == "system:control-plane"
    assert record.source.startswith("https ")
    assert any('RoleBinding "dave-edit/a"' in reason for reason in record.authorization)


async def test_a_namespace_admin_at_the_door_cannot_grant_what_it_does_not_hold(
    door: Door, nc: Client
) -> None:
    admin = {**view_in("a", "fay"), "metadata": {"name": "fay-admin", "namespace": "a"}}
    admin["roleRef"] = {**admin["roleRef"], "name": "admin"}
    await grant(nc, admin)
    config = door.certificate_kubeconfig("fay")
    escalating = await kubectl(
        config, "create", "rolebinding", "fay-root", "--clusterrole=cluster-admin",
        "--user=fay", "-n", "a",
    )  # fmt: skip
    assert escalating.returncode == 1
    assert 'rolebindings.rbac.authorization.k8s.io "fay-root" is forbidden: user "fay"' in (
        escalating.stderr
    )
    assert "is attempting to grant RBAC permissions not currently held" in escalating.stderr
    allowed = await kubectl(
        config, "create", "rolebinding", "gus-edit", "--clusterrole=edit", "--user=gus",
        "-n", "a",
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr


async def test_bad_unknown_revoked_and_anonymous_callers_are_unauthorized(
    door: Door, nc: Client
) -> None:
    await grant(
        nc,
        user("erin", token="erins-token", revoked=True),
        view_in("a", "erin"),
        user("frank", token="franks-token"),
        view_in("a", "frank"),
    )
    for config in (
        door.token_kubeconfig("nobody", "not-a-token"),
        door.token_kubeconfig("erin", "erins-token"),
        door.certificate_kubeconfig("erin"),
    ):
        refused = await kubectl(config, "get", "pods", "-n", "a")
        assert refused.returncode == 1
        assert "error: You must be logged in to the server" in refused.stderr
    assert (
        await kubectl(door.token_kubeconfig("frank", "franks-token"), "get", "pods", "-n", "a")
    ).returncode == 0

    anonymous = ssl.create_default_context(cafile=str(door.pki.ca_cert))
    async with aiohttp.ClientSession() as session:
        for path, code in (("/version", 200), ("/healthz", 200), ("/api", 401),
                           ("/api/v1/namespaces/a/pods", 401), ("/apis/nope/v1/x", 401)):  # fmt: skip
            async with session.get(door.server.url + path, ssl=anonymous) as response:
                assert response.status == code, path
                if code == 401:
                    body = await response.json()
                    assert (body["kind"], body["reason"]) == ("Status", "Unauthorized")


async def test_every_answer_carries_the_flow_schema_and_priority_level(door: Door) -> None:
    user_ssl = ssl.create_default_context(cafile=str(door.pki.ca_cert))
    cert, key = issue_client_certificate(door.pki, user="gina")
    (door.directory / "gina.crt").write_bytes(cert)
    (door.directory / "gina.key").write_bytes(key)
    user_ssl.load_cert_chain(door.directory / "gina.crt", door.directory / "gina.key")
    async with aiohttp.ClientSession() as session:
        for path, context, code in (
            ("/api/v1/namespaces/a/pods", door.admin_ssl(), 200),
            ("/api/v1/namespaces/a/pods", user_ssl, 403),
            ("/apis", user_ssl, 200),
        ):
            async with session.get(door.server.url + path, ssl=context) as response:
                assert response.status == code
                assert len(response.headers[FLOW_SCHEMA_UID_HEADER]) == 36
                assert len(response.headers[PRIORITY_LEVEL_UID_HEADER]) == 36
        async with session.get(
            door.server.url + "/api/v1/namespaces/a/pods?watch=true&timeoutSeconds=1",
            ssl=door.admin_ssl(),
        ) as watch:
            assert watch.status == 200 and FLOW_SCHEMA_UID_HEADER in watch.headers

        # Fill every seat of the level gina's requests meet: the next one waits, then is refused.
        gate = door.server.fairness
        asked = Request(verb="list", resource="pods", namespace="a")
        who = User("gina", ("system:authenticated",))
        level = gate.classify(who, asked).level
        held = [await gate.acquire(who, asked) for _ in range(gate.seats(level))]
        try:
            async with session.get(
                door.server.url + "/api/v1/namespaces/a/pods", ssl=user_ssl
            ) as refused:
                assert refused.status == 429
                assert refused.headers["Retry-After"] == "1"
                assert (await refused.json())["reason"] == "TooManyRequests"
                assert PRIORITY_LEVEL_UID_HEADER in refused.headers
        finally:
            for seat in held:
                gate.release(seat)
