"""The three probe actions of a Kubernetes container: HTTP GET, TCP socket, exec.

Why this exists: the agent's probe loop (periods, thresholds, what a failure means) is policy;
these functions are the single attempts it schedules, with the kubelet's notion of success:

* ``http_get``: any status from 200 to 399 succeeds; redirects are not followed (a 3xx is a
  success, as the kubelet treats a redirect to another host); HTTPS does not verify the
  certificate (the kubelet skips verification too); a fresh connection per attempt
  (the kubelet disables keep-alive for probes), ``User-Agent: fleetlog-probe/<version>`` and
  ``Accept: */*`` unless the probe sets them.
* ``tcp_connect``: the connection opens within the timeout.
* ``exec_in``: the command exits 0 within the timeout, run with the container's environment,
  working directory, cgroup and isolation wrapper; on timeout its whole process group is
  killed. The output (at most 10 KiB, like the kubelet) becomes the message. For an isolated
  container the command runs in a fresh sandbox with the same mounts and hostname, not inside
  the container's own pid namespace (there is no ``nsenter`` step).

:func:`run_probe` dispatches one :class:`core.pods.lifecycle.ProbeSpec` attempt to the right
action with the probe's timeout. No attempt raises: every outcome is a :class:`ProbeResult`.

**From inside the pod.** For a pod with a network namespace of its own, the HTTP and TCP
probes' connections are made *in* that namespace (``netns``: the socket is made there,
``handlers.agent.netnsexec.open_socket``) to the pod's address, not from the node across the
bridge. The kubelet's probe reaches the same address and port; what differs is the path: a
meshed pod's capture redirects connections arriving from the bridge to its sidecar, which
under a STRICT PeerAuthentication takes nothing but mTLS — a probe from the node would be
refused, so Istio's injector rewrites probes to go through its agent. Inside the namespace,
traffic to the pod's own address goes over ``lo``, which the capture lets pass (as Istio's
rules let an application reach itself), so the probe reaches the application as the kubelet
means it to. Every pod with its own namespace is probed so (one path, not two that could
disagree); a host-network pod is probed on the node as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import signal
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import httpcore
import httpx
from anyio.streams.tls import TLSAttribute, TLSStream

from core.pods.lifecycle import ExecCheck, GRPCCheck, HTTPGetCheck, ProbeSpec, TCPSocketCheck
from handlers.agent.grpcprobe import grpc_check
from handlers.agent.netnsexec import open_socket
from handlers.agent.seams import Container

MAX_OUTPUT = 10 * 1024
USER_AGENT = "fleetlog-probe/0.1"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    success: bool
    message: str = ""


async def run_probe(
    spec: ProbeSpec, container: Container, host: str = "127.0.0.1", *, netns: str | None = None
) -> ProbeResult:
    """One attempt of ``spec`` against ``container``; ``host`` stands for the pod's IP;
    ``netns``: the pod's network namespace, where HTTP and TCP probes connect from."""
    action = spec.action
    timeout = float(spec.timeout_seconds)
    if isinstance(action, HTTPGetCheck):
        return await http_get(
            action.host or host, action.port, action.path,
            scheme=action.scheme, headers=dict(action.headers), timeout=timeout, netns=netns,
        )  # fmt: skip
    if isinstance(action, TCPSocketCheck):
        return await tcp_connect(action.host or host, action.port, timeout, netns=netns)
    if isinstance(action, ExecCheck):
        return await exec_in(container, list(action.command), timeout)
    if isinstance(action, GRPCCheck):
        healthy, message = await grpc_check(
            host, action.port, action.service, timeout=timeout,
            connect=functools.partial(connect_in, netns),
        )  # fmt: skip
        return ProbeResult(healthy, message)
    return ProbeResult(False, f"unknown probe action {action!r}")


async def http_get(
    host: str,
    port: int,
    path: str = "/",
    *,
    scheme: str = "HTTP",
    headers: Mapping[str, str] | None = None,
    timeout: float = 1.0,
    netns: str | None = None,
) -> ProbeResult:
    """One HTTP GET probe attempt (from inside ``netns`` when given)."""
    if not path.startswith("/"):
        path = "/" + path
    netloc = f"[{host}]" if ":" in host else host
    url = f"{scheme.lower()}://{netloc}:{port}{path}"
    sent = {"User-Agent": USER_AGENT, "Accept": "*/*", **(headers or {})}
    try:
        async with httpx.AsyncClient(
            verify=False,  # as the kubelet: probes do not verify certificates
            follow_redirects=False,
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=False,  # no proxies from the agent's environment
            transport=PodNetworkTransport(netns) if netns is not None else None,
        ) as client:
            response = await client.get(url, headers=sent)
    except httpx.TimeoutException:
        return ProbeResult(False, f'Get "{url}": context deadline exceeded (timeout {timeout}s)')
    except httpx.HTTPError as exc:
        return ProbeResult(False, f'Get "{url}": {_describe(exc)}')
    if 200 <= response.status_code < 400:
        return ProbeResult(True, f"HTTP probe succeeded with statuscode: {response.status_code}")
    body = response.content[:MAX_OUTPUT].decode(errors="replace")
    return ProbeResult(False, f"HTTP probe failed with statuscode: {response.status_code} {body}")


