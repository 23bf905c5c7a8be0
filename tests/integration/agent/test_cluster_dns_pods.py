"""Cluster DNS from the pods' side: a real agent with its pod network (namespaces, bridge,
veths), real processes, a real nats-server, the scheduler, the node IPAM and endpoint-slice
controllers. A pod in namespace ``shop`` resolves ``web`` and ``web.shop`` through the
``resolv.conf`` its ``dnsPolicy`` gives it; a headless service's answer follows its pods
becoming ready and not ready; an agent restart leaves exactly one DNS address, where it
should be.

Each test's DNS address is its own (``100.79.x.y``, a corner of the shared address space no
default uses) on its own bridge; names outside the cluster go to a fake upstream on
loopback, so nothing is ever asked off the machine. Every namespace, link, ``/etc/netns``
entry and address a test makes is removed at the end.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from core.network.ranges import ClusterCIDR
from handlers.agent.agent import NodeAgent
from handlers.agent.dns import DNSOptions
from handlers.agent.network import NetworkOptions
from handlers.agent.node import NodeCapacity
from handlers.agent.pods import WorkerConfig
from handlers.endpointslice_controller import EndpointSliceController
from handlers.gateway import Gateway
from handlers.node_ipam import NodeIPAMController
from handlers.scheduler import Scheduler
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.leases import LeaderLease
from streams.repository import AggregateRepository
from tests.integration.agent.dns_support import FakeUpstream, addresses, ask
from tests.integration.agent.runtime_support import TrackedRuntime
from tests.integration.agent.test_pod_network import (
    PY,
    can_make_namespaces,
    container,
    ip_json,
    remove_everything_named,
)
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NODE = "dns-node"
ZONE = "svc.cluster.local"
SLEEP = [PY, "-c", "import time; time.sleep(600)"]


def entries(directory: str, pattern: str) -> set[str]:
    """The names in ``directory`` (``/etc/netns``, ``/run/netns``) matching ``pattern``."""
    return {path.name for path in Path(directory).glob(pattern)}


def read(path: str) -> str:
    return Path(path).read_text()


def unique_dns_address() -> str:
    return f"100.79.{random.randrange(256)}.{random.randrange(1, 255)}"


def manifest(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    api = "v1"
    metadata = {"name": name, **fields.pop("metadata", {})}
    if kind != "Namespace":
        metadata.setdefault("namespace", "shop")
    return {"apiVersion": api, "kind": kind, "metadata": metadata, **fields}


class Cluster:
    """One test's node: an agent whose pod network and DNS address are its own."""

    def __init__(self, nc: Any, store: EventStore, client: CommandClient, root: Path) -> None:
        self.nc, self.store, self.client, self.root = nc, store, client, root
        self.prefix = "t" + secrets.token_hex(2) + "d"
        self.options = NetworkOptions(bridge=f"{self.prefix}br", prefix=self.prefix)
        block = random.randrange(1024)
        self.cluster = ClusterCIDR.parse(f"100.{112 + block // 64}.{(block % 64) * 4}.0/22", 24)
        self.runtime = TrackedRuntime(root)
        self.upstream = FakeUpstream()
        self.host_resolv = root.parent / "host-resolv.conf"
        self.host_resolv.parent.mkdir(parents=True, exist_ok=True)
        self.host_resolv.write_text("nameserver 127.0.0.1\nsearch corp.test\n")
        self.address = unique_dns_address()
        self.addresses_used = {self.address}
        self.agent: NodeAgent | None = None
        self.task: asyncio.Task[None] | None = None
        self.projection = Projection(ClusterModel(), store)

    def dns_options(self, address: str | None = None) -> DNSOptions:
        return DNSOptions(
            address=address or self.address,
            upstreams=(f"127.0.0.1:{self.upstream.port}",),
            resolv_conf=self.host_resolv,
            forward_timeout=1.0,
        )

    async def start_agent(self, dns_options: DNSOptions | None) -> NodeAgent:
        self.agent = NodeAgent(
            self.nc, self.store, name=NODE, root=self.root,
            capacity=NodeCapacity("8", "8Gi"), heartbeat_seconds=1.0, usage_seconds=5,
            config=WorkerConfig(backoff_initial_seconds=0.3, backoff_cap_seconds=1.2),
            runtime=self.runtime, network=self.options, dns=dns_options,
        )  # fmt: skip
        ready = asyncio.Event()
        self.task = asyncio.create_task(self.agent.run(ready))
        await asyncio.wait_for(ready.wait(), 20)
        return self.agent

    async def stop_agent(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def apply(self, kind: str, name: str, **fields: Any) -> None:
        await self.client.send(kind, "apply", {"manifest": manifest(kind, name, **fields)})

    def bridge_addresses(self) -> list[str]:
        return [
            f"{info['local']}/{info['prefixlen']}"
            for link in ip_json("-4", "addr", "show", "dev", self.options.bridge)
            for info in link.get("addr_info") or []
        ]

    async def dns_held(self, address: str | None = None) -> None:
        wanted = f"{address or self.address}/32"

        async def held() -> bool:
            return wanted in self.bridge_addresses()

        await eventually(held, timeout=20)

    def pod(self, name: str) -> dict[str, Any]:
        record = self.projection.model.get("Pod", "shop", name)
        return record.manifest if record else {}

    def uid(self, name: str) -> str:
        record = self.projection.model.get("Pod", "shop", name)
        assert record is not None
        return record.uid

    def output(self, pod: str) -> str:
        uid = self.uid(pod)
        found = [c for c in self.runtime.seen if c.spec.pod_uid == uid]
        return "".join((c.directory / "stdout").read_text() for c in found)

    async def finished(self, *names: str, timeout: float = 90) -> None:
        async def done() -> bool:
            return all((self.pod(n).get("status") or {}).get("phase") == "Succeeded" for n in names)

        try:
            await eventually(done, timeout=timeout)
        except AssertionError:
            for name in names:
                print(name, self.pod(name).get("status"), repr(self.output(name)))
            raise

    def lo_addresses(self) -> list[str]:
        return [
            f"{info['local']}/{info['prefixlen']}"
            for link in ip_json("-4", "addr", "show", "dev", "lo")
            for info in link.get("addr_info") or []
        ]

    def cleanup(self) -> None:
        for entry in list(Path("/etc/netns").glob(f"{self.prefix}-*")):
            shutil.rmtree(entry, ignore_errors=True)
        remove_everything_named(self.prefix, self.options.bridge)
        for address in self.addresses_used:  # held on lo by a node without pod networks
            subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True)


