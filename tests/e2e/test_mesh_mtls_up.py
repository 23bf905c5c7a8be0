"""End to end: mutual TLS between sidecars with certificates from fleetlog's mesh CA over SDS,
and PeerAuthentication as Istio reads it. A meshed server in a namespace whose
PeerAuthentication is STRICT refuses a plain-text client from an un-meshed pod (the connection
is closed: no inbound filter chain takes plain text) while a meshed client's calls succeed
(its sidecar reaches the server's over mTLS, auto mTLS); PERMISSIVE lets both through; and
with a short certificate lifetime the server's certificate is issued again several times
while a meshed client keeps calling, with no failed request. Real ``fleetlog up``, agent,
process pods, Envoy and nftables."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from handlers.agent.sidecar import socket_path
from tests.e2e.conftest import pod_network_unavailable, wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_mesh_sidecar_up import SERVES_ITS_VERSION, finished, pod

pytestmark = pytest.mark.e2e

CERT_TTL_S = 8
"""Certificates valid for 8 s are issued again every 4 s: several times in one stream."""

CALLS = (
    "import json, sys, time, urllib.request\n"
    "url, seconds, warm = sys.argv[1], float(sys.argv[2]), sys.argv[3] == 'warm'\n"
    "def get():\n"
    "    try:\n"
    "        with urllib.request.urlopen(url, timeout=5) as answer:\n"
    "            return answer.read().decode()\n"
    "    except Exception as exc:\n"
    "        return f'error {type(exc).__name__}: {exc}'\n"
    "deadline = time.time() + 60\n"
    "while warm and get().startswith('error') and time.time() < deadline:\n"
    "    time.sleep(0.5)\n"
    "ok, failed, errors = 0, 0, []\n"
    "end = time.time() + seconds\n"
    "while time.time() < end:\n"
    "    answer = get()\n"
    "    if answer == 'secure':\n"
    "        ok += 1\n"
    "    else:\n"
    "        failed += 1\n"
    "        errors.append(answer)\n"
    "    time.sleep(0.05)\n"
    "print(json.dumps({'ok': ok, 'failed': failed, 'errors': errors[:5]}), flush=True)\n"
)


def policy(mode: str) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "secure"},
            "spec": {"mtls": {"mode": mode}}}  # fmt: skip


def manifests() -> list[dict[str, Any]]:
    meshed = {"istio-injection": "enabled"}
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "secure", "labels": meshed}},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "meshed", "labels": meshed}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}},
        policy("STRICT"),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "secure"},
         "spec": {"selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "web", "namespace": "secure", "labels": {"app": "web"}},
         "spec": {"containers": [{
             "name": "web", "image": "process",
             "command": [sys.executable, "-c", SERVES_ITS_VERSION, "secure"],
             "ports": [{"name": "http", "containerPort": 8080}],
             # A TCP probe (HTTP probes under STRICT: tests/e2e/test_mesh_probes_up.py).
             "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}},
    ]  # fmt: skip


def client(name: str, namespace: str, *, seconds: float, warm: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "client", "image": "process",
                "command": [sys.executable, "-c", CALLS, "http://web.secure:80/", str(seconds),
                            "warm" if warm else "cold"],
            }],
        },
    }  # fmt: skip


def run_client(cluster: Cluster, name: str, namespace: str, *, seconds: float,
               warm: bool) -> dict[str, Any]:  # fmt: skip
    cluster.cli("apply", "-f", "-", stdin=json.dumps(client(name, namespace, seconds=seconds,
                                                            warm=warm)))  # fmt: skip
    wait_for(lambda: finished_pod(cluster, namespace, name), timeout=180)
    out = cluster.cli("logs", name, "-n", namespace).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def finished_pod(cluster: Cluster, namespace: str, name: str) -> bool:
    if name == "client":
        return finished(cluster, namespace)
    return (pod(cluster, namespace, name).get("status") or {}).get("phase") == "Succeeded"


def admin(cluster: Cluster, uid: str, path: str) -> str:
    """The server's sidecar's admin endpoint (a Unix socket the agent gave it)."""
    sock = socket_path(cluster.data_dir / "agent", f"{uid[:13]}.admin")
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, timeout=5) as http:
        return http.get(f"http://envoy{path}").text


def serials(cluster: Cluster, uid: str) -> set[str]:
    """Serial numbers of the certificates the server's Envoy holds now (its own, not the
    root's)."""
    try:
        certs = json.loads(admin(cluster, uid, "/certs"))
    except (httpx.HTTPError, OSError, ValueError):
        return set()
    return {
        chain["serial_number"]
        for entry in certs.get("certificates") or []
        for chain in entry.get("cert_chain") or []
        if any(
            "spiffe://" in (san.get("uri") or "") for san in chain.get("subject_alt_names") or []
        )
    }


