"""End to end: a meshed pod lives as Istio's does. Its HTTP readiness and liveness probes pass
under a STRICT PeerAuthentication (the node agent probes from inside the pod's network
namespace, where the pod's own address is reached over ``lo``, not through the sidecar that
takes only mTLS); its ``istio-proxy`` is in the pod's status (READY 2/2, ``describe``, ``logs
-c istio-proxy``, Ready only with it); an Envoy killed by PID is restarted (restartCount 1,
then 2 after the containers' 10 s back-off) and traffic flows again; and a ``fleetlog agent`` started apart from ``up`` meshes pods when
given the ADS address file. Real ``fleetlog up``, agent, process pods, Envoy and nftables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import pod_network_unavailable, wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl import Kubectl
from tests.e2e.test_mesh_mtls_up import policy, ready, run_client
from tests.e2e.test_mesh_sidecar_up import SERVES_ITS_VERSION, envoys_of, pod

pytestmark = pytest.mark.e2e

PROBE = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}


def manifests() -> list[dict[str, Any]]:
    meshed = {"istio-injection": "enabled"}
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "secure", "labels": meshed}},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "meshed", "labels": meshed}},
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
             # HTTP probes, which a probe from the node could not pass under STRICT.
             "readinessProbe": PROBE, "livenessProbe": PROBE}]}},
    ]  # fmt: skip


def statuses(cluster: Cluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    found = (pod(cluster, namespace, name).get("status") or {}).get("containerStatuses") or []
    return {s["name"]: s for s in found}


def ready_column(cluster: Cluster, namespace: str, name: str) -> str:
    out = cluster.cli("get", "pod", name, "-n", namespace).stdout.splitlines()
    header, row = out[0].split(), out[1].split()
    return row[header.index("READY")]


def sidecar_restarted(cluster: Cluster, namespace: str, name: str, count: int) -> bool:
    sidecar = statuses(cluster, namespace, name).get("istio-proxy") or {}
    return (
        sidecar.get("restartCount") == count
        and bool(sidecar.get("ready"))
        and ready(cluster, namespace, name)
    )


def test_probes_pass_under_strict_and_the_sidecar_is_in_the_status_and_restarted(
    cluster: Cluster,
) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up(agent=True)
    cluster.cli("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests()))
    # Probes under STRICT: the pod becomes Ready, and its liveness probe does not restart it.
    wait_for(lambda: ready(cluster, "secure", "web"), timeout=120)
    uid = pod(cluster, "secure", "web")["metadata"]["uid"]
    time.sleep(5)  # five liveness periods
    assert ready(cluster, "secure", "web")
    shown = statuses(cluster, "secure", "web")
    assert shown["web"]["restartCount"] == 0, shown

    # istio-proxy in the status, after the spec's container, as Istio's injected one.
    manifest = pod(cluster, "secure", "web")
    assert [c["name"] for c in manifest["spec"]["containers"]] == ["web"]  # spec untouched
    assert [s["name"] for s in manifest["status"]["containerStatuses"]] == ["web", "istio-proxy"]
    sidecar = shown["istio-proxy"]
    assert sidecar["ready"] is True and "running" in sidecar["state"], sidecar
    assert sidecar["restartCount"] == 0
    assert ready_column(cluster, "secure", "web") == "2/2"
    assert "istio-proxy" in cluster.cli("describe", "pod", "web", "-n", "secure").stdout
    envoy_output = cluster.cli("logs", "web", "-n", "secure", "-c", "istio-proxy").stdout
    assert "starting main dispatch loop" in envoy_output  # Envoy's own output
    # kubectl through the Kubernetes API agrees: READY 2/2, and the sidecar's logs.
    kubeconfig = cluster.data_dir / "kubeconfig"
    wait_for(kubeconfig.exists)
    kubectl = Kubectl(kubeconfig)
    row = kubectl("get", "pod", "web", "-n", "secure", "--no-headers").stdout.split()
    assert row[1] == "2/2", row
    # (kubectl's own `logs -c` checks the name against the spec before asking: the API's
    # log subresource is asked directly.)
    path = "/api/v1/namespaces/secure/pods/web/log?container=istio-proxy"
    assert "starting main dispatch loop" in kubectl("get", "--raw", path).stdout

    # Envoy killed by PID: it comes back (the first restart waits no back-off), counted.
    before = envoys_of(uid)
    assert len(before) == 1, before
    os.kill(before[0], signal.SIGKILL)
    wait_for(lambda: sidecar_restarted(cluster, "secure", "web", 1), timeout=120)
    after = envoys_of(uid)
    assert len(after) == 1 and after != before, (before, after)
    last = statuses(cluster, "secure", "web")["istio-proxy"]["lastState"]["terminated"]
    assert last["exitCode"] == 137 and last["reason"] == "Error", last
    assert ready_column(cluster, "secure", "web") == "2/2"
    # Killed again: the containers' back-off (the second restart waits 10 s), seen waiting.
    os.kill(after[0], signal.SIGKILL)

    def backing_off() -> bool:
        state = statuses(cluster, "secure", "web")["istio-proxy"]["state"]
        return (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff"

    wait_for(backing_off, timeout=60)
    assert ready_column(cluster, "secure", "web") == "1/2"
    assert not ready(cluster, "secure", "web")  # Ready needs the sidecar too
    wait_for(lambda: sidecar_restarted(cluster, "secure", "web", 2), timeout=120)
    # Traffic flows again: a meshed client reaches it over mTLS through the new Envoy.
    answered = run_client(cluster, "client", "meshed", seconds=3, warm=True)
    assert answered["failed"] == 0 and answered["ok"] > 0, answered
    assert statuses(cluster, "secure", "web")["web"]["restartCount"] == 0
    assert cluster.down() == 0


def test_an_agent_started_apart_from_up_meshes_pods(cluster: Cluster, tmp_path: Path) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up()  # the control plane and the mesh-push handler, no local agent
    address_file = cluster.data_dir / "mesh" / "ads-address"
    wait_for(address_file.exists, timeout=60)
    log = (tmp_path / "agent.log").open("ab")
    agent = subprocess.Popen(
        [sys.executable, "-m", "ops", "agent", "--name", "e2e-node",
         "--root", str(cluster.data_dir / "agent"), "--heartbeat", "1",
         "--pod-bridge", cluster.pod_bridge, "--pod-network-prefix", cluster.pod_prefix,
         "--mesh-ads-address-file", str(address_file)],
        env=cluster.env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        cluster.cli("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests()))
        wait_for(lambda: ready(cluster, "secure", "web"), timeout=120)
        uid = pod(cluster, "secure", "web")["metadata"]["uid"]
        assert len(envoys_of(uid)) == 1
        assert statuses(cluster, "secure", "web")["istio-proxy"]["ready"] is True
        assert ready_column(cluster, "secure", "web") == "2/2"
        cluster.cli("delete", "pod", "web", "-n", "secure")
        wait_for(lambda: not envoys_of(uid), timeout=60)  # stopped with its pod
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=30)
    assert cluster.down() == 0
