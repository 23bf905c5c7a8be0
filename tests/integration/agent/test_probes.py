"""Probe actions against a real ``python -m http.server`` container on a free port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.pods.lifecycle import ExecCheck, GRPCCheck, HTTPGetCheck, ProbeSpec, TCPSocketCheck
from handlers.agent.probes import exec_in, http_get, run_probe, tcp_connect
from handlers.agent.runtime import RunningContainer
from streams.server import free_port
from tests.integration.agent.runtime_support import (
    PY,
    TrackedRuntime,
    spec,
    tracked_runtime,
    until,
    wait_for_output,
)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[TrackedRuntime]:
    yield from tracked_runtime(tmp_path)


@pytest.fixture
async def web(
    runtime: TrackedRuntime, tmp_path: Path
) -> AsyncIterator[tuple[RunningContainer, int]]:
    port = free_port()
    site = tmp_path / "site"
    site.mkdir()
    (site / "healthz").write_text("ok\n")
    container = await runtime.start(
        spec([PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
             working_dir=str(site), env={"PROBE_VAR": "from-spec"}, name="web")
    )  # fmt: skip
    yield container, port
    await runtime.stop(container, 1)


async def _listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while not (await tcp_connect("127.0.0.1", port, 0.5)).success:
        assert time.monotonic() < deadline, "the http server never listened"


async def test_http_probe(web: tuple[RunningContainer, int]):
    _, port = web
    await _listening(port)
    ok = await http_get(
        "127.0.0.1", port, "/healthz", scheme="HTTP", headers={"X-Probe": "1"}, timeout=2
    )
    assert ok.success, ok.message
    missing = await http_get("127.0.0.1", port, "/nope", timeout=2)
    assert not missing.success
    assert missing.message.startswith("HTTP probe failed with statuscode: 404")
    closed = await http_get("127.0.0.1", free_port(), "/", timeout=1)
    assert not closed.success and "refused" in closed.message


async def test_http_probe_redirect_is_success(web: tuple[RunningContainer, int], tmp_path: Path):
    _, port = web
    await _listening(port)
    (tmp_path / "site" / "dir").mkdir()
    # http.server answers a directory without a trailing slash with 301.
    result = await http_get("127.0.0.1", port, "dir", timeout=2)
    assert result.success and "301" in result.message


async def test_tcp_probe(web: tuple[RunningContainer, int]):
    _, port = web
    await _listening(port)
    assert (await tcp_connect("127.0.0.1", port, 1)).success
    refused = await tcp_connect("127.0.0.1", free_port(), 1)
    assert not refused.success and "refused" in refused.message.lower()


async def test_exec_probe(web: tuple[RunningContainer, int], runtime: TrackedRuntime):
    container, _ = web
    ok = await exec_in(container, ["sh", "-c", 'echo "$PROBE_VAR $(pwd)"; cat /proc/self/cgroup'])
    assert ok.success, ok.message
    assert ok.message.startswith(f"from-spec {container.cwd}")
    if runtime.cgroups.limits_enforced:
        assert container.cgroup.relative in ok.message  # run inside the container's cgroup
    failed = await exec_in(container, ["sh", "-c", "echo unhealthy; exit 3"])
    assert not failed.success and "exited with 3" in failed.message
    assert "unhealthy" in failed.message
    missing = await exec_in(container, ["no-such-probe-binary"])
    assert not missing.success and "127" in missing.message


async def test_exec_probe_timeout_kills_the_command(
    web: tuple[RunningContainer, int], tmp_path: Path
):
    container, _ = web
    marker = tmp_path / "probe.pid"
    started = time.monotonic()
    result = await exec_in(container, ["sh", "-c", f"echo $$ > {marker}; sleep 30"], timeout=0.5)
    assert not result.success and "timed out" in result.message
    assert time.monotonic() - started < 3
    pid = int(await wait_for_output(marker, ""))
    await until(lambda: not Path(f"/proc/{pid}").exists(), 3, "the timed-out probe's end")


async def test_exec_probe_in_an_isolated_container(runtime: TrackedRuntime):
    if not runtime.isolation_available:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    container = await runtime.start(
        spec([PY, "-c", "import time; time.sleep(30)"], isolate=True, pod_name="iso")
    )
    result = await exec_in(container, ["sh", "-c", "hostname; echo $$"], timeout=5)
    assert result.success, result.message
    hostname, pid = result.message.split()
    assert hostname == "iso" and int(pid) < 10


async def test_run_probe_dispatches_each_action(web: tuple[RunningContainer, int]):
    container, port = web
    await _listening(port)
    checks = {
        HTTPGetCheck(port=port, path="/healthz", headers=(("X-A", "1"),)): True,
        HTTPGetCheck(port=port, path="/missing"): False,
        TCPSocketCheck(port=port): True,
        ExecCheck(command=("sh", "-c", "test -f healthz")): True,
        ExecCheck(command=("false",)): False,
        GRPCCheck(port=port): False,
    }
    for action, expected in checks.items():
        result = await run_probe(ProbeSpec("liveness", action, timeout_seconds=2), container)
        assert result.success is expected, (action, result)


@pytest.fixture
def pod_netns() -> Iterator[str]:
    """A network namespace of its own with loopback up, as a pod's (root only)."""
    import os
    import subprocess
    import uuid

    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root")
    name = f"fleetlog-probe-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def test_http_and_tcp_probes_connect_from_inside_the_pods_namespace(
    pod_netns: str, tmp_path: Path
) -> None:
    """A server listening on the namespace's own loopback only: the node cannot reach it,
    a probe made in the namespace does (as a probe of a meshed pod reaches its app over lo)."""
    port = free_port()
    site = tmp_path / "site"
    site.mkdir()
    (site / "healthz").write_text("ok\n")
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", pod_netns, PY, "-m", "http.server", str(port), "--bind",
        "127.0.0.1", cwd=site, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (await tcp_connect("127.0.0.1", port, 0.5, netns=pod_netns)).success:
            assert time.monotonic() < deadline, "the http server never listened"
            await asyncio.sleep(0.1)
        ok = await http_get("127.0.0.1", port, "/healthz", timeout=2, netns=pod_netns)
        assert ok.success, ok.message
        assert ok.message == "HTTP probe succeeded with statuscode: 200"
        missing = await http_get("127.0.0.1", port, "/nope", timeout=2, netns=pod_netns)
        assert not missing.success and "statuscode: 404" in missing.message
        probe = ProbeSpec(
            kind="readiness", action=HTTPGetCheck(port=port, path="/healthz"), timeout_seconds=2
        )
        assert (await run_probe(probe, None, netns=pod_netns)).success  # type: ignore[arg-type]
        # From the node, the same address and port is nobody's.
        assert not (await http_get("127.0.0.1", port, "/healthz", timeout=2)).success
    finally:
        server.terminate()
        await server.wait()
    refused = await http_get("127.0.0.1", port, "/healthz", timeout=2, netns=pod_netns)
    assert not refused.success and "connection refused" in refused.message, refused.message
    closed = await tcp_connect("127.0.0.1", port, 2, netns=pod_netns)
    assert not closed.success and "connection refused" in closed.message, closed.message


