"""The real ``kubectl port-forward`` (SPDY/3.1 tunnelled in a WebSocket) against a real
``fleetlog up`` with a local node agent.

Why this exists: kubectl 1.31+ forwards ports by tunnelling SPDY/3.1 frames in binary WebSocket
messages (``SPDY/3.1+portforward.k8s.io``), pairing an error and a data stream per forwarded
connection. kubectl's own SPDY library (spdystream) is the judge of whether fleetlog's framing,
header compression and stream handling are right; the pod's own server is the judge of whether
the bytes arrive, and of whether a connection ends on the node when kubectl goes away.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from core.kubeapi import spdy
from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl import Kubectl

pytestmark = pytest.mark.e2e

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    image: python
    command:
    - sh
    - -c
    - >-
      head -c 300000 /dev/urandom > big; cp /etc/hostname hostname;
      python3 -m http.server 8081 --bind 127.0.0.1 --directory /proc/sys/kernel &
      exec python3 -m http.server 8080 --bind 127.0.0.1
---
apiVersion: v1
kind: Pod
metadata: {name: sink}
spec:
  containers:
  - name: main
    image: python
    command:
    - python3
    - -c
    - |
      import socket
      server = socket.socket()
      server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      server.bind(("127.0.0.1", 9000))
      server.listen()
      while True:
          conn, _ = server.accept()
          with open("events", "a") as out:
              out.write("open\\n")
          while conn.recv(4096):
              pass
          with open("events", "a") as out:
              out.write("closed\\n")
          conn.close()
"""


@pytest.fixture
def pods(cluster: Cluster) -> Kubectl:
    cluster.up(agent=True)
    kubeconfig = cluster.data_dir / "kubeconfig"
    wait_for(kubeconfig.exists)
    run = Kubectl(kubeconfig)
    wait_for(lambda: run("get", "namespaces", check=False).returncode == 0)
    run("apply", "-f", "-", stdin=PODS)

    def running(name: str) -> bool:
        phase = run("get", "pod", name, "-o", "jsonpath={.status.phase}", check=False)
        return phase.stdout == "Running"

    wait_for(lambda: all(running(p) for p in ("web", "sink")), timeout=60)

    # kubectl port-forward gives up for good on the first refused connection (as it should):
    # forward only once the pod's servers listen.
    def listening(pod: str, *ports: int) -> bool:
        probe = f"import socket; [socket.create_connection(('127.0.0.1', p)) for p in {ports}]"
        return run("exec", pod, "--", "python3", "-c", probe, check=False).returncode == 0

    wait_for(lambda: listening("web", 8080, 8081) and listening("sink", 9000), timeout=60)
    return run


