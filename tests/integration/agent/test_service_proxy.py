"""Service traffic on the node, end to end: real network namespaces on a bridge of the test's
own, real pods (port-binding servers), a real nats-server, the gateway, scheduler, node IPAM
and endpoint-slice controllers, and the node agent's service proxy.

Each pod runs a tiny TCP server that says its own name on every connection and then waits for
the client to close, so a test sees which pod a connection reached (and can hold one open).
Connections go to the service's ClusterIP (from the host and from pods' namespaces) and node
port (on loopback); clients with different source addresses bind addresses of 127.0.0.0/8.
Everything is named with a per-test prefix (bridge, namespaces, nftables table) in a pod range
and a service range of the test's own, and removed at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.services.balancing import POLICY_ANNOTATION, Endpoint, Policy
from core.services.ranges import ServiceRanges
from handlers.agent.network import NetworkOptions
from handlers.endpointslice_controller import EndpointSliceController
from handlers.gateway import Gateway
from handlers.node_ipam import NodeIPAMController
from handlers.scheduler import Scheduler
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.leases import LeaderLease
from streams.repository import AggregateRepository
from streams.server import free_port
from streams.subjects import event_subject
from tests.integration.agent.runtime_support import TrackedRuntime
from tests.integration.agent.test_pod_network import (
    Net,
    can_make_namespaces,
    container,
    ip_json,
    pod,
    remove_everything_named,
)
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

PY = sys.executable
SAYS_ITS_NAME = (
    "import socket, sys, threading\n"
    "name = sys.argv[1].encode() + b'\\n'\n"
    "server = socket.socket()\n"
    "server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "server.bind(('0.0.0.0', int(sys.argv[2]) if len(sys.argv) > 2 else 8080))\n"
    "server.listen(64)\n"
    "def serve(conn):\n"
    "    with conn:\n"
    "        conn.sendall(name)\n"
    "        while conn.recv(4096):\n"
    "            pass\n"
    "while True:\n"
    "    conn, _ = server.accept()\n"
    "    threading.Thread(target=serve, args=(conn,), daemon=True).start()\n"
)
CLIENT = (
    "import socket, sys\n"
    "with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as conn:\n"
    "    print(conn.makefile().readline().strip(), flush=True)\n"
)


def named_server(name: str, *, app: str, flag: Path | None = None) -> dict[str, Any]:
    """A pod whose server answers with ``name``; with ``flag``, it is ready only while the
    flag file does not exist."""
    probe: dict[str, Any] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    if flag is not None:
        probe = {
            "exec": {"command": ["/bin/sh", "-c", f"test ! -e {flag}"]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        }
    web = container(
        "web", [PY, "-c", SAYS_ITS_NAME, name], readinessProbe=probe,
        ports=[{"name": "http", "containerPort": 8080}],
    )  # fmt: skip
    return pod(name, web, metadata={"labels": {"app": app}})


def service(
    name: str,
    *,
    app: str | None = None,
    policy: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if policy:
        metadata["annotations"] = {POLICY_ANNOTATION: policy}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "selector": {"app": app or name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            **spec,
        },
    }


def ask(host: str, port: int, *, source: str | None = None, timeout: float = 3) -> str:
    """Connect (from ``source``), read the pod's name, close."""
    with socket.create_connection(
        (host, port), timeout=timeout, source_address=(source, 0) if source else None
    ) as conn:
        return conn.makefile().readline().strip()


async def sh(*argv: str, check: bool = True) -> None:
    await asyncio.to_thread(subprocess.run, argv, check=check, capture_output=True)


async def ask_many(host: str, port: int, times: int, *, source: str | None = None) -> list[str]:
    return [await asyncio.to_thread(ask, host, port, source=source) for _ in range(times)]


