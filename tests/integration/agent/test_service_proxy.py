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
from handlers.agent import proxy as proxy_module
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
    UDP_ECHO,
    Net,
    ask_udp,
    can_make_namespaces,
    container,
    ip_json,
    pod,
    remove_everything_named,
)
from tests.integration.support import captured_logs, eventually

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

    async def forwarded(self, name: str, *endpoints: str, port_name: str = "http") -> None:
        """Until the node's proxy sends the service's port to exactly these pods."""
        assert self.agent is not None

        async def there() -> bool:
            await self.projection.wait_for_log_end()
            proxy = self.agent.proxy if self.agent else None
            port = proxy.port("default", name, port_name) if proxy else None
            if port is None:
                return False
            wanted = {self.status(p).get("podIP") for p in endpoints}
            listens = bool(endpoints) and port.frontend.policy is not Policy.PASSTHROUGH
            return {e.address for e in port.balancer.endpoints} == wanted and (
                port.listening == listens
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
    port = (
        svc.agent.proxy.port("default", "least", "http") if svc.agent and svc.agent.proxy else None
    )
    assert port is not None
    held = await asyncio.to_thread(socket.create_connection, (cluster_ip, 80), 3)

    async def only_the_held_one_open() -> bool:
        return sum(port.balancer.in_flight.values()) == 1

    try:
        # (Read in a thread: the proxy runs on this test's event loop.)
        busy = (await asyncio.to_thread(held.makefile().readline)).strip()
        answers = []
        for _ in range(8):
            # A closed connection is released when the pod's side has closed too: until then
            # both pods have one in flight, a tie either may win.
            await eventually(only_the_held_one_open)
            answers += await ask_many(cluster_ip, 80, 1)
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


# -- UDP (and SCTP, said) -------------------------------------------------------------------------

UDP_CLIENT = (
    "import socket, sys\n"
    "sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "sock.connect((sys.argv[1], int(sys.argv[2])))\n"
    "sock.settimeout(0.5)\n"
    "for _ in range(20):\n"
    "    sock.send(b'from-pod')\n"
    "    try:\n"
    "        print(sock.recv(2048).decode(), flush=True)\n"
    "        break\n"
    "    except OSError:\n"
    "        pass\n"
)
DNS_PORTS = [
    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"},
]


def echo_server(name: str, *, app: str, flag: Path | None = None) -> dict[str, Any]:
    """A pod answering datagrams (``name:datagram``) and TCP connections (``name``) on its
    port 5353, named ``dns`` (UDP) and ``dns-tcp``; with ``flag``, ready only while the flag
    file does not exist."""
    probe: dict[str, Any] = {"tcpSocket": {"port": 5353}, "periodSeconds": 1}
    if flag is not None:
        probe = {
            "exec": {"command": ["/bin/sh", "-c", f"test ! -e {flag}"]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        }
    ports = [
        {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
        {"name": "dns-tcp", "containerPort": 5353},
    ]
    echo = container("echo", [PY, "-c", UDP_ECHO, name, "5353"], readinessProbe=probe,
                     ports=ports)  # fmt: skip
    return pod(name, echo, metadata={"labels": {"app": app}})


class Flow:
    """One client socket (one UDP flow) connected to ``host:port``: the kernel hands it only
    datagrams from that address, so every answer read came back from the service's."""

    def __init__(self, host: str, port: int, *, source: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.sock.settimeout(0.3)

    def ask(self, text: str, *, timeout: float = 10) -> str:
        """Send until answered (a datagram may find a pod just going): who answered."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.send(text.encode())
                name, _, echoed = self.sock.recv(2048).decode().partition(":")
                assert echoed == text
                return name
            except (TimeoutError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise

    async def asks(self, text: str, *, timeout: float = 10) -> str:
        return await asyncio.to_thread(self.ask, text, timeout=timeout)

    def close(self) -> None:
        self.sock.close()


async def udp_replicas(svc: Services, name: str, **spec: Any) -> tuple[str, str]:
    pods = (f"{name}-a", f"{name}-b")
    await svc.apply(service(name, ports=DNS_PORTS, **spec))
    for pod_name in pods:
        await svc.apply(echo_server(pod_name, app=name))
    await svc.ready(*pods)
    await svc.forwarded(name, *pods, port_name="dns")
    return pods


async def test_udp_flows_reach_each_replica_and_answers_come_from_the_service(
    svc: Services,
) -> None:
    a, b = await udp_replicas(svc, "names", type="NodePort")
    cluster_ip = svc.cluster_ip("names")
    # From the host, six flows (six sockets): ROUND_ROBIN gives them the pods in turn, and each
    # flow's datagrams all reach its pod.
    flows = [Flow(cluster_ip, 53) for _ in range(6)]
    try:
        reached = []
        for n, flow in enumerate(flows):
            reached.append(await flow.asks(f"first-{n}"))
        assert set(reached) == {a, b}
        assert all(x != y for x, y in itertools.pairwise(reached))
        for n, flow in enumerate(flows):
            assert [await flow.asks(f"more-{n}-{k}") for k in range(3)] == [reached[n]] * 3
    finally:
        for flow in flows:
            flow.close()
    # An unconnected socket sees where the answer came from: the service's address and port.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.settimeout(5)
        plain.sendto(b"where", (cluster_ip, 53))
        data, source = await asyncio.to_thread(plain.recvfrom, 2048)
        assert source == (cluster_ip, 53) and data.endswith(b":where")
    # From a pod's namespace, through the bridge's gateway.
    await svc.apply(named_server("client", app="other"))
    await svc.ready("client")
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", svc.netns("client"), PY, "-c", UDP_CLIENT, cluster_ip, "53",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert out.decode().strip() in (f"{a}:from-pod", f"{b}:from-pod"), err.decode()
    # The node port, on loopback and on another address of the node.
    node_port = svc.node_port("names")
    via_node = set()
    for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"):
        flow = Flow(source, node_port)
        try:
            via_node.add(await flow.asks("np"))
        finally:
            flow.close()
    assert via_node == {a, b}
    port = (
        svc.agent.proxy.port("default", "names", "dns") if svc.agent and svc.agent.proxy else None
    )
    assert port is not None and sum(port.accepted.values()) == 6 + 1 + 1 + 4


async def test_a_tcp_and_a_udp_port_of_one_number_both_work(svc: Services) -> None:
    a, b = await udp_replicas(svc, "dnslike")
    await svc.forwarded("dnslike", a, b, port_name="dns-tcp")
    cluster_ip = svc.cluster_ip("dnslike")
    assert set(await ask_many(cluster_ip, 53, 4)) == {a, b}  # TCP: says its name
    answered = set()
    for n in range(4):
        answered.add(await asyncio.to_thread(ask_udp, cluster_ip, 53, f"q{n}"))
    assert answered == {f"{a}:q0", f"{b}:q1", f"{a}:q2", f"{b}:q3"} or answered == {
        f"{b}:q0",
        f"{a}:q1",
        f"{b}:q2",
        f"{a}:q3",
    }


async def test_a_udp_flow_moves_on_when_its_pod_turns_not_ready_and_when_pods_cycle(
    svc: Services, tmp_path: Path
) -> None:
    flags = {"cyc-a": tmp_path / "a-unready", "cyc-b": tmp_path / "b-unready"}
    await svc.apply(service("cyc", ports=DNS_PORTS[:1]))
    for name, flag in flags.items():
        await svc.apply(echo_server(name, app="cyc", flag=flag))
    await svc.ready(*flags)
    await svc.forwarded("cyc", *flags, port_name="dns")
    flow = Flow(svc.cluster_ip("cyc"), 53)
    try:
        first = await flow.asks("hello")
        other = next(n for n in flags if n != first)
        assert [await flow.asks(f"again-{k}") for k in range(3)] == [first] * 3

        # Its pod turns not ready: the same flow's next datagrams reach the other pod, within
        # a second of the PodNotReady (the flow is dropped when the endpoint leaves).
        seen: list[tuple[int, str]] = []
        stop = asyncio.Event()

        async def keep_sending() -> None:
            while not stop.is_set():
                started = time.time_ns()
                seen.append((started, await flow.asks("tick")))
                await asyncio.sleep(0.02)

        sending = asyncio.create_task(keep_sending())
        await asyncio.sleep(0.3)
        flags[first].touch()

        async def not_ready_recorded() -> bool:
            events = await svc.store.read_subject(event_subject("Pod", "default", first))
            return any(e.envelope.type == "PodNotReady" for e in events)

        await eventually(not_ready_recorded)
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(sending)
        events = await svc.store.read_subject(event_subject("Pod", "default", first))
        not_ready_ns = max(e.stored_ns for e in events if e.envelope.type == "PodNotReady")
        last_to_first = max(at for at, name in seen if name == first)
        after = [name for at, name in seen if at > not_ready_ns + 1_000_000_000]
        assert after and set(after) == {other}
        assert last_to_first - not_ready_ns < 1_000_000_000, (last_to_first - not_ready_ns) / 1e9

        # The server pod cycles (kube-proxy's e2e "should be able to preserve UDP traffic when
        # server pod cycles"): the serving pod is deleted, a new one comes; the same flow
        # reaches the new pod.
        await svc.client.send("Pod", "delete", {"name": other})
        await svc.forwarded("cyc", port_name="dns")
        await svc.apply(echo_server("cyc-c", app="cyc"))
        await svc.ready("cyc-c")
        assert await flow.asks("after-cycle", timeout=30) == "cyc-c"
    finally:
        flow.close()


async def test_udp_client_ip_affinity_keeps_each_client_on_its_pod(svc: Services) -> None:
    await udp_replicas(svc, "stickyu", sessionAffinity="ClientIP")
    cluster_ip = svc.cluster_ip("stickyu")
    reached = set()
    for client in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
        seen = set()
        for _ in range(3):  # a new flow (socket) each time, from the same address
            flow = Flow(cluster_ip, 53, source=client)
            try:
                seen.add(await flow.asks("hi"))
            finally:
                flow.close()
        assert len(seen) == 1, f"{client} reached {seen}"
        reached |= seen
    assert len(reached) == 2  # round robin gave the four clients both pods


async def test_sctp_ports_and_passthrough_udp_are_stored_and_said_once_not_forwarded(
    svc: Services,
) -> None:
    sctp_ports = [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "sig", "port": 3868, "protocol": "SCTP", "targetPort": 3868},
    ]
    with captured_logs(proxy_module) as logs:
        await svc.apply(service("signal", ports=sctp_ports))
        await svc.apply(service("thru", policy="PASSTHROUGH", ports=DNS_PORTS[:1]))
        await svc.apply(named_server("signal-a", app="signal"))
        await svc.ready("signal-a")
        await svc.forwarded("signal", "signal-a")
        await svc.apply(service("signal", ports=sctp_ports, sessionAffinity="ClientIP"))

        async def affinity_applied() -> bool:
            await svc.projection.wait_for_log_end()
            port = svc.agent.proxy.port("default", "signal", "http")  # type: ignore[union-attr]
            return port is not None and port.affinity is not None

        await eventually(affinity_applied)
    # Stored, with its cluster IP; its TCP port forwarded; the SCTP port said once.
    assert svc.cluster_ip("signal")
    assert await ask_many(svc.cluster_ip("signal"), 80, 1) == ["signal-a"]
    said = [e["message"] for e in logs if e["event"] == "proxy.not_forwarded"]
    assert (
        said.count(
            "port 3868/SCTP is not forwarded: the node does not forward SCTP (no listener on the "
            "cluster IP or node port); clients reach the endpoints at their pod addresses"
        )
        == 1
    )
    (passthrough,) = [m for m in said if "PASSTHROUGH" in m]
    assert passthrough.startswith(f"{svc.cluster_ip('thru')}:53/UDP is not forwarded")
