"""The agent's UDP relay on real sockets (loopback only, no cluster): flows balanced on their
first datagram and kept, answers from the address the client wrote to (a connected client
socket drops any other), flows ended when their endpoint leaves, refuses or idles out, so
the same client socket's next datagram is balanced again.

Endpoints are echo servers on this test's event loop that answer ``<name>:<datagram>``;
clients are blocking sockets in threads.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from core.services.balancing import Endpoint
from handlers.agent.udprelay import UdpRelay
from streams.server import free_port


class _Echo(asyncio.DatagramProtocol):
    def __init__(self, name: bytes) -> None:
        self.name = name
        self.transport: Any = None
        self.peers: set[tuple[str, int]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.peers.add(addr)
        self.transport.sendto(self.name + b":" + data, addr)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def echoes() -> AsyncIterator[dict[str, tuple[Endpoint, _Echo]]]:
    loop = asyncio.get_running_loop()
    made = {}
    for name in ("a", "b"):
        port = free_udp_port()
        _, protocol = await loop.create_datagram_endpoint(
            lambda n=name: _Echo(n.encode()), local_addr=("127.0.0.1", port)
        )
        made[name] = (Endpoint("127.0.0.1", port), protocol)
    yield made
    for _, protocol in made.values():
        assert protocol.transport is not None
        protocol.transport.close()


def round_robin(*endpoints: Endpoint) -> tuple[Callable[[str], Endpoint], list[Endpoint]]:
    """A picker taking the endpoints in turn, and the list of what it picked."""
    picked: list[Endpoint] = []
    cycle = itertools.cycle(endpoints)

    def pick(_client: str) -> Endpoint:
        picked.append(next(cycle))
        return picked[-1]

    return pick, picked


class Client:
    """A client socket connected to the frontend: it sees only answers sent from there."""

    def __init__(self, host: str, port: int, *, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.sock.settimeout(2)

    def ask(self, text: str) -> str:
        self.sock.send(text.encode())
        return self.sock.recv(2048).decode()

    async def asks(self, text: str) -> str:
        return await asyncio.to_thread(self.ask, text)

    def close(self) -> None:
        self.sock.close()


async def test_flows_stick_to_their_endpoint_and_answers_come_from_the_frontend(
    echoes: dict[str, tuple[Endpoint, _Echo]],
) -> None:
    (a, echo_a), (b, _) = echoes["a"], echoes["b"]
    pick, picked = round_robin(a, b)
    opened, ended = [], []
    relay = UdpRelay(pick=pick, started=lambda c, e: opened.append((c, e)), ended=ended.append)
    port = free_udp_port()
    relay.open("127.0.0.1", port)
    first, second = Client("127.0.0.1", port), Client("127.0.0.1", port)
    try:
        assert await first.asks("1") == "a:1"
        assert await second.asks("1") == "b:1"
        for n in range(2, 6):  # each flow stays where its first datagram went
            assert await first.asks(str(n)) == f"a:{n}"
            assert await second.asks(str(n)) == f"b:{n}"
        assert picked == [a, b] and [e for _, e in opened] == [a, b]
        assert {c for c, _ in opened} == {"127.0.0.1"}
        flows = {f.endpoint: f for f in relay.flows}
        assert flows[a].datagrams == 5 and flows[a].stream
        assert len(echo_a.peers) == 1  # one flow: one socket towards the endpoint
    finally:
        first.close()
        second.close()
        relay.close()
    assert sorted(ended) == sorted([a, b]) and not relay.listening


async def test_an_endpoint_that_leaves_takes_its_flows_and_the_client_moves_on(
    echoes: dict[str, tuple[Endpoint, _Echo]],
) -> None:
    (a, _), (b, _) = echoes["a"], echoes["b"]
    usable = [a, b]
    relay = UdpRelay(pick=lambda _c: usable[0])
    port = free_udp_port()
    relay.open("127.0.0.1", port)
    client = Client("127.0.0.1", port)
    try:
        assert await client.asks("x") == "a:x"
        usable.remove(a)
        relay.retain(usable)
        assert len(relay.flows) == 0
        assert await client.asks("y") == "b:y"  # the same client socket: a new flow
    finally:
        client.close()
        relay.close()


async def test_an_endpoint_that_refuses_ends_the_flow_and_the_next_datagram_picks_again(
    echoes: dict[str, tuple[Endpoint, _Echo]],
) -> None:
    (a, _) = echoes["a"]
    closed = Endpoint("127.0.0.1", free_udp_port())  # nothing listens: port unreachable
    pick, picked = round_robin(closed, a)
    relay = UdpRelay(pick=pick)
    port = free_udp_port()
    relay.open("127.0.0.1", port)
    client = Client("127.0.0.1", port)
    client.sock.settimeout(0.5)
    try:
        with pytest.raises(TimeoutError):  # lost, as a datagram to a closed port is
            await client.asks("1")
        assert len(relay.flows) == 0  # the refusal ended the flow
        client.sock.settimeout(2)
        assert await client.asks("2") == "a:2"
        assert picked == [closed, a]
    finally:
        client.close()
        relay.close()


async def test_a_flow_idle_past_its_timeout_is_balanced_again(
    echoes: dict[str, tuple[Endpoint, _Echo]],
) -> None:
    (a, _), (b, _) = echoes["a"], echoes["b"]
    pick, _ = round_robin(a, b)
    relay = UdpRelay(pick=pick, timeout=0.3, stream_timeout=0.3)
    port = free_udp_port()
    relay.open("127.0.0.1", port)
    client = Client("127.0.0.1", port)
    try:
        assert await client.asks("1") == "a:1"
        assert await client.asks("2") == "a:2"
        await asyncio.sleep(0.5)
        assert await client.asks("3") == "b:3"
    finally:
        client.close()
        relay.close()


async def test_a_relay_on_every_address_answers_from_the_one_written_to(
    echoes: dict[str, tuple[Endpoint, _Echo]],
) -> None:
    (a, _) = echoes["a"]
    relay = UdpRelay(pick=lambda _c: a)
    port = free_port()
    relay.open("0.0.0.0", port)
    clients = [Client(host, port) for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3")]
    try:
        for n, client in enumerate(clients):
            # A connected socket drops an answer from any other address than 127.0.0.x.
            assert await client.asks(str(n)) == f"a:{n}"
    finally:
        for client in clients:
            client.close()
        relay.close()


async def test_a_full_flow_table_ends_the_oldest_flow_to_make_room(
    echoes: dict[str, tuple[Endpoint, _Echo]],
) -> None:
    (a, _), (b, _) = echoes["a"], echoes["b"]
    pick, picked = round_robin(a, b)
    relay = UdpRelay(pick=pick, max_flows=1)
    port = free_udp_port()
    relay.open("127.0.0.1", port)
    first, second = Client("127.0.0.1", port), Client("127.0.0.1", port)
    try:
        assert await first.asks("1") == "a:1"
        assert await second.asks("1") == "b:1"  # the first flow made room for it
        assert len(relay.flows) == 1
        assert await first.asks("2") == "a:2"  # a new flow, picked again
        assert picked == [a, b, a]
    finally:
        first.close()
        second.close()
        relay.close()
