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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from core.pods.lifecycle import ExecCheck, GRPCCheck, HTTPGetCheck, ProbeSpec, TCPSocketCheck
from handlers.agent.seams import Container

MAX_OUTPUT = 10 * 1024
USER_AGENT = "fleetlog-probe/0.1"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    success: bool
    message: str = ""


async def run_probe(spec: ProbeSpec, container: Container, host: str = "127.0.0.1") -> ProbeResult:
    """One attempt of ``spec`` against ``container``; ``host`` stands for the pod's IP."""
    action = spec.action
    timeout = float(spec.timeout_seconds)
    if isinstance(action, HTTPGetCheck):
        return await http_get(
            action.host or host, action.port, action.path,
            scheme=action.scheme, headers=dict(action.headers), timeout=timeout,
        )  # fmt: skip
    if isinstance(action, TCPSocketCheck):
        return await tcp_connect(action.host or host, action.port, timeout)
    if isinstance(action, ExecCheck):
        return await exec_in(container, list(action.command), timeout)
    if isinstance(action, GRPCCheck):
        return ProbeResult(False, "gRPC probes are not supported by the process runtime")
    return ProbeResult(False, f"unknown probe action {action!r}")


async def http_get(
    host: str,
    port: int,
    path: str = "/",
    *,
    scheme: str = "HTTP",
    headers: Mapping[str, str] | None = None,
    timeout: float = 1.0,
) -> ProbeResult:
    """One HTTP GET probe attempt."""
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


async def tcp_connect(host: str, port: int, timeout: float = 1.0) -> ProbeResult:
    """One TCP socket probe attempt."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(False, f"dial tcp {host}:{port}: i/o timeout")
    except OSError as exc:
        return ProbeResult(False, f"dial tcp {host}:{port}: connect: {_os_error(exc)}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, "")


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
