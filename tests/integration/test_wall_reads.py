"""Reads of the streams behind the NATS wall, against a real nats-server configured as ``fleetlog
up`` configures its own: a ``view`` user of namespace a reads the logs, events, history and
usage of a's pods through the stream read service and is refused b's with kube's Forbidden
words; ``audit`` is refused to everyone but cluster admins; and no user may open a consumer on
the streams directly (the service reads for them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout

from core.access.commandauth import admin_identity, control_plane_identity
from core.errors import FleetError
from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.history import HistoryIndex
from projections.history_service import HistoryService
from projections.query import QueryService
from projections.readaccess import ReadAccess
from projections.runtime import Projection
from projections.streamreads import StreamReadService, read_stream
from streams import jsapi
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import FLEET_STREAM, ensure_streams
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from streams.natsauth import NatsUser, Profile, authorization_config
from streams.secretkeys import load_cluster_key
from streams.server import EmbeddedServer, free_port
from streams.telemetry import (
    LOGS_STREAM,
    METRICS_STREAM,
    ContainerUsage,
    log_headers,
    log_subject,
    publish_pod_usage,
)
from tests.integration.support import cli
from tests.integration.test_read_rbac import serving
from tests.integration.test_signed_commands import binding, namespace, pod, user

pytestmark = pytest.mark.integration


@dataclass
class Walled:
    url: str
    control: Client
    admin_seed: Path
    bob_seed: Path
    bob: Credentials
    service: StreamReadService
    projection: Projection[ClusterModel]
    setup: CommandClient


def _seed_file(directory: Path, name: str, credentials: Credentials) -> Path:
    path = directory / f"{name}.nk"
    path.write_text(credentials.seed)
    path.chmod(0o600)
    return path


@pytest.fixture
async def walled(tmp_path: Path) -> AsyncIterator[Walled]:
    """A walled server (control plane, the admin, bob as a user) with the gateway and the
    query, history and stream read services of ``up`` connected as the control plane;
    namespaces a and b with a pod each, output and usage for both pods, bob a ``view`` user
    of a."""
    control, admin, bob = (Credentials(generate_seed()) for _ in range(3))
    server = EmbeddedServer(data_dir=tmp_path / "walled", port=free_port())
    server.authorization = authorization_config([
        NatsUser(control.public_key, Profile.CONTROL_PLANE, "control-plane"),
        NatsUser(admin.public_key, Profile.ADMIN, "fleetlog-admin"),
        NatsUser(bob.public_key, Profile.USER, "bob"),
    ])  # fmt: skip
    await server.start()
    nc = await connect(server.url, name="control-plane", credentials=control)
    try:
        await ensure_streams(nc)
        async with EventStore(nc) as store:
            gateway = await Gateway.create(
                nc, store, cluster_key=load_cluster_key(tmp_path / "pki" / "cluster.key"),
                identities={
                    admin.public_key: admin_identity("fleetlog-admin"),
                    control.public_key: control_plane_identity("control-plane"),
                },
                require_signatures=True,
            )  # fmt: skip
            projection = Projection(ClusterModel(), store)
            await projection.catch_up()
            await projection.follow()
            reads = ReadAccess(gateway.access, require_signatures=True)
            stream_reads = StreamReadService(nc, store, projection, read_access=reads)
            history = HistoryService(
                nc, store, HistoryIndex(tmp_path / "history.db"), projection, read_access=reads
            )
            async with serving(
                gateway,
                QueryService(nc, projection, secret_keys=gateway.secret_keys, read_access=reads),
                history,
                stream_reads,
            ):
                setup = CommandClient(nc, actor="test:setup")
                for ns in ("default", "a", "b"):
                    await setup.send("Namespace", "apply", {"manifest": namespace(ns)})
                for manifest in (
                    pod("web-a", "a"), pod("web-b", "b"), user("bob", bob),
                    binding("bob-view", "view", "bob", ns="a"),
                ):  # fmt: skip
                    await setup.send(manifest["kind"], "apply", {"manifest": manifest})
                for ns in ("a", "b"):
                    await _ship(nc, projection, ns, f"web-{ns}", f"hello from {ns}\n".encode())
                    await publish_pod_usage(
                        nc, ns, f"web-{ns}", {"c": ContainerUsage(100, 32 << 20)}
                    )
                try:
                    yield Walled(
                        server.url, nc, _seed_file(tmp_path, "admin", admin),
                        _seed_file(tmp_path, "bob", bob), bob, stream_reads, projection, setup,
                    )  # fmt: skip
                finally:
                    await projection.stop()
            history.close()
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        await server.stop()


async def _ship(
    nc: Client,
    projection: Projection[ClusterModel],
    ns: str,
    name: str,
    text: bytes,
    *,
    offset: int = 0,
) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while (record := projection.model.get("Pod", ns, name)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"pod {ns}/{name} never seen"
        await asyncio.sleep(0.05)
    headers = log_headers(
        pod_uid=record.uid, restart=0, stream="stdout", offset=offset, data=text, partial=False
    )
    await jsapi.jetstream(nc).publish(log_subject(ns, name, "c"), text, headers=headers)


async def _as(w: Walled, seed: Path, *args: str) -> Any:
    return await cli(w.url, "--credentials", str(seed), *args)


async def test_a_view_user_reads_logs_events_and_history_of_its_namespace_only(
    walled: Walled,
) -> None:
    result = await _as(walled, walled.bob_seed, "logs", "web-a", "-n", "a")
    assert (result.exit_code, result.output) == (0, "hello from a\n")
    result = await _as(walled, walled.bob_seed, "events", "-n", "a", "-o", "json")
    assert result.exit_code == 0, result.output
    assert '"PodCreated"' in result.output and "web-a" in result.output
    assert "web-b" not in result.output
    result = await _as(walled, walled.bob_seed, "events", "-n", "a", "--since", "1h")
    assert result.exit_code == 0 and "PodCreated" in result.output, result.output
    late = "2999-01-01T00:00:00Z"  # beyond 64 bits of nanoseconds: sent as seconds
    result = await _as(walled, walled.bob_seed, "events", "-n", "a", "--since", late)
    assert (result.exit_code, result.output.strip()) == (0, "No events found.")
    result = await _as(walled, walled.bob_seed, "history", "pod/web-a", "-n", "a")
    assert result.exit_code == 0 and "PodCreated" in result.output

    result = await _as(walled, walled.bob_seed, "events", "-n", "b")
    assert (result.exit_code, result.output.strip()) == (1, (
        'error: events is forbidden: User "bob" cannot list resource "events" in API group "" '
        'in the namespace "b"'
    ))  # fmt: skip
    result = await _as(walled, walled.bob_seed, "events")
    assert result.exit_code == 1
    assert 'cannot list resource "events" in API group "" at the cluster scope' in result.output
    result = await _as(walled, walled.bob_seed, "history", "pod/web-b", "-n", "b")
    assert result.exit_code == 1 and 'pods "web-b" is forbidden' in result.output

    # The pod is hidden from bob already; the service refuses its output on its own too.
    nc = await connect(walled.url, name="bob", credentials=walled.bob)
    try:
        request = {"op": "logs", "namespace": "b", "pod": "web-b", "container": "c"}
        with pytest.raises(FleetError) as refused:
            async for _ in read_stream(nc, request):
                pass
        assert (refused.value.code, str(refused.value)) == ("forbidden", (
            'pods "web-b" is forbidden: User "bob" cannot get resource "pods/log" in API group '
            '"" in the namespace "b"'
        ))  # fmt: skip
    finally:
        await nc.close()


async def test_a_view_user_sees_the_usage_of_its_namespace_only(walled: Walled) -> None:
    result = await _as(walled, walled.bob_seed, "top", "pods", "-n", "a")
    assert result.exit_code == 0, result.output
    assert "web-a" in result.output and "100m" in result.output
    result = await _as(walled, walled.bob_seed, "top", "pods", "-n", "b")
    assert (result.exit_code, result.output.strip()) == (1, (
        'error: pods.metrics.k8s.io is forbidden: User "bob" cannot list resource "pods" in '
        'API group "metrics.k8s.io" in the namespace "b"'
    ))  # fmt: skip
    result = await _as(walled, walled.bob_seed, "top", "pods", "-A")
    assert result.exit_code == 1 and "at the cluster scope" in result.output


async def test_audit_is_for_cluster_admins_only(walled: Walled) -> None:
    for args in (("audit", "verify"), ("audit",)):
        result = await _as(walled, walled.bob_seed, *args)
        assert (result.exit_code, result.output.strip()) == (
            1,
            'error: forbidden: User "bob" cannot get path "/fleetlog/audit"',
        )
    result = await _as(walled, walled.admin_seed, "audit", "verify")
    assert result.exit_code == 0, result.output
    result = await _as(walled, walled.admin_seed, "logs", "web-b", "-n", "b")
    assert (result.exit_code, result.output) == (0, "hello from b\n")


async def test_a_user_cannot_open_a_consumer_on_the_streams(walled: Walled) -> None:
    nc = await connect(walled.url, name="bob", credentials=walled.bob)
    try:
        for stream in (FLEET_STREAM, LOGS_STREAM, METRICS_STREAM):
            # The server refuses the publish (a permissions violation), so no answer comes.
            for call in (f"CONSUMER.CREATE.{stream}", f"STREAM.INFO.{stream}"):
                with pytest.raises((NatsTimeout, TimeoutError)):
                    await nc.request(f"$JS.API.{call}", b"{}", timeout=1)
    finally:
        await nc.close()


async def test_a_view_user_travels_in_time_over_what_it_may_list(walled: Walled) -> None:
    result = await _as(walled, walled.bob_seed, "replay", "--to", "now", "-o", "json")
    assert result.exit_code == 0, result.output
    assert "web-a" in result.output
    for hidden in ("web-b", '"bob-view"', '"User"'):  # b's pod, a's RoleBinding, the users
        assert hidden not in result.output
    result = await _as(walled, walled.bob_seed, "get", "pods", "-n", "a", "--at", "now")
    assert result.exit_code == 0 and "web-a" in result.output, result.output
    result = await _as(walled, walled.bob_seed, "get", "pods", "-n", "b", "--at", "now")
    assert "web-b" not in result.output
    result = await _as(walled, walled.bob_seed, "get", "pod", "web-b", "-n", "b", "--at", "now")
    assert result.exit_code == 1 and 'pods "web-b" is forbidden' in result.output
    result = await _as(walled, walled.bob_seed, "diff", "--from", "0")
    assert result.exit_code == 0 and "web-a" in result.output and "web-b" not in result.output

    result = await _as(walled, walled.admin_seed, "replay", "--to", "now", "-o", "json")
    assert result.exit_code == 0 and "web-b" in result.output and '"bob-view"' in result.output


async def test_a_followed_read_streams_new_output_and_ends_when_its_reader_goes(
    walled: Walled,
) -> None:
    nc = await connect(walled.url, name="bob", credentials=walled.bob)
    try:
        request = {"op": "logs", "namespace": "a", "pod": "web-a", "container": "c",
                   "follow": True}  # fmt: skip
        followed = read_stream(nc, request)
        assert (await asyncio.wait_for(anext(followed), 20))[1] == b"hello from a\n"
        await _ship(walled.control, walled.projection, "a", "web-a", b"more\n", offset=13)
        assert (await asyncio.wait_for(anext(followed), 20))[1] == b"more\n"
        events = read_stream(nc, {"op": "events", "namespace": "a", "follow": True})
        later = asyncio.create_task(anext(events))
        await walled.setup.send("Pod", "apply", {"manifest": pod("web-2", "a")})
        assert "web-2" in (await asyncio.wait_for(later, 20))[1]
        assert len(walled.service.running) == 2
        await followed.aclose()
        await events.aclose()
        deadline = asyncio.get_running_loop().time() + 30
        while walled.service.running:  # noticed at the next ping: nobody listens
            assert asyncio.get_running_loop().time() < deadline, "followed reads never ended"
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
