"""Benchmark of service traffic on the node: what the agent's service proxy costs a connection,
and how fast a service change reaches the node's forwarding at scale.

    python -m ops.bench_proxy [--services 1000] [--endpoints 10] [--flips 100] [--megabytes 512]
                              [--udp-seconds 3]

Starts an embedded nats-server, ``fleetlog up --no-agent`` (gateway, scheduler, controllers)
and one ``fleetlog agent`` process (pod bridge ``fbench1``, prefix ``fbprx``, cluster CIDR and
service range of the run's own), so the proxy is measured in the process it runs in.

1. **The data path, in one run.** One pod runs a small server (sink for a bulk transfer,
   echo for round trips) behind a ClusterIP service. From this process, to the pod directly
   (``podIP:8080``), through the proxy (``clusterIP:80``) and, where nftables is installed,
   through a kernel DNAT rule of the run's own (table ``ip fbenchdnat``, the path kube-proxy's
   nftables mode takes) for comparison: bulk throughput (``--megabytes`` over one connection),
   a new connection with a one-byte exchange (p50/p99), and a one-byte round trip on an open
   connection (p50/p99). Then UDP, the same three ways (the service's ``81/UDP``, the pod's
   echo on ``8080/UDP``): a one-datagram round trip on one flow (p50/p99: the latency the
   proxy adds), and datagrams per second answered on one flow with 32 in flight for
   ``--udp-seconds`` (with the number lost).
2. **Scale.** ``--services`` selectorless services, each with an EndpointSlice of
   ``--endpoints`` simulated endpoints (addresses of a range no pod uses: nothing behind them
   is contacted), written through the gateway. Timed: until the agent forwards all of them (a
   listener on every ClusterIP). Then ``--flips`` updates: a random service's slice emptied or
   filled again, each timed from the command's send until the node's forwarding shows it (a
   connection to its ClusterIP refused, or accepted), polled every millisecond: service
   update → node forwarding updated, p50/p99. The agent's resident memory at the end.

Everything is removed at the end: the services (the agent removes their addresses), the
agent's pod network, the DNAT table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.errors import FleetError
from ops.bench_agent import percentile, rss_bytes
from ops.benchlock import host_pod_networks
from ops.podnets import remove_pod_networks
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.server import EmbeddedServer, free_port

BRIDGE = "fbench1"
PREFIX = "fbprx"
CLUSTER_CIDR = "100.111.248.0/22"
SERVICE_CIDR = "100.76.0.0/16"
FAKE_ENDPOINTS = ipaddress.IPv4Network("100.77.0.0/16")
"""Addresses of the simulated endpoints: in no range any pod has (nothing is contacted)."""
DNAT_TABLE = "fbenchdnat"
DNAT_VIP = "100.76.255.250"
NAMESPACE = "bench"

SERVER = (
    "import socket, threading\n"
    "server = socket.socket()\n"
    "server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "server.bind(('0.0.0.0', 8080))\n"
    "server.listen(256)\n"
    "def serve(conn):\n"
    "    with conn:\n"
    "        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
    "        mode = conn.recv(1)\n"
    "        if mode == b'T':\n"
    "            total, buf = 0, bytearray(1 << 20)\n"
    "            while n := conn.recv_into(buf):\n"
    "                total += n\n"
    "            conn.sendall(str(total).encode())\n"
    "        else:\n"
    "            conn.sendall(mode)\n"
    "            while data := conn.recv(64):\n"
    "                conn.sendall(data)\n"
    "udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)\n"
    "udp.bind(('0.0.0.0', 8080))\n"
    "def echo():\n"
    "    while True:\n"
    "        data, peer = udp.recvfrom(2048)\n"
    "        udp.sendto(data, peer)\n"
    "threading.Thread(target=echo, daemon=True).start()\n"
    "while True:\n"
    "    conn, _ = server.accept()\n"
    "    threading.Thread(target=serve, args=(conn,), daemon=True).start()\n"
)


# -- the data path ---------------------------------------------------------------------------


def throughput(host: str, port: int, megabytes: int) -> float:
    """MB/s of one bulk transfer to the sink."""
    chunk = memoryview(bytes(1 << 20))
    with socket.create_connection((host, port), timeout=30) as conn:
        started = time.perf_counter()
        conn.sendall(b"T")
        for _ in range(megabytes):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        answer = conn.recv(64)
        elapsed = time.perf_counter() - started
    assert int(answer) == megabytes << 20, answer
    return megabytes / elapsed


def connection_times(host: str, port: int, count: int) -> list[float]:
    """Microseconds for a new connection, a one-byte exchange and its close."""
    out = []
    for _ in range(count):
        started = time.perf_counter()
        with socket.create_connection((host, port), timeout=5) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(b"P")
            assert conn.recv(1) == b"P"
        out.append((time.perf_counter() - started) * 1e6)
    return out


def round_trips(host: str, port: int, count: int) -> list[float]:
    """Microseconds for a one-byte round trip on an open connection."""
    out = []
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"P")
        assert conn.recv(1) == b"P"
        for _ in range(count):
            started = time.perf_counter()
            conn.sendall(b"x")
            assert conn.recv(1) == b"x"
            out.append((time.perf_counter() - started) * 1e6)
    return out


def data_path(name: str, host: str, port: int, megabytes: int) -> str:
    rate = statistics.median(throughput(host, port, megabytes) for _ in range(3))
    new = connection_times(host, port, 1000)
    rtt = round_trips(host, port, 5000)
    return (
        f"{name:<22} {rate:>8,.0f} MB/s   new connection p50 {statistics.median(new):>5,.0f} µs "
        f"p99 {percentile(new, 0.99):>5,.0f} µs   round trip p50 {statistics.median(rtt):>4,.0f} µs"
        f" p99 {percentile(rtt, 0.99):>5,.0f} µs"
    )


def udp_round_trips(host: str, port: int, count: int) -> list[float]:
    """Microseconds for a 32-byte datagram's round trip on one flow (one connected socket)."""
    out = []
    payload = bytes(32)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.settimeout(2)
        sock.send(payload)  # the flow's first datagram: balanced, not timed
        sock.recv(64)
        for _ in range(count):
            started = time.perf_counter()
            sock.send(payload)
            sock.recv(64)
            out.append((time.perf_counter() - started) * 1e6)
    return out


