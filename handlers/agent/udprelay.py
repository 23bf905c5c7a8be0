"""A UDP relay in the agent: datagrams arriving at a frontend (a ClusterIP:port, a node port, a
host port) sent on per client flow to an endpoint, and the endpoint's answers sent back to the
client from the address it wrote to.

Why this exists: the node's service proxy (``proxy``) and a pod's host ports (``hostports``)
forward UDP as well as TCP, and both need the same thing done the same way. UDP has no
connection, so what a policy balances is a *flow* (``core.services.flows``: a client's
``ip:port`` to one frontend, with conntrack's idle timeouts); each flow has a socket of its
own connected to its endpoint, so the kernel sorts the answers by flow and reports an
endpoint that refuses ("port unreachable") on that socket alone. How it is built:

* **Listening.** One non-blocking socket per frontend address, read with the event loop's
  reader callbacks (no asyncio transport: an answer must be *sent from* the address the
  client wrote to). A socket bound to a single address (a ClusterIP, a host port's
  ``hostIP``) answers from it as it is; one bound to every address (``0.0.0.0``: node ports,
  host ports without ``hostIP``) reads each datagram's destination (``IP_PKTINFO``) and
  answers from that address, or a client that connected its socket to a secondary address of
  the node would drop the answer.
* **Flows.** The first datagram of a flow is given to ``pick`` (the service's policy and
  affinity); the flow's later datagrams follow it. An endpoint that leaves the usable set
  (:meth:`UdpRelay.retain`), refuses, or a flow idle past its timeout (swept every few
  seconds) ends the flow and closes its socket; the client's next datagram is a new flow. A
  full table (``MAX_FLOWS`` per frontend) makes room as conntrack does, said once.
* **Bursts.** At most :data:`READ_BATCH` datagrams are read per wake-up, so one busy client
  cannot starve the loop; a datagram that finds a send buffer full is dropped, as the network
  would drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterable

import structlog

from core.services.balancing import Endpoint
from core.services.flows import MAX_FLOWS, UDP_STREAM_TIMEOUT_S, UDP_TIMEOUT_S, Flow, FlowTable

log = structlog.get_logger(__name__)

IP_PKTINFO = 8
"""Linux's ``IP_PKTINFO`` (Python 3.11's socket module lacks the name)."""
IP_FREEBIND = 15
PKTINFO = struct.Struct("=I4s4s")
"""``struct in_pktinfo``: interface index, local (source) address, header destination."""
PKTINFO_SPACE = socket.CMSG_SPACE(PKTINFO.size)
MAX_DATAGRAM = 65535
READ_BATCH = 64
SWEEP_S = 5.0
"""How often idle flows are looked for (their timeouts are 30 s and 120 s)."""

Client = tuple[str, int]
FlowKey = tuple[int, Client]
"""(the listener it arrived on, the client's address and port)."""


class _Listener:
    """One bound socket of the relay."""

    __slots__ = ("index", "sock", "wildcard")

    def __init__(self, index: int, sock: socket.socket, *, wildcard: bool) -> None:
        self.index = index
        self.sock = sock
        self.wildcard = wildcard

    def answer(self, data: bytes, client: Client, local: bytes | None) -> None:
        """Send ``data`` to ``client`` from the address it wrote to (``local``, for a socket
        bound to every address)."""
        try:
            if self.wildcard and local is not None:
                info = PKTINFO.pack(0, local, b"\0\0\0\0")
                self.sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, client)
            else:
                self.sock.sendto(data, client)
        except OSError:  # a full buffer or an unreachable client: dropped, as UDP may be
            pass


class _Upstream:
    """A flow's own socket, connected to its endpoint."""

    __slots__ = ("listener", "local", "sock")

    def __init__(self, sock: socket.socket, listener: _Listener, local: bytes | None) -> None:
        self.sock = sock
        self.listener = listener
        self.local = local