class Services(Net):
    """The pod network test's cluster, plus services in a range of the test's own, the
    endpoint-slice controller and the agent's service proxy."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        block = random.randrange(4096)
        self.service_cidr = f"100.{80 + block // 256}.{block % 256}.0/24"
        low = 30000 + random.randrange(27) * 100
        self.ranges = ServiceRanges.parse(
            cluster_ips=self.service_cidr, node_ports=f"{low}-{low + 99}"
        )
        self.table = f"fleetlog_{self.prefix}"

    async def apply(self, manifest: dict[str, Any]) -> None:
        await self.client.send(manifest["kind"], "apply", {"manifest": manifest})

    def cluster_ip(self, name: str) -> str:
        record = self.projection.model.get("Service", "default", name)
        assert record is not None
        return str(record.manifest["spec"]["clusterIP"])

    def node_port(self, name: str) -> int:
        record = self.projection.model.get("Service", "default", name)
        assert record is not None
        return int(record.manifest["spec"]["ports"][0]["nodePort"])

    async def forwarded(self, name: str, *endpoints: str) -> None:
        """Until the node's proxy sends the service's port to exactly these pods."""
        assert self.agent is not None

        async def there() -> bool:
            await self.projection.wait_for_log_end()
            proxy = self.agent.proxy if self.agent else None
            port = proxy.port("default", name, "http") if proxy else None
            if port is None:
                return False
            wanted = {self.status(p).get("podIP") for p in endpoints}
            listens = bool(endpoints) and port.frontend.policy is not Policy.PASSTHROUGH
            return {e.address for e in port.balancer.endpoints} == wanted and (
                bool(port.servers) == listens
            )

        await eventually(there, timeout=30)

    def addresses_on_bridge(self) -> set[str]:
        found = set()
        for link in ip_json("-4", "addr", "show", "dev", self.options.bridge):
            for info in link.get("addr_info") or []:
                if info.get("prefixlen") == 32:
                    found.add(info["local"])
        return found

    def table_exists(self) -> bool:
        listed = subprocess.run(
            ["nft", "list", "table", "ip", self.table], capture_output=True, check=False
        )
        return listed.returncode == 0


@pytest.fixture
async def svc(nc: Any, store: EventStore, tmp_path: Path) -> AsyncIterator[Services]:
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    client = CommandClient(nc, actor="user:alice")
    running = Services(nc, store, client, tmp_path / "agent")
    gateway = await Gateway.create(nc, store, service_ranges=running.ranges)
    roles = []
    ready = asyncio.Event()
    roles.append(asyncio.create_task(gateway.run(ready)))
    await ready.wait()
    await client.send(
        "Namespace", "apply",
        {"manifest": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}},
    )  # fmt: skip
    await running.projection.catch_up()
    await running.projection.follow()
    ipam = NodeIPAMController(
        AggregateRepository(store), running.projection,
        await LeaderLease.open(nc, "node-ipam-controller"), cluster=running.cluster,
    )  # fmt: skip
    scheduler = Scheduler(nc, store, share_work=False, initial_backoff=0.05, max_backoff=0.2)
    slices = await EndpointSliceController.create(
        nc, running.projection, period_seconds=0.1, retry_seconds=0.2
    )
    for role in (ipam.run, scheduler.run, slices.run):
        ready = asyncio.Event()
        roles.append(asyncio.create_task(role(ready)))
        await ready.wait()
    try:
        await running.start_agent()
        yield running
    finally:
        await running.stop_agent()
        for task in roles:
            task.cancel()
        await asyncio.gather(*roles, return_exceptions=True)
        running.runtime.cleanup()
        await running.projection.stop()
        remove_everything_named(running.prefix, running.options.bridge)
        await sh("nft", "delete", "table", "ip", running.table, check=False)


async def two_replicas(svc: Services, name: str = "web", **spec: Any) -> tuple[str, str]:
    """A service and two pods behind it, ready and forwarded; their names."""
    pods = (f"{name}-a", f"{name}-b")
    await svc.apply(service(name, **spec))
    for pod_name in pods:
        await svc.apply(named_server(pod_name, app=name))
    await svc.ready(*pods)
    await svc.forwarded(name, *pods)
    return pods


async def in_pod(netns: str, host: str, port: int) -> str:
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, PY, "-c", CLIENT, host, str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return out.decode().strip() or err.decode().strip()


# -- ROUND_ROBIN, from the host, from pods, through the node port ------------------------------


async def test_a_cluster_ip_and_node_port_reach_each_replica_in_turn(svc: Services) -> None:
    a, b = await two_replicas(svc, type="NodePort")
    cluster_ip = svc.cluster_ip("web")
    assert cluster_ip in svc.addresses_on_bridge()
    # From the host: each replica in turn.
    answers = await ask_many(cluster_ip, 80, 6)
    assert set(answers) == {a, b}
    assert all(x != y for x, y in itertools.pairwise(answers))
    # From a pod's namespace (its own source address), through the bridge's gateway.
    await svc.apply(named_server("client", app="other"))
    await svc.ready("client")
    from_pod = [await in_pod(svc.netns("client"), cluster_ip, 80) for _ in range(4)]
    assert set(from_pod) == {a, b}
    # The node port, on loopback.
    node_port = svc.node_port("web")
    assert set(await ask_many("127.0.0.1", node_port, 4)) == {a, b}
    port = svc.agent.proxy.port("default", "web", "http") if svc.agent and svc.agent.proxy else None
    assert port is not None and sum(port.accepted.values()) == 14


async def test_a_service_without_endpoints_refuses_at_once(svc: Services) -> None:
    await svc.apply(service("nobody", type="NodePort"))
    await svc.projection.wait_for_log_end()

    async def has_address() -> bool:
        await svc.projection.wait_for_log_end()
        record = svc.projection.model.get("Service", "default", "nobody")
        return record is not None and svc.cluster_ip("nobody") in svc.addresses_on_bridge()

    await eventually(has_address)
    for host, port in ((svc.cluster_ip("nobody"), 80), ("127.0.0.1", svc.node_port("nobody"))):
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(ask, host, port)
        assert time.monotonic() - started < 0.5


# -- the other policies ------------------------------------------------------------------------


async def test_ring_hash_keeps_each_client_on_one_pod_and_a_removal_moves_only_its_keys(
    svc: Services,
) -> None:
    pods = ("ring-a", "ring-b", "ring-c")
    await svc.apply(service("ring", policy="RING_HASH"))
    for name in pods:
        await svc.apply(named_server(name, app="ring"))
    await svc.ready(*pods)
    await svc.forwarded("ring", *pods)
    cluster_ip = svc.cluster_ip("ring")
    clients = [f"127.0.0.{i}" for i in range(2, 26)]
    before = {}
    for client in clients:
        seen = set(await ask_many(cluster_ip, 80, 3, source=client))
        assert len(seen) == 1, f"{client} reached {seen}"
        before[client] = seen.pop()
    assert set(before.values()) == set(pods)  # 24 keys over three pods: each holds some

    await svc.client.send("Pod", "delete", {"name": "ring-c"})
    await svc.forwarded("ring", "ring-a", "ring-b")
    after = {client: (await ask_many(cluster_ip, 80, 1, source=client))[0] for client in clients}
    for client in clients:
        if before[client] != "ring-c":
            assert after[client] == before[client], f"{client} moved without cause"
        else:
            assert after[client] in ("ring-a", "ring-b")


async def test_least_request_prefers_the_idle_pod(svc: Services) -> None:
    await two_replicas(svc, "least", policy="LEAST_REQUEST")
    cluster_ip = svc.cluster_ip("least")
    held = await asyncio.to_thread(socket.create_connection, (cluster_ip, 80), 3)
    try:
        # (Read in a thread: the proxy runs on this test's event loop.)
        busy = (await asyncio.to_thread(held.makefile().readline)).strip()
        port = (
            svc.agent.proxy.port("default", "least", "http")
            if svc.agent and svc.agent.proxy
            else None
        )
        assert port is not None
        answers = []
        for _ in range(8):
            answers.append(await asyncio.to_thread(ask, cluster_ip, 80))

            # The proxy counts a connection in flight until it has seen the close: the next
            # one must not start before that, or both pods have one and it is a tie.
            async def only_the_held_one_in_flight() -> bool:
                return sum(port.balancer.in_flight.values()) == 1

            await eventually(only_the_held_one_in_flight)
        assert busy not in answers and len(set(answers)) == 1
    finally:
        held.close()


async def test_random_spreads_over_the_pods(svc: Services) -> None:
    a, b = await two_replicas(svc, "dice", policy="RANDOM")
    answers = await ask_many(svc.cluster_ip("dice"), 80, 40)
    assert answers.count(a) >= 5 and answers.count(b) >= 5
    # Not the strict alternation of round robin.
    assert any(x == y for x, y in itertools.pairwise(answers))


async def test_client_ip_affinity_keeps_each_client_on_its_pod(svc: Services) -> None:
    await two_replicas(svc, "sticky", sessionAffinity="ClientIP")
    cluster_ip = svc.cluster_ip("sticky")
    reached = set()
    for client in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
        seen = set(await ask_many(cluster_ip, 80, 4, source=client))
        assert len(seen) == 1
        reached |= seen
    assert len(reached) == 2  # round robin gave the four clients both pods


async def test_passthrough_reaches_the_original_destination(svc: Services) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nftables (nft) is not installed")
    a, b = await two_replicas(svc, "through", policy="PASSTHROUGH")
    ip_a, ip_b = svc.status(a)["podIP"], svc.status(b)["podIP"]
    assert svc.agent is not None and svc.agent.proxy is not None
    proxy = svc.agent.proxy

    async def rules_in_place() -> bool:  # (both pods' addresses in the table's set)
        listed = await asyncio.to_thread(
            subprocess.run, ["nft", "list", "set", "ip", svc.table, "passthrough"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return f"{ip_a} . 8080" in listed.stdout and f"{ip_b} . 8080" in listed.stdout

    await eventually(rules_in_place)
    # From the host and from a pod: each connection reaches the pod it was sent to, through
    # the proxy (counted there; the agent's own readiness probes are too), never re-balanced.
    counted = proxy.passthrough_accepted
    before = counted.get(Endpoint(ip_b, 8080), 0)
    assert await ask_many(ip_b, 8080, 5) == [b] * 5
    assert await ask_many(ip_a, 8080, 3) == [a] * 3
    await svc.apply(named_server("client", app="other"))
    await svc.ready("client")
    assert [await in_pod(svc.netns("client"), ip_b, 8080) for _ in range(3)] == [b] * 3
    assert counted[Endpoint(ip_b, 8080)] >= before + 8 and counted[Endpoint(ip_a, 8080)] >= 3
    # Its ClusterIP has no original endpoint to go to: refused at once.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(ask, svc.cluster_ip("through"), 80)
    # A service that is not PASSTHROUGH: its pods' connections are not handed to the proxy.
    await svc.client.send("Service", "delete", {"name": "through"})

    async def rules_gone() -> bool:
        return not svc.table_exists()

    await eventually(rules_gone)
    handed = counted[Endpoint(ip_b, 8080)]
    assert await ask_many(ip_b, 8080, 2) == [b] * 2
    assert counted[Endpoint(ip_b, 8080)] == handed


# -- readiness, restarts ------------------------------------------------------------------------


async def test_a_pod_turning_not_ready_gets_no_new_connection_within_a_second(
    svc: Services, tmp_path: Path
) -> None:
    flag = tmp_path / "unready"
    await svc.apply(service("web"))
    await svc.apply(named_server("web-a", app="web"))
    await svc.apply(named_server("web-b", app="web", flag=flag))
    await svc.ready("web-a", "web-b")
    await svc.forwarded("web", "web-a", "web-b")
    cluster_ip = svc.cluster_ip("web")

    seen: list[tuple[int, str]] = []
    stop = asyncio.Event()

    async def keep_asking() -> None:
        while not stop.is_set():
            started = time.time_ns()
            seen.append((started, await asyncio.to_thread(ask, cluster_ip, 80)))
            await asyncio.sleep(0.01)

    asking = asyncio.create_task(keep_asking())
    await asyncio.sleep(0.3)
    flag.touch()

    async def not_ready_recorded() -> bool:
        events = await svc.store.read_subject(event_subject("Pod", "default", "web-b"))
        return any(e.envelope.type == "PodNotReady" for e in events)

    await eventually(not_ready_recorded)
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(asking)
    events = await svc.store.read_subject(event_subject("Pod", "default", "web-b"))
    not_ready_ns = max(e.stored_ns for e in events if e.envelope.type == "PodNotReady")
    last_to_b = max(at for at, name in seen if name == "web-b")
    after = [name for at, name in seen if at > not_ready_ns + 1_000_000_000]
    assert after and set(after) == {"web-a"}
    assert last_to_b - not_ready_ns < 1_000_000_000, (last_to_b - not_ready_ns) / 1e9


async def test_an_agent_restart_leaks_nothing_and_keeps_pods_running(svc: Services) -> None:
    a, b = await two_replicas(svc)
    cluster_ip = svc.cluster_ip("web")
    ledger = svc.root / "network" / "services.json"
    assert json.loads(ledger.read_text())["addresses"] == [cluster_ip]

    # A stopped agent removes its addresses, listeners and ledger entries.
    await svc.stop_agent()
    assert cluster_ip not in svc.addresses_on_bridge()
    assert json.loads(ledger.read_text())["addresses"] == []
    # What an agent killed without a chance to clean up leaves: an address on the bridge, in
    # its ledger, of a service deleted meanwhile, and its nftables table.
    stale = str(svc.ranges.cluster_ips.network.network_address + 200)
    await sh("ip", "addr", "add", f"{stale}/32", "dev", svc.options.bridge)
    left = {"version": 1, "device": svc.options.bridge, "addresses": [stale], "nft_table": None}
    if shutil.which("nft"):
        await sh("nft", "add", "table", "ip", svc.table)
        left["nft_table"] = svc.table
    ledger.write_text(json.dumps(left))
    previous = svc.runtime
    svc.runtime = TrackedRuntime(svc.root)
    try:
        await svc.start_agent()
        await svc.forwarded("web", a, b)

        async def reconciled() -> bool:
            return svc.addresses_on_bridge() == {cluster_ip} and not svc.table_exists()

        await eventually(reconciled)
        assert set(await ask_many(cluster_ip, 80, 4)) == {a, b}
        for name in (a, b):  # the pods ran on: adopted, not restarted
            assert "ContainerRestarted" not in await svc.types(name)
        await svc.client.send("Service", "delete", {"name": "web"})

        async def address_gone() -> bool:
            return not svc.addresses_on_bridge()

        await eventually(address_gone)
        assert json.loads(ledger.read_text())["addresses"] == []
    finally:
        previous.cleanup()


async def test_without_pod_networks_cluster_ips_are_served_on_loopback(svc: Services) -> None:
    await svc.stop_agent()
    await svc.start_agent(
        NetworkOptions(bridge=svc.options.bridge, prefix=svc.prefix, enabled=False)
    )
    port = free_port()
    web = container("web", [PY, "-c", SAYS_ITS_NAME, "solo", str(port)],
                    readinessProbe={"tcpSocket": {"port": port}, "periodSeconds": 1})  # fmt: skip
    await svc.apply(pod("solo", web, metadata={"labels": {"app": "solo"}}))
    spec = {"ports": [{"name": "http", "port": 80, "targetPort": port}]}
    await svc.apply(service("solo", **spec))
    await svc.ready("solo")
    await svc.forwarded("solo", "solo")
    cluster_ip = svc.cluster_ip("solo")

    def on_loopback() -> set[str]:
        return {
            info["local"]
            for link in ip_json("-4", "addr", "show", "dev", "lo")
            for info in link.get("addr_info") or []
        }

    assert cluster_ip in on_loopback()
    assert await ask_many(cluster_ip, 80, 2) == ["solo", "solo"]
    await svc.stop_agent()
    assert cluster_ip not in on_loopback()
