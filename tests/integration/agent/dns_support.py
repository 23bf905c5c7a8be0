"""Helpers for the cluster DNS tests: a fake upstream resolver on loopback, and queries.

The fake upstream stands in for the node's own resolvers, so that no test ever sends a
query off the machine: it answers names under ``example.test`` (RFC 6761's reserved test
domain) with documentation addresses (192.0.2.0/24, never contacted), ``NXDOMAIN`` for the
rest, over UDP and TCP, and remembers every question it was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

UPSTREAM_DOMAIN = "example.test."


class FakeUpstream:
    def __init__(self) -> None:
        self.port = 0
        self.asked: list[tuple[str, str, str]] = []
        """(name, type, "udp"/"tcp") of every question."""
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def reply(self, wire: bytes, transport: str) -> bytes:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text().lower()
        self.asked.append((name, dns.rdatatype.to_text(question.rdtype), transport))
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.RA
        if name.endswith(UPSTREAM_DOMAIN) and question.rdtype == dns.rdatatype.A:
            count = 80 if name.startswith("many.") else 1
            addresses = [f"192.0.2.{i + 1}" for i in range(count)]
            reply.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", "A", addresses))
        elif not name.endswith(UPSTREAM_DOMAIN):
            reply.set_rcode(dns.rcode.NXDOMAIN)
        limit = 65535 if transport == "tcp" else 512
        return reply.to_wire(max_size=limit, prefer_truncation=True)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = self

        class Protocol(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.transport.sendto(upstream.reply(data, "udp"), addr)  # type: ignore[attr-defined]

        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:
            raise RuntimeError("no free port for the fake upstream")
        self.port = port
        transport, _ = await loop.create_datagram_endpoint(Protocol, sock=udp)
        self._udp = transport  # type: ignore[assignment]
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                reply = self.reply(await reader.readexactly(size), "tcp")
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


async def ask(
    name: str,
    qtype: str = "A",
    *,
    server: str,
    port: int,
    tcp: bool = False,
    edns: int | None = None,
) -> dns.message.Message:
    """One query to ``server``, as a stub resolver sends it (recursion desired)."""
    query = dns.message.make_query(name, qtype, use_edns=edns is not None, payload=edns or 1232)
    if tcp:
        return await dns.asyncquery.tcp(query, server, timeout=3, port=port)
    return await dns.asyncquery.udp(query, server, timeout=3, port=port, raise_on_truncation=False)


def addresses(message: dns.message.Message, rtype: str = "A") -> list[str]:
    return sorted(
        item.to_text()
        for rrset in message.answer
        if dns.rdatatype.to_text(rrset.rdtype) == rtype
        for item in rrset
    )


async def raw_udp(payload: bytes, *, server: str, port: int, timeout: float = 0.5) -> bytes | None:
    """Send raw bytes; the reply, or None when none came within ``timeout``."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Protocol, remote_addr=(server, port))
    try:
        transport.sendto(payload)
        try:
            return await asyncio.wait_for(got, timeout)
        except TimeoutError:
            return None
    finally:
        transport.close()
