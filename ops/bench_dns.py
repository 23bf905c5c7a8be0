"""Benchmark of the node's cluster DNS server: answer latency and queries per second.

    python -m ops.bench_dns [--services 1000] [--endpoints 10] [--queries 20000]

Builds the zone of ``--services`` services in 100 namespaces, each a quarter headless with
``--endpoints`` ready endpoints (the others a ClusterIP), straight into
:class:`core.dns.zone.ClusterZone` (following the log is the projections' cost, measured by
``bench_log``), serves it with :class:`handlers.agent.dns.DNSServer` on a loopback port,
and asks it from a separate process (the server keeps its core): one query at a time for the
answer latency (p50/p99, over UDP, a ClusterIP name, a headless name, an unknown name),
then ``--queries`` queries with 64 in flight for the throughput. A repeated question is
answered from the rendered-answer cache (valid until the zone changes); ``render_us`` is
what rendering an answer costs when the zone has just changed. Only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dns.message

from core.dns.zone import ClusterZone
from handlers.agent.dns import DNSOptions, DNSServer, Forwarder
from streams.server import free_port

CLIENT = r"""
import json, socket, statistics, sys, time
import dns.message
port, total, names = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect(("127.0.0.1", port))
sock.settimeout(2)
wires = {n: dns.message.make_query(n, "A").to_wire() for n in names}
latency = {}
for name, wire in wires.items():
    samples = []
    for _ in range(2000):
        t = time.perf_counter()
        sock.send(wire)
        sock.recv(4096)
        samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    latency[name] = [samples[len(samples) // 2], samples[int(len(samples) * 0.99)]]
order = list(wires.values())
sock.setblocking(False)
sent = received = 0
window = 64
start = time.perf_counter()
while received < total:
    while sent < total and sent - received < window:
        sock.send(order[sent % len(order)])
        sent += 1
    try:
        sock.recv(4096)
        received += 1
    except BlockingIOError:
        time.sleep(0)
elapsed = time.perf_counter() - start
print(json.dumps({"latency_us": latency, "qps": total / elapsed}))
"""


NAMES = ["svc1.ns1.svc.cluster.local", "svc0.ns0.svc.cluster.local", "nope.ns1.svc.cluster.local"]
"""A ClusterIP service, a headless one (10 addresses), an unknown name (NXDOMAIN)."""


def build_zone(services: int, endpoints: int) -> ClusterZone:
    zone = ClusterZone(dns_ip="100.64.0.10")
    for n in range(100):
        zone.set_namespace(f"ns{n}", exists=True)
    for i in range(services):
        namespace, name = f"ns{i % 100}", f"svc{i}"
        headless = i % 4 == 0
        spec: dict[str, Any] = {
            "clusterIP": "None" if headless else f"100.64.{i // 250}.{i % 250 + 2}",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }
        zone.set_service(namespace, name, {"spec": spec})
        if headless:
            zone.set_slice(
                namespace, f"{name}-1", {
                    "metadata": {"labels": {"kubernetes.io/service-name": name}},
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": [
                        {"addresses": [f"100.96.{i % 200}.{e + 2}"], "conditions": {"ready": True}}
                        for e in range(endpoints)
                    ],
                },
            )  # fmt: skip
    return zone


async def run(services: int, endpoints: int, queries: int) -> dict[str, Any]:
    zone = build_zone(services, endpoints)
    options = DNSOptions(address="127.0.0.1", port=free_port(), upstreams=())
    server = DNSServer(zone, options, Forwarder([], timeout=1.0))
    await server.start()
    cold: dict[str, float] = {}
    for name in NAMES:
        wire = dns.message.make_query(name, "A").to_wire()
        started = time.perf_counter()
        for _ in range(500):
            zone.version += 1  # a changed zone: the answer is rendered again
            server.answer(wire, tcp=False)
        cold[name] = (time.perf_counter() - started) / 500 * 1e6
    names = [
        "svc1.ns1.svc.cluster.local",
        "svc0.ns0.svc.cluster.local",
        "nope.ns1.svc.cluster.local",
    ]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "client.py"
            script.write_text(CLIENT)
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(script), str(options.port), str(queries), json.dumps(names),
                stdout=subprocess.PIPE,
            )  # fmt: skip
            out, _ = await process.communicate()
    finally:
        await server.stop()
    result = json.loads(out)
    result["services"], result["endpoints_per_headless"] = services, endpoints
    result["answered"] = dict(server.counts)
    result["render_us"] = cold
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--queries", type=int, default=20000)
    args = parser.parse_args()
    result = asyncio.run(run(args.services, args.endpoints, args.queries))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
