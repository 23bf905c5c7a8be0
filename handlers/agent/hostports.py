"""A pod's host ports: a port of the node forwarded to the pod's port, as ``hostPort`` means.

Why this exists: in Kubernetes a container port with ``hostPort`` is reachable on the node's
own addresses at that port (the CNI ``portmap`` plugin DNATs it). With pods in their own
namespaces that takes a forwarder: this one is a relay in the agent, one listening socket
per host port (on the port's ``hostIP``, every address of the node by default), each accepted
TCP connection relayed to the pod's address and container port, and each UDP flow (a client's
``ip:port``, ended after conntrack's idle timeouts) by ``handlers.agent.udprelay``, the
pod's answers sent back from the address the client wrote to. Chosen over nftables DNAT because
it needs nothing installed, works for connections from the node itself (``localhost``), and
goes when the pod goes; the cost is a copy through the agent and connections that drop while
the agent restarts (the next agent opens the port again for the pods it adopts).

What is not done is said, not hidden: SCTP host ports are not forwarded (the note is
recorded on the pod's ``PodIPAssigned`` and logged), and a port that cannot be opened (in
use) is noted the same way. A pod in the node's network needs no relay for a host port equal to its
container port: its process binds it itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog

from core.services.balancing import Endpoint
from handlers.agent.udprelay import UdpRelay

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 5.0
CHUNK = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class HostPort:
    """One ``hostPort`` of a pod: where it listens and where it goes."""

    container: str
    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{self.host_port}/{self.protocol}"


def host_ports(pod_spec: dict[str, Any]) -> list[HostPort]:
    """Every container port of the pod that asks for a host port."""
    found = []
    for container in pod_spec.get("containers") or []:
        for port in container.get("ports") or []:
            if not port.get("hostPort"):
                continue
            found.append(
                HostPort(
                    container=str(container.get("name", "")),
                    host_ip=str(port.get("hostIP") or "0.0.0.0"),
                    host_port=int(port["hostPort"]),
                    container_port=int(port.get("containerPort") or port["hostPort"]),
                    protocol=str(port.get("protocol") or "TCP").upper(),
                )
            )
    return found


class HostPortForwarder:
    """The relays of one pod's host ports, to ``target`` (the pod's address)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._servers: list[asyncio.Server] = []
        self._relays: set[asyncio.Task[None]] = set()
        self.datagram_relays: list[UdpRelay] = []

    async def open(self, ports: list[HostPort], *, own_network: bool) -> list[str]:
        """Listen on each port that needs a relay; returns notes on what was not done."""
        notes: list[str] = []
        for port in ports:
            if port.protocol not in ("TCP", "UDP"):
                notes.append(
                    f"hostPort {port} is not forwarded: fleetlog forwards TCP and UDP host "
                    "ports only"
                )
                continue
            if not own_network and port.host_port == port.container_port:
                continue  # the pod's process binds the node's port itself
            if port.protocol == "UDP":
                notes += self._open_udp(port)
                continue
            try:
                server = await asyncio.start_server(
                    lambda r, w, p=port: self._accepted(r, w, p),
                    host=port.host_ip,
                    port=port.host_port,
                    reuse_address=True,
                )
            except OSError as exc:
                notes.append(f"hostPort {port} could not be opened: {exc.strerror or exc}")
                continue
            self._servers.append(server)
            log.info("hostport.open", port=str(port), target=f"{self.target}:{port.container_port}")
        return notes

    def _open_udp(self, port: HostPort) -> list[str]:
        endpoint = Endpoint(self.target, port.container_port)
        relay = UdpRelay(pick=lambda _client: endpoint, name=f"hostPort {port}")
        try:
            relay.open(port.host_ip, port.host_port)
        except OSError as exc:
            return [f"hostPort {port} could not be opened: {exc.strerror or exc}"]
        self.datagram_relays.append(relay)
        log.info("hostport.open", port=str(port), target=f"{self.target}:{port.container_port}")
        return []

    async def close(self) -> None:
        for relay in self.datagram_relays:
            relay.close()
        self.datagram_relays.clear()
        for server in self._servers:
            server.close()
        for relay in list(self._relays):
            relay.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        await asyncio.gather(*self._relays, return_exceptions=True)
        self._servers.clear()

    def _accepted(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: HostPort
    ) -> None:
        relay = asyncio.ensure_future(self._relay(reader, writer, port))
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: HostPort
    ) -> None:
        try:
            try:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection(self.target, port.container_port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                log.debug("hostport.unreachable", port=str(port), error=repr(exc))
                return
            up_reader, up_writer = upstream
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until the source ends, then half-close the sink (so a request/response over one
    connection works both ways)."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        pass
