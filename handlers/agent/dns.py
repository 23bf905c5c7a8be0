"""Cluster DNS on the node: every node agent answers its pods' DNS itself, at the cluster DNS
address, from the services and endpoint slices in the log.

Why this exists: a pod finds ``web`` by name (Kubernetes' DNS specification); the answers
follow the log's Services, EndpointSlices and Namespaces (``core.dns.zone`` decides them).
Like NodeLocal DNSCache in transparent mode, the server runs on every node and holds the
``kube-dns`` service's address (``100.64.0.10`` by default, the service range's tenth) as a
``/32`` of the node's own pod bridge (``lo`` when pods share the node's network): a pod's
query reaches its own node's agent, no forwarding between nodes is needed, and a node that
cannot answer affects only its own pods. The ``kube-dns`` service carries
``service.kubernetes.io/service-proxy-name``, which tells a service proxy to leave it alone
(kube-proxy's rule for services served by another proxy).

* **Follower** (:class:`ZoneFollower`): its own three projections, filtered to Service,
  EndpointSlice and Namespace events, kept apart from the agent's pod projection; each event
  updates the :class:`~core.dns.zone.ClusterZone`; the zone's SOA serial is the log position.
* **Server** (:class:`DNSServer`): UDP and TCP on the address and port (``53``; configurable
  for tests), the wire format by dnspython. Names of the zone are answered authoritatively
  (``AA``); an ExternalName's target is looked up upstream and added after its ``CNAME``.
  Over UDP an answer larger than 512 bytes (or the EDNS0 size the client offers, at most
  4096) is cut with the ``TC`` bit, so the client asks again over TCP. Several ``A``
  records take turns at the top, as kubeadm's ``loadbalance`` spreads them; a rendered
  answer is kept until the zone changes (dnspython's rendering is most of an answer's
  cost). Bad input never stops it: a query that
  cannot be parsed gets ``FORMERR`` (miekg/dns' rules, as CoreDNS: one question, at most one
  answer and authority record, two additional), a response or a datagram shorter than a DNS
  header or larger than 4096 bytes is dropped, a non-query opcode gets ``NOTIMP``, zone
  transfers ``REFUSED``.
* **Forwarding** (:class:`Forwarder`): every other name goes to the node's own resolvers, the
  ``nameserver`` lines of its ``resolv.conf`` (CoreDNS' ``forward . /etc/resolv.conf``), or
  to ``DNSOptions.upstreams`` (tests use a fake upstream on loopback), tried in order with a
  timeout each, over TCP when the client asked over TCP or the upstream's UDP answer was
  truncated; at most 1000 at once (``max_concurrent``: beyond, ``REFUSED``); all failing:
  ``SERVFAIL``. The cluster DNS address itself is never an upstream (no loop).
* **Address** (:class:`ClusterAddress`): put on the bridge once the node's pod network is
  ready, and again whenever the agent rebuilds it; where it was put is kept in
  ``<root>/dns/address.json``, so a restarted agent with another address, device or no DNS
  at all removes the old one first: no stale address is left behind. It stays while the agent
  is stopped (as the pods' namespaces do): a pod's query then fails at once (port
  unreachable) instead of wandering off the machine by the default route. The sockets are
  bound with ``IP_FREEBIND``, so they listen before the address exists and keep listening
  when the bridge is made again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import structlog

from core.dns.resolvconf import parse as parse_resolv_conf
from core.dns.zone import CLUSTER_DOMAIN, DEFAULT_TTL, Answer, ClusterZone, Record, SOAData, SRVData
from core.network.ranges import CLUSTER_DNS_IP
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.subjects import event_filter

log = structlog.get_logger(__name__)

HEADER: Final = 12
MAX_QUERY: Final = 4096
"""Larger queries are dropped (a DNS question is a few dozen bytes; EDNS options add some)."""
UDP_PLAIN: Final = 512
MAX_UDP: Final = 4096
OUR_PAYLOAD: Final = 1232
"""The EDNS0 size this server offers (DNS flag day 2020: no fragmentation)."""
TCP_IDLE_S: Final = 10.0
MAX_TCP_CONNECTIONS: Final = 256
MAX_CONCURRENT_FORWARDS: Final = 1000
FORWARD_TIMEOUT_S: Final = 2.0
IP_FREEBIND: Final = getattr(socket, "IP_FREEBIND", 15)
ANSWER_CACHE: Final = 10_000
ANSWER_ORDERS: Final = 4
"""Orders of a multi-address answer rendered in advance and answered in turn (kubeadm's
``loadbalance`` shuffles them; turns spread the first address, which resolvers use)."""
QR, AA = 0x8000, 0x0400
DEFAULT_RESOLV_CONF: Final = Path("/etc/resolv.conf")


@dataclass(frozen=True, kw_only=True)
class DNSOptions:
    """Where the node serves cluster DNS and what it answers (the kubelet's ``clusterDNS``
    and ``clusterDomain``, CoreDNS' ``ttl`` and ``forward``)."""

    address: str = CLUSTER_DNS_IP
    port: int = 53
    domain: str = CLUSTER_DOMAIN
    ttl: int = DEFAULT_TTL
    upstreams: tuple[str, ...] | None = None
    """``host`` or ``host:port`` of the resolvers names outside the cluster go to; None: the
    ``nameserver`` lines of :attr:`resolv_conf`."""
    resolv_conf: Path = DEFAULT_RESOLV_CONF
    """The node's resolver configuration: forwarding, and ``Default`` pods' view."""
    forward_timeout: float = FORWARD_TIMEOUT_S


def upstreams_of(options: DNSOptions) -> list[tuple[str, int]]:
    """The upstream resolvers: configured, or the node's ``nameserver`` lines; never the
    cluster DNS address itself."""
    if options.upstreams is not None:
        entries = list(options.upstreams)
    else:
        try:
            entries = list(parse_resolv_conf(options.resolv_conf.read_text()).nameservers)
        except OSError as exc:
            log.warning("dns.resolv_conf_unreadable", path=str(options.resolv_conf), error=str(exc))
            entries = []
    out = []
    for entry in entries:
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        address = host or entry
        number = int(port) if port else 53
        if address == options.address and number == options.port:
            continue
        out.append((address, number))
    return out


# -- the zone, from the log ---------------------------------------------------------------------


class ZoneFollower:
    """Services, EndpointSlices and Namespaces from the log into a :class:`ClusterZone`."""

    KINDS: Final = ("Namespace", "Service", "EndpointSlice")

    def __init__(self, store: EventStore, zone: ClusterZone) -> None:
        self.zone = zone
        self.projections = {
            kind: Projection(ClusterModel(), store, filter_subject=event_filter(kind))
            for kind in self.KINDS
        }
        for projection in self.projections.values():
            projection.listeners.append(self._changed)
        self.changed = asyncio.Event()
        """Set on every change (tests and the benchmark wait on it)."""

    def _changed(self, event: StoredEvent) -> None:
        e = event.envelope
        projection = self.projections.get(e.kind)
        if projection is None:
            return
        record = projection.model.get(e.kind, e.namespace, e.name)
        manifest = record.manifest if record is not None else None
        if e.kind == "Namespace":
            self.zone.set_namespace(e.name, exists=record is not None)
        elif e.kind == "Service":
            self.zone.set_service(e.namespace, e.name, manifest)
        else:
            self.zone.set_slice(e.namespace, e.name, manifest)
        self.zone.serial = max(self.zone.serial, event.seq)
        self.changed.set()

    async def start(self) -> None:
        for projection in self.projections.values():
            await projection.catch_up()
            await projection.follow()

    async def stop(self) -> None:
        for projection in self.projections.values():
            await projection.stop()

    async def wait_for(self, kind: str, seq: int, timeout: float = 5.0) -> bool:
        """Until the ``kind`` projection has applied the log up to ``seq``."""
        return await self.projections[kind].wait_for(seq, timeout)


# -- upstream -----------------------------------------------------------------------------------


class Forwarder:
    """Asks the upstream resolvers, in order, what the cluster zone does not know."""

    def __init__(self, upstreams: Sequence[tuple[str, int]], *, timeout: float) -> None:
        self.upstreams = list(upstreams)
        self.timeout = timeout
        self.in_flight = 0

    async def ask(self, query: dns.message.Message, *, tcp: bool) -> dns.message.Message | None:
        """The first upstream answer, or None when none answered."""
        for host, port in self.upstreams:
            try:
                if tcp:
                    return await dns.asyncquery.tcp(query, host, timeout=self.timeout, port=port)
                reply, _ = await dns.asyncquery.udp_with_fallback(
                    query, host, timeout=self.timeout, port=port
                )
                return reply
            except (dns.exception.DNSException, OSError, EOFError) as exc:
                log.info("dns.upstream_failed", upstream=f"{host}:{port}", error=repr(exc))
        return None


# -- the server ---------------------------------------------------------------------------------


def _header_reply(wire: bytes, rcode: int) -> bytes:
    """A bare reply to a query that could not be parsed past its header: its id, opcode and
    RD flag, ``rcode``, no sections (what miekg/dns, and so CoreDNS, sends)."""
    flags = struct.unpack("!H", wire[2:4])[0]
    reply_flags = QR | (flags & 0x7800) | (flags & 0x0100) | (rcode & 0xF)
    return wire[:2] + struct.pack("!HHHHH", reply_flags, 0, 0, 0, 0)


def _rdata_text(record: Record) -> str:
    data = record.data
    if isinstance(data, SRVData):
        return f"{data.priority} {data.weight} {data.port} {data.target}"
    if isinstance(data, SOAData):
        return (
            f"{data.mname} {data.rname} {data.serial} {data.refresh} {data.retry} "
            f"{data.expire} {data.minimum}"
        )
    if record.rtype == "TXT":
        return f'"{data}"'
    return str(data)


def _rrsets(
    records: Sequence[Record], question: dns.name.Name, *, rotate: int = 0
) -> list[dns.rrset.RRset]:
    """Records grouped into RRsets in order of first appearance, the addresses of each
    rotated by ``rotate``; the question's own name keeps the form it was asked in."""
    asked = question.to_text().lower()
    grouped: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        grouped.setdefault((record.name.lower(), record.rtype), []).append(record)
    out = []
    for (name, rtype), members in grouped.items():
        texts = [_rdata_text(r) for r in members]
        if rotate and rtype == "A" and len(texts) > 1:
            turn = rotate % len(texts)
            texts = texts[turn:] + texts[:turn]
        owner = question if name == asked else dns.name.from_text(members[0].name)
        out.append(dns.rrset.from_text_list(owner, members[0].ttl, "IN", rtype, texts))
    return out


@dataclass
class DNSStats:
    """What the server has done since it started."""

    counts: Counter[str] = field(default_factory=Counter)


class DNSServer:
    """UDP and TCP on one address (see the module docstring)."""

    def __init__(self, zone: ClusterZone, options: DNSOptions, forwarder: Forwarder) -> None:
        self.zone = zone
        self.options = options
        self.forwarder = forwarder
        self.stats = DNSStats()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections = 0
        self._cache = _AnswerCache()

    @property
    def counts(self) -> Counter[str]:
        return self.stats.counts

    # -- sockets --------------------------------------------------------------------------

    def _socket(self, kind: socket.SocketKind) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                # A restarted agent rebinds past TIME_WAIT. (Not for UDP: there it would let
                # a second agent share the port and take some of the queries.)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Listen before the address is on the bridge, and through the bridge being
            # made again (the address goes and comes back; the socket stays).
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.bind((self.options.address, self.options.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        """Bind UDP and TCP; an ``OSError`` (the port is taken) is the caller's to report."""
        loop = asyncio.get_running_loop()
        udp = self._socket(socket.SOCK_DGRAM)
        transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), sock=udp)
        self._udp = transport
        tcp = self._socket(socket.SOCK_STREAM)
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp, backlog=128)
        except OSError:
            transport.close()
            raise
        log.info("dns.serving", address=self.options.address, port=self.options.port)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= MAX_TCP_CONNECTIONS:
            self.counts["tcp_refused"] += 1
            writer.close()
            return
        self._connections += 1
        try:
            while True:
                try:
                    prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
                    size = struct.unpack("!H", prefix)[0]
                    if size > MAX_QUERY:
                        self.counts["dropped_oversize"] += 1
                        return
                    wire = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_S)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                reply = self.answer(wire, tcp=True)
                if isinstance(reply, _Pending):
                    reply = await reply.run()
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- answering ------------------------------------------------------------------------

    def answer(self, wire: bytes, *, tcp: bool) -> bytes | _Pending | None:
        """The reply to one query: bytes now, None to drop it, or a :class:`_Pending` to
        await (the upstream resolvers are asked)."""
        counts = self.counts
        counts["queries"] += 1
        if len(wire) < HEADER:
            counts["dropped_short"] += 1
            return None
        if len(wire) > MAX_QUERY:
            counts["dropped_oversize"] += 1
            return None
        flags, qd, an, ns, ar = struct.unpack("!HHHHH", wire[2:12])
        if flags & QR:
            counts["dropped_response"] += 1
            return None
        opcode = (flags >> 11) & 0xF
        if opcode != dns.opcode.QUERY:
            counts["notimp"] += 1
            return _header_reply(wire, dns.rcode.NOTIMP)
        if qd != 1 or an > 1 or ns > 1 or ar > 2:
            counts["formerr"] += 1
            return _header_reply(wire, dns.rcode.FORMERR)
        cache = self._cache
        if cache.version != self.zone.version:
            cache.clear(self.zone.version)
        key = (tcp, wire[2:])
        cached = cache.get(key)
        if cached is not None:
            counts[cached.outcome] += 1
            counts["cached"] += 1
            return wire[:2] + cached.next()
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            counts["formerr"] += 1
            return _header_reply(wire, dns.rcode.FORMERR)
        limit = 65535 if tcp else self._udp_limit(query)
        if query.edns > 0:
            reply = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
            reply.set_rcode(dns.rcode.BADVERS)
            counts["badvers"] += 1
            return reply.to_wire(max_size=limit)
        question = query.question[0]
        qtype = dns.rdatatype.to_text(question.rdtype)
        labels = [label.decode("latin-1") for label in question.name.labels if label]
        in_zone = self.zone.in_zone(labels)
        if question.rdclass != dns.rdataclass.IN or (
            in_zone and question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
        ):
            counts["refused"] += 1
            return self._rcode_only(query, dns.rcode.REFUSED, limit)
        result = self.zone.resolve(labels, qtype)
        if result.forward:
            return _Pending(self._forward(query, tcp=tcp, limit=limit))
        if result.chase is not None:
            return _Pending(self._chase(query, result, tcp=tcp, limit=limit))
        outcome = "nxdomain" if result.rcode == "NXDOMAIN" else "answered"
        counts[outcome] += 1
        # Several addresses take turns at the top (a resolver uses the first): a few orders
        # are rendered once and answered in turn until the zone changes.
        reply = self._reply(query, result)
        # In the order given (dnspython would shuffle each rendering on its own).
        wires = [reply.to_wire(max_size=limit, prefer_truncation=True, want_shuffle=False)]
        most = max((len(r) for r in reply.answer if r.rdtype == dns.rdatatype.A), default=1)
        wires += [
            self._reply(query, result, rotate=turn).to_wire(
                max_size=limit, prefer_truncation=True, want_shuffle=False
            )
            for turn in range(1, min(most, ANSWER_ORDERS))
        ]
        cache.put(key, _Cached(outcome, [w[2:] for w in wires]))
        return wires[0]

    @staticmethod
    def _udp_limit(query: dns.message.Message) -> int:
        if query.edns < 0:
            return UDP_PLAIN
        return max(UDP_PLAIN, min(int(query.payload), MAX_UDP))

    def _rcode_only(self, query: dns.message.Message, rcode: dns.rcode.Rcode, limit: int) -> bytes:
        reply = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        reply.set_rcode(rcode)
        return reply.to_wire(max_size=limit, prefer_truncation=True)

    def _reply(
        self, query: dns.message.Message, result: Answer, *, rotate: int = 0
    ) -> dns.message.Message:
        reply = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        reply.flags |= dns.flags.AA
        reply.set_rcode(dns.rcode.NXDOMAIN if result.rcode == "NXDOMAIN" else dns.rcode.NOERROR)
        name = query.question[0].name
        reply.answer = _rrsets(result.answer, name, rotate=rotate)
        reply.authority = _rrsets(result.authority, name)
        reply.additional = _rrsets(result.additional, name)
        return reply

    async def _forward(self, query: dns.message.Message, *, tcp: bool, limit: int) -> bytes:
        forwarder = self.forwarder
        if forwarder.in_flight >= MAX_CONCURRENT_FORWARDS:
            self.counts["forward_refused"] += 1
            return self._rcode_only(query, dns.rcode.REFUSED, limit)
        forwarder.in_flight += 1
        try:
            upstream = await forwarder.ask(query, tcp=tcp)
        finally:
            forwarder.in_flight -= 1
        if upstream is None:
            self.counts["servfail"] += 1
            return self._rcode_only(query, dns.rcode.SERVFAIL, limit)
        self.counts["forwarded"] += 1
        upstream.id = query.id
        return upstream.to_wire(max_size=limit, prefer_truncation=True)

    async def _chase(
        self, query: dns.message.Message, result: Answer, *, tcp: bool, limit: int
    ) -> bytes:
        """An ExternalName's CNAME, then what the upstream resolvers say of its target."""
        reply = self._reply(query, result)
        assert result.chase is not None
        question = query.question[0]
        target = dns.message.make_query(result.chase, question.rdtype)
        target.flags |= dns.flags.RD
        found = await self.forwarder.ask(target, tcp=tcp)
        if found is not None:
            reply.answer += found.answer
        self.counts["answered"] += 1
        return reply.to_wire(max_size=limit, prefer_truncation=True)


