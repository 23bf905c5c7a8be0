"""The pod network end to end: real network namespaces, a real bridge and veth pairs, real
processes, a real nats-server, the node IPAM controller and the scheduler.

Two replicas of one port-binding server both run, each at its own address of the node's
range, reachable from the host and from each other; a pod's containers share its namespace
and ``localhost``; ``hostNetwork`` and ``hostPort`` keep their meaning; a bubblewrap-isolated
pod runs in its pod's namespace; an agent restarted keeps its running pods' namespaces and
addresses and removes those of pods deleted meanwhile; deleting pods leaves nothing behind.
And where namespaces cannot (or may not) be made, every pod runs in the host network and the
node says so.

Everything a test creates is named with a prefix of its own (namespaces ``<prefix>-…``, veths
``<prefix>…``, the bridge ``<prefix>br``) in a cluster CIDR of its own, and removed at the end;
traffic goes only to addresses of those namespaces and bridges, and to loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from core.network.ranges import ClusterCIDR
from core.nodes.status import assigned_pod_cidr, node_condition
from handlers.agent import network as network_module
from handlers.agent.agent import NodeAgent
from handlers.agent.netnsexec import MOUNTS_RECHECK_S
from handlers.agent.network import (
    POOL_QUIET_S,
    BridgeNetwork,
    HostNetwork,
    NetworkOptions,
    detect,
)
from handlers.agent.node import NodeCapacity
from handlers.agent.pods import WorkerConfig
from handlers.agent.runtime import ContainerSpec
from handlers.gateway import Gateway
from handlers.node_ipam import NodeIPAMController
from handlers.scheduler import Scheduler
from ops.podnets import remove_pod_networks
from projections.cluster import ClusterModel
from projections.podconfig import PodConfigService
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.leases import LeaderLease
from streams.repository import AggregateRepository
from streams.server import free_port
from streams.subjects import event_subject
from tests.conftest import RunningServer
from tests.integration.agent.runtime_support import TrackedRuntime
from tests.integration.support import captured_logs, cli, eventually

pytestmark = pytest.mark.integration

PY = sys.executable
NODE = "net-node"
SERVE = [PY, "-m", "http.server", "8080"]
FETCH = (
    "import sys, urllib.request\n"
    "print(urllib.request.urlopen(sys.argv[1], timeout=3).status, flush=True)\n"
)
UDP_ECHO = (
    "import socket, sys, threading\n"
    "name, port = sys.argv[1].encode(), int(sys.argv[2])\n"
    "udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "udp.bind(('0.0.0.0', port))\n"
    "tcp = socket.socket()\n"
    "tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "tcp.bind(('0.0.0.0', port))\n"
    "tcp.listen(64)\n"
    "def say_name():\n"
    "    while True:\n"
    "        conn, _ = tcp.accept()\n"
    "        with conn:\n"
    "            try:\n"
    "                conn.sendall(name + b'\\n')\n"
    "            except OSError:\n"
    "                pass\n"
    "threading.Thread(target=say_name, daemon=True).start()\n"
    "while True:\n"
    "    data, peer = udp.recvfrom(2048)\n"
    "    udp.sendto(name + b':' + data, peer)\n"
)
"""A server on one port number for both protocols: a datagram is answered ``<name>:<datagram>``
to its sender, a TCP connection with ``<name>`` and a newline (so a ``tcpSocket`` probe tells
when the UDP socket, bound first, is there)."""


def ask_udp(host: str, port: int, text: str, *, timeout: float = 15) -> str:
    """A datagram from a socket of its own (one flow) to ``host:port``, sent again until it is
    answered (a server just started may not listen yet); the answer must come from
    ``host:port`` (the socket is connected: the kernel drops anything else)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock.send(text.encode())
                return sock.recv(2048).decode()
            except (TimeoutError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise


def ip_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=False)
    return json.loads(out.stdout or "[]")


def namespaces_of(prefix: str) -> set[str]:
    return {n["name"] for n in ip_json("netns", "list") if n["name"].startswith(f"{prefix}-")}


def links_of(prefix: str) -> set[str]:
    return {link["ifname"] for link in ip_json("link", "show") if link["ifname"].startswith(prefix)}


def remove_everything_named(prefix: str, bridge: str) -> None:
    """Teardown: every namespace, veth, resolv.conf entry and the bridge this test's prefix
    names."""
    remove_pod_networks(prefix, bridge)


