"""``fleetlog up`` and its service ranges as real processes: a bad range stops it before it
starts; otherwise the cluster starts with the ``kubernetes`` service at the range's first
address, and services get their addresses and node ports from the ranges it was given."""

from __future__ import annotations

import pytest

from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e


def test_bad_service_ranges_stop_up_before_it_starts(cluster: Cluster) -> None:
    result = cluster.cli(
        "up", "--data-dir", str(cluster.data_dir), "--service-cluster-ip-range", "10.0.0.0/8",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: --service-cluster-ip-range '10.0.0.0/8' is too large; for 32-bit addresses, "
        "the mask must be >= 12"
    ]
    result = cluster.cli(
        "up", "--data-dir", str(cluster.data_dir), "--service-node-port-range", "32767-30000",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "--service-node-port-range '32767-30000'" in result.stderr
    assert not (cluster.data_dir / "nats-server.pid").exists()


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def test_the_cluster_starts_with_the_kubernetes_service_in_the_ranges_given(
    cluster: Cluster,
) -> None:
    ranges = ["--service-cluster-ip-range", "100.70.8.0/24"]
    ranges += ["--service-node-port-range", "31000-31009"]
    cluster.up(options=ranges)
    services = cluster.cli("get", "svc").stdout.splitlines()
    assert services[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert services[1].split()[:5] == ["kubernetes", "ClusterIP", "100.70.8.1", "<none>", "443/TCP"]
    addresses = cluster.cli("get", "ipaddresses").stdout.splitlines()
    assert addresses[1].split()[:2] == ["100.70.8.1", "services/default/kubernetes"]
    # kube-dns at the range's tenth address, as kubeadm makes it (served by every node agent).
    dns = cluster.cli("get", "svc", "kube-dns", "-n", "kube-system").stdout.splitlines()[1]
    assert dns.split()[:5] == ["kube-dns", "ClusterIP", "100.70.8.10", "<none>", "53/UDP,53/TCP"]
    assert addresses[2].split()[:2] == ["100.70.8.10", "services/kube-system/kube-dns"]
    assert cluster.cli("apply", "-f", "-", stdin=SERVICE).stdout.strip() == "service/web created"
    web = cluster.cli("get", "svc", "web").stdout.splitlines()[1].split()
    address, ports = web[2], web[4]
    assert address.startswith("100.70.8.") and address not in ("100.70.8.1", "100.70.8.10")
    assert ports.startswith("80:310") and 31000 <= int(ports[3:8]) <= 31009
    # Up again on the same data: the kubernetes service is as it was.
    assert cluster.down() == 0
    cluster.up(options=ranges)
    history = cluster.cli("history", "service/kubernetes").stdout.splitlines()
    assert [line.split()[3] for line in history[1:]] == ["ServiceCreated"]
    assert cluster.down() == 0
