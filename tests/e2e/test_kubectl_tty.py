"""``kubectl exec -t`` / ``-it``: a command with a terminal of its own, against a real
``fleetlog up`` with a local node agent; and ``kubectl exec`` over its SPDY fallback.

Why this exists: with ``tty`` the node's agent gives the command a pseudo-terminal (inside the
container, as any exec), the terminal's output comes back on stdout only, and the resize
channel sets the terminal's size. kubectl only asks for a terminal when its own input is one,
so it runs here on a pseudo-terminal of the test's; the resize mid-session is driven by a
WebSocket client speaking ``v5.channel.k8s.io`` as kubectl does. With
``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`` kubectl speaks what it falls back to when a
WebSocket upgrade fails: ``v4.channel.k8s.io`` over a plain SPDY upgrade, one stream per channel.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import websocket
import yaml

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl import Kubectl

pytestmark = pytest.mark.e2e

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  containers:
  - {name: main, image: busybox, command: ["sleep", "1000"]}
"""


@pytest.fixture
def kubectl(cluster: Cluster) -> Kubectl:
    cluster.up(agent=True)
    kubeconfig = cluster.data_dir / "kubeconfig"
    wait_for(kubeconfig.exists)
    run = Kubectl(kubeconfig)
    wait_for(lambda: run("get", "namespaces", check=False).returncode == 0)
    run("apply", "-f", "-", stdin=POD)
    phase = ("get", "pod", "shell", "-o", "jsonpath={.status.phase}")
    wait_for(lambda: run(*phase, check=False).stdout == "Running", timeout=60)
    return run


def read_until_exit(fd: int, process: subprocess.Popen[bytes], *, timeout: float) -> bytes:
    """Everything written to the terminal ``fd`` until ``process`` has exited and it is drained."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side of the terminal is closed
                break
            if not chunk:
                break
            out += chunk
        elif process.poll() is not None:
            break
    return out


SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}


@pytest.mark.parametrize("protocol", ["websocket", "spdy"])
def test_kubectl_exec_it_runs_the_command_on_a_terminal_of_the_clients_size(
    kubectl: Kubectl, protocol: str
) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    process = subprocess.Popen(
        [kubectl.binary, "exec", "-i", "-t", "shell", "--",
         "sh", "-c", "tty; stty size; echo to-stderr >&2; exit 3"],
        stdin=slave, stdout=slave, stderr=slave,
        env={**kubectl.env,
             **(SPDY if protocol == "spdy" else {})},
    )  # fmt: skip
    os.close(slave)
    try:
        output = read_until_exit(master, process, timeout=60).decode(errors="replace")
        assert process.wait(timeout=30) == 3, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(master)
    lines = [line.strip() for line in output.splitlines()]
    assert any(line.startswith("/dev/pts/") for line in lines), output  # a terminal, not a pipe
    assert "33 101" in lines, output  # the size of kubectl's own terminal
    assert "to-stderr" in lines, output  # stderr is the terminal too


def _exec_websocket(kubectl: Kubectl, tmp_path: Path, query: str) -> websocket.WebSocket:
    config = yaml.safe_load(kubectl.kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    files = {}
    for key, name in (("client-certificate-data", "cert"), ("client-key-data", "key"),
                      ("certificate-authority-data", "ca")):  # fmt: skip
        files[name] = tmp_path / name
        files[name].write_bytes(base64.b64decode(user.get(key) or cluster[key]))
    return websocket.create_connection(
        cluster["server"].replace("https://", "wss://")
        + "/api/v1/namespaces/default/pods/shell/exec?" + query,
        subprotocols=["v5.channel.k8s.io"],
        sslopt={"certfile": str(files["cert"]), "keyfile": str(files["key"]),
                "ca_certs": str(files["ca"])},
        timeout=30,
    )  # fmt: skip


def test_the_resize_channel_sets_the_terminal_size_mid_session(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    script = "stty size; read line; stty size; echo got:$line"
    query = urlencode(
        [("command", "sh"), ("command", "-c"), ("command", script),
         ("stdin", "true"), ("stdout", "true"), ("tty", "true")]
    )  # fmt: skip
    ws = _exec_websocket(kubectl, tmp_path, query)
    channels: dict[int, bytes] = {}

    def receive_until(needle: bytes) -> None:
        while needle not in channels.get(1, b""):
            message = ws.recv()
            assert message, f"closed before {needle!r}: {channels}"
            channels[message[0]] = channels.get(message[0], b"") + message[1:]

    try:
        ws.send_binary(b"\x04" + json.dumps({"Width": 80, "Height": 24}).encode())
        receive_until(b"24 80")
        ws.send_binary(b"\x04" + json.dumps({"Width": 120, "Height": 50}).encode())
        ws.send_binary(b"\x00hello\n")
        receive_until(b"got:hello")
        while True:  # the command's end: the error channel's Status, then the close
            try:
                message = ws.recv()
            except websocket.WebSocketConnectionClosedException:
                break
            if not message:
                break
            channels[message[0]] = channels.get(message[0], b"") + message[1:]
    finally:
        ws.close()
    lines = channels[1].replace(b"\r", b"").split(b"\n")
    assert lines[0] == b"24 80"
    assert b"50 120" in lines  # after the resize
    assert b"hello" in lines  # the terminal echoes what is typed
    assert 2 not in channels  # no stderr channel with a terminal
    assert json.loads(channels[3])["status"] == "Success"


def test_kubectl_exec_over_spdy_streams_stdin_stdout_stderr_and_the_exit_code(
    kubectl: Kubectl,
) -> None:
    env = {**kubectl.env, **SPDY}
    result = subprocess.run(
        [kubectl.binary, "-v=6", "exec", "-i", "shell", "--", "sh", "-c",
         "tr a-z A-Z; echo oops >&2; exit 4"],
        input="shout\nlouder\n", capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.stdout == "SHOUT\nLOUDER\n"
    assert "\noops\n" in result.stderr
    assert result.returncode == 4
    assert "101 Switching Protocols" in result.stderr  # it was the SPDY upgrade
    assert "websocket" not in result.stderr.lower()
    done = subprocess.run(
        [kubectl.binary, "exec", "shell", "--", "sh", "-c", "echo fine"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert (done.stdout, done.returncode) == ("fine\n", 0)


def test_a_spdy_exec_whose_client_leaves_is_killed_on_the_node(
    kubectl: Kubectl, cluster: Cluster
) -> None:
    uid = kubectl("get", "pod", "shell", "-o", "jsonpath={.metadata.uid}").stdout
    marker = cluster.data_dir / "agent" / "pods" / uid / "main" / "work" / "spdy.pid"
    client = subprocess.Popen(
        [kubectl.binary, "exec", "shell", "--", "sh", "-c", "echo $$ > spdy.pid; exec sleep 1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**kubectl.env, **SPDY},
    )  # fmt: skip
    try:
        wait_for(lambda: marker.exists() and marker.read_text().strip().isdigit())
        pid = int(marker.read_text())
        os.kill(pid, 0)  # the command runs
    finally:
        client.kill()  # by its PID: the client goes away without a word
        client.wait(timeout=10)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone)