def can_make_namespaces() -> str:
    """Why this machine cannot run these tests ("" when it can)."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"tprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return "" if made.returncode == 0 else f"cannot make network namespaces: {made.stderr}"


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as response:
        return f"{response.status}"


async def fetch_from_host(url: str) -> str:
    return await asyncio.to_thread(fetch, url)


async def answers(url: str, timeout: float = 15) -> None:
    """Until the server at ``url`` answers (a process just started may not listen yet)."""

    async def answered() -> bool:
        try:
            return await fetch_from_host(url) == "200"
        except OSError:
            return False

    await eventually(answered, timeout=timeout)


async def fetch_in(netns: str, url: str) -> str:
    """A request made from inside ``netns`` (as a process of that pod would make it)."""
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, PY, "-c", FETCH, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return out.decode().strip() or err.decode().strip()


def pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {"containers": list(containers), **spec},
    }


def container(name: str, command: list[str], **more: Any) -> dict[str, Any]:
    return {"name": name, "image": "process", "command": command, **more}


def server(port: int = 8080, **more: Any) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/", "port": port}, "periodSeconds": 1}
    command = [PY, "-m", "http.server", str(port)]
    return container("web", command, readinessProbe=probe, **more)


class Net:
    """One test's cluster: the gateway, a scheduler, the node IPAM controller and an agent
    whose pod network is named after the test."""

    def __init__(self, nc: Any, store: EventStore, client: CommandClient, root: Path) -> None:
        self.nc, self.store, self.client, self.root = nc, store, client, root
        self.prefix = "t" + secrets.token_hex(2) + "x"
        self.options = NetworkOptions(bridge=f"{self.prefix}br", prefix=self.prefix)
        # A /22 of our own in 100.112.0.0/12 (a corner of the shared address space no default
        # uses), so tests running at once never share a range.
        block = random.randrange(1024)
        self.cluster = ClusterCIDR.parse(f"100.{112 + block // 64}.{(block % 64) * 4}.0/22", 24)
        self.runtime = TrackedRuntime(root)
        self.agent: NodeAgent | None = None
        self.agent_task: asyncio.Task[None] | None = None
        self.projection = Projection(ClusterModel(), store)

    async def start_agent(self, options: NetworkOptions | None = None) -> NodeAgent:
        self.agent = NodeAgent(
            self.nc, self.store, name=NODE, root=self.root,
            capacity=NodeCapacity("8", "8Gi"), heartbeat_seconds=1.0, usage_seconds=5,
            config=WorkerConfig(backoff_initial_seconds=0.3, backoff_cap_seconds=1.2),
            runtime=self.runtime, network=options or self.options,
        )  # fmt: skip
        ready = asyncio.Event()
        self.agent_task = asyncio.create_task(self.agent.run(ready))
        await asyncio.wait_for(ready.wait(), 20)
        return self.agent

    async def stop_agent(self) -> None:
        if self.agent_task is not None:
            self.agent_task.cancel()
            await asyncio.gather(self.agent_task, return_exceptions=True)
            self.agent_task = None

    async def types(self, name: str) -> list[str]:
        events = await self.store.read_subject(event_subject("Pod", "default", name))
        return [e.envelope.type for e in events]

    async def ip_events(self, name: str) -> list[dict[str, Any]]:
        events = await self.store.read_subject(event_subject("Pod", "default", name))
        return [e.envelope.payload for e in events if e.envelope.type == "PodIPAssigned"]

    def status(self, name: str) -> dict[str, Any]:
        record = self.projection.model.get("Pod", "default", name)
        return (record.manifest.get("status") or {}) if record else {}

    async def ready(self, *names: str, timeout: float = 30) -> None:
        async def all_ready() -> bool:
            for name in names:
                if "PodReady" not in await self.types(name):
                    return False
            return True

        await eventually(all_ready, timeout=timeout)
        await self.projection.wait_for_log_end()

    def uid(self, name: str) -> str:
        record = self.projection.model.get("Pod", "default", name)
        assert record is not None
        return record.uid

    def netns(self, name: str) -> str:
        return self.options.netns(self.uid(name))

    def veth(self, name: str) -> str:
        """The pod's host-side veth, as the agent's ledger names it (a pod that took a
        sandbox of the pool keeps the sandbox's)."""
        ledger = json.loads((self.root / "network" / "ledger.json").read_text())
        return str(ledger["pods"][self.uid(name)]["veth"])

    def node(self) -> dict[str, Any]:
        record = self.projection.model.get("Node", "", NODE)
        assert record is not None
        return record.manifest


@pytest.fixture
async def net(
    nc: Any, store: EventStore, gateway: Gateway, client: CommandClient, tmp_path: Path
) -> AsyncIterator[Net]:
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    running = Net(nc, store, client, tmp_path / "agent")
    await running.projection.catch_up()
    await running.projection.follow()
    ipam = NodeIPAMController(
        AggregateRepository(store), running.projection,
        await LeaderLease.open(nc, "node-ipam-controller"), cluster=running.cluster,
    )  # fmt: skip
    scheduler = Scheduler(nc, store, share_work=False, initial_backoff=0.05, max_backoff=0.2)
    pod_config = PodConfigService(nc, running.projection, gateway.secret_keys)
    roles = []
    for role in (ipam.run, scheduler.run, pod_config.run):
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


async def test_two_replicas_of_one_port_both_run_each_at_its_own_address(
    net: Net, nats_server: RunningServer, queries: None
) -> None:
    for name in ("web-a", "web-b"):
        await net.client.send("Pod", "apply", {"manifest": pod(name, server())})
    await net.ready("web-a", "web-b")

    node_range = assigned_pod_cidr(net.node())
    assert node_range is not None
    assert IPv4Network(node_range).subnet_of(net.cluster.network)
    gateway_ip = str(IPv4Network(node_range).network_address + 1)
    a, b = net.status("web-a"), net.status("web-b")
    assert a["podIP"] != b["podIP"]
    for status in (a, b):
        assert status["podIPs"] == [{"ip": status["podIP"]}]
        assert status["hostIP"] == gateway_ip and status["hostIPs"] == [{"ip": gateway_ip}]
        assert IPv4Address(status["podIP"]) in IPv4Network(node_range)
    # The address is recorded before the containers start; both servers run (no crash loop).
    for name in ("web-a", "web-b"):
        types = await net.types(name)
        assert types.index("PodIPAssigned") < types.index("ContainerStarted")
        assert "ContainerRestarted" not in types
    # The host reaches each pod, each pod reaches the other, and its own localhost.
    assert await fetch_from_host(f"http://{a['podIP']}:8080/") == "200"
    assert await fetch_from_host(f"http://{b['podIP']}:8080/") == "200"
    assert await fetch_in(net.netns("web-a"), f"http://{b['podIP']}:8080/") == "200"
    assert await fetch_in(net.netns("web-b"), f"http://{a['podIP']}:8080/") == "200"
    assert await fetch_in(net.netns("web-a"), "http://127.0.0.1:8080/") == "200"
    # The node says what its pods get.
    condition = node_condition(net.node(), "PodNetworkReady")
    assert condition is not None and condition["status"] == "True"
    assert condition["reason"] == "BridgeNetwork" and net.options.bridge in condition["message"]
    # `get pods -o wide` shows the addresses.
    shown = await cli(nats_server.url, "get", "pods", "-o", "wide")
    assert shown.exit_code == 0, shown.output
    rows = {line.split()[0]: line.split() for line in shown.output.splitlines()[1:]}
    assert rows["web-a"][5] == a["podIP"] and rows["web-b"][5] == b["podIP"]


async def test_a_pods_containers_share_its_namespace_and_localhost(net: Net) -> None:
    client = (
        "import time, urllib.request\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        print(urllib.request.urlopen('http://localhost:9000/', timeout=1).status,"
        " flush=True)\n"
        "        break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
        "time.sleep(600)\n"
    )
    web = container("web", [PY, "-m", "http.server", "9000", "--bind", "127.0.0.1"])
    manifest = pod("duo", web, container("client", [PY, "-c", client]))
    await net.client.send("Pod", "apply", {"manifest": manifest})
    await net.ready("duo")
    outputs = {c.spec.name: c.directory / "stdout" for c in net.runtime.seen}

    async def client_got_an_answer() -> bool:
        return outputs["client"].read_text().strip() == "200"

    await eventually(client_got_an_answer)
    # The server bound the pod's loopback only: the host does not see it on its own.
    with pytest.raises(OSError):
        await fetch_from_host("http://127.0.0.1:9000/")


async def test_an_agent_restart_keeps_running_pods_and_removes_what_deleted_pods_left(
    net: Net,
) -> None:
    for name in ("keep", "drop"):
        await net.client.send("Pod", "apply", {"manifest": pod(name, server())})
    await net.ready("keep", "drop")
    keep_ip, drop_ip = net.status("keep")["podIP"], net.status("drop")["podIP"]
    keep_ns, drop_ns = net.netns("keep"), net.netns("drop")
    assert {keep_ns, drop_ns} <= namespaces_of(net.prefix)
    drop_veth = net.veth("drop")
    assert drop_veth in links_of(net.prefix)

    await net.stop_agent()
    assert await fetch_from_host(f"http://{keep_ip}:8080/") == "200"  # the pods outlive it
    await net.client.send("Pod", "delete", {"name": "drop"})
    # And while it is down, someone removes its bridge: the next agent makes it again and
    # puts the running pod's veth back on it.
    await asyncio.to_thread(subprocess.run, ["ip", "link", "del", net.options.bridge], check=True)
    previous = net.runtime
    net.runtime = TrackedRuntime(net.root)
    await net.start_agent()
    try:

        async def drop_gone() -> bool:  # (the kernel removes a namespace's veth a moment later)
            return drop_ns not in namespaces_of(net.prefix) and drop_veth not in links_of(
                net.prefix
            )

        await eventually(drop_gone)
        # The running pod kept its namespace and address, and answers there.
        assert keep_ns in namespaces_of(net.prefix)
        await answers(f"http://{keep_ip}:8080/")
        assert [e["pod_ips"] for e in await net.ip_events("keep")] == [[keep_ip]]
        assert "ContainerRestarted" not in await net.types("keep")
        ledger = json.loads((net.root / "network" / "ledger.json").read_text())
        assert [entry["ip"] for entry in ledger["pods"].values()] == [keep_ip]
        assert drop_ip != keep_ip

        await net.client.send("Pod", "delete", {"name": "keep"})

        async def nothing_left() -> bool:  # but the pool's sandboxes, for pods to come
            pool = pool_of(net)
            return namespaces_of(net.prefix) == {e["netns"] for e in pool} and links_of(
                net.prefix
            ) == {net.options.bridge} | {e["veth"] for e in pool}

        await eventually(nothing_left)
        ledger = json.loads((net.root / "network" / "ledger.json").read_text())
        assert ledger["pods"] == {}
        # And the agent stopped leaves nothing at all: its pool goes with it.
        await net.stop_agent()
        assert not namespaces_of(net.prefix) and pool_of(net) == []

        async def veths_gone() -> bool:
            return links_of(net.prefix) == {net.options.bridge}

        await eventually(veths_gone)
    finally:
        previous.cleanup()


def pool_of(net: Net) -> list[dict[str, str]]:
    """The sandboxes the agent's ledger holds for pods to come."""
    ledger = json.loads((net.root / "network" / "ledger.json").read_text())
    return list((ledger.get("pool") or {}).values())


async def test_host_network_keeps_the_nodes_and_host_ports_are_forwarded(net: Net) -> None:
    port = free_port()
    host_pod = pod(
        "on-host", container("web", [PY, "-m", "http.server", str(port)]), hostNetwork=True
    )
    published, datagrams, sctp = free_port(), free_port(), free_port()
    ports = [
        {"containerPort": 8080, "hostPort": published, "hostIP": "127.0.0.1"},
        {"containerPort": 3868, "hostPort": sctp, "protocol": "SCTP"},
    ]
    # A UDP host port on every address of the node, to the pod's port 5353.
    echo = container(
        "echo", [PY, "-c", UDP_ECHO, "mapped", "5353"],
        ports=[{"containerPort": 5353, "hostPort": datagrams, "protocol": "UDP"}],
    )  # fmt: skip
    mapped = pod("mapped", server(ports=ports), echo)
    for manifest in (host_pod, mapped):
        await net.client.send("Pod", "apply", {"manifest": manifest})

    async def both_started() -> bool:
        started = [("ContainerStarted" in await net.types(n)) for n in ("on-host", "mapped")]
        return all(started)

    await eventually(both_started, timeout=30)
    await net.projection.wait_for_log_end()
    on_host = net.status("on-host")
    assert on_host["podIP"] == on_host["hostIP"]  # the node's own address
    (event,) = await net.ip_events("on-host")
    assert event["host_network"] is True
    await answers(f"http://{on_host['podIP']}:{port}/")
    assert net.netns("on-host") not in namespaces_of(net.prefix)

    await net.ready("mapped")
    assert await fetch_from_host(f"http://127.0.0.1:{published}/") == "200"  # via the node
    # UDP, through the node's addresses (answered from the address written to).
    assert await asyncio.to_thread(ask_udp, "127.0.0.1", datagrams, "one") == "mapped:one"
    assert await asyncio.to_thread(ask_udp, "127.0.0.2", datagrams, "two") == "mapped:two"
    (event,) = await net.ip_events("mapped")
    assert event["host_network"] is False
    assert event["message"] == (
        f"hostPort {sctp}/SCTP is not forwarded: fleetlog forwards TCP and UDP host ports only"
    )

    await net.client.send("Pod", "delete", {"name": "mapped"})

    async def port_closed() -> bool:
        try:
            await fetch_from_host(f"http://127.0.0.1:{published}/")
        except OSError:
            return True
        return False

    await eventually(port_closed)
    with pytest.raises(ConnectionRefusedError):  # nothing listens on the UDP port any more
        await asyncio.to_thread(ask_udp, "127.0.0.1", datagrams, "gone", timeout=1)


async def test_an_isolated_pod_runs_in_its_pods_namespace(net: Net) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    annotations = {"fleetlog.dev/isolation": "bubblewrap"}
    manifest = pod("boxed", server(), metadata={"annotations": annotations})
    await net.client.send("Pod", "apply", {"manifest": manifest})
    await net.ready("boxed")
    (running,) = [c for c in net.runtime.seen if c.spec.pod_name == "boxed"]
    assert running.launch_prefix[1:4] == ("netns", "exec", net.netns("boxed"))
    assert any(part.endswith("bwrap") for part in running.launch_prefix)
    assert await fetch_from_host(f"http://{net.status('boxed')['podIP']}:8080/") == "200"


# -- where namespaces cannot be made ------------------------------------------------------------


async def test_an_agent_told_not_to_make_namespaces_runs_pods_in_the_host_network(
    net: Net,
) -> None:
    await net.stop_agent()
    with captured_logs(network_module) as logs:
        agent = await net.start_agent(
            NetworkOptions(bridge=net.options.bridge, prefix=net.prefix, enabled=False)
        )
    assert isinstance(agent.network, HostNetwork)
    assert [e["event"] for e in logs if e["event"] == "agent.host_network_only"] == [
        "agent.host_network_only"
    ]  # said once
    port = free_port()
    manifest = pod("plain", container("web", [PY, "-m", "http.server", str(port)]))
    await net.client.send("Pod", "apply", {"manifest": manifest})

    async def started() -> bool:
        return "ContainerStarted" in await net.types("plain")

    await eventually(started)
    (event,) = await net.ip_events("plain")
    assert event["pod_ips"] == ["127.0.0.1"] and event["host_network"] is True
    assert "pods run in the host network" in event["message"]
    await answers(f"http://127.0.0.1:{port}/")
    assert not namespaces_of(net.prefix)

    async def condition_said() -> bool:
        await net.projection.wait_for_log_end()
        found = node_condition(net.node(), "PodNetworkReady")
        return found is not None and found["status"] == "False"

    await eventually(condition_said)
    condition = node_condition(net.node(), "PodNetworkReady")
    assert condition is not None and condition["reason"] == "HostNetworkOnly"
    assert "--no-pod-network" in condition["message"]


async def test_a_machine_that_refuses_namespaces_gets_the_host_network_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An `ip` that is refused as an unprivileged user's would be.
    fake = tmp_path / "bin" / "ip"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\necho "mount --make-shared /run/netns failed: Operation not permitted" >&2\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    found = await detect(tmp_path, NetworkOptions(prefix="tfake"))
    assert isinstance(found, HostNetwork)
    ready, reason, message = found.condition()
    assert (ready, reason) == (False, "NetworkNamespacesUnavailable")
    assert "Operation not permitted" in message and "pods run in the host network" in message
    assert not isinstance(found, BridgeNetwork)


async def test_the_downward_api_gives_a_container_its_pods_address_and_names(net: Net) -> None:
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GREETING", "value": "$(POD_NAME) in $(POD_NAMESPACE)"},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
    ]
    # The server binds only the address the downward API gave it: `$(POD_IP)` in its args.
    web = container(
        "web", [PY, "-m", "http.server", "8080"], args=["--bind", "$(POD_IP)"], env=env,
        readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    )  # fmt: skip
    shown = "import os; print(os.environ['POD_IP'], os.environ['GREETING'], os.environ['CPU'], flush=True)"
    talker = container("talk", [PY, "-c", shown + "; import time; time.sleep(600)"], env=env)
    await net.client.send("Pod", "apply", {"manifest": pod("told", web, talker)})
    await net.ready("told")
    pod_ip = net.status("told")["podIP"]
    assert await fetch_from_host(f"http://{pod_ip}:8080/") == "200"
    said = next(c.directory / "stdout" for c in net.runtime.seen if c.spec.name == "talk")

    async def printed() -> bool:
        return said.read_text().split() == [pod_ip, "told", "in", "$(POD_NAMESPACE)", "1"]

    # POD_NAMESPACE is defined after GREETING: left as written. The namespace's LimitRange
    # (the fixture's) gives every container a 500m cpu limit: rounded up to whole cores, 1.
    await eventually(printed)


