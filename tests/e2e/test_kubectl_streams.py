"""The real ``kubectl logs``, ``exec`` against a real ``fleetlog up`` with a local node agent.

Why this exists: these verbs stream. ``logs`` reads the container's output from the stream the
agent ships it to; ``exec`` goes over a WebSocket to the API server and from there over a NATS
session to the pod's node, where the command runs inside the container. kubectl is the client
that decides whether fleetlog speaks these protocols as Kubernetes does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl import Kubectl

pytestmark = pytest.mark.e2e

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo first; sleep 2; echo second; sleep 1000"]
    env: [{name: GREETING, value: hello-from-env}]
---
apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  containers:
  - {name: a, image: busybox, command: ["sleep", "1000"]}
  - {name: b, image: busybox, command: ["sleep", "1000"]}
---
apiVersion: v1
kind: Pod
metadata: {name: brief}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "sleep 3; echo done"]}
"""


@pytest.fixture
def streams(cluster: Cluster) -> Kubectl:
    cluster.up(agent=True)
    kubeconfig = cluster.data_dir / "kubeconfig"
    wait_for(kubeconfig.exists)
    run = Kubectl(kubeconfig)
    wait_for(lambda: run("get", "namespaces", check=False).returncode == 0)
    run("apply", "-f", "-", stdin=PODS)

    def running(name: str) -> bool:
        phase = run("get", "pod", name, "-o", "jsonpath={.status.phase}", check=False)
        return phase.stdout == "Running"

    wait_for(lambda: running("talker") and running("pair"), timeout=60)
    return run


def test_logs_follow_tail_previous_and_errors(streams: Kubectl) -> None:
    kubectl = streams
    wait_for(lambda: "second" in kubectl("logs", "talker").stdout)
    assert kubectl("logs", "talker").stdout == "first\nsecond\n"
    assert kubectl("logs", "talker", "--tail", "1").stdout == "second\n"
    stamped = kubectl("logs", "talker", "--timestamps").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["first", "second"]
    assert stamped[0][:4].isdigit() and stamped[0].split(" ")[0].endswith("Z")
    assert kubectl("logs", "talker", "--since", "1h").stdout == "first\nsecond\n"
    assert kubectl("logs", "talker", "--limit-bytes", "3").stdout == "fir"

    # kubectl picks the first container itself; the server's own answer without one:
    several = kubectl("get", "--raw", "/api/v1/namespaces/default/pods/pair/log", check=False)
    assert several.returncode != 0
    assert (
        "Error from server (BadRequest): a container name must be specified for pod pair, "
        "choose one of: [a b]" in several.stderr
    )
    unknown = kubectl(
        "get", "--raw", "/api/v1/namespaces/default/pods/pair/log?container=nope", check=False
    )
    assert "(BadRequest): container nope is not valid for pod pair" in unknown.stderr
    previous = kubectl("logs", "talker", "--previous", check=False)
    assert previous.returncode != 0
    assert 'previous terminated container "main" in pod "talker" not found' in previous.stderr

    # -f ends by itself once the followed container has ended.
    wait_for(lambda: "Running" in kubectl("get", "pod", "brief").stdout, timeout=60)
    started = time.monotonic()
    followed = kubectl("logs", "-f", "brief")
    assert followed.stdout == "done\n"
    assert time.monotonic() - started < 30


def test_logs_follow_sees_new_lines_and_ends_when_the_client_leaves(
    streams: Kubectl,
) -> None:
    kubectl = streams
    process = subprocess.Popen(
        [kubectl.binary, "logs", "-f", "talker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "KUBECONFIG": str(kubectl.kubeconfig)},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"first\n"
        assert process.stdout.readline() == b"second\n"
        assert process.poll() is None  # the container runs on: so does the follow
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert kubectl("logs", "talker").stdout == "first\nsecond\n"  # the server is fine


def test_exec_runs_in_the_container_with_exit_code_and_stdin(
    streams: Kubectl, cluster: Cluster
) -> None:
    kubectl = streams
    result = kubectl("exec", "talker", "--", "sh", "-c", "echo hi; exit 3", check=False)
    assert result.stdout == "hi\n"
    assert result.returncode == 3

    env = kubectl("exec", "talker", "--", "sh", "-c", 'echo "$GREETING $HOSTNAME"; id -u')
    assert env.stdout.splitlines() == ["hello-from-env talker", str(os.getuid())]
    errors = kubectl("exec", "talker", "--", "sh", "-c", "echo oops >&2")
    assert errors.stderr == "oops\n" and errors.stdout == ""

    piped = kubectl("exec", "-i", "talker", "--", "sh", "-c", "tr a-z A-Z; echo end",
                    stdin="shout\nlouder\n")  # fmt: skip
    assert piped.stdout == "SHOUT\nLOUDER\nend\n"

    # The command is in the container's cgroup and network namespace, not the agent's.
    inside = kubectl("exec", "talker", "--", "sh", "-c",
                     "cat /proc/self/cgroup; readlink /proc/self/ns/net").stdout  # fmt: skip
    uid = kubectl("get", "pod", "talker", "-o", "jsonpath={.metadata.uid}").stdout
    state = cluster.data_dir / "agent" / "pods" / uid / "main" / "0" / "container.json"
    pid = json.loads(state.read_text())["pid"]
    container = Path(f"/proc/{pid}/cgroup").read_text() + os.readlink(f"/proc/{pid}/ns/net")
    assert inside == container + "\n"
    picked = kubectl("exec", "pair", "-c", "b", "--", "sh", "-c", "echo from-b")
    assert picked.stdout == "from-b\n"

    wait_for(lambda: "Completed" in kubectl("get", "pod", "brief").stdout, timeout=60)
    finished = kubectl("exec", "brief", "--", "true", check=False)
    assert finished.returncode != 0
    assert "completed pod" in finished.stderr
