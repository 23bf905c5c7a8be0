"""The node's cluster DNS server on the wire: a real nats-server, services and endpoint slices
written through the gateway, the server (``handlers.agent.dns.ClusterDNS``) on a loopback port,
queried with dnspython over UDP and TCP; names outside the cluster reach a fake upstream on
loopback (never the machine's own resolvers). Bad input is answered FORMERR or dropped, and
the server keeps answering."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from handlers.agent.dns import ClusterDNS, DNSOptions, ZoneFollower
from handlers.gateway import Gateway
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.server import free_port
from tests.integration.agent.dns_support import FakeUpstream, addresses, ask, raw_udp
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

ZONE = "svc.cluster.local"


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"name": "http", "port": 80, "protocol": "TCP"}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    }


def endpoint_slice(name: str, service_name: str, *endpoints: dict[str, Any]) -> dict[str, Any]:
    """A slice as a client may keep it for a service without a selector."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {
                "kubernetes.io/service-name": service_name,
                "endpointslice.kubernetes.io/managed-by": "test.fleetlog.dev",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


class Server:
    def __init__(self, dns: ClusterDNS, upstream: FakeUpstream, client: CommandClient) -> None:
        self.dns, self.upstream, self.client = dns, upstream, client
        self.address, self.port = dns.options.address, dns.options.port

    async def ask(self, name: str, qtype: str = "A", **more: Any) -> dns.message.Message:
        return await ask(name, qtype, server=self.address, port=self.port, **more)

    async def apply(self, manifest: dict[str, Any]) -> None:
        outcome = await self.client.send(manifest["kind"], "apply", {"manifest": manifest})
        await self.seen(outcome)

    async def seen(self, outcome: Any) -> None:
        """Until the server's follower has applied the command's events of its kinds."""
        for event_type, seq in zip(outcome.events, outcome.seqs, strict=True):
            kind = next((k for k in ZoneFollower.KINDS if event_type.startswith(k)), None)
            if kind is not None:
                assert await self.dns.follower.wait_for(kind, seq)


@pytest.fixture
async def server(
    store: EventStore, gateway: Gateway, client: CommandClient, tmp_path: Path
) -> AsyncIterator[Server]:
    upstream = FakeUpstream()
    await upstream.start()
    options = DNSOptions(
        address="127.0.0.1", port=free_port(), upstreams=(f"127.0.0.1:{upstream.port}",),
        forward_timeout=1.0,
    )  # fmt: skip
    cluster_dns = ClusterDNS(store, options, root=tmp_path / "agent")
    await cluster_dns.start()
    assert cluster_dns.listening
    running = Server(cluster_dns, upstream, client)
    await running.apply(namespace("shop"))
    try:
        yield running
    finally:
        await cluster_dns.stop()
        await upstream.stop()


