"""Benchmark of the mesh push's build alone: the CPU a change's shared build takes for N proxies.

    python -m ops.bench_mesh_build [--kind vs|dr|service] [--proxies 10] [--changes 300]
                                   [--services 1000] [--rules 100] [--workloads]

Why this exists: ``ops.bench_mesh`` times a change until real Envoys ACK it, which on the
shared 2-core host mixes the handler's build with ten Envoys and other helpers' work. This
times only the pure part of a push, as ``MeshPush.rebuild`` does it — the read model's
``MeshState``, one :class:`~core.mesh.envoy.build.MeshBuild` taking the last one over, and each
proxy's types that the change's kind rebuilds (``core.mesh.push.REBUILT_BY``) — with no
encoding, no streams and no Envoy, in process CPU time (``time.process_time``) per change:
a figure that can be compared between commits run alternately on a busy host.

The model is ``ops.bench_mesh``'s (``--services`` services on port 8080 with a slice of 10
endpoints, ``--rules`` VirtualServices and DestinationRules). ``--kind vs`` changes one
VirtualService's timeout, ``dr`` one DestinationRule's load balancer, ``service`` one
Service's port (every type is rebuilt). Proxies are on-demand sidecars each bound to its
own loopback address (as ``ops.bench_mesh``'s); ``--workloads``: captured sidecars of as many
workloads (their own labels, all on 0.0.0.0), as ``fleetlog up`` runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from core.mesh.envoy.build import MeshBuild
from core.mesh.envoy.model import Proxy
from core.mesh.push import BUILT_TYPES, rebuilt_by
from handlers.mesh.model import MeshModel
from ops.bench_mesh import NS, RULES, _model, _Projection


def _proxies(count: int, *, workloads: bool) -> list[Proxy]:
    if workloads:
        return [Proxy(namespace=NS, labels={"app": f"app-{i}"}, captured=True, on_demand=True)
                for i in range(count)]  # fmt: skip
    return [Proxy(namespace=NS, labels={"app": f"app-{i}"}, bind_address=f"127.0.0.{i + 2}",
                  on_demand=True) for i in range(count)]  # fmt: skip


def run(kind: str, proxies: int, changes: int, services: int, rules: int,
        *, workloads: bool) -> dict[str, Any]:  # fmt: skip
    model = _model(services, 10, rules)
    mesh = MeshModel(_Projection(model))  # type: ignore[arg-type]  # the bench's projection
    sidecars = _proxies(proxies, workloads=workloads)
    stored = {"vs": "VirtualService", "dr": "DestinationRule", "service": "Service"}[kind]
    types = [t for t in BUILT_TYPES if t in rebuilt_by({stored})]
    build = MeshBuild(mesh.state())
    for proxy in sidecars:
        build.snapshot(proxy)
    times = []
    for n in range(changes):
        index = n % min(rules or services, services)
        if kind == "service":
            record = model.get("Service", NS, f"svc-{index}")
            assert record is not None
            ports = [{"name": "http", "port": 8080 + (n + 1) % 2}]
            record.manifest = {**record.manifest,
                               "spec": {**record.manifest["spec"], "ports": ports}}  # fmt: skip
        else:
            make = RULES[kind][1]
            record = model.get(stored, NS, make(index)["metadata"]["name"])
            assert record is not None
            record.manifest = make(index, version=n + 1)
        record.last_seq += 1  # the read model parses an Istio object again when this moves
        began = time.process_time()
        build = MeshBuild(mesh.state(), previous=build, kinds={stored})
        for proxy in sidecars:
            for type_url in types:
                build.resources(proxy, type_url)
        times.append((time.process_time() - began) * 1000)
    times.sort()
    return {
        "kind": kind, "proxies": proxies, "workloads": workloads, "changes": changes,
        "load_avg": round(os.getloadavg()[0], 2),
        "build_cpu_ms_p50": round(statistics.median(times), 2),
        "build_cpu_ms_p90": round(times[int(0.9 * (len(times) - 1))], 2),
        "build_cpu_ms_mean": round(statistics.fmean(times), 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("vs", "dr", "service"), default="vs")
    parser.add_argument("--proxies", type=int, default=10)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument(
        "--workloads",
        action="store_true",
        help="captured sidecars of as many workloads, all on 0.0.0.0",
    )
    args = parser.parse_args()
    print(json.dumps(run(args.kind, args.proxies, args.changes, args.services, args.rules,
                         workloads=args.workloads)))  # fmt: skip


if __name__ == "__main__":
    main()