@dataclass
class _Cached:
    """A rendered answer (without its id), in a few orders of its addresses."""

    outcome: str
    wires: list[bytes]
    turn: int = 0

    def next(self) -> bytes:
        self.turn = (self.turn + 1) % len(self.wires)
        return self.wires[self.turn]


class _AnswerCache:
    """Rendered zone answers by query (without its id): valid while the zone's data is the
    same (its version), at most :data:`ANSWER_CACHE` of them. Rendering with dnspython is
    most of an answer's cost; a repeated question costs a lookup."""

    def __init__(self) -> None:
        self.version = -1
        self._answers: dict[tuple[bool, bytes], _Cached] = {}

    def clear(self, version: int) -> None:
        self.version = version
        self._answers.clear()

    def get(self, key: tuple[bool, bytes]) -> _Cached | None:
        return self._answers.get(key)

    def put(self, key: tuple[bool, bytes], cached: _Cached) -> None:
        if len(self._answers) >= ANSWER_CACHE:
            self._answers.clear()
        self._answers[key] = cached


class _Pending:
    """An answer that needs the upstream resolvers."""

    def __init__(self, coroutine: Any) -> None:
        self._coroutine = coroutine

    async def run(self) -> bytes | None:
        return await self._coroutine  # type: ignore[no-any-return]

    def close(self) -> None:
        self._coroutine.close()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            reply = self.server.answer(data, tcp=False)
        except Exception as exc:  # a query must never stop the server
            self.server.counts["errors"] += 1
            log.warning("dns.answer_failed", error=repr(exc))
            return
        if isinstance(reply, _Pending):
            self.server.spawn(self._later(reply, addr))
        elif reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    async def _later(self, pending: _Pending, addr: tuple[str | Any, int]) -> None:
        try:
            reply = await pending.run()
        except Exception as exc:
            self.server.counts["errors"] += 1
            log.warning("dns.answer_failed", error=repr(exc))
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns.udp_error", error=repr(exc))


