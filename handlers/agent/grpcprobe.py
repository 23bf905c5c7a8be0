"""The kubelet's gRPC probe: one ``grpc.health.v1.Health/Check`` call, judged as the kubelet does.

Why this exists: Kubernetes has probed gRPC servers natively since 1.24 (GA in 1.27): a probe
``grpc: {port, service}`` calls the standard health service on the pod's address, in plain
text, and the container is healthy only when the answer is ``SERVING``. The agent's other
probe actions live in :mod:`handlers.agent.probes`; this one needs HTTP/2 and the health
protocol's messages, so it is kept apart.

The call is one HTTP/2 stream with prior knowledge (gRPC's plain-text transport) spoken with
``h2`` over a socket the caller connects — from inside the pod's network namespace, as the
other probes do; grpcio's client cannot be handed such a socket — and the messages are the
``grpcio-health-checking`` package's. The trailers are read (a health servicer answers an
unknown service with an empty message and ``grpc-status: 5`` after it). The outcomes carry
the kubelet's words (``pkg/probe/grpc``): "service unhealthy (responded with "NOT_SERVING")",
"this server does not implement the grpc health protocol
(grpc.health.v1.Health): …", "timeout: failed to connect service … within …", "timeout: health
rpc did not complete within …".
"""

from __future__ import annotations

import asyncio
import socket
import struct
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from grpc_health.v1 import health_pb2

CHECK_PATH = "/grpc.health.v1.Health/Check"
UNIMPLEMENTED = 12
"""gRPC's status code for a method the server does not have."""
MAX_RESPONSE = 64 * 1024
USER_AGENT = "fleetlog-probe/0.1"
"""As the HTTP probes' (the kubelet sends ``kube-probe/<version>`` on both)."""


def framed(message: bytes) -> bytes:
    """One gRPC length-prefixed message: not compressed, its length, the bytes."""
    return struct.pack(">BI", 0, len(message)) + message


def unframed(body: bytes) -> bytes | None:
    """The first message of a gRPC response body (None: not a whole, uncompressed one)."""
    if len(body) < 5:
        return None
    compressed, length = struct.unpack(">BI", body[:5])
    if compressed or len(body) < 5 + length:
        return None
    return body[5 : 5 + length]


Connect = Callable[[str, int], Awaitable[socket.socket]]
"""Makes the probe's TCP connection to ``(host, port)``."""


async def grpc_check(
    host: str,
    port: int,
    service: str = "",
    *,
    timeout: float = 1.0,
    connect: Connect,
) -> tuple[bool, str]:
    """One gRPC health check of ``host:port`` for ``service`` ("" = the server as a whole):
    ``(healthy, message)``. ``connect`` makes the TCP connection (from inside a pod's network
    namespace, or from the node). Never raises for what the server or the network does."""
    netloc = f"[{host}]" if ":" in host else host
    target = f"{netloc}:{port}"
    try:
        async with asyncio.timeout(timeout):
            sock = await connect(host, port)
    except (TimeoutError, OSError) as exc:
        cause = f": {exc}" if str(exc) else ""
        return False, f'timeout: failed to connect service "{target}" within {timeout:g}s{cause}'
    try:
        async with asyncio.timeout(timeout):
            answer = await _call(sock, target, service)
    except TimeoutError:
        return False, f"timeout: health rpc did not complete within {timeout:g}s"
    except (OSError, h2.exceptions.ProtocolError) as exc:
        return False, f"error: health rpc probe failed: {exc or type(exc).__name__}"
    finally:
        sock.close()
    return _judged(answer)


@dataclass
class _Answer:
    """What came back on the call's stream: its headers, data and trailers."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    reset: int | None = None


async def _call(sock: socket.socket, target: str, service: str) -> _Answer:
    """The unary call over HTTP/2 with prior knowledge (gRPC's plain-text transport)."""
    loop = asyncio.get_running_loop()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", CHECK_PATH),
            (":authority", target),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", USER_AGENT),
        ],
    )
    request = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    conn.send_data(stream, framed(request), end_stream=True)
    await loop.sock_sendall(sock, conn.data_to_send())
    answer = _Answer()
    while True:
        data = await loop.sock_recv(sock, 65536)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                answer.headers.update((bytes(k), bytes(v)) for k, v in event.headers)
            elif isinstance(event, h2.events.DataReceived):
                answer.body += event.data[: MAX_RESPONSE - len(answer.body)]
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                answer.reset = event.error_code
                return answer
            elif isinstance(event, h2.events.StreamEnded):
                return answer
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise ConnectionResetError(f"GOAWAY (error code {event.error_code})")
        if pending := conn.data_to_send():
            await loop.sock_sendall(sock, pending)


def _judged(answer: _Answer) -> tuple[bool, str]:
    if answer.reset is not None:
        return False, f"error: health rpc probe failed: stream reset (error code {answer.reset})"
    code = answer.headers.get(b"grpc-status", b"")
    detail = urllib.parse.unquote(answer.headers.get(b"grpc-message", b"").decode(errors="replace"))
    if code != b"0":
        if code == str(UNIMPLEMENTED).encode():
            return False, (
                "this server does not implement the grpc health protocol "
                f"(grpc.health.v1.Health): {detail}"
            )
        failed = f"rpc error: code = {code.decode(errors='replace') or '?'} desc = {detail}"
        return False, f"error: health rpc probe failed: {failed}"
    message = unframed(bytes(answer.body))
    if message is None:
        return False, "error: health rpc probe failed: no health answer in the response"
    response = health_pb2.HealthCheckResponse()
    try:
        response.ParseFromString(message)
    except Exception as exc:  # protobuf's DecodeError has no stable public home
        return False, f"error: health rpc probe failed: {exc}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return False, f'service unhealthy (responded with "{name}")'
    return True, "service healthy"