@pytest.fixture
async def cluster(
    nc: Any, store: EventStore, gateway: Gateway, client: CommandClient, tmp_path: Path
) -> AsyncIterator[Cluster]:
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    running = Cluster(nc, store, client, tmp_path / "agent")
    await running.upstream.start()
    await running.projection.catch_up()
    await running.projection.follow()
    ipam = NodeIPAMController(
        AggregateRepository(store), running.projection,
        await LeaderLease.open(nc, "node-ipam-controller"), cluster=running.cluster,
    )  # fmt: skip
    slices = await EndpointSliceController.create(
        nc, running.projection, period_seconds=0.1, retry_seconds=0.2
    )
    scheduler = Scheduler(nc, store, share_work=False, initial_backoff=0.05, max_backoff=0.2)
    roles = []
    for role in (ipam.run, slices.run, scheduler.run):
        ready = asyncio.Event()
        roles.append(asyncio.create_task(role(ready)))
        await ready.wait()
    await running.apply("Namespace", "shop")
    try:
        yield running
    finally:
        await running.stop_agent()
        for task in roles:
            task.cancel()
        await asyncio.gather(*roles, return_exceptions=True)
        running.runtime.cleanup()
        await running.projection.stop()
        await running.upstream.stop()
        running.cleanup()


CLIENT = """
import socket, subprocess
for name in ("web", "web.shop", "web.shop.svc.cluster.local"):
    print(name, socket.gethostbyname(name), flush=True)
try:
    socket.gethostbyname("nosuch")
    print("nosuch resolved")
except socket.gaierror:
    print("nosuch unresolved")
got = subprocess.run(["getent", "hosts", "web"], capture_output=True, text=True)
print("getent", got.stdout.split()[:1], got.returncode, got.stderr)
print("resolv.conf", open("/etc/resolv.conf").read().replace("\\n", "|"))
"""

SHOW_RESOLV = "print('resolv.conf', open('/etc/resolv.conf').read().replace('\\n', '|'))"