async def test_a_reference_to_a_missing_secret_is_a_container_config_error(net: Net) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "t"}}}]
    manifest = pod("secretive", container("main", ["sleep", "600"], env=env))
    await net.client.send("Pod", "apply", {"manifest": manifest})

    async def refused() -> bool:
        events = await net.store.read_subject(event_subject("Pod", "default", "secretive"))
        return any(
            "CreateContainerConfigError" in str(e.envelope.payload)
            and 'secret "creds" not found' in str(e.envelope.payload)
            for e in events
        )

    await eventually(refused)
    assert not any(c.spec.pod_name == "secretive" for c in net.runtime.seen)
    # It waits, as the kubelet's container does: the pod stays Pending, not Failed.
    await net.projection.wait_for_log_end()
    status = net.status("secretive")
    assert status["phase"] == "Pending"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"


async def test_the_bridge_keeps_its_own_address_as_pods_come_and_go(net: Net) -> None:
    """A bridge with no MAC of its own takes its lowest port's and changes it when that pod
    goes: every other pod's neighbour entry for the gateway (and the DNS and service addresses
    on the bridge) then points at a MAC that is gone for 20-30 s."""
    names = ("mac-a", "mac-b", "mac-c")
    for name in names:
        await net.client.send("Pod", "apply", {"manifest": pod(name, server())})
    await net.ready(*names)
    expected = network_module.bridge_mac(net.options.bridge)
    veths = {net.veth(n) for n in names}

    def bridge_address() -> str:
        return str(ip_json("link", "show", "dev", net.options.bridge)[0]["address"])

    assert bridge_address() == expected
    ports = {
        link["ifname"]: link["address"]
        for link in ip_json("link", "show", "master", net.options.bridge)
    }
    assert expected not in ports.values()
    # (the pool's sandboxes, for pods to come, are ports of the bridge too)
    ports = {veth: mac for veth, mac in ports.items() if veth in veths}
    assert set(ports) == veths
    # The pod whose veth has the lowest MAC goes: the bridge would have taken it.
    lowest = min(ports, key=lambda name: ports[name])
    gone = next(n for n in names if net.veth(n) == lowest)
    await net.client.send("Pod", "delete", {"name": gone, "namespace": "default"})

    async def its_veth_is_gone() -> bool:
        return lowest not in links_of(net.prefix)

    await eventually(its_veth_is_gone)
    assert bridge_address() == expected


