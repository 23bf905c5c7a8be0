"""The real ``kubectl logs``, ``exec`` against a real ``fleetlog up`` with a local node agent,
and port-forwarding over the kubelet's WebSocket channel protocol.

Why this exists: these verbs stream. ``logs`` reads the container's output from the stream the
agent ships it to; ``exec`` and port-forward go over a WebSocket to the API server and from
there over a NATS session to the pod's node, where the command runs inside the container and
the connection is made inside the pod's network. kubectl is the client that decides whether
fleetlog speaks these protocols as Kubernetes does. (``kubectl port-forward`` itself tunnels
SPDY: tests/e2e/test_kubectl_spdy.py; the kubelet's WebSocket channel protocol is driven here by
a WebSocket client.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import websocket
import yaml

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
  - {name: main, image: busybox, command: ["sh", "-c", "sleep 5; echo done"]}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    image: python
    command: ["python3", "-m", "http.server", "8080", "--bind", "127.0.0.1"]
    workingDir: /etc
---
apiVersion: v1
kind: Pod
metadata:
  name: boxed
  annotations: {fleetlog.dev/isolation: bubblewrap}
spec:
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "echo secret > /tmp/mine; sleep 1000"]}
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

    wait_for(lambda: all(running(p) for p in ("talker", "pair", "web", "boxed")), timeout=60)
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

    # -f ends by itself once the followed container has ended (or at once if it already has:
    # under load, the pod may be done before this line runs).
    wait_for(
        lambda: (
            kubectl("get", "pod", "brief", "-o", "jsonpath={.status.phase}").stdout
            in ("Running", "Succeeded")
        ),
        timeout=60,
    )
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
        env={**kubectl.env},
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


def test_exec_enters_an_isolated_container_s_own_sandbox(streams: Kubectl) -> None:
    kubectl = streams
    # The container's private /tmp and pid namespace, not a fresh sandbox beside it.
    inside = kubectl("exec", "boxed", "--", "sh", "-c", "cat /tmp/mine; hostname; echo $$")
    secret, hostname, pid = inside.stdout.split()
    assert (secret, hostname) == ("secret", "boxed")
    assert int(pid) < 100  # a small pid: inside the sandbox's pid namespace
    assert not Path("/tmp/mine").exists()


def _websocket(kubectl: Kubectl, tmp_path: Path, url_path: str) -> websocket.WebSocket:
    config = yaml.safe_load(kubectl.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"].replace("https://", "wss://")
    user = config["users"][0]["user"]
    files = {}
    for key, name in (("client-certificate-data", "cert"), ("client-key-data", "key")):
        files[name] = tmp_path / name
        files[name].write_bytes(base64.b64decode(user[key]))
    ca = tmp_path / "ca"
    ca.write_bytes(base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]))
    return websocket.create_connection(
        server + url_path,
        subprotocols=["v4.channel.k8s.io"],
        sslopt={"certfile": str(files["cert"]), "keyfile": str(files["key"]),
                "ca_certs": str(ca)},
        timeout=30,
    )  # fmt: skip


def test_port_forward_reaches_the_pod_s_own_localhost(streams: Kubectl, tmp_path: Path) -> None:
    kubectl = streams
    url = "/api/v1/namespaces/default/pods/web/portforward?ports=8080"

    def fetch() -> tuple[bytes, bytes]:
        ws = _websocket(kubectl, tmp_path, url)
        try:
            assert ws.recv() == b"\x00\x90\x1f"  # data channel, port 8080
            assert ws.recv() == b"\x01\x90\x1f"  # error channel, port 8080
            ws.send_binary(b"\x00GET /hostname HTTP/1.0\r\nHost: pod\r\n\r\n")
            received, errors = b"", b""
            while True:
                try:
                    message = ws.recv()
                except websocket.WebSocketConnectionClosedException:
                    break
                if not message:
                    break
                if message[0] == 0:
                    received += message[1:]
                elif message[0] == 1:
                    errors += message[1:]
            return received, errors
        finally:
            ws.close()

    answer = b""

    def answered() -> bool:
        nonlocal answer
        answer, errors = fetch()
        if errors:  # the server is still starting: the pod refuses the connection
            assert b"connection refused" in errors
            return False
        return answer.startswith(b"HTTP/1.0 200")

    wait_for(answered)  # the server may still be starting
    assert answer.split(b"\r\n\r\n", 1)[1] == Path("/etc/hostname").read_bytes()

    # A port nothing listens on in the pod: the error channel says so, as the kubelet's Go
    # dialer does (kubectl shows it), and the stream ends.
    ws = _websocket(kubectl, tmp_path, "/api/v1/namespaces/default/pods/web/portforward?ports=9")
    try:
        assert ws.recv() == b"\x00\x09\x00" and ws.recv() == b"\x01\x09\x00"
        ws.send_binary(b"\x00GET / HTTP/1.0\r\n\r\n")
        refused = b""
        with contextlib.suppress(websocket.WebSocketConnectionClosedException):
            while message := ws.recv():
                if message[0] == 1:
                    refused += message[1:]
    finally:
        ws.close()
    assert refused.endswith(
        b"inside the pod's network: dial tcp4 127.0.0.1:9: connect: connection refused"
    ), refused

    nothing = _websocket(kubectl, tmp_path, url.replace("8080", "8081"))
    try:
        nothing.recv(), nothing.recv()
        error = nothing.recv()
        assert error[0] == 1 and b"localhost:8081" in error
    finally:
        nothing.close()

    missing = kubectl(
        "get", "--raw", "/api/v1/namespaces/default/pods/web/portforward", check=False
    )
    assert 'Error from server (BadRequest): query parameter "port" is required' in missing.stderr


def test_an_exec_whose_client_leaves_is_killed_on_the_node(
    streams: Kubectl, cluster: Cluster
) -> None:
    kubectl = streams
    uid = kubectl("get", "pod", "talker", "-o", "jsonpath={.metadata.uid}").stdout
    marker = cluster.data_dir / "agent" / "pods" / uid / "main" / "work" / "exec.pid"
    client = subprocess.Popen(
        [kubectl.binary, "exec", "talker", "--", "sh", "-c", "echo $$ > exec.pid; exec sleep 1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**kubectl.env},
    )
    try:
        wait_for(lambda: marker.exists() and marker.read_text().strip().isdigit())
        pid = int(marker.read_text())
        os.kill(pid, 0)  # the command runs, as a process of this machine
    finally:
        client.kill()  # the client goes away without a word
        client.wait(timeout=10)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone)