# -- the address --------------------------------------------------------------------------------


class ClusterAddress:
    """The cluster DNS address as a ``/32`` of a device of the node, recorded in
    ``<root>/dns/address.json`` so that a later agent can remove what it no longer wants."""

    def __init__(self, root: Path, ip: str = "ip") -> None:
        self.path = Path(root) / "dns" / "address.json"
        self.ip = ip

    def recorded(self) -> tuple[str, str] | None:
        try:
            data = json.loads(self.path.read_text())
            return str(data["address"]), str(data["device"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    async def _ip(self, *args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            self.ip, *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate()
        return process.returncode or 0, err.decode(errors="replace").strip()

    async def place(self, address: str, device: str) -> None:
        """Hold ``address`` on ``device``, and on nothing an earlier agent recorded;
        ``OSError`` when ``ip`` refuses."""
        old = self.recorded()
        if old is not None and old != (address, device):
            await self._ip("addr", "del", f"{old[0]}/32", "dev", old[1])
            log.info("dns.address_removed", address=old[0], device=old[1])
        # Recorded before it is made: whatever is made can always be found again.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"address": address, "device": device}))
        os.replace(tmp, self.path)
        code, err = await self._ip("addr", "replace", f"{address}/32", "dev", device)
        if code != 0:
            raise OSError(f"ip addr replace {address}/32 dev {device}: {err}")

    async def remove(self) -> None:
        """Remove what an earlier agent recorded (this node serves no cluster DNS now)."""
        old = self.recorded()
        if old is None:
            return
        await self._ip("addr", "del", f"{old[0]}/32", "dev", old[1])
        self.path.unlink(missing_ok=True)
        log.info("dns.address_removed", address=old[0], device=old[1])


# -- all of it ----------------------------------------------------------------------------------


class ClusterDNS:
    """The node's cluster DNS: follower, server, forwarder and address, started and stopped
    by the node agent."""

    def __init__(self, store: EventStore, options: DNSOptions, *, root: Path) -> None:
        self.options = options
        self.zone = ClusterZone(domain=options.domain, ttl=options.ttl, dns_ip=options.address)
        self.follower = ZoneFollower(store, self.zone)
        self.forwarder = Forwarder(upstreams_of(options), timeout=options.forward_timeout)
        self.server = DNSServer(self.zone, options, self.forwarder)
        self.address = ClusterAddress(root)
        self.device: str | None = None
        self.serving = False
        """Whether the server listens and its address is held: pods are told to use it."""
        self._listening = False
        self._address_failed = False

    async def start(self) -> None:
        """Read the zone from the log and listen. A port that cannot be bound is said once
        and leaves the node without cluster DNS (pods fall back to the node's resolvers)."""
        started = time.monotonic()
        await self.follower.start()
        try:
            await self.server.start()
        except OSError as exc:
            log.error(
                "dns.unavailable", address=self.options.address, port=self.options.port,
                error=str(exc),
            )  # fmt: skip
            return
        self._listening = True
        log.info(
            "dns.started", upstreams=[f"{h}:{p}" for h, p in self.forwarder.upstreams],
            seconds=round(time.monotonic() - started, 3),
        )  # fmt: skip

    async def hold_address(self, device: str) -> bool:
        """Put the address on ``device`` (the pod bridge, or ``lo``); again after the agent
        rebuilt the bridge. False (said in the log) when it cannot be held."""
        if not self._listening:
            return False
        self.device = device
        try:
            await self.address.place(self.options.address, device)
        except OSError as exc:
            if self.serving or not self._address_failed:
                log.error("dns.address_unavailable", device=device, error=str(exc))
            self._address_failed = True
            self.serving = False
            return False
        if not self.serving:
            log.info("dns.address_held", address=self.options.address, device=device)
        self._address_failed = False
        self.serving = True
        return True

    @property
    def listening(self) -> bool:
        return self._listening

    async def refresh_address(self) -> bool:
        """The node's network was rebuilt: hold the address again where it was. Whether
        pods can be told to use it (True too while it has no place yet)."""
        if self.device is None:
            return self._listening
        return await self.hold_address(self.device)

    async def stop(self) -> None:
        """Stop answering; the address stays (see the module docstring)."""
        await self.server.stop()
        await self.follower.stop()