class PortForward:
    """``kubectl port-forward`` running in the background; its output read as it comes."""

    def __init__(self, kubectl: Kubectl, *args: str, websockets: bool = True) -> None:
        env = {**kubectl.env}
        if not websockets:  # kubectl's switch back to the plain SPDY upgrade
            env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
        self.process = subprocess.Popen(
            [kubectl.binary, "port-forward", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def local_ports(self, count: int) -> dict[int, int]:
        """Remote port -> the local port kubectl chose (``0:remote``), once it says so."""
        pattern = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")

        def found() -> dict[int, int]:
            return {
                int(m.group(2)): int(m.group(1))
                for line in list(self.output)
                if (m := pattern.search(line))
            }

        wait_for(lambda: len(found()) >= count or self.process.poll() is not None, timeout=60)
        assert len(found()) >= count, "".join(self.output)
        return found()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)


@pytest.fixture
def forwards() -> Iterator[list[PortForward]]:
    started: list[PortForward] = []
    yield started
    for forward in started:
        forward.stop()


def http_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_kubectl_port_forward_reaches_the_pod_on_two_ports_at_once(
    pods: Kubectl, forwards: list[PortForward], cluster: Cluster
) -> None:
    uid = pods("get", "pod", "web", "-o", "jsonpath={.metadata.uid}").stdout
    work = cluster.data_dir / "agent" / "pods" / uid / "main" / "work"
    forward = PortForward(pods, "pod/web", "0:8080", "0:8081")
    forwards.append(forward)
    local = forward.local_ports(2)

    hostname = http_get(local[8080], "/hostname")
    assert hostname.startswith(b"HTTP/1.0 200")
    assert hostname.split(b"\r\n\r\n", 1)[1] == Path("/etc/hostname").read_bytes()
    listing = http_get(local[8081], "/")
    assert b'href="ostype"' in listing  # the second server's directory, through the second port

    # The pod's server closes each connection after answering (HTTP/1.0): that ends that
    # forwarded connection only; kubectl goes on forwarding new ones over the same session.
    for _ in range(3):
        again = http_get(local[8080], "/hostname")
        assert again.split(b"\r\n\r\n", 1)[1] == Path("/etc/hostname").read_bytes()
    assert forward.process.poll() is None
    assert "Handling connection for" in "".join(forward.output)

    # An answer larger than a flow-control window (64 KiB) arrives whole.
    big = http_get(local[8080], "/big").split(b"\r\n\r\n", 1)[1]
    assert len(big) == 300_000 and big == (work / "big").read_bytes()


def test_kubectl_port_forward_over_a_plain_spdy_upgrade(
    pods: Kubectl, forwards: list[PortForward]
) -> None:
    forward = PortForward(pods, "pod/web", "0:8080", websockets=False)
    forwards.append(forward)
    local = forward.local_ports(1)[8080]
    for _ in range(2):
        hostname = http_get(local, "/hostname")
        assert hostname.split(b"\r\n\r\n", 1)[1] == Path("/etc/hostname").read_bytes()
    assert forward.process.poll() is None


def test_a_connection_refused_in_the_pod_is_reported_on_the_error_stream(
    pods: Kubectl, forwards: list[PortForward]
) -> None:
    forward = PortForward(pods, "pod/web", "0:8082")
    forwards.append(forward)
    local = forward.local_ports(1)[8082]
    with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
        conn.sendall(b"hello")
        assert conn.recv(100) == b""  # kubectl closes the local connection

    # The error stream's message reaches kubectl, which then gives up (as with a kubelet).
    assert forward.process.wait(timeout=60) != 0
    forward._reader.join(timeout=10)
    text = "".join(forward.output)
    assert "error forwarding port 8082" in text and "localhost:8082" in text
    assert "connection refused" in text.lower()
    assert "lost connection to pod" in text


def test_killing_kubectl_ends_the_connection_on_the_node(
    pods: Kubectl, forwards: list[PortForward], cluster: Cluster
) -> None:
    uid = pods("get", "pod", "sink", "-o", "jsonpath={.metadata.uid}").stdout
    events = cluster.data_dir / "agent" / "pods" / uid / "main" / "work" / "events"
    forward = PortForward(pods, "pod/sink", "0:9000")
    forwards.append(forward)
    local = forward.local_ports(1)[9000]
    before = events.read_text()  # the readiness probe's own connection

    with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
        conn.sendall(b"are you there?")
        wait_for(lambda: events.read_text() == before + "open\n", timeout=60)
        forward.process.kill()  # by its PID: kubectl goes away without a word
        forward.process.wait(timeout=10)
        # The pod's end of the forwarded connection is closed by the node's agent.
        wait_for(lambda: events.read_text() == before + "open\nclosed\n", timeout=60)


def _raw_request(kubectl: Kubectl, tmp_path: Path, head: str) -> ssl.SSLSocket:
    """A TLS connection to the API as kubectl's user, with ``head`` (an HTTP request) sent."""
    config = yaml.safe_load(kubectl.kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    for key, name in (("client-certificate-data", "cert"), ("client-key-data", "key")):
        (tmp_path / name).write_bytes(base64.b64decode(user[key]))
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    context.load_cert_chain(tmp_path / "cert", tmp_path / "key")
    host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
    conn = context.wrap_socket(socket.create_connection((host, int(port)), timeout=30),
                               server_hostname=host)  # fmt: skip
    conn.sendall(head.replace("\n", "\r\n").encode())
    return conn


def _read_head(conn: ssl.SSLSocket) -> tuple[str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, data
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode(), rest


def _read_body(conn: ssl.SSLSocket, head: str, rest: bytes) -> bytes:
    length = int(re.search(r"Content-Length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
    while len(rest) < length:
        rest += conn.recv(65536)
    return rest


def _read_all(conn: ssl.SSLSocket, rest: bytes) -> bytes:
    with contextlib.suppress(OSError):
        while chunk := conn.recv(65536):
            rest += chunk
    return rest


def _upgrade(pod: str, *, version: str = "portforward.k8s.io") -> str:
    return (
        f"POST /api/v1/namespaces/default/pods/{pod}/portforward HTTP/1.1\n"
        "Host: api\nConnection: Upgrade\nUpgrade: SPDY/3.1\n"
        f"X-Stream-Protocol-Version: {version}\nContent-Length: 0\n\n"
    )


def test_bad_spdy_input_is_refused_as_kube_does(pods: Kubectl, tmp_path: Path) -> None:
    # Before any upgrade: kube's Status, and the connection stays HTTP.
    missing = _raw_request(pods, tmp_path, _upgrade("nope"))
    head, rest = _read_head(missing)
    assert head.startswith("HTTP/1.1 404")
    body = _read_body(missing, head, rest)
    assert json.loads(body[body.index(b"{") :])["reason"] == "NotFound"
    missing.close()
    unknown = _raw_request(pods, tmp_path, _upgrade("web", version="v9.example.io"))
    head, rest = _read_head(unknown)
    assert head.startswith("HTTP/1.1 403")
    assert b"unable to negotiate protocol" in _read_body(unknown, head, rest)
    unknown.close()

    # After it: a stream without a port is refused, and the connection goes on...
    conn = _raw_request(pods, tmp_path, _upgrade("web"))
    head, rest = _read_head(conn)
    assert (
        head.startswith("HTTP/1.1 101") and "X-Stream-Protocol-Version: portforward.k8s.io" in head
    )
    encoder, decoder = spdy.FrameEncoder(), spdy.FrameDecoder()
    conn.sendall(encoder.encode(spdy.SynStream(stream_id=1, headers={"streamtype": "data"})))
    conn.sendall(encoder.encode(spdy.Ping(ping_id=7)))
    frames: list[object] = decoder.feed(rest)
    while len(frames) < 2:
        frames += decoder.feed(conn.recv(4096))
    assert frames[:2] == [spdy.RstStream(stream_id=1, status=spdy.REFUSED_STREAM),
                          spdy.Ping(ping_id=7)]  # fmt: skip
    # ...while a frame of another SPDY version ends it with GOAWAY PROTOCOL_ERROR.
    conn.sendall(bytes.fromhex("80020006 00000004 00000009"))
    tail = decoder.feed(_read_all(conn, b""))
    conn.close()
    assert tail == [spdy.GoAway(last_good_stream_id=1, status=spdy.GOAWAY_PROTOCOL_ERROR)]
