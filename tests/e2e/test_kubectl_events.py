"""The real ``kubectl get events`` (and ``-w``) against ``fleetlog up``: the events derived from
the log in kube's table, followed live, and watched from a resourceVersion.

Why this exists: ``kubectl get events`` prints the server's Table (LAST SEEN, TYPE, REASON,
OBJECT, MESSAGE) and ``-w`` lists then watches from the list's resourceVersion; fleetlog has no
Event objects, so both are derived from the log as ``kubectl describe``'s are, and a watch must
see the events of what happens after it started (a deployment scaled by a patch: ScalingReplicaSet, its
replica set's SuccessfulCreate) without a 405.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_kubectl import Kubectl, kubectl, lines  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, command: ["sleep", "1000"]}]
"""


def _follow(run: Kubectl, *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    process = subprocess.Popen(
        [run.binary, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**run.env},
    )
    seen: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.put(" ".join(line.split()))

    threading.Thread(target=read, daemon=True).start()
    return process, seen


def _until(seen: queue.Queue[str], wanted: str, timeout: float = 60.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(wanted in line for line in got):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{wanted!r} not seen; saw {got}"
        try:
            got.append(seen.get(timeout=remaining))
        except queue.Empty:
            continue
    return got


def test_get_events_prints_kube_s_table_and_watch_follows_new_events(
    kubectl: Kubectl,  # noqa: F811
) -> None:
    kubectl("apply", "-f", "-", stdin=DEPLOYMENT)
    wait_for(lambda: "ScalingReplicaSet" in kubectl("get", "events").stdout)
    table = lines(kubectl("get", "events"))
    assert table[0] == "LAST SEEN TYPE REASON OBJECT MESSAGE"
    assert any(
        row.split()[1:4] == ["Normal", "ScalingReplicaSet", "deployment/web"]
        and row.endswith("from 0 to 1")
        for row in table[1:]
    ), table
    listed = json.loads(kubectl("get", "--raw", "/api/v1/namespaces/default/events").stdout)
    since = listed["metadata"]["resourceVersion"]

    process, seen = _follow(kubectl, "get", "events", "-w")
    try:
        _until(seen, "from 0 to 1")  # the list kubectl -w starts with
        kubectl("patch", "deployment", "web", "-p", '{"spec": {"replicas": 3}}')
        followed = _until(seen, "from 1 to 3")
        followed += _until(seen, "SuccessfulCreate")
        assert any("ScalingReplicaSet deployment/web" in line for line in followed)
        assert any(
            "Normal SuccessfulCreate replicaset/web-" in line and "Created pod: web-" in line
            for line in followed
        ), followed
    finally:
        process.terminate()
        process.wait(timeout=10)

    # From the resourceVersion of the list before the scale: what happened since, only.
    raw = kubectl(
        "get", "--raw",
        f"/api/v1/namespaces/default/events?watch=1&resourceVersion={since}&timeoutSeconds=2",
    ).stdout  # fmt: skip
    events = [json.loads(line) for line in raw.splitlines() if line.strip()]
    messages = [e["object"]["message"] for e in events]
    assert {e["type"] for e in events} == {"ADDED"}
    assert any(m.endswith("from 1 to 3") for m in messages), messages
    assert not any(m.endswith("from 0 to 1") for m in messages), messages