async def test_a_pod_resolves_services_by_short_names_through_its_resolv_conf(
    cluster: Cluster,
) -> None:
    await cluster.start_agent(cluster.dns_options())
    await cluster.dns_held()
    await cluster.apply("Service", "web", spec={"ports": [{"name": "http", "port": 80}]})
    await cluster.projection.wait_for_log_end()
    record = cluster.projection.model.get("Service", "shop", "web")
    assert record is not None
    web_ip = record.manifest["spec"]["clusterIP"]

    never = {"restartPolicy": "Never"}
    await cluster.apply(
        "Pod", "client", spec={"containers": [container("c", [PY, "-c", CLIENT])], **never}
    )
    await cluster.apply(
        "Pod", "hostnet", spec={
            "containers": [container("c", [PY, "-c", CLIENT])], "hostNetwork": True,
            "dnsPolicy": "ClusterFirstWithHostNet", **never,
        },
    )  # fmt: skip
    await cluster.apply(
        "Pod", "hostdefault", spec={
            "containers": [container("c", [PY, "-c", SHOW_RESOLV])], "hostNetwork": True, **never,
        },
    )  # fmt: skip
    await cluster.apply(
        "Pod", "custom", spec={
            "containers": [container("c", [PY, "-c", SHOW_RESOLV])], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["192.0.2.53"], "searches": ["example.test"],
                          "options": [{"name": "ndots", "value": "2"}]},
            **never,
        },
    )  # fmt: skip
    await cluster.finished("client", "hostnet", "hostdefault", "custom")

    cluster_view = (
        f"resolv.conf search shop.{ZONE} {ZONE} cluster.local corp.test"
        f"|nameserver {cluster.address}|options ndots:5|"
    )
    for pod in ("client", "hostnet"):
        lines = cluster.output(pod).splitlines()
        assert lines[:3] == [
            f"web {web_ip}",
            f"web.shop {web_ip}",
            f"web.shop.svc.cluster.local {web_ip}",
        ], lines
        assert lines[3] == "nosuch unresolved"
        assert lines[4] == f"getent ['{web_ip}'] 0 ", lines
        assert lines[5] == cluster_view
    # A host-network pod with the default policy keeps the node's own file.
    node_file = read("/etc/resolv.conf").replace("\n", "|")
    assert cluster.output("hostdefault").strip() == f"resolv.conf {node_file}"
    assert cluster.output("custom").strip() == (
        "resolv.conf search example.test|nameserver 192.0.2.53|options ndots:2|"
    )
    # The unknown name went through the search path: cluster names answered here, the rest
    # (the node's search domain, then the name itself) by the fake upstream only.
    asked = {name for name, _, _ in cluster.upstream.asked}
    assert {"nosuch.corp.test.", "nosuch."} <= asked
    assert not any(name.endswith("cluster.local.") for name in asked)

    # The files go with their pods' networks: the finished pods' are gone already (the
    # host-network pod's alias too); a running pod's stays until it is deleted.
    await cluster.apply("Pod", "sleeper", spec={"containers": [container("c", SLEEP)]})

    async def only_sleepers_file() -> bool:
        record = cluster.projection.model.get("Pod", "shop", "sleeper")
        if record is None or not (record.manifest.get("status") or {}).get("podIP"):
            return False
        held = entries("/etc/netns", f"{cluster.prefix}-*")
        aliases = entries("/run/netns", f"{cluster.prefix}-h-*")
        return held == {f"{cluster.prefix}-{record.uid}"} and not aliases

    await eventually(only_sleepers_file, timeout=20)
    await cluster.client.send("Pod", "delete", {"namespace": "shop", "name": "sleeper"})

    async def files_gone() -> bool:
        return not entries("/etc/netns", f"{cluster.prefix}-*")

    await eventually(files_gone, timeout=20)


async def test_a_headless_services_answer_follows_its_pods_readiness(
    cluster: Cluster, tmp_path: Path
) -> None:
    await cluster.start_agent(cluster.dns_options())
    await cluster.dns_held()
    selector = {"app": "db"}
    ports = [{"name": "db", "port": 5432}]
    await cluster.apply("Service", "db", spec={"clusterIP": "None", "selector": selector,
                                                 "ports": ports})  # fmt: skip
    await cluster.apply(
        "Service", "db-all",
        spec={"clusterIP": "None", "selector": selector, "ports": ports,
              "publishNotReadyAddresses": True},
    )  # fmt: skip
    for name in ("db-0", "db-1"):
        probe = {"exec": {"command": ["test", "-f", str(tmp_path / f"ready-{name}")]},
                 "periodSeconds": 1}  # fmt: skip
        await cluster.apply(
            "Pod", name, metadata={"labels": selector},
            spec={"hostname": name, "subdomain": "db",
                  "containers": [container("db", SLEEP, readinessProbe=probe)]},
        )  # fmt: skip

    async def answer(name: str) -> tuple[int, list[str]]:
        reply = await ask(name, server=cluster.address, port=53)
        return reply.rcode(), addresses(reply)

    async def pod_ips() -> bool:
        return all((cluster.pod(n).get("status") or {}).get("podIP") for n in ("db-0", "db-1"))

    await eventually(pod_ips, timeout=30)
    ip0, ip1 = (cluster.pod(n)["status"]["podIP"] for n in ("db-0", "db-1"))

    async def shows(name: str, expected: tuple[int, list[str]]) -> None:
        async def check() -> bool:
            return await answer(name) == expected

        await eventually(check, timeout=20)

    # Not ready: no address (NXDOMAIN), except where not-ready addresses are published.
    await shows(f"db-all.shop.{ZONE}", (dns.rcode.NOERROR, sorted([ip0, ip1])))
    await shows(f"db.shop.{ZONE}", (dns.rcode.NXDOMAIN, []))
    (tmp_path / "ready-db-0").touch()
    await shows(f"db.shop.{ZONE}", (dns.rcode.NOERROR, [ip0]))
    await shows(f"db-0.db.shop.{ZONE}", (dns.rcode.NOERROR, [ip0]))
    (tmp_path / "ready-db-1").touch()
    await shows(f"db.shop.{ZONE}", (dns.rcode.NOERROR, sorted([ip0, ip1])))
    (tmp_path / "ready-db-0").unlink()
    await shows(f"db.shop.{ZONE}", (dns.rcode.NOERROR, [ip1]))
    await shows(f"db-0.db.shop.{ZONE}", (dns.rcode.NXDOMAIN, []))
    srv = await ask(f"_db._tcp.db.shop.{ZONE}", "SRV", server=cluster.address, port=53)
    assert [r.to_text() for r in srv.answer[0]] == [f"0 100 5432 db-1.db.shop.{ZONE}."]