async def test_services_answer_a_srv_headless_and_external_name_records_over_udp_and_tcp(
    server: Server,
) -> None:
    await server.apply(
        service("web", ports=[
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "protocol": "TCP"},
        ])
    )  # fmt: skip
    await server.apply(service("db", clusterIP="None", ports=[{"name": "db", "port": 5432}]))
    await server.apply(
        endpoint_slice(
            "db-1", "db",
            {"addresses": ["100.96.0.5"], "hostname": "db-0", "conditions": {"ready": True}},
            {"addresses": ["100.96.0.6"], "conditions": {"ready": True}},
            {"addresses": ["100.96.0.7"], "conditions": {"ready": False}},
        )
    )  # fmt: skip
    await server.apply(service("pay", type="ExternalName", externalName="pay.example.test"))
    record = server.dns.zone._services[("shop", "web")]
    web_ip = record.cluster_ips[0]

    for tcp in (False, True):
        a = await server.ask(f"web.shop.{ZONE}", tcp=tcp)
        assert a.rcode() == dns.rcode.NOERROR and a.flags & dns.flags.AA
        assert addresses(a) == [web_ip] and a.answer[0].ttl == 30

        srv = await server.ask(f"_metrics._tcp.web.shop.{ZONE}", "SRV", tcp=tcp)
        assert [r.to_text() for r in srv.answer[0]] == [f"0 100 9090 web.shop.{ZONE}."]
        assert addresses(srv) == [] and srv.additional[0].to_text().endswith(f"A {web_ip}")

        headless = await server.ask(f"db.shop.{ZONE}", tcp=tcp)
        assert addresses(headless) == ["100.96.0.5", "100.96.0.6"]
        # The addresses take turns at the top (a stub resolver uses the first).
        firsts = set()
        for _ in range(4):
            reply = await server.ask(f"db.shop.{ZONE}", tcp=tcp)
            firsts.add(next(iter(reply.answer[0])).to_text())
        assert firsts == {"100.96.0.5", "100.96.0.6"}
        pet = await server.ask(f"db-0.db.shop.{ZONE}", tcp=tcp)
        assert addresses(pet) == ["100.96.0.5"]
        srv = await server.ask(f"_db._tcp.db.shop.{ZONE}", "SRV", tcp=tcp)
        assert sorted(r.to_text() for r in srv.answer[0]) == [
            f"0 50 5432 100-96-0-6.db.shop.{ZONE}.",
            f"0 50 5432 db-0.db.shop.{ZONE}.",
        ]

        external = await server.ask(f"pay.shop.{ZONE}", tcp=tcp)
        assert external.answer[0].to_text() == f"pay.shop.{ZONE}. 30 IN CNAME pay.example.test."
        assert addresses(external) == ["192.0.2.1"]  # from the upstream

        pod = await server.ask("100-96-0-9.shop.pod.cluster.local", tcp=tcp)
        assert addresses(pod) == ["100.96.0.9"]

        ptr = await server.ask(".".join(reversed(web_ip.split("."))) + ".in-addr.arpa", "PTR")
        assert ptr.answer[0][0].to_text() == f"web.shop.{ZONE}."

        # The search path of a pod in shop asking for `web.shop`: first candidate unknown.
        missing = await server.ask(f"web.shop.shop.{ZONE}", tcp=tcp)
        assert missing.rcode() == dns.rcode.NXDOMAIN and missing.answer == []
        assert (
            missing.authority[0]
            .to_text()
            .startswith("cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local.")
        )
        nodata = await server.ask(f"web.shop.{ZONE}", "AAAA", tcp=tcp)
        assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
        assert nodata.authority[0].rdtype == dns.rdatatype.SOA


async def test_names_outside_the_cluster_go_to_the_upstream_over_udp_and_tcp(
    server: Server,
) -> None:
    udp = await server.ask("shop.example.test")
    assert addresses(udp) == ["192.0.2.1"] and not udp.flags & dns.flags.AA
    tcp = await server.ask("tcp.example.test", tcp=True)
    assert addresses(tcp) == ["192.0.2.1"]
    unknown = await server.ask("nowhere.invalid")
    assert unknown.rcode() == dns.rcode.NXDOMAIN
    # A truncated upstream answer over UDP is asked again over TCP, and cut for the client.
    many = await server.ask("many.example.test")
    assert many.flags & dns.flags.TC
    many = await server.ask("many.example.test", tcp=True)
    assert len(addresses(many)) == 80
    assert ("shop.example.test.", "A", "udp") in server.upstream.asked
    assert ("tcp.example.test.", "A", "tcp") in server.upstream.asked
    assert ("many.example.test.", "A", "tcp") in server.upstream.asked
    # Cluster names never reach the upstream.
    await server.ask(f"nothing.shop.{ZONE}")
    assert not any("cluster.local" in name for name, _, _ in server.upstream.asked)
    assert server.dns.server.counts["forwarded"] >= 4


async def test_an_unreachable_upstream_is_servfail(server: Server) -> None:
    await server.upstream.stop()
    failed = await server.ask("gone.example.test")
    assert failed.rcode() == dns.rcode.SERVFAIL