def inbound_chains(cluster: Cluster, uid: str) -> str:
    try:
        return admin(cluster, uid, "/config_dump?resource=dynamic_listeners")
    except (httpx.HTTPError, OSError):
        return ""


def ready(cluster: Cluster, namespace: str, name: str) -> bool:
    conditions = (pod(cluster, namespace, name).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def test_strict_refuses_plain_text_permissive_takes_both_and_rotation_fails_nothing(
    cluster: Cluster,
) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up(agent=True, options=["--mesh-cert-ttl", str(CERT_TTL_S)])
    cluster.cli("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests()))
    wait_for(lambda: ready(cluster, "secure", "web"), timeout=120)
    uid = pod(cluster, "secure", "web")["metadata"]["uid"]
    wait_for(lambda: "inbound-mtls" in inbound_chains(cluster, uid), timeout=60)
    assert "inbound-plaintext" not in inbound_chains(cluster, uid)  # STRICT

    # STRICT: the meshed client succeeds (warmed up: its first calls may find the service's
    # endpoints not yet pushed) ...
    meshed = run_client(cluster, "client", "meshed", seconds=3, warm=True)
    assert meshed["failed"] == 0 and meshed["ok"] > 0, meshed
    # ... and a plain-text client from an un-meshed pod is refused, every time: the server's
    # sidecar closes a connection no filter chain takes.
    plain = run_client(cluster, "client", "plain", seconds=3, warm=False)
    assert plain["ok"] == 0 and plain["failed"] > 0, plain
    assert all(
        any(word in e for word in ("Reset", "reset", "RemoteDisconnected", "closed"))
        for e in plain["errors"]
    ), plain

    # PERMISSIVE: both.
    cluster.cli("apply", "-f", "-", stdin=json.dumps(policy("PERMISSIVE")))
    wait_for(lambda: "inbound-plaintext" in inbound_chains(cluster, uid), timeout=60)
    meshed = run_client(cluster, "client-2", "meshed", seconds=3, warm=True)
    assert meshed["failed"] == 0 and meshed["ok"] > 0, meshed
    plain = run_client(cluster, "client-2", "plain", seconds=3, warm=False)
    assert plain["failed"] == 0 and plain["ok"] > 0, plain

    # Rotation: back to STRICT (every call is mTLS), a meshed client calls for 20 s while the
    # certificates (8 s) are issued again every 4 s; the server's Envoy is seen holding
    # several in turn, and not one call fails.
    cluster.cli("apply", "-f", "-", stdin=json.dumps(policy("STRICT")))
    wait_for(lambda: "inbound-plaintext" not in inbound_chains(cluster, uid), timeout=60)
    cluster.cli("apply", "-f", "-",
                stdin=json.dumps(client("rotating", "meshed", seconds=20, warm=True)))  # fmt: skip
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    while not finished_pod(cluster, "meshed", "rotating"):
        assert time.monotonic() < deadline, "the rotating client did not finish"
        seen |= serials(cluster, uid)
        time.sleep(0.5)
    out = cluster.cli("logs", "rotating", "-n", "meshed").stdout
    rotating = json.loads(out.strip().splitlines()[-1])
    assert rotating["failed"] == 0 and rotating["ok"] > 50, rotating
    assert len(seen) >= 3, seen  # the server's certificate changed at least twice meanwhile
    assert cluster.down() == 0


def test_the_mesh_ca_is_kept_owner_only_outside_the_log(cluster: Cluster, tmp_path: Path) -> None:
    cluster.up()
    ca_dir = cluster.data_dir / "pki" / "mesh"
    wait_for(lambda: (ca_dir / "ca.key").exists(), timeout=30)
    assert (ca_dir.stat().st_mode & 0o777) == 0o700
    assert ((ca_dir / "ca.key").stat().st_mode & 0o777) == 0o600
    first = (ca_dir / "ca.pem").read_bytes()
    assert cluster.down() == 0
    cluster.up()
    wait_for(lambda: (ca_dir / "ca.pem").exists(), timeout=30)
    assert (ca_dir / "ca.pem").read_bytes() == first  # kept: proxies trust each other still
    assert cluster.down() == 0