def _bound(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # The address may be (re)added a moment later (a bridge made again): bind anyway.
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if host == "0.0.0.0":
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpRelay:
    """The UDP side of one frontend (see the module docstring).

    ``pick`` chooses the endpoint of a new flow from the client's address (None: nowhere to
    go, the datagram is dropped); ``started`` is told of each new flow's client address and
    endpoint (for ClientIP affinity), ``ended`` of the endpoint of each flow that ends
    (LEAST_REQUEST counts flows in flight as it counts connections).
    """

    def __init__(
        self,
        *,
        pick: Callable[[str], Endpoint | None],
        started: Callable[[str, Endpoint], None] | None = None,
        ended: Callable[[Endpoint], None] | None = None,
        timeout: float = UDP_TIMEOUT_S,
        stream_timeout: float = UDP_STREAM_TIMEOUT_S,
        max_flows: int = MAX_FLOWS,
        name: str = "",
    ) -> None:
        self._pick = pick
        self._started = started
        self._ended = ended
        self.name = name
        self.flows: FlowTable[FlowKey] = FlowTable(
            timeout=timeout, stream_timeout=stream_timeout, limit=max_flows
        )
        self._listeners: list[_Listener] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full_said = False

    @property
    def listening(self) -> bool:
        return bool(self._listeners)

    def open(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (``0.0.0.0``: every address of the node); ``OSError`` when
        the port cannot be had."""
        self._loop = asyncio.get_running_loop()
        sock = _bound(host, port)
        listener = _Listener(len(self._listeners), sock, wildcard=host == "0.0.0.0")
        self._listeners.append(listener)
        self._loop.add_reader(sock.fileno(), self._from_clients, listener)

    def retain(self, endpoints: Iterable[Endpoint]) -> None:
        """The endpoints new flows may go to now: flows to any other end at once."""
        for flow in self.flows.leaving(endpoints):
            self._end(flow)

    def close(self) -> None:
        """Stop listening and end every flow."""
        for flow in self.flows.clear():
            self._end(flow)
        for listener in self._listeners:
            self._forget(listener.sock)
        self._listeners.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # -- datagrams ----------------------------------------------------------------------------

    def _from_clients(self, listener: _Listener) -> None:
        now = time.monotonic()
        sock = listener.sock
        for _ in range(READ_BATCH):
            local: bytes | None = None
            try:
                if listener.wildcard:
                    data, ancillary, _, client = sock.recvmsg(MAX_DATAGRAM, PKTINFO_SPACE)
                    for level, kind, value in ancillary:
                        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                            local = PKTINFO.unpack(value[: PKTINFO.size])[2]
                else:
                    data, client = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an error queued for the socket: nothing to read this time
                continue
            self._relay(listener, client, local, data, now)

    def _relay(
        self, listener: _Listener, client: Client, local: bytes | None, data: bytes, now: float
    ) -> None:
        key = (listener.index, client)
        flow = self.flows.get(key)
        if flow is not None and self.flows.ran_out(flow, now=now):
            self.flows.remove(key)
            self._end(flow)
            flow = None
        if flow is None:
            flow = self._start(key, listener, local, now)
            if flow is None:
                return
        FlowTable.from_client(flow, now=now)
        upstream = flow.handle
        assert isinstance(upstream, _Upstream)
        try:
            upstream.sock.send(data)
        except (BlockingIOError, InterruptedError):
            pass  # the socket's buffer is full: dropped, as the network would
        except OSError:  # the endpoint refused an earlier datagram: end the flow
            self.flows.remove(key)
            self._end(flow)

    def _start(
        self, key: FlowKey, listener: _Listener, local: bytes | None, now: float
    ) -> Flow[FlowKey] | None:
        endpoint = self._pick(key[1][0])
        if endpoint is None:
            return None
        evicted = self.flows.make_room(now=now)
        for old in evicted:
            self._end(old)
        if evicted and not self._full_said:
            self._full_said = True
            log.warning("udp.flow_table_full", relay=self.name, limit=self.flows.limit,
                        ended=len(evicted))  # fmt: skip
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(endpoint)
        except OSError as exc:
            sock.close()
            log.debug("udp.endpoint_unreachable", relay=self.name,
                      endpoint=f"{endpoint.address}:{endpoint.port}", error=repr(exc))  # fmt: skip
            return None
        upstream = _Upstream(sock, listener, local)
        flow = self.flows.add(key, endpoint, now=now, handle=upstream)
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._from_endpoint, flow)
        if self._started is not None:
            self._started(key[1][0], endpoint)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)
        return flow

    def _from_endpoint(self, flow: Flow[FlowKey]) -> None:
        upstream = flow.handle
        if not isinstance(upstream, _Upstream):  # ended meanwhile
            return
        now = time.monotonic()
        for _ in range(READ_BATCH):
            try:
                data = upstream.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # "port unreachable": the endpoint refuses; the next datagram picks
                if self.flows.get(flow.key) is flow:
                    self.flows.remove(flow.key)
                self._end(flow)
                return
            FlowTable.from_endpoint(flow, now=now)
            upstream.listener.answer(data, flow.key[1], upstream.local)

    def _end(self, flow: Flow[FlowKey]) -> None:
        upstream = flow.handle
        if not isinstance(upstream, _Upstream):
            return
        flow.handle = None
        self._forget(upstream.sock)
        if self._ended is not None:
            self._ended(flow.endpoint)

    def _forget(self, sock: socket.socket) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()

    def _sweep(self) -> None:
        self._sweeper = None
        for flow in self.flows.expired(now=time.monotonic()):
            self._end(flow)
        if len(self.flows) and self._loop is not None and self._listeners:
            self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)