async def tcp_connect(
    host: str, port: int, timeout: float = 1.0, *, netns: str | None = None
) -> ProbeResult:
    """One TCP socket probe attempt (from inside ``netns`` when given)."""
    try:
        async with asyncio.timeout(timeout):
            if netns is not None:
                (await connect_in(netns, host, port)).close()
                return ProbeResult(True, "")
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(False, f"dial tcp {host}:{port}: i/o timeout")
    except OSError as exc:
        return ProbeResult(False, f"dial tcp {host}:{port}: connect: {_os_error(exc)}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, "")


async def connect_in(netns: str | None, host: str, port: int) -> socket.socket:
    """A TCP connection to ``host:port`` made from inside ``netns`` (None: from the node; a
    name is resolved on the node, as the kubelet resolves a probe's ``host``)."""
    loop = asyncio.get_running_loop()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, target = found[0][0], found[0][4]
    else:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        target = (host, port)
    if netns is None:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
    else:
        sock = await open_socket(netns, family)
    try:
        await loop.sock_connect(sock, target)
    except BaseException:
        sock.close()
        raise
    return sock


class PodNetworkTransport(httpx.AsyncBaseTransport):
    """httpx over connections made inside a pod's network namespace: httpcore's connection
    pool (HTTP/1.1, TLS) with a network backend whose ``connect_tcp`` is :func:`connect_in`."""

    def __init__(self, netns: str) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=False),
            max_keepalive_connections=0,
            network_backend=_PodNetworkBackend(netns),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._pool.handle_async_request(
                httpcore.Request(
                    method=request.method,
                    url=httpcore.URL(
                        scheme=request.url.raw_scheme, host=request.url.raw_host,
                        port=request.url.port, target=request.url.raw_path,
                    ),
                    headers=request.headers.raw,
                    content=request.stream,  # type: ignore[arg-type]
                    extensions=request.extensions,
                )
            )  # fmt: skip
            try:
                body = await response.aread()
            finally:
                await response.aclose()
        except httpcore.TimeoutException as exc:
            raise httpx.TimeoutException(str(exc), request=request) from exc
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except httpcore.NetworkError as exc:
            raise httpx.NetworkError(str(exc), request=request) from exc
        except httpcore.ProtocolError as exc:
            raise httpx.ProtocolError(str(exc), request=request) from exc
        return httpx.Response(
            status_code=response.status, headers=response.headers, content=body,
            extensions=response.extensions,
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._pool.aclose()


class _PodNetworkBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, netns: str) -> None:
        self.netns = netns

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                sock = await connect_in(self.netns, host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc) or "connect timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _SocketStream(await anyio.abc.SocketStream.from_socket(sock))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        raise httpcore.ConnectError("a probe connects over TCP only")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _SocketStream(httpcore.AsyncNetworkStream):
    """httpcore's view of an anyio byte stream (a connected socket, or TLS over one)."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            with anyio.fail_after(timeout):
                return await self._stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b""
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("read timed out") from exc
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            with anyio.fail_after(timeout):
                await self._stream.send(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("write timed out") from exc
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError):
            await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        try:
            with anyio.fail_after(timeout):
                wrapped = await TLSStream.wrap(
                    self._stream, ssl_context=ssl_context, hostname=server_hostname,
                    standard_compatible=False, server_side=False,
                )  # fmt: skip
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("TLS handshake timed out") from exc
        except (OSError, ssl.SSLError, anyio.BrokenResourceError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        return _SocketStream(wrapped)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._stream.extra(TLSAttribute.ssl_object, None)
        return None


async def exec_in(container: Container, argv: list[str], timeout: float = 1.0) -> ProbeResult:
    """One exec probe attempt inside ``container`` (its env, cwd, cgroup, isolation)."""
    if not argv:
        return ProbeResult(False, "exec probe has no command")
    try:
        process = await asyncio.create_subprocess_exec(
            *container.exec_argv(list(argv)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=container.env,
            cwd=container.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return ProbeResult(False, f"exec {argv[0]!r} failed: {exc}")
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return ProbeResult(False, f"command {argv!r} timed out after {timeout}s")
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    text = output[:MAX_OUTPUT].decode(errors="replace").strip()
    if process.returncode == 0:
        return ProbeResult(True, text)
    if process.returncode == 127 and not text:
        text = f'exec: "{argv[0]}": executable file not found in $PATH'
    return ProbeResult(False, f"command {argv!r} exited with {process.returncode}: {text}")


def _describe(exc: httpx.HTTPError) -> str:
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    if isinstance(cause, OSError):
        return f"dial tcp: connect: {_os_error(cause)}"
    return str(exc) or type(exc).__name__


def _os_error(exc: OSError) -> str:
    """``connection refused`` rather than asyncio's "Connect call failed ('127.0.0.1', 1)"."""
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc)