def udp_rate(host: str, port: int, seconds: float, *, window: int = 32) -> tuple[float, int]:
    """Datagrams answered per second on one flow with ``window`` in flight, and how many were
    lost (a lost one is replaced after 100 ms without an answer)."""
    payload = bytes(32)
    answered = lost = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect((host, port))
        sock.settimeout(0.1)
        for _ in range(window):
            sock.send(payload)
        in_flight = window
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            try:
                sock.recv(64)
            except TimeoutError:  # the window drained by losses: top it up
                lost += in_flight
                for _ in range(window):
                    sock.send(payload)
                in_flight = window
                continue
            answered += 1
            sock.send(payload)
        elapsed = time.perf_counter() - started
    return answered / elapsed, lost


def udp_path(name: str, host: str, port: int, seconds: float) -> str:
    rtt = udp_round_trips(host, port, 5000)
    rate, lost = udp_rate(host, port, seconds)
    return (
        f"{name:<22} UDP round trip p50 {statistics.median(rtt):>4,.0f} µs p99 "
        f"{percentile(rtt, 0.99):>5,.0f} µs   {rate:>8,.0f} datagrams/s on one flow "
        f"(32 in flight, {lost} lost)"
    )


def nft(script: str) -> bool:
    done = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
    return done.returncode == 0


# -- scale -----------------------------------------------------------------------------------


