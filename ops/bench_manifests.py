"""Benchmark of reading and writing a manifest: what the gateway pays per object it admits.

    python -m ops.bench_manifests [--runs 2000]

Parses (validates, with Kubernetes' defaults) and dumps a typical pod of a deployment, as
exported from a cluster (managedFields, owner reference, probes, resources), ``--runs`` times,
best of three, and prints microseconds per parse and per dump as JSON. The aim the unit suite
used to assert (well under a millisecond a pod) lives here, where a timing belongs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from core.api.manifests import dump_manifest, parse_manifest

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "web-7d4b9c8f5-",
        "name": "web-7d4b9c8f5-x2x8q",
        "namespace": "default",
        "labels": {"app": "web", "pod-template-hash": "7d4b9c8f5"},
        "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f5",
             "uid": "5c1e4ad5-3c2b-4f0e-9a51-3f1b8c2d9e10", "controller": True,
             "blockOwnerDeletion": True}
        ],
        "managedFields": [
            {"apiVersion": "v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:generateName": {}}},
             "manager": "kube-controller-manager", "operation": "Update",
             "time": "2024-05-02T10:11:12Z"}
        ],
    },
    "spec": {
        "containers": [
            {
                "name": "nginx",
                "image": "nginx:1.25",
                "command": ["nginx", "-g", "daemon off;"],
                "ports": [{"containerPort": 80, "name": "http"}],
                "env": [{"name": "MODE", "value": "production"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 5},
            }
        ],
        "tolerations": [{"key": "example.com/gpu", "operator": "Exists"}],
    },
}  # fmt: skip


def per_call_us(work: Callable[[], object], runs: int) -> float:
    for _ in range(20):
        work()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(runs):
            work()
        best = min(best, (time.perf_counter() - started) / runs)
    return round(best * 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    parsed = parse_manifest(POD)
    figures = {
        "parse_us": per_call_us(lambda: parse_manifest(POD), args.runs),
        "dump_us": per_call_us(lambda: dump_manifest(parsed), args.runs),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