async def test_a_large_answer_is_truncated_over_udp_unless_edns0_offers_room(
    server: Server,
) -> None:
    await server.apply(service("big", clusterIP="None", ports=[{"name": "db", "port": 5432}]))
    await server.apply(
        endpoint_slice(
            "big-1", "big",
            *({"addresses": [f"100.96.1.{i}"], "conditions": {"ready": True}}
              for i in range(2, 62)),
        )
    )  # fmt: skip
    plain = await server.ask(f"big.shop.{ZONE}")
    assert plain.flags & dns.flags.TC and len(plain.to_wire()) <= 512
    whole = await server.ask(f"big.shop.{ZONE}", tcp=True)
    assert len(addresses(whole)) == 60 and not whole.flags & dns.flags.TC
    edns = await server.ask(f"big.shop.{ZONE}", edns=4096)
    assert len(addresses(edns)) == 60 and not edns.flags & dns.flags.TC


async def test_bad_input_gets_formerr_or_is_dropped_and_the_server_keeps_answering(
    server: Server,
) -> None:
    await server.apply(service("web"))
    where = {"server": server.address, "port": server.port}
    good = dns.message.make_query(f"web.shop.{ZONE}", "A").to_wire()

    # A header that promises a question that is not there: FORMERR, with the query's id.
    garbage = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x07garbage"
    reply = await raw_udp(garbage, **where)
    assert reply is not None
    flags = struct.unpack("!HH", reply[:4])
    assert flags[0] == 0xBEEF and flags[1] & 0x8000 and flags[1] & 0xF == dns.rcode.FORMERR
    # Two questions: FORMERR (one question per query).
    two = bytearray(good)
    two[4:6] = struct.pack("!H", 2)
    reply = await raw_udp(bytes(two) + good[12:], **where)
    assert reply is not None and reply[3] & 0xF == dns.rcode.FORMERR
    # A non-query opcode: NOTIMP.
    update = bytearray(good)
    update[2] |= 5 << 3
    reply = await raw_udp(bytes(update), **where)
    assert reply is not None and reply[3] & 0xF == dns.rcode.NOTIMP
    # EDNS version 1: BADVERS.
    query = dns.message.make_query(f"web.shop.{ZONE}", "A", use_edns=1)
    reply = await raw_udp(query.to_wire(), **where)
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.BADVERS
    # Dropped: shorter than a header, larger than 4096 bytes, a response.
    assert await raw_udp(b"\x01\x02\x03", **where) is None
    assert await raw_udp(good + b"\x00" * 5000, **where) is None
    response = bytearray(good)
    response[2] |= 0x80
    assert await raw_udp(bytes(response), **where) is None
    # Over TCP an oversize length prefix closes the connection.
    reader, writer = await asyncio.open_connection(server.address, server.port)
    writer.write(struct.pack("!H", 60000) + b"\x00" * 100)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    # A burst of random datagrams with valid headers does not stop it either.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(200):
        sock.sendto(struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + bytes([i]) * 20, (
            server.address, server.port))  # fmt: skip
    sock.close()
    counts = server.dns.server.counts

    async def all_seen() -> bool:
        return counts["formerr"] >= 202

    await eventually(all_seen, timeout=5)
    still = await server.ask(f"web.shop.{ZONE}")
    assert still.rcode() == dns.rcode.NOERROR and len(addresses(still)) == 1
    assert counts["dropped_short"] == 1 and counts["dropped_response"] == 1
    assert counts["dropped_oversize"] == 2 and counts["errors"] == 0


async def test_answers_follow_services_and_namespaces_coming_and_going(server: Server) -> None:
    assert (await server.ask(f"web.shop.{ZONE}")).rcode() == dns.rcode.NXDOMAIN
    await server.apply(service("web"))
    assert (await server.ask(f"web.shop.{ZONE}")).rcode() == dns.rcode.NOERROR
    await server.seen(
        await server.client.send("Service", "delete", {"namespace": "shop", "name": "web"})
    )
    assert (await server.ask(f"web.shop.{ZONE}")).rcode() == dns.rcode.NXDOMAIN
    # A namespace that does not exist has no names; one that does answers NODATA.
    assert (await server.ask(f"lab.{ZONE}")).rcode() == dns.rcode.NXDOMAIN
    await server.apply(namespace("lab"))
    empty = await server.ask(f"lab.{ZONE}")
    assert empty.rcode() == dns.rcode.NOERROR and empty.answer == []