async def test_an_agent_restart_leaves_one_dns_address_where_it_should_be(
    cluster: Cluster,
) -> None:
    await cluster.start_agent(cluster.dns_options())
    await cluster.dns_held()
    await cluster.apply("Service", "web", spec={"ports": [{"name": "http", "port": 80}]})

    async def answers(address: str) -> bool:
        try:
            reply = await ask(f"web.shop.{ZONE}", server=address, port=53)
        except Exception:
            return False
        return reply.rcode() == dns.rcode.NOERROR and len(addresses(reply)) == 1

    await eventually(lambda: answers(cluster.address), timeout=10)
    # Stopped, the address stays (a pod's query fails at once rather than leaving the node);
    # started again, it is held once and answered.
    await cluster.stop_agent()
    assert cluster.bridge_addresses().count(f"{cluster.address}/32") == 1
    await cluster.start_agent(cluster.dns_options())
    await eventually(lambda: answers(cluster.address), timeout=10)
    assert cluster.bridge_addresses().count(f"{cluster.address}/32") == 1
    # Another address: the old one is removed.
    await cluster.stop_agent()
    moved = unique_dns_address()
    while moved == cluster.address:
        moved = unique_dns_address()
    cluster.addresses_used.add(moved)
    await cluster.start_agent(cluster.dns_options(moved))
    await eventually(lambda: answers(moved), timeout=10)
    held = cluster.bridge_addresses()
    assert f"{moved}/32" in held and f"{cluster.address}/32" not in held
    record = json.loads((cluster.root / "dns" / "address.json").read_text())
    assert record == {"address": moved, "device": cluster.options.bridge}
    # No cluster DNS any more: nothing of it is left.
    await cluster.stop_agent()
    await cluster.start_agent(None)
    held = cluster.bridge_addresses()
    # Neither DNS address (the service proxy's /32s, ClusterIPs such as web's, may be there:
    # this once asserted no /32 at all, which held only while the proxy was not yet running).
    assert f"{moved}/32" not in held and f"{cluster.address}/32" not in held, held
    assert not (cluster.root / "dns" / "address.json").exists()


async def test_without_pod_networks_the_address_is_on_lo_and_pods_still_resolve(
    cluster: Cluster,
) -> None:
    bridged = cluster.options
    cluster.options = NetworkOptions(bridge=bridged.bridge, prefix=bridged.prefix, enabled=False)
    await cluster.start_agent(cluster.dns_options())

    async def on_lo() -> bool:
        return f"{cluster.address}/32" in cluster.lo_addresses()

    await eventually(on_lo, timeout=20)
    await cluster.apply("Service", "web", spec={"ports": [{"name": "http", "port": 80}]})
    await cluster.projection.wait_for_log_end()
    record = cluster.projection.model.get("Service", "shop", "web")
    assert record is not None
    # A pod that asked for a network of its own runs in the node's, and still gets the
    # cluster's resolver (through an alias of the node's namespace).
    await cluster.apply(
        "Pod", "client",
        spec={"containers": [container("c", [PY, "-c", CLIENT])], "restartPolicy": "Never"},
    )  # fmt: skip
    await cluster.finished("client")
    lines = cluster.output("client").splitlines()
    assert lines[0] == f"web {record.manifest['spec']['clusterIP']}"
    assert lines[5].startswith("resolv.conf search shop.svc.cluster.local")
    # With pod networks again, the address moves to the bridge: none is left on lo.
    await cluster.stop_agent()
    cluster.options = bridged
    await cluster.start_agent(cluster.dns_options())
    await cluster.dns_held()
    assert f"{cluster.address}/32" not in cluster.lo_addresses()
