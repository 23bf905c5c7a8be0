"""Service traffic on the node (kube-proxy's job): a TCP and UDP proxy in the agent, one
listener per service port, each new connection (UDP: each new flow) sent to an endpoint the
service's policy picks.

Why this exists: a Service is a stable address in front of whichever pods are ready; something
on every node has to turn a connection to ``clusterIP:port`` (or ``<node>:nodePort``) into one
to a pod. kube-proxy does it with kernel rules; fleetlog does it with a proxy in the agent
because two of the five policies a service may ask for (``core.services.balancing``) need to
see connections: LEAST_REQUEST counts the ones open per endpoint, RING_HASH hashes the
client's address onto a consistent ring (nftables' ``jhash … mod N`` remaps nearly every key
when N changes). One mechanism serves all five exactly, and its cost is measured
(``ops/bench_proxy.py``, docs/benchmarks.md). How it is built:

* **Addresses.** Each service's ClusterIP is added as a ``/32`` to the node's pod bridge (to
  ``lo`` when pods run in the host network), so it is a local address of the node: the host
  reaches it directly and pods reach it through their default route (the bridge's gateway),
  with their own source address. What the proxy added is written to its ledger
  (``<root>/network/services.json``) *before* it is added, so a restarted agent finds and
  removes what is stale (and adds what is missing); a stopped agent removes all of it.
* **Listeners.** A service port with endpoints has a listening socket on ``clusterIP:port``
  and, for NodePort and LoadBalancer services, one on ``0.0.0.0:nodePort`` (every address of
  the node, loopback included). A port with no endpoint has no listener: the kernel answers a
  connection with a reset at once (a datagram with ICMP port unreachable), as kube-proxy's
  REJECT rule does — never a hang.
* **UDP.** A UDP port's datagrams are relayed per flow (``handlers.agent.udprelay``: a
  client's ``ip:port``, balanced on its first datagram, kept while active, ended after
  conntrack's idle timeouts of 30 s, or 120 s for a stream — ``core.services.flows``); the
  answers go back from the address the client wrote to. A flow whose endpoint leaves the
  usable set ends at once, so the client's next datagram reaches a ready endpoint (kube-proxy
  clears such conntrack entries for the same reason). SCTP ports are not forwarded (said once).
* **Picking.** Ready endpoints get new connections, or serving-and-terminating ones when none
  is ready (``core.services.forwarding``); ``sessionAffinity: ClientIP`` keeps a client on its
  endpoint (``ClientAffinity``). A refused connect tries another endpoint (at most three in
  all); when none answers, the client's connection is reset.
* **Following the log.** Two small projections (Service and EndpointSlice events only) mark
  the services they touch; a loop recomputes just those and applies the difference. A pod that
  turns not ready leaves its slice within milliseconds and gets no new connection after that.
* **PASSTHROUGH** (Envoy's ORIGINAL_DST, Istio's PASSTHROUGH): the connection goes where the
  client sent it. Connections addressed to a PASSTHROUGH service's endpoints are redirected by
  nftables (``REDIRECT``, table ``ip fleetlog_<prefix>``) to one passthrough listener, which
  reads the address the client used (``SO_ORIGINAL_DST``) and connects exactly there, never
  re-balanced. A connection to such a service's ClusterIP or node port has no original
  endpoint (Envoy likewise never sends a connection that was not redirected back to the
  address it arrived at), so those have no listener and are refused at once; the agent says
  so once per service. The proxy's own connections carry a socket mark the rules skip.

Existing TCP connections are left alone when their endpoint leaves (as kube-proxy leaves
established TCP flows); they end with their client or pod. Connections and flows through the
proxy drop when the agent stops. A PASSTHROUGH service's UDP ports are not relayed: their
datagrams to endpoints go straight there, and the ClusterIP has no listener (said once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from core.services.balancing import Balancer, ClientAffinity, Endpoint, Policy
from core.services.forwarding import Frontend, frontends, passthrough_targets
from handlers.agent.network import IP, NetworkError, NetworkOptions
from handlers.agent.seams import PodNetwork
from handlers.agent.udprelay import UdpRelay
from projections.cluster import ClusterModel
from projections.endpoints import ServiceSlices
from projections.runtime import Projection
from streams.cancellation import checkpoint
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.subjects import event_filter

log = structlog.get_logger(__name__)

LEDGER_VERSION = 1
CONNECT_TIMEOUT_S = 3.0
CONNECT_ATTEMPTS = 3
BACKLOG = 1024
SOCKET_MARK = 0x464C5058
"""``SO_MARK`` of the proxy's own connections ("FLPX"): the PASSTHROUGH rules skip them, so a
connection the proxy makes to an endpoint is not redirected back to it."""
SO_ORIGINAL_DST = 80
IP_FREEBIND = 15
HIGH_WATER = 256 * 1024
RETRY_S = 1.0
LOOPBACK_DEVICE = "lo"

Key = tuple[str, str]
"""(namespace, service)."""


# -- relaying --------------------------------------------------------------------------------


def reset(transport: asyncio.BaseTransport) -> None:
    """Close with a TCP reset, as a refusal should look (not an orderly end of stream)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Half(asyncio.Protocol):
    """One side of a relayed connection: what it reads is written to its peer, with flow
    control (a peer that cannot keep up pauses this side's reading), end of stream passed on
    as a half-close, and a close of either side closing the other once its data is flushed."""

    def __init__(
        self, done: Callable[[], None] | None = None, *, peer: _Half | None = None
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self._done = done
        self._closed = False
        self._eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer._closed:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self._eof = True
        peer = self.peer
        if peer is None or peer.transport is None or peer._closed:
            return False
        if peer._eof:  # both ends have said all they will: done
            peer.transport.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
            return True  # keep our writing side open: the answer may still come
        return False

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer._closed:
            peer.transport.close()
        if self._done is not None:
            done, self._done = self._done, None
            done()


class _Downstream(_Half):
    """A client's connection to a frontend: paused until its upstream is connected."""

    def __init__(self, port: _Port) -> None:
        super().__init__()
        self.port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self.port.connect(self)


async def _connect_marked(
    endpoint: Endpoint, downstream: _Downstream, done: Callable[[], None]
) -> _Half:
    """A connection to ``endpoint`` carrying the proxy's socket mark, relayed to
    ``downstream``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # needs CAP_NET_ADMIN; only PASSTHROUGH relies on it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, SOCKET_MARK)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.wait_for(loop.sock_connect(sock, endpoint), CONNECT_TIMEOUT_S)
        _, upstream = await loop.create_connection(lambda: _Half(done, peer=downstream), sock=sock)
    except BaseException:
        sock.close()
        raise
    downstream.peer = upstream
    return upstream


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The address may be (re)added a moment later (a bridge made again): bind anyway.
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Port:
    """One frontend's listeners, balancer and affinity: TCP connections relayed by
    ``_Downstream``/``_Half``, UDP flows by a :class:`UdpRelay`."""

    def __init__(self, frontend: Frontend, *, rng: random.Random) -> None:
        self.frontend = frontend
        self.balancer = Balancer(frontend.policy, rng=rng)
        self.balancer.update(frontend.endpoints)
        self.affinity = (
            ClientAffinity(frontend.affinity_seconds) if frontend.affinity_seconds else None
        )
        self.servers: list[asyncio.Server] = []
        self.udp: UdpRelay | None = None
        if frontend.protocol == "UDP":
            self.udp = UdpRelay(pick=self._pick_flow, started=self._flow_started,
                                ended=self.balancer.closed, name=str(frontend))  # fmt: skip
        self.accepted: dict[Endpoint, int] = {}
        """Connections (UDP: flows) sent to each endpoint (what a test or an operator can
        look at)."""
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        return bool(self.servers) or (self.udp is not None and self.udp.listening)

    def listens_on(self) -> list[tuple[str, int]]:
        f = self.frontend
        return [(f.cluster_ip, f.port)] + ([("0.0.0.0", f.node_port)] if f.node_port else [])

    def update(self, frontend: Frontend) -> None:
        if frontend.affinity_seconds != self.frontend.affinity_seconds:
            self.affinity = (
                ClientAffinity(frontend.affinity_seconds) if frontend.affinity_seconds else None
            )
        self.frontend = frontend
        self.balancer.update(frontend.endpoints)
        if self.udp is not None:
            # A flow whose endpoint left ends now: the client's next datagram picks again.
            self.udp.retain(frontend.endpoints)

    async def open(self) -> list[str]:
        """Listen on every address of the frontend; returns what could not be opened."""
        loop = asyncio.get_running_loop()
        problems = []
        for host, port in self.listens_on():
            try:
                if self.udp is not None:
                    self.udp.open(host, port)
                    continue
                sock = _listening_socket(host, port)
            except OSError as exc:
                problems.append(f"{host}:{port}/{self.frontend.protocol}: {exc.strerror or exc}")
                continue
            server = await loop.create_server(lambda: _Downstream(self), sock=sock)
            self.servers.append(server)
        return problems

    def close(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()
        if self.udp is not None:
            self.udp.close()

    def _pick_flow(self, client: str) -> Endpoint | None:
        return self._pick(client, set())

    def _flow_started(self, client: str, endpoint: Endpoint) -> None:
        self.balancer.opened(endpoint)
        if self.affinity is not None:
            self.affinity.remember(client, endpoint, now=time.monotonic())
        self.accepted[endpoint] = self.accepted.get(endpoint, 0) + 1

    def _pick(self, client: str, tried: set[Endpoint]) -> Endpoint | None:
        ready = self.balancer.endpoints
        if not tried and self.affinity is not None:
            held = self.affinity.remembered(client, ready=ready, now=time.monotonic())
            if held is not None:
                return held
        chosen = self.balancer.pick(client=client)
        if chosen is None or chosen in tried:
            chosen = next((e for e in ready if e not in tried), None)
        return chosen

    def connect(self, downstream: _Downstream) -> None:
        task = asyncio.ensure_future(self._connect(downstream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, downstream: _Downstream) -> None:
        transport = downstream.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        client = peer[0] if peer else ""
        tried: set[Endpoint] = set()
        for _ in range(CONNECT_ATTEMPTS):
            endpoint = self._pick(client, tried)
            if endpoint is None:
                break
            tried.add(endpoint)
            self.balancer.opened(endpoint)
            released = False

            def release(endpoint: Endpoint = endpoint) -> None:
                nonlocal released
                if not released:
                    released = True
                    self.balancer.closed(endpoint)

            try:
                await _connect_marked(endpoint, downstream, release)
            except (OSError, TimeoutError) as exc:
                release()
                where = f"{endpoint.address}:{endpoint.port}"
                log.debug("proxy.endpoint_unreachable", service=str(self.frontend),
                          endpoint=where, error=repr(exc))  # fmt: skip
                if transport.is_closing():
                    return
                continue
            if self.affinity is not None:
                self.affinity.remember(client, endpoint, now=time.monotonic())
            self.accepted[endpoint] = self.accepted.get(endpoint, 0) + 1
            if transport.is_closing():  # the client left while we connected
                assert downstream.peer is not None and downstream.peer.transport is not None
                downstream.peer.transport.close()
                return
            transport.resume_reading()
            return
        reset(transport)


class _PassthroughDownstream(_Half):
    """A connection redirected to the passthrough listener: relayed to where it was sent."""

    def __init__(self, proxy: ServiceProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self.proxy._handle_passthrough(self)


def original_destination(sock: Any) -> Endpoint | None:
    """Where a redirected connection was sent (``SO_ORIGINAL_DST``), or None."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port = int.from_bytes(raw[2:4], "big")
    return Endpoint(socket.inet_ntoa(raw[4:8]), port)


# -- nftables for PASSTHROUGH -------------------------------------------------------------------


class Nft:
    """The proxy's nftables table (only while a PASSTHROUGH service has endpoints)."""

    def __init__(self, executable: str, *, table: str, bridge: str | None) -> None:
        self.executable = executable
        self.table = table
        self.bridge = bridge
        self.made = False

    async def run(self, script: str, *, check: bool = True) -> None:
        process = await asyncio.create_subprocess_exec(
            self.executable, "-f", "-",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate(script.encode())
        if check and process.returncode != 0:
            raise NetworkError(f"nft: {err.decode(errors='replace').strip()}")

    async def apply(self, targets: set[Endpoint], *, to_port: int) -> None:
        """The table redirecting connections to ``targets`` to ``to_port`` (made on first
        use, its set replaced atomically after)."""
        name = f"ip {self.table}"
        lines = []
        if not self.made:
            match = f"meta mark != {SOCKET_MARK:#x} ip daddr . tcp dport @passthrough"
            from_pods = f'iifname "{self.bridge}" ' if self.bridge else ""
            lines += [
                f"table {name} {{}}",
                f"delete table {name}",
                f"table {name} {{",
                "  set passthrough { type ipv4_addr . inet_service; }",
                "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;",
                f"    {from_pods}{match} redirect to :{to_port}",
                "  }",
                "  chain output { type nat hook output priority -100; policy accept;",
                f"    {match} redirect to :{to_port}",
                "  }",
                "}",
            ]
        lines.append(f"flush set {name} passthrough")
        if targets:
            elements = ", ".join(f"{e.address} . {e.port}" for e in sorted(targets))
            lines.append(f"add element {name} passthrough {{ {elements} }}")
        await self.run("\n".join(lines) + "\n")
        self.made = True

    async def remove(self) -> None:
        await self.run(f"table ip {self.table} {{}}\ndelete table ip {self.table}\n", check=False)
        self.made = False


# -- the proxy -----------------------------------------------------------------------------------


class ServiceProxy:
    """The node's service proxy (see the module docstring). :meth:`run` until cancelled;
    cancelling removes every address, listener and rule it made."""

    def __init__(
        self,
        store: EventStore,
        *,
        root: Path,
        network: PodNetwork,
        options: NetworkOptions,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._network = network
        self._options = options
        self.path = Path(root) / "network" / "services.json"
        self._rng = rng or random.Random()
        self.services = Projection(ClusterModel(), store, filter_subject=event_filter("Service"))
        self.slices = Projection(
            ClusterModel(), store, filter_subject=event_filter("EndpointSlice")
        )
        self._index = ServiceSlices(self.slices.model)
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()
        self.services.listeners.append(self._on_service)
        self.slices.listeners.append(self._on_slice)
        self.ports: dict[tuple[str, str, str], _Port] = {}
        self._addresses: dict[Key, str] = {}
        """Each forwarded service's ClusterIP (what should be on the device)."""
        self._ledger: set[str] = set()
        self._device = LOOPBACK_DEVICE
        self._ip: IP | None = None
        self._nft: Nft | None = None
        self._passthrough_server: asyncio.Server | None = None
        self._passthrough_targets: set[Endpoint] = set()
        self._passthrough_tasks: set[asyncio.Task[None]] = set()
        self._said: set[tuple[Key, str]] = set()
        self.applied: list[Callable[[set[Key]], None]] = []
        """Called after each round of changes reached the node (benchmarks and tests)."""
        self.passthrough_accepted: dict[Endpoint, int] = {}
        self._stale: tuple[str, set[str]] | None = None
        """Addresses a ledger names on another device (pod networks turned on or off)."""
        self._device_read = False
        self._applying: set[Key] = set()
        self._table_made = False
        """Whether the ledger says the nftables table exists (so a restart knows to remove
        it, and an agent that never made one runs no ``nft`` at all)."""

    # -- following the log ------------------------------------------------------------------

    def _on_service(self, event: StoredEvent) -> None:
        e = event.envelope
        self._dirty.add((e.namespace, e.name))
        self._wake.set()

    def _on_slice(self, event: StoredEvent) -> None:
        e = event.envelope
        touched = self._index.observe(e.kind, e.namespace, e.name)
        if touched:
            self._dirty.update(touched)
            self._wake.set()

    @property
    def device(self) -> str:
        """Where ClusterIPs are added: the pod bridge, or ``lo`` without pod networks."""
        return self._device

    async def run(self, ready: asyncio.Event | None = None) -> None:
        await self._network.wait_ready()
        self._device = self._options.bridge if self._network.isolated else LOOPBACK_DEVICE
        executable = shutil.which("ip")
        self._ip = IP(executable) if executable else None
        nft = shutil.which("nft")
        if nft is not None:
            bridge = self._options.bridge if self._network.isolated else None
            self._nft = Nft(nft, table=f"fleetlog_{self._options.prefix}", bridge=bridge)
        self._load()
        try:
            # (Each step ends with a checkpoint: nats-py's requests can swallow a cancellation
            # on Python 3.11, and the agent's shutdown waits for this task.)
            await self.services.catch_up()
            checkpoint()
            await self.services.follow()
            checkpoint()
            await self.slices.catch_up()
            checkpoint()
            await self.slices.follow()
            checkpoint()
            self._dirty.update((r.namespace, r.name) for r in self.services.model.list("Service"))
            await self._stale_left_behind()
            await self._apply()
            if ready is not None:
                ready.set()
            while True:
                checkpoint()
                await self._wake.wait()
                self._wake.clear()
                try:
                    await self._apply()
                except Exception as exc:  # the node must not stop following: try again
                    log.error("proxy.apply_failed", error=repr(exc))
                    self._dirty |= self._applying
                    await asyncio.sleep(RETRY_S)
                    self._wake.set()
        finally:
            await self.services.stop()
            await self.slices.stop()
            await asyncio.shield(self._remove_everything())

    # -- applying ---------------------------------------------------------------------------

    async def _apply(self) -> None:
        """Bring the node in line with the services marked since the last round."""
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        self._applying = dirty
        wanted: dict[tuple[str, str, str], Frontend] = {}
        for namespace, name in dirty:
            record = self.services.model.get("Service", namespace, name)
            if record is None:
                self._addresses.pop((namespace, name), None)
                continue
            manifests = [s.manifest for s in self._index.of(namespace, name)]
            found, skipped = frontends(namespace, name, record.manifest, manifests)
            for item in skipped:
                self._say_once((namespace, name), item.reason)
            if found:
                self._addresses[(namespace, name)] = found[0].cluster_ip
            else:
                self._addresses.pop((namespace, name), None)
            for frontend in found:
                wanted[frontend.key] = frontend
        await self._sync_addresses()
        for key in [k for k in self.ports if (k[0], k[1]) in dirty and k not in wanted]:
            self.ports.pop(key).close()
        for key, frontend in wanted.items():
            await self._sync_port(key, frontend)
        await self._sync_passthrough()
        for listener in self.applied:
            listener(dirty)

    async def _sync_port(self, key: tuple[str, str, str], frontend: Frontend) -> None:
        port = self.ports.get(key)
        serves = bool(frontend.endpoints) and frontend.policy is not Policy.PASSTHROUGH
        if frontend.policy is Policy.PASSTHROUGH and frontend.protocol == "UDP":
            self._say_once(
                (frontend.namespace, frontend.service),
                f"{frontend.cluster_ip}:{frontend.port}/UDP is not forwarded: service "
                f"{frontend.namespace}/{frontend.service} is PASSTHROUGH, so a datagram goes "
                "straight to the endpoint address the client uses (the node neither sees nor "
                "balances it), never to one the node picks",
            )
        elif frontend.policy is Policy.PASSTHROUGH:
            self._say_once(
                (frontend.namespace, frontend.service),
                f"{frontend.cluster_ip}:{frontend.port} refuses connections: service "
                f"{frontend.namespace}/{frontend.service} is PASSTHROUGH, so a connection goes "
                "to the endpoint address the client uses, never to one the node picks",
            )
        if port is not None:
            was, now = port.frontend, frontend
            moved = was.policy is not now.policy or (
                (was.cluster_ip, was.port, was.node_port, was.protocol)
                != (now.cluster_ip, now.port, now.node_port, now.protocol)
            )
            if moved:
                port.close()
                del self.ports[key]
                port = None
        if port is None:
            port = self.ports[key] = _Port(frontend, rng=self._rng)
        else:
            port.update(frontend)
        if serves and not port.listening:
            for problem in await port.open():
                log.warning("proxy.listen_failed", service=str(frontend), problem=problem)
        elif not serves and port.listening:
            # No endpoint: the kernel refuses new connections at once (a reset; for UDP an
            # ICMP port unreachable, as kube-proxy's REJECT rule answers).
            port.close()

    def _say_once(self, key: Key, message: str) -> None:
        if (key, message) not in self._said:
            self._said.add((key, message))
            log.warning("proxy.not_forwarded", service=f"{key[0]}/{key[1]}", message=message)

    # -- addresses --------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("proxy.ledger_unreadable", path=str(self.path), error=repr(exc))
            return
        self._table_made = bool(data.get("nft_table"))
        if data.get("version") == LEDGER_VERSION and data.get("device") == self._device:
            self._ledger = set(data.get("addresses") or ())
        elif data.get("device"):
            # Made on another device (pod networks were turned on or off): remove it there.
            self._stale = (str(data["device"]), set(data.get("addresses") or ()))

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        table = self._nft.table if self._nft is not None and self._table_made else None
        data = {"version": LEDGER_VERSION, "device": self._device,
                "addresses": sorted(self._ledger), "nft_table": table}  # fmt: skip
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)

    async def _stale_left_behind(self) -> None:
        """What an agent that did not stop cleanly left: addresses on another device, its
        nftables table (made again from scratch when needed)."""
        if self._stale is not None and self._ip is not None:
            device, addresses = self._stale
            await self._ip("-force", batch=[f"addr del {a}/32 dev {device}" for a in addresses],
                           check=False)  # fmt: skip
            self._stale = None
        if self._nft is not None and self._table_made:
            await self._remove_table()

    async def _remove_table(self) -> None:
        assert self._nft is not None
        await self._nft.remove()
        self._table_made = False
        self._save()

    async def _on_device(self) -> set[str]:
        """The /32 addresses on the device now."""
        assert self._ip is not None
        found = set()
        for link in await self._ip.json("-4", "addr", "show", "dev", self._device):
            for info in link.get("addr_info") or []:
                if info.get("prefixlen") == 32 and info.get("local"):
                    found.add(str(info["local"]))
        return found

    async def _sync_addresses(self) -> None:
        wanted = set(self._addresses.values())
        # The device is read on the first round that has anything to do (a restarted agent's
        # leftovers, a bridge made again), later only when the wanted set changed.
        if wanted == self._ledger and (self._device_read or not wanted):
            return
        self._device_read = True
        if self._ip is None:
            if wanted:
                self._say_once(("", ""), "ClusterIPs are not served: iproute2 (ip) is missing")
            return
        present = await self._on_device()
        # Only what the ledger names is removed: another part of the agent (cluster DNS) may
        # hold an address of its own on the same device.
        add = sorted(wanted - present)
        remove = sorted((self._ledger & present) - wanted)
        # Written before anything is added, so whatever exists can always be found.
        self._ledger = wanted | set(remove)
        self._save()
        lines = [f"addr replace {a}/32 dev {self._device}" for a in add]
        lines += [f"addr del {a}/32 dev {self._device}" for a in remove]
        if lines:
            try:
                await self._ip("-force", batch=lines)
            except NetworkError as exc:
                log.warning("proxy.addresses_failed", device=self._device, error=str(exc))
        self._ledger = wanted
        self._save()

    # -- PASSTHROUGH ------------------------------------------------------------------------

    async def _sync_passthrough(self) -> None:
        targets = passthrough_targets(p.frontend for p in self.ports.values())
        if targets == self._passthrough_targets:
            return
        self._passthrough_targets = targets
        if self._nft is None:
            if targets:
                self._say_once(("", ""), "PASSTHROUGH connections go straight to their "
                               "endpoints: nftables (nft) is not installed")  # fmt: skip
            return
        if not targets:
            await self._remove_table()
            if self._passthrough_server is not None:
                self._passthrough_server.close()
                self._passthrough_server = None
            return
        if self._passthrough_server is None:
            sock = _listening_socket("0.0.0.0", 0)
            self._passthrough_server = await asyncio.get_running_loop().create_server(
                lambda: _PassthroughDownstream(self), sock=sock
            )
        port = self._passthrough_server.sockets[0].getsockname()[1]
        if not self._table_made:
            self._table_made = True
            self._save()  # before the table exists: a restart finds and removes it
        try:
            await self._nft.apply(targets, to_port=port)
        except NetworkError as exc:
            log.warning("proxy.passthrough_rules_failed", error=str(exc))

    def _handle_passthrough(self, downstream: _PassthroughDownstream) -> None:
        task = asyncio.ensure_future(self._pass(downstream))
        self._passthrough_tasks.add(task)
        task.add_done_callback(self._passthrough_tasks.discard)

    async def _pass(self, downstream: _PassthroughDownstream) -> None:
        transport = downstream.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        original = original_destination(sock) if sock is not None else None
        local = transport.get_extra_info("sockname")
        # Not redirected (sent to the listener itself), or to an address no longer handed
        # through: nowhere to go.
        if (
            original is None
            or (local and original == Endpoint(local[0], local[1]))
            or (original not in self._passthrough_targets)
        ):
            reset(transport)
            return
        try:
            await _connect_marked(original, downstream, lambda: None)
        except (OSError, TimeoutError):
            reset(transport)
            return
        self.passthrough_accepted[original] = self.passthrough_accepted.get(original, 0) + 1
        if transport.is_closing():
            assert downstream.peer is not None and downstream.peer.transport is not None
            downstream.peer.transport.close()
            return
        transport.resume_reading()

    # -- stopping ---------------------------------------------------------------------------

    async def _remove_everything(self) -> None:
        for port in self.ports.values():
            port.close()
        self.ports.clear()
        if self._passthrough_server is not None:
            self._passthrough_server.close()
            self._passthrough_server = None
        if self._nft is not None and self._table_made:
            with contextlib.suppress(Exception):
                await self._nft.remove()
            self._table_made = False
        if self._ledger and self._ip is not None:
            lines = [f"addr del {a}/32 dev {self._device}" for a in sorted(self._ledger)]
            with contextlib.suppress(Exception):
                await self._ip("-force", batch=lines, check=False)
        self._ledger = set()
        with contextlib.suppress(OSError):
            self._save()
        log.info("proxy.stopped", device=self._device)

    # -- looking ------------------------------------------------------------------------------

    def port(self, namespace: str, service: str, port_name: str = "") -> _Port | None:
        return self.ports.get((namespace, service, port_name))

    def addresses(self) -> set[str]:
        return set(self._addresses.values())