def service(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"s{index}", "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def endpoint_slice(index: int, endpoints: int, *, empty: bool = False) -> dict[str, Any]:
    base = int(FAKE_ENDPOINTS.network_address) + index * endpoints
    listed = [
        {"addresses": [str(ipaddress.IPv4Address(base + k))], "conditions": {"ready": True}}
        for k in range(endpoints)
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"s{index}-sim",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": f"s{index}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [] if empty else listed,
    }


def accepts(host: str, port: int) -> bool:
    """Whether a listener takes a connection at ``host:port`` (closed again at once)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.settimeout(1)
    try:
        return sock.connect_ex((host, port)) == 0
    finally:
        sock.close()


def wait_until(host: str, port: int, *, accepted: bool, timeout: float = 30) -> float:
    """Poll every millisecond until a connection is accepted (or refused); when, on the
    perf_counter clock."""
    deadline = time.perf_counter() + timeout
    while True:
        if accepts(host, port) == accepted:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{host}:{port} never became {'open' if accepted else 'closed'}")
        time.sleep(0.001)


async def send_all(client: CommandClient, kind: str, manifests: list[dict[str, Any]]) -> None:
    for start in range(0, len(manifests), 50):
        await asyncio.gather(
            *(client.send(kind, "apply", {"manifest": m}) for m in manifests[start : start + 50])
        )


def get(kind: str, name: str) -> subprocess.CompletedProcess[str]:
    """``fleetlog get KIND NAME -o json`` in the bench namespace."""
    argv = [sys.executable, "-m", "ops", "get", kind, name, "-n", NAMESPACE, "-o", "json"]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def cluster_ips(count: int) -> dict[int, str]:
    """The services' ClusterIPs, by index (read as ``fleetlog get svc -o json`` shows them)."""
    listed = subprocess.run(
        [sys.executable, "-m", "ops", "get", "svc", "-n", NAMESPACE, "-o", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = {}
    for item in json.loads(listed.stdout)["items"]:
        if not item["metadata"]["name"][1:].isdigit():
            continue  # the data path's service
        index = int(item["metadata"]["name"][1:])
        found[index] = item["spec"]["clusterIP"]
    assert len(found) == count, f"{len(found)} of {count} services listed"
    return found


# -- the run ---------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-proxy-"))
    server = EmbeddedServer(data_dir=workdir / "nats", port=free_port())
    await server.start()
    os.environ["FLEETLOG_SERVER"] = server.url
    os.environ["FLEETLOG_USER"] = "bench"
    os.environ["FLEETLOG_SEAL_KEY"] = str(workdir / "seal.key")
    env = dict(os.environ)
    processes: list[subprocess.Popen[bytes]] = []
    dnat = False
    try:
        nc = await connect(server.url, name="bench-proxy")
        await ensure_streams(nc)
        processes.append(
            subprocess.Popen(  # noqa: ASYNC220 - long-lived children, stopped below
                [
                    sys.executable,
                    "-m",
                    "ops",
                    "up",
                    "--nats-url",
                    server.url,
                    "--no-agent",
                    # Its own data directory and API port: another cluster on this machine
                    # must neither feed it a snapshot of another log nor hold 6443.
                    "--data-dir",
                    str(workdir / "up"),
                    "--api-port",
                    "0",
                    "--cluster-cidr",
                    CLUSTER_CIDR,
                    "--service-cluster-ip-range",
                    SERVICE_CIDR,
                ],
                stderr=(workdir / "up.log").open("wb"),
                env=env,
            )
        )
        client = CommandClient(nc, actor="bench")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        for _ in range(100):
            try:
                await client.send("Namespace", "apply", {"manifest": namespace})
                break
            except FleetError:  # the gateway is still starting
                await asyncio.sleep(0.2)
        agent_log = workdir / "agent.log"
        agent = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, stopped below
            [sys.executable, "-m", "ops", "agent", "--name", "bench-node", "--cpu", "100",
             "--memory", "64Gi", "--root", str(workdir / "agent"),
             "--pod-bridge", BRIDGE, "--pod-network-prefix", PREFIX],
            stderr=agent_log.open("wb"), env=env,
        )  # fmt: skip
        processes.append(agent)
        while "ready" not in agent_log.read_text():
            assert agent.poll() is None, agent_log.read_text()
            await asyncio.sleep(0.1)

        # 1. The data path.
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sink", "namespace": NAMESPACE, "labels": {"app": "sink"}},
            "spec": {"containers": [{
                "name": "sink", "image": "process", "command": [sys.executable, "-c", SERVER],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }]},
        }  # fmt: skip
        sink = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "sink", "namespace": NAMESPACE},
            "spec": {"selector": {"app": "sink"},
                     "ports": [{"name": "tcp", "port": 80, "targetPort": 8080},
                               {"name": "udp", "port": 81, "protocol": "UDP",
                                "targetPort": 8080}]},
        }  # fmt: skip
        await client.send("Pod", "apply", {"manifest": pod})
        await client.send("Service", "apply", {"manifest": sink})
        pod_ip = cluster_ip = None
        deadline = time.monotonic() + 120
        while pod_ip is None or cluster_ip is None:
            assert time.monotonic() < deadline, "the sink pod never became ready"
            await asyncio.sleep(0.5)
            shown = await asyncio.to_thread(get, "svc", "sink")
            pods = await asyncio.to_thread(get, "pod", "sink")
            if shown.returncode or pods.returncode:
                continue
            ip = (json.loads(pods.stdout).get("status") or {}).get("podIP")
            vip = json.loads(shown.stdout)["spec"].get("clusterIP")
            if ip and vip and await asyncio.to_thread(accepts, vip, 80):
                pod_ip, cluster_ip = ip, vip
        print(f"data path: pod {pod_ip}:8080, service {cluster_ip}:80, "
              f"{args.megabytes} MB per transfer", flush=True)  # fmt: skip
        print(await asyncio.to_thread(data_path, "direct to the pod", pod_ip, 8080,
                                      args.megabytes), flush=True)  # fmt: skip
        print(await asyncio.to_thread(data_path, "through the proxy", cluster_ip, 80,
                                      args.megabytes), flush=True)  # fmt: skip
        if shutil.which("nft"):
            dnat = nft(
                f"table ip {DNAT_TABLE} {{\n chain output {{ type nat hook output priority -100;"
                f"\n  ip daddr {DNAT_VIP} tcp dport 80 dnat to {pod_ip}:8080\n }}\n}}\n"
            )
            if dnat:
                print(await asyncio.to_thread(data_path, "kernel DNAT (nftables)", DNAT_VIP, 80,
                                              args.megabytes), flush=True)  # fmt: skip
        print(await asyncio.to_thread(udp_path, "direct to the pod", pod_ip, 8080,
                                      args.udp_seconds), flush=True)  # fmt: skip
        print(await asyncio.to_thread(udp_path, "through the proxy", cluster_ip, 81,
                                      args.udp_seconds), flush=True)  # fmt: skip
        if dnat and nft(
            f"add rule ip {DNAT_TABLE} output ip daddr {DNAT_VIP} udp dport 81 "
            f"dnat to {pod_ip}:8080\n"
        ):
            print(await asyncio.to_thread(udp_path, "kernel DNAT (nftables)", DNAT_VIP, 81,
                                          args.udp_seconds), flush=True)  # fmt: skip

        # 2. Scale.
        count, per = args.services, args.endpoints
        started = time.perf_counter()
        await send_all(client, "Service", [service(i) for i in range(count)])
        await send_all(client, "EndpointSlice", [endpoint_slice(i, per) for i in range(count)])
        written = time.perf_counter()
        addresses = await asyncio.to_thread(cluster_ips, count)
        for index in range(count):
            await asyncio.to_thread(wait_until, addresses[index], 80, accepted=True, timeout=300)
        forwarded = time.perf_counter()
        print(
            f"{count:,} services, {count * per:,} endpoints written in {written - started:.1f} s;"
            f" all forwarded {forwarded - written:.1f} s after the last write",
            flush=True,
        )
        rng = random.Random(7)
        empty: set[int] = set()
        latencies = []
        for _ in range(args.flips):
            index = rng.randrange(count)
            emptying = index not in empty
            manifest = endpoint_slice(index, per, empty=emptying)
            sent = time.perf_counter()
            waiting = asyncio.create_task(
                asyncio.to_thread(wait_until, addresses[index], 80, accepted=not emptying)
            )
            await client.send("EndpointSlice", "apply", {"manifest": manifest})
            latencies.append((await waiting - sent) * 1000)
            (empty.add if emptying else empty.discard)(index)
        print(
            f"service update -> node forwarding updated ({args.flips} slice updates, "
            f"{count:,} services / {count * per:,} endpoints): p50 "
            f"{statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
            f"max {max(latencies):.1f} ms; agent RSS {rss_bytes(agent.pid) / 2**20:.0f} MiB",
            flush=True,
        )
        for index in range(count):
            await client.send("Service", "delete", {"name": f"s{index}", "namespace": NAMESPACE})
        await nc.close()
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        for state in (workdir / "agent").glob("pods/*/*/*/container.json"):
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError, OSError):
                os.killpg(int(json.loads(state.read_text())["pgid"]), signal.SIGKILL)
        if dnat:
            nft(f"delete table ip {DNAT_TABLE}\n")
        remove_pod_networks(PREFIX, BRIDGE)
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    parser.add_argument("--flips", type=int, default=100)
    parser.add_argument("--megabytes", type=int, default=512)
    parser.add_argument(
        "--udp-seconds", type=float, default=3.0, help="how long each UDP rate is measured"
    )
    args = parser.parse_args()
    with host_pod_networks("bench_proxy"):  # one run at a time on a host: fixed names
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