def ip_wrapper(directory: Path) -> Path:
    """An ``ip`` first on PATH that writes each of its command lines to ``runs`` beside it,
    then runs the real one."""
    real = shutil.which("ip")
    assert real is not None
    directory.mkdir()
    wrapper = directory / "ip"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {directory / "runs"}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def runs_of(wrapper: Path) -> list[str]:
    runs = wrapper.parent / "runs"
    return runs.read_text().splitlines() if runs.exists() else []


async def test_pods_get_their_networks_and_lose_them_without_starting_ip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    wrapper = ip_wrapper(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    prefix = "t" + secrets.token_hex(2) + "x"
    options = NetworkOptions(bridge=f"{prefix}br", prefix=prefix, pool=0)
    block = random.randrange(1024)
    cidr = f"100.{112 + block // 64}.{(block % 64) * 4 + 1}.0/24"
    try:
        network = await detect(tmp_path / "agent", options)
        assert isinstance(network, BridgeNetwork)
        await network.start()
        await network.set_pod_cidr(cidr)
        assert runs_of(wrapper)  # the wrapper is the `ip` the network starts (for its bridge)
        started = len(runs_of(wrapper))
        fds = len(os.listdir("/proc/self/fd"))
        uids = [f"uid-{prefix}-{i}" for i in range(5)]
        made = await asyncio.gather(
            *(
                network.attach(uid=uid, namespace="default", name=f"p{i}", host_network=False)
                for i, uid in enumerate(uids)
            )
        )
        assert runs_of(wrapper)[started:] == []
        assert len({addresses.pod_ip for addresses in made}) == 5
        assert namespaces_of(prefix) == {options.netns(uid) for uid in uids}
        for uid, addresses in zip(uids, made, strict=True):
            assert addresses.netns == options.netns(uid)
            inside = ip_json("-n", addresses.netns, "-4", "addr", "show", "dev", "eth0")
            assert [(a["local"], a["prefixlen"]) for a in inside[0]["addr_info"]] == [
                (addresses.pod_ip, 24)
            ]
            assert "UP" in inside[0]["flags"]
            lo = ip_json("-n", addresses.netns, "link", "show", "dev", "lo")
            assert "UP" in lo[0]["flags"]
            routes = ip_json("-n", addresses.netns, "-4", "route", "show", "default")
            assert [(r["gateway"], r["dev"]) for r in routes] == [(addresses.host_ip, "eth0")]
            veth = ip_json("link", "show", "dev", options.veth(uid))
            assert veth[0]["master"] == options.bridge and "UP" in veth[0]["flags"]
        # A pod answers at its address from the node, through the bridge.
        listen = (
            "import socket; s = socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen();"
            "print('up', flush=True); c, _ = s.accept(); c.sendall(b'hi'); c.close()"
        )
        listening = subprocess.Popen(  # noqa: ASYNC220 - stopped by its pid below
            ["ip", "netns", "exec", made[0].netns, PY, "-c", listen], stdout=subprocess.PIPE
        )
        try:
            assert listening.stdout is not None
            assert await asyncio.to_thread(listening.stdout.readline) == b"up\n"

            def said() -> bytes:
                with socket.create_connection((made[0].pod_ip, 8080), timeout=5) as conn:
                    return conn.recv(16)

            assert await asyncio.to_thread(said) == b"hi"
        finally:
            listening.kill()
            listening.wait()
        # A restarted agent finds each namespace as it was (checked, not made again).
        again = BridgeNetwork(tmp_path / "agent", options, network.ip)
        await again.start()
        await again.set_pod_cidr(cidr)
        made_as = os.stat(f"/run/netns/{made[0].netns}").st_ino
        started = len(runs_of(wrapper))
        found = await again.attach(uid=uids[0], namespace="default", name="p0", host_network=False)
        assert found == made[0]
        assert os.stat(f"/run/netns/{made[0].netns}").st_ino == made_as
        for uid in uids:
            await again.detach(uid)
        assert runs_of(wrapper)[started:] == []
        assert len(os.listdir("/proc/self/fd")) <= fds + 2  # the networks' own sockets
        assert not namespaces_of(prefix)

        async def veths_gone() -> bool:  # (the kernel removes a namespace's veth a moment later)
            return links_of(prefix) == {options.bridge}

        await eventually(veths_gone)
    finally:
        remove_everything_named(prefix, options.bridge)


async def test_pods_take_the_pools_sandboxes_which_are_refilled_and_removed_at_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    wrapper = ip_wrapper(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    prefix = "t" + secrets.token_hex(2) + "x"
    # A pool that does not grow (its limit is its size): grown, test below.
    options = NetworkOptions(bridge=f"{prefix}br", prefix=prefix, pool=3, pool_limit=3)
    block = random.randrange(1024)
    cidr = f"100.{112 + block // 64}.{(block % 64) * 4 + 2}.0/24"
    root = tmp_path / "agent"
    try:
        network = await detect(root, options)
        assert isinstance(network, BridgeNetwork)
        await network.start()
        await network.set_pod_cidr(cidr)

        async def full() -> bool:
            return len(network.sandboxes()) == 3

        await eventually(full)
        pool = network.sandboxes()
        assert namespaces_of(prefix) == set(pool)
        made_as = {os.stat(f"/run/netns/{name}").st_ino: ip for name, ip in pool.items()}
        started = len(runs_of(wrapper))
        uids = [f"uid-{prefix}-{i}" for i in range(5)]
        made = await asyncio.gather(
            *(
                network.attach(uid=uid, namespace="default", name=f"p{i}", host_network=False)
                for i, uid in enumerate(uids)
            )
        )
        assert runs_of(wrapper)[started:] == []
        for uid in uids:
            network.started(uid)  # as each pod's worker says once its containers are started
        ledger = json.loads((root / "network" / "ledger.json").read_text())
        assert {e["ip"] for e in ledger["pods"].values()} == {a.pod_ip for a in made}
        # Three pods got the sandboxes (the same namespaces, now under the pods' names, with
        # the addresses they were made with), two got networks made for them.
        by_pod = {os.stat(f"/run/netns/{a.netns}").st_ino: a.pod_ip for a in made}
        assert {ino: by_pod.get(ino) for ino in made_as} == made_as
        assert len({a.pod_ip for a in made}) == 5
        for uid, addresses in zip(uids, made, strict=True):
            assert addresses.netns == options.netns(uid)
            inside = ip_json("-n", addresses.netns, "-4", "addr", "show", "dev", "eth0")
            assert [a["local"] for a in inside[0]["addr_info"]] == [addresses.pod_ip]
            assert "UP" in inside[0]["flags"]
            routes = ip_json("-n", addresses.netns, "-4", "route", "show", "default")
            assert [(r["gateway"], r["dev"]) for r in routes] == [(addresses.host_ip, "eth0")]
            veth = ip_json("link", "show", "dev", ledger["pods"][uid]["veth"])
            assert veth[0]["master"] == options.bridge and "UP" in veth[0]["flags"]

        # Refilled once the pods are attached, with addresses no pod holds.
        await eventually(full)
        refilled = network.sandboxes()
        assert not set(refilled) & set(pool)
        # The sandboxes' own names were unbound meanwhile: the pods' namespaces stay.
        ledger = json.loads((root / "network" / "ledger.json").read_text())
        assert not set(pool) & {e["netns"] for e in ledger["pool"].values()}
        assert not set(refilled.values()) & {a.pod_ip for a in made}
        assert namespaces_of(prefix) == set(refilled) | {a.netns for a in made}

        # An agent killed (nothing stopped): the next one removes the sandboxes it left and
        # makes its own; the pods' networks stay.
        again = BridgeNetwork(root, options, network.ip)
        await again.start()
        assert not set(refilled) & namespaces_of(prefix)
        assert json.loads((root / "network" / "ledger.json").read_text())["pool"] == {}
        await again.set_pod_cidr(cidr)

        async def again_full() -> bool:
            return len(again.sandboxes()) == 3

        await eventually(again_full)
        for uid in uids:
            await again.detach(uid)
        # Stopped: nothing left, not even the pool.
        await again.stop()
        assert not namespaces_of(prefix)
        assert json.loads((root / "network" / "ledger.json").read_text())["pool"] == {}

        async def veths_gone() -> bool:
            return links_of(prefix) == {options.bridge}

        await eventually(veths_gone)
    finally:
        remove_everything_named(prefix, options.bridge)


async def test_a_pool_emptied_by_a_burst_grows_by_the_pods_that_found_it_empty_to_its_limit(
    tmp_path: Path,
) -> None:
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    prefix = "t" + secrets.token_hex(2) + "x"
    options = NetworkOptions(bridge=f"{prefix}br", prefix=prefix, pool=1, pool_limit=3)
    block = random.randrange(1024)
    cidr = f"100.{112 + block // 64}.{(block % 64) * 4 + 3}.0/24"
    try:
        network = await detect(tmp_path / "agent", options)
        assert isinstance(network, BridgeNetwork)
        await network.start()
        await network.set_pod_cidr(cidr)

        async def holds(count: int) -> bool:
            return len(network.sandboxes()) == count

        await eventually(lambda: holds(1))
        uids = [f"uid-{prefix}-{i}" for i in range(4)]
        await asyncio.gather(
            *(
                network.attach(uid=uid, namespace="default", name=f"p{i}", host_network=False)
                for i, uid in enumerate(uids)
            )
        )
        for uid in uids:
            network.started(uid)
        # Three pods found it empty: it grows by three, but only to its limit.
        await eventually(lambda: holds(3), timeout=30)
        await asyncio.sleep(1.5)  # (past the quiet moment after which it is filled)
        assert len(network.sandboxes()) == 3
        for uid in uids:
            await network.detach(uid)
        await network.stop()
        assert not namespaces_of(prefix)
    finally:
        remove_everything_named(prefix, options.bridge)


async def test_the_pool_is_refilled_once_the_attached_pods_containers_have_started(
    tmp_path: Path,
) -> None:
    """Refilling the pool is the agent's loop's work: a burst's container starts go first."""
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    prefix = "t" + secrets.token_hex(2) + "x"
    options = NetworkOptions(bridge=f"{prefix}br", prefix=prefix, pool=2, pool_limit=2)
    block = random.randrange(1024)
    cidr = f"100.{112 + block // 64}.{(block % 64) * 4 + 1}.0/24"
    try:
        network = await detect(tmp_path / "agent", options)
        assert isinstance(network, BridgeNetwork)
        await network.start()
        await network.set_pod_cidr(cidr)

        async def holds(count: int) -> bool:
            return len(network.sandboxes()) == count

        await eventually(lambda: holds(2))
        uids = [f"uid-{prefix}-{i}" for i in range(2)]
        for i, uid in enumerate(uids):
            await network.attach(uid=uid, namespace="default", name=f"p{i}", host_network=False)
        await asyncio.sleep(POOL_QUIET_S + 1)  # quiet, but the pods' containers not started
        assert network.sandboxes() == {}
        network.started(uids[0])
        await asyncio.sleep(POOL_QUIET_S + 0.5)
        assert network.sandboxes() == {}  # one pod still starting
        network.started(uids[1])
        await eventually(lambda: holds(2), timeout=30)
        for uid in uids:
            await network.detach(uid)
        await network.stop()
        assert not namespaces_of(prefix)
    finally:
        remove_everything_named(prefix, options.bridge)


async def test_a_pods_address_is_recorded_while_its_resolv_conf_is_being_written(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst's resolv.conf writes wait for worker threads its container starts keep busy:
    the address goes to the log first; the containers still start only once it is written."""
    assert net.agent is not None
    resolvers = net.agent.resolvers
    prepare = resolvers.prepare
    release = asyncio.Event()

    async def held(**kwargs: Any) -> str | None:
        await release.wait()
        return await prepare(**kwargs)

    monkeypatch.setattr(resolvers, "prepare", held)
    sleeper = container("main", [PY, "-c", "import time; time.sleep(60)"])
    await net.client.send("Pod", "apply", {"manifest": pod("held-dns", sleeper)})

    async def assigned() -> bool:
        return bool(await net.ip_events("held-dns"))

    await eventually(assigned)
    assert "ContainerStarted" not in await net.types("held-dns")
    release.set()

    async def started() -> bool:
        return "ContainerStarted" in await net.types("held-dns")

    await eventually(started)
    types = await net.types("held-dns")
    assert types.index("PodIPAssigned") < types.index("ContainerStarted")


async def test_a_sandbox_removed_behind_the_agents_back_is_replaced_by_a_network_made_anew(
    tmp_path: Path,
) -> None:
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    prefix = "t" + secrets.token_hex(2) + "x"
    options = NetworkOptions(bridge=f"{prefix}br", prefix=prefix, pool=1)
    block = random.randrange(1024)
    cidr = f"100.{112 + block // 64}.{(block % 64) * 4 + 3}.0/24"
    root = tmp_path / "agent"
    try:
        network = await detect(root, options)
        assert isinstance(network, BridgeNetwork)
        await network.start()
        await network.set_pod_cidr(cidr)

        async def full() -> bool:
            return len(network.sandboxes()) == 1

        await eventually(full)
        (sandbox,) = network.sandboxes()
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", sandbox], check=True)
        addresses = await network.attach(
            uid="uid-gone", namespace="default", name="p", host_network=False
        )
        inside = ip_json("-n", addresses.netns, "-4", "addr", "show", "dev", "eth0")
        assert [a["local"] for a in inside[0]["addr_info"]] == [addresses.pod_ip]
        ledger = json.loads((root / "network" / "ledger.json").read_text())
        veth = ip_json("link", "show", "dev", ledger["pods"]["uid-gone"]["veth"])
        assert veth[0]["master"] == options.bridge and "UP" in veth[0]["flags"]
        assert sandbox not in {e["netns"] for e in ledger["pool"].values()}
        await network.detach("uid-gone")
        await network.stop()
        assert not namespaces_of(prefix)
    finally:
        remove_everything_named(prefix, options.bridge)


async def test_a_container_is_born_in_its_pods_namespaces_without_an_ip_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `ip netns exec` gave a container (the pod's network, its /etc/netns files over
    /etc, a /sys of the pod's interfaces, the container's cgroups from its first instruction)
    it gets without an `ip` process per start; nothing of it leaks to the agent."""
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    name = f"t{secrets.token_hex(3)}x-born"
    await asyncio.to_thread(subprocess.run, ["ip", "netns", "add", name], check=True)
    wrapper = ip_wrapper(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    etc = Path("/etc/netns") / name
    runtime = TrackedRuntime(tmp_path / "node")
    own = {ns: os.stat(f"/proc/self/ns/{ns}").st_ino for ns in ("net", "mnt")}
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 10.99.0.10\nsearch born.svc\n")
        script = (
            "cat /etc/resolv.conf; echo net $(stat -L -c %i /proc/self/ns/net);"
            " echo links $(ls /sys/class/net); echo cgroup $(cat /proc/self/cgroup | tr '\\n' ' ');"
            " echo fds $(ls /proc/self/fd | tr '\\n' ' '); sleep 30"
        )
        started = await runtime.start(
            ContainerSpec(
                pod_uid=f"born-{secrets.token_hex(4)}", pod_namespace="default",
                pod_name="born", name="main", restart_count=0,
                argv=["/bin/sh", "-c", script], netns=name,
            )
        )  # fmt: skip

        def said() -> str:
            path = started.stdout_path
            return path.read_text() if path.exists() else ""

        async def told() -> bool:
            return "fds " in said()

        await eventually(told, timeout=15)
        lines = said().splitlines()
        assert lines[:2] == ["nameserver 10.99.0.10", "search born.svc"]
        assert lines[2] == f"net {os.stat(f'/run/netns/{name}').st_ino}"
        assert lines[3] == "links lo"  # the pod's sysfs: not the node's interfaces
        if started.cgroup.paths:  # in each of its cgroups before its command ran
            assert started.cgroup.relative in lines[4]
            for path in started.cgroup.paths:
                procs = (Path(path) / "cgroup.procs").read_text().split()
                assert str(started.pid) in procs
        assert lines[5].split()[1:] == ["0", "1", "2", "3"]  # 3: ls's own directory
        assert runs_of(wrapper) == []  # no `ip` started for it
        # An exec probe still enters it through `ip netns exec`.
        assert started.launch_prefix == (str(wrapper), "netns", "exec", name)
        # The thread that forked it went back: every thread of this process is at home.
        for task in os.listdir("/proc/self/task"):
            homes = {ns: os.stat(f"/proc/self/task/{task}/ns/{ns}").st_ino for ns in own}
            assert homes == own
            assert os.readlink(f"/proc/self/task/{task}/cwd") == os.getcwd()
    finally:
        runtime.cleanup()
        shutil.rmtree(etc, ignore_errors=True)
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", name], check=False)


async def test_a_container_sees_no_pods_namespace_handles_and_the_nodes_later_mounts(
    tmp_path: Path,
) -> None:
    """Starts copy a mount namespace made once without /run/netns's binds: a container is in
    its pod's network namespace yet sees no pod's handle there (neither those there at the
    first start nor one bound since), and a mount made on the node after the first start
    is seen by a start ``MOUNTS_RECHECK_S`` later as an `ip netns exec` copy of the node's
    mounts would see it."""
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    token = secrets.token_hex(3)
    names = [f"t{token}x-own", f"t{token}x-other", f"t{token}x-later"]
    for name in names[:2]:
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "add", name], check=True)
    runtime = TrackedRuntime(tmp_path / "node")
    later = tmp_path / "later"
    later.mkdir()
    mounted = False
    script = (
        "echo net $(stat -L -c %i /proc/self/ns/net); echo handles $(ls -A /run/netns);"
        f" echo later $(cat {later}/mark 2>&1); echo done; sleep 30"
    )

    async def run(uid: str) -> list[str]:
        started = await runtime.start(
            ContainerSpec(
                pod_uid=f"{uid}-{secrets.token_hex(4)}", pod_namespace="default",
                pod_name=uid, name="main", restart_count=0,
                argv=["/bin/sh", "-c", script], netns=names[0],
            )
        )  # fmt: skip

        def said() -> str:
            path = started.stdout_path
            return path.read_text() if path.exists() else ""

        async def told() -> bool:
            return "done" in said()

        await eventually(told, timeout=15)
        return said().splitlines()

    try:
        own = os.stat(f"/run/netns/{names[0]}").st_ino
        first = await run("first")
        assert first[0] == f"net {own}"  # in its pod's network namespace
        assert first[1] == "handles"  # no pod's handle, its own neither
        assert first[2].startswith("later cat:")  # nothing mounted there yet
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "add", names[2]], check=True)
        await asyncio.to_thread(
            subprocess.run, ["mount", "-t", "tmpfs", "-o", "size=4k", "none", str(later)],
            check=True,
        )  # fmt: skip
        mounted = True
        (later / "mark").write_text("seen")
        await asyncio.sleep(MOUNTS_RECHECK_S)  # a start reads the node's mounts this often
        second = await run("second")
        assert second[:3] == [f"net {own}", "handles", "later seen"]
        # Nothing of it reached the node: every pod's handle is still bound there.
        assert set(names) <= set(os.listdir("/run/netns"))
    finally:
        runtime.cleanup()
        if mounted:
            await asyncio.to_thread(subprocess.run, ["umount", "-l", str(later)], check=False)
        for name in names:
            await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", name], check=False)
