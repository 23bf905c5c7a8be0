"""End to end: ``fleetlog up`` keeps a cluster key of its own (0600), a pod of its local agent
reads a Secret's value from its environment, and the value is in none of the files of the
JetStream directory (the log, the audit trail, the buckets) but its output."""

from __future__ import annotations

import sys

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

VALUE = "e2e-secret-value-7f3a9c"
MANIFEST = f"""\
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{token: {VALUE}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: process
      command: ["{sys.executable}", "-c", "import os; print('token=' + os.environ['TOKEN'], flush=True)"]
      env:
        - name: TOKEN
          valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}
"""


def test_up_keeps_a_cluster_key_and_a_pod_reads_a_secret_that_is_nowhere_on_disk(
    cluster: Cluster,
) -> None:
    cluster.up(agent=True)
    key = cluster.data_dir / "pki" / "cluster.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and key.stat().st_size == 32
    assert oct(key.parent.stat().st_mode & 0o777) == "0o700"
    cluster.cli("apply", "-f", "-", stdin=MANIFEST)
    wait_for(
        lambda: f"token={VALUE}" in cluster.cli("logs", "reader", check=False).stdout,
        timeout=60,
    )
    stored = [p for p in (cluster.data_dir / "jetstream").rglob("*") if p.is_file()]
    assert any("KV_fleet_secret_keys" in str(p) for p in stored)
    stored += list(cluster.data_dir.glob("history.sqlite3*"))
    leaked = [p for p in stored if VALUE.encode() in p.read_bytes()]
    # Only the container's output, shipped to FLEET_LOGS, holds it (the pod printed it).
    assert leaked and all("FLEET_LOGS" in str(p) for p in leaked), leaked
