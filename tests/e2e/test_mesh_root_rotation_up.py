"""End to end: ``fleetlog mesh rotate-ca`` while a meshed client calls a STRICT server, with
real ``fleetlog up``, agent, process pods, sidecars and nftables: the server's sidecar is seen
trusting both roots, then holding a certificate from the new root, then the new root alone,
and not one call fails."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.conftest import pod_network_unavailable, wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_mesh_mtls_up import (
    admin,
    client,
    finished_pod,
    inbound_chains,
    manifests,
    ready,
)
from tests.e2e.test_mesh_sidecar_up import pod

pytestmark = pytest.mark.e2e

OVERLAP_S = 6


def held(cluster: Cluster, uid: str) -> tuple[frozenset[int], frozenset[int]]:
    """The server's sidecar's trusted roots and own certificates (serial numbers)."""
    try:
        certs = json.loads(admin(cluster, uid, "/certs"))
    except (httpx.HTTPError, OSError, ValueError):
        return frozenset(), frozenset()
    roots, own = set(), set()
    for entry in certs.get("certificates") or []:
        roots |= {int(c["serial_number"], 16) for c in entry.get("ca_cert") or []}
        own |= {int(c["serial_number"], 16) for c in entry.get("cert_chain") or []}
    return frozenset(roots), frozenset(own)


def inbound_connections(cluster: Cluster, uid: str) -> int:
    """How many connections the server's sidecar's ``virtualInbound`` took so far."""
    try:
        text = admin(cluster, uid, "/stats?filter=0.0.0.0_15006.downstream_cx_total")
    except (httpx.HTTPError, OSError):
        return 0
    return sum(int(line.rpartition(": ")[2]) for line in text.splitlines() if ": " in line)


def test_rotating_the_mesh_root_under_traffic_fails_no_call(cluster: Cluster) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up(agent=True)
    cluster.cli("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests()))
    wait_for(lambda: ready(cluster, "secure", "web"), timeout=120)
    uid = pod(cluster, "secure", "web")["metadata"]["uid"]
    wait_for(lambda: "inbound-mtls" in inbound_chains(cluster, uid), timeout=60)
    old_roots, old_own = held(cluster, uid)
    assert len(old_roots) == 1 and len(old_own) == 1

    cluster.cli("apply", "-f", "-",
                stdin=json.dumps(client("rotating", "meshed", seconds=25, warm=True)))  # fmt: skip
    # Once the client's calls flow (the server's sidecar has taken 20 more connections), rotate.
    before = inbound_connections(cluster, uid)
    wait_for(lambda: inbound_connections(cluster, uid) >= before + 20, timeout=120)
    out = cluster.cli("mesh", "rotate-ca", "--data-dir", str(cluster.data_dir),
                      "--overlap", str(OVERLAP_S)).stdout  # fmt: skip
    assert "mesh root rotated" in out
    seen: list[tuple[frozenset[int], frozenset[int]]] = []
    deadline = time.monotonic() + 240
    while not finished_pod(cluster, "meshed", "rotating"):
        assert time.monotonic() < deadline, "the rotating client did not finish"
        seen.append(held(cluster, uid))
        time.sleep(0.3)
    logs = cluster.cli("logs", "rotating", "-n", "meshed").stdout
    calls = json.loads(logs.strip().splitlines()[-1])
    assert calls["failed"] == 0 and calls["ok"] > 50, calls
    both = [roots for roots, _ in seen if len(roots) == 2 and old_roots < roots]
    assert both, seen  # the old and the new root trusted together
    new_root = next(iter(both[0] - old_roots))
    final_roots, final_own = held(cluster, uid)
    assert final_roots == {new_root}, (final_roots, new_root)  # the old root dropped
    assert final_own and final_own.isdisjoint(old_own)  # a certificate from the new root
    assert cluster.down() == 0