HTTPS_SERVER = (
    "import http.server, ssl, sys\n"
    "context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "context.load_cert_chain(sys.argv[2], sys.argv[3])\n"
    "server = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])),\n"
    "                                http.server.SimpleHTTPRequestHandler)\n"
    "server.socket = context.wrap_socket(server.socket, server_side=True)\n"
    "server.serve_forever()\n"
)


async def test_an_https_probe_from_inside_the_pods_namespace_skips_verification(
    pod_netns: str, tmp_path: Path
) -> None:
    """TLS over the socket made in the namespace, the certificate not verified (the kubelet
    does not verify a probe's either: this one is signed by a CA nobody trusts)."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from streams.certificates import cert_pem, key_pem, leaf, make_ca, subject_name

    cert, key = leaf(make_ca("probe test"), subject=subject_name("pod"),
                     usage=ExtendedKeyUsageOID.SERVER_AUTH, ips=("127.0.0.1",))  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(cert_pem(cert))
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    (tmp_path / "healthz").write_text("ok\n")
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", pod_netns, PY, "-c", HTTPS_SERVER, str(port),
        str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (await tcp_connect("127.0.0.1", port, 0.5, netns=pod_netns)).success:
            assert time.monotonic() < deadline, "the https server never listened"
            await asyncio.sleep(0.1)
        ok = await http_get(
            "127.0.0.1", port, "/healthz", scheme="HTTPS", timeout=5, netns=pod_netns
        )
        assert ok.success, ok.message
        plain = await http_get("127.0.0.1", port, "/healthz", scheme="HTTP", timeout=5,
                               netns=pod_netns)  # fmt: skip
        assert not plain.success  # the server speaks TLS only
    finally:
        server.terminate()
        await server.wait()


GRPC_HEALTH_SERVER = (
    "import sys, time\n"
    "from concurrent import futures\n"
    "import grpc\n"
    "from grpc_health.v1 import health, health_pb2, health_pb2_grpc\n"
    "server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))\n"
    "if sys.argv[2] == 'health':\n"
    "    servicer = health.HealthServicer()\n"
    "    servicer.set('', health_pb2.HealthCheckResponse.SERVING)\n"
    "    servicer.set('liveness', health_pb2.HealthCheckResponse.NOT_SERVING)\n"
    "    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)\n"
    "server.add_insecure_port('127.0.0.1:' + sys.argv[1])\n"
    "server.start()\n"
    "server.wait_for_termination()\n"
)


async def _grpc_server(port: int, kind: str, netns: str | None) -> asyncio.subprocess.Process:
    prefix = ["ip", "netns", "exec", netns] if netns is not None else []
    server = await asyncio.create_subprocess_exec(
        *prefix, PY, "-c", GRPC_HEALTH_SERVER, str(port), kind,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (await tcp_connect("127.0.0.1", port, 0.5, netns=netns)).success:
        assert server.returncode is None, "the gRPC server exited"
        assert time.monotonic() < deadline, "the gRPC server never listened"
        await asyncio.sleep(0.1)
    return server


async def test_grpc_probes_ask_the_health_service_as_the_kubelet_does(pod_netns: str) -> None:
    """``grpc: {port, service}`` calls grpc.health.v1.Health/Check on the pod's address from
    inside its namespace: SERVING succeeds, anything else fails with the kubelet's words."""
    port = free_port()
    server = await _grpc_server(port, "health", pod_netns)

    async def probe(service: str = "", *, netns: str | None = pod_netns) -> tuple[bool, str]:
        action = GRPCCheck(port=port, service=service)
        result = await run_probe(
            ProbeSpec("liveness", action, timeout_seconds=3), None,  # type: ignore[arg-type]
            netns=netns,
        )  # fmt: skip
        return result.success, result.message

    try:
        assert await probe() == (True, "service healthy")
        assert await probe("liveness") == (
            False, 'service unhealthy (responded with "NOT_SERVING")'
        )  # fmt: skip
        healthy, message = await probe("nobody")
        assert not healthy and "code = 5" in message, message  # NOT_FOUND: unknown service
        # From the node, the namespace's loopback is nobody's.
        healthy, message = await probe(netns=None)
        assert not healthy and message.startswith("timeout: failed to connect service"), message
    finally:
        server.terminate()
        await server.wait()
    healthy, message = await probe()
    assert not healthy and message.startswith(
        f'timeout: failed to connect service "127.0.0.1:{port}"'
    ), message


async def test_a_grpc_server_without_the_health_service_fails_the_probe() -> None:
    port = free_port()
    server = await _grpc_server(port, "bare", None)
    try:
        action = GRPCCheck(port=port)
        result = await run_probe(
            ProbeSpec("readiness", action, timeout_seconds=3),
            None,  # type: ignore[arg-type]
        )
        assert not result.success
        assert result.message.startswith(
            "this server does not implement the grpc health protocol (grpc.health.v1.Health)"
        ), result.message
    finally:
        server.terminate()
        await server.wait()
