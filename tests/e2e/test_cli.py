"""End to end: ``fleetlog up`` as a real process, the CLI as real processes against it."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops.podnets import remove_pod_networks
from tests.e2e.ctrlc import sigint_restored

pytestmark = pytest.mark.e2e

MANIFESTS = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: main
          image: python:3.11
          command: ["python", "-m", "http.server", "8080"]
          resources:
            requests: {cpu: 100m, memory: 128Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
    - port: 80
      targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
  namespace: shop
spec:
  containers:
    - name: sh
      image: busybox
      command: ["sleep", "3600"]
"""


class Cluster:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.server = f"nats://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        # The local agent's pod network is named after this test (namespaces, veths, bridge)
        # in a /22 of its own, so tests running at once never share one, and it is removed
        # afterwards (kill_leftovers).
        self.pod_prefix = "e" + secrets.token_hex(2) + "x"
        self.pod_bridge = f"{self.pod_prefix}br"
        block = random.randrange(1024)
        self.cluster_cidr = f"100.{112 + block // 64}.{(block % 64) * 4}.0/22"
        # Services in a /24 and node ports of their own too: a local agent holds its cluster
        # IPs (kube-dns' among them, where its DNS server listens) on this machine, so two
        # clusters with the default range at once would fight over 100.64.0.10:53.
        block = random.randrange(4096)
        self.service_cidr = f"100.{80 + block // 256}.{block % 256}.0/24"
        low = 30000 + random.randrange(27) * 100
        self.node_ports = f"{low}-{low + 99}"

    @property
    def env(self) -> dict[str, str]:
        """What a fleetlog process of this cluster runs with: its server, a user, and the
        key its `up` seals the log with (roles that append need it)."""
        return {
            **os.environ,
            "FLEETLOG_SERVER": self.server,
            "FLEETLOG_USER": "user:e2e",
            "FLEETLOG_SEAL_KEY": str(self.data_dir / "pki" / "seal.key"),
        }

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = self.env
        result = subprocess.run(
            [sys.executable, "-m", "ops", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"fleetlog {' '.join(args)} failed: {result.stderr}")
        return result

    def up(self, *, agent: bool = False, options: Sequence[str] = ()) -> None:
        """Start ``fleetlog up`` (with ``options``); without a local node agent unless asked
        (most tests bring their own simulated nodes)."""
        log = (self.data_dir.parent / "up.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ops",
                "up",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--cluster-cidr",
                self.cluster_cidr,
                "--pod-bridge",
                self.pod_bridge,
                "--pod-network-prefix",
                self.pod_prefix,
                # Tests run side by side: each API on a port of its own.
                "--api-port",
                "0",
                *([] if agent else ["--no-agent"]),
                *self._service_ranges(options),
                *options,
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.data_dir.parent / "up.log").read_text()
            if self.cli("get", "namespaces", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError("fleetlog up did not become ready")

    def _service_ranges(self, options: Sequence[str]) -> list[str]:
        """The test's own service ranges, unless the test chose its own."""
        ranges = []
        if "--service-cluster-ip-range" not in options:
            ranges += ["--service-cluster-ip-range", self.service_cidr]
        if "--service-node-port-range" not in options:
            ranges += ["--service-node-port-range", self.node_ports]
        return ranges

    def down(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def kill_leftovers(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        # Containers outlive `up` by design (a restarted agent adopts them): stop each by
        # the process group its state file records.
        for state in self.data_dir.glob("agent/pods/*/*/*/container.json"):
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError, OSError):
                os.killpg(int(json.loads(state.read_text())["pgid"]), signal.SIGKILL)
        remove_pod_networks(self.pod_prefix, self.pod_bridge)
        pid_file = self.data_dir / "nats-server.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def test_walkthrough_survives_a_restart(cluster: Cluster, tmp_path: Path) -> None:
    cluster.up()
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(MANIFESTS)
    applied = cluster.cli("apply", "-f", str(manifest)).stdout.splitlines()
    assert applied == [
        "namespace/shop created",
        "deployment/web created",
        "service/web created",
        "pod/debug created",
    ]
    assert cluster.cli("apply", "-f", "-", stdin=MANIFESTS).stdout.count("unchanged") == 4

    pods = cluster.cli("get", "pods", "-n", "shop").stdout
    assert pods.split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and "debug" in pods
    deployments = cluster.cli("get", "deploy", "-A").stdout
    assert "shop" in deployments and "0/3" in deployments
    as_yaml = cluster.cli("get", "deployment", "web", "-n", "shop", "-o", "yaml").stdout
    assert "replicas: 3" in as_yaml and "uid:" in as_yaml and "maxSurge: 25%" in as_yaml
    cluster.cli(
        "scale", "deployment/web", "--replicas", "5", "-n", "shop", "--reason", "launch day"
    )
    # describe shows what Kubernetes records (the controller scaling the replica set, once it
    # has acted on the new count); history keeps every event, with the reason given.
    deadline = time.monotonic() + 30
    while True:
        described = cluster.cli("describe", "deployment", "web", "-n", "shop").stdout
        if "from 3 to 5" in described or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    scaling = [
        line.split(None, 4) for line in described.splitlines() if "ScalingReplicaSet" in line
    ]
    assert [row[3] for row in scaling] == ["deployment-controller"] * 2
    assert scaling[0][4].startswith("Scaled up replica set web-")
    assert scaling[0][4].endswith(" from 0 to 3") and scaling[1][4].endswith(" from 3 to 5")
    assert "DeploymentStatusUpdated" not in described
    history = cluster.cli("history", "deployment/web", "-n", "shop").stdout
    assert "scaled from 3 to 5 replicas: launch day" in history
    cluster.cli("delete", "pod", "debug", "-n", "shop")
    history = cluster.cli("history", "pod/debug", "-n", "shop").stdout
    # Behind the wall the actor is the verified signer (the context's admin), whatever
    # FLEETLOG_USER says.
    assert "PodCreated" in history and "PodDeleted" in history and "fleetlog-admin" in history
    assert "user:e2e" not in history
    events = [json.loads(line) for line in cluster.cli("events", "-o", "json").stdout.splitlines()]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert {"NamespaceCreated", "DeploymentCreated", "ScaledTo", "PodDeleted"} <= {
        e["type"] for e in events
    }
    assert all(e["correlation_id"] and e["causation_id"] for e in events)
    # The data directory (the log on disk, the history index, keys) is its owner's alone.
    assert stat.S_IMODE(cluster.data_dir.stat().st_mode) == 0o700
    history_files = list(cluster.data_dir.glob("history*"))
    assert history_files and {stat.S_IMODE(p.stat().st_mode) for p in history_files} == {0o600}
    filtered = cluster.cli(
        "events", "--kind", "deployment", "-n", "shop", "--type", "ScaledTo", "-o", "json"
    )
    assert [json.loads(line)["type"] for line in filtered.stdout.splitlines()] == ["ScaledTo"]

    cluster.cli(
        "apply", "-f", "-", stdin="apiVersion: v1\nkind: Node\nmetadata: {name: worker-1}\n"
    )
    cordoned = cluster.cli("cordon", "worker-1", "--reason", "disk swap").stdout.strip()
    assert cordoned == "node/worker-1 cordoned"
    assert "SchedulingDisabled" in cluster.cli("get", "nodes").stdout
    assert cluster.cli("uncordon", "worker-1").stdout.strip() == "node/worker-1 uncordoned"
    wide = cluster.cli("get", "deployments", "-n", "shop", "-o", "wide").stdout
    assert "IMAGES" in wide and "python:3.11" in wide and "app=web" in wide
    recent = cluster.cli("events", "--since", "1h", "--kind", "service", "-n", "shop").stdout
    assert "ServiceCreated" in recent and "service/shop/web" in recent
    assert (
        cluster.cli("events", "--since", "2999-01-01T00:00:00Z", check=False).stderr.strip()
        == "No events found."
    )

    # Follow from a moment before the apply: a follower that takes longer than the pause
    # below to start (a loaded CI host) still sees the pod's creation, replayed, then goes on
    # live; seen once with a plain "from now" follower.
    since = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops",
            "events",
            "--follow",
            "--since",
            since,
            "--kind",
            "pod",
            "-n",
            "shop",
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "FLEETLOG_SERVER": cluster.server},
        preexec_fn=sigint_restored,
    )
    try:
        time.sleep(1.5)  # usually subscribed by now: the pod's creation then arrives live
        cluster.cli("apply", "-f", "-", stdin=MANIFESTS.split("---")[-1])
        assert follower.stdout is not None
        # Lines are read by a thread: select() on a buffered pipe misses lines already read
        # into the buffer, and the replayed lines come several at once.
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(line) for line in follower.stdout], daemon=True
        ).start()
        # Other pods of the namespace may have events meanwhile (the scheduler records a pod
        # unschedulable again when its reasons change): read until the new pod's creation.
        followed: list[dict] = []
        deadline = time.monotonic() + 30
        while not any(e["type"] == "PodCreated" and e["name"] == "debug" for e in followed):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"events --follow showed no PodCreated of debug in 30 s: {followed}")
            followed.append(json.loads(line))
        assert all((e["kind"], e["namespace"]) == ("Pod", "shop") for e in followed)
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            assert follower.wait(timeout=10) in (0, 130)
        finally:
            if follower.poll() is None:  # never left running, whatever failed
                follower.kill()
                follower.wait()

    assert cluster.down() == 0
    cluster.up()
    assert "5" in cluster.cli("get", "deployment", "web", "-n", "shop", "-o", "json").stdout
    after = [json.loads(line) for line in cluster.cli("events", "-o", "json").stdout.splitlines()]
    assert after[: len(events)] == events
    deleted = cluster.cli("delete", "-f", str(manifest)).stdout.splitlines()
    assert deleted[0] == 'namespace "shop" deleted'
    # The rest is deleted by this command or, first, by the garbage collector with its namespace.
    for line, kind, name in zip(
        deleted[1:], ("deployment", "service", "pod"), ("web", "web", "debug"), strict=True
    ):
        assert line in (
            f'{kind} "{name}" deleted',
            f'{kind} "{name}" deleted (with namespace "shop")',
        )
    missing = cluster.cli("get", "pod", "debug", "-n", "shop", check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == 'error: pods "debug" not found'
    assert cluster.down() == 0


def test_cli_errors_are_one_line_and_nonzero(cluster: Cluster, tmp_path: Path) -> None:
    down = cluster.cli("get", "pods", check=False)
    assert down.returncode == 1
    assert (
        down.stderr.strip()
        == f"error: cannot reach the server at {cluster.server}: is `fleetlog up` running?"
    )
    cluster.up()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n    - name: a\n      image: b\n      bogus: 1\n"
    )
    result = cluster.cli("apply", "-f", str(bad), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "spec.containers[0].bogus" in result.stderr
    # Several problems: every one is listed, one per line, the misspelt field first.
    several = tmp_path / "several.yaml"
    several.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: y}\nspec:\n  hostNetwork: yes-please\n"
        "  containers:\n    - name: a\n      image: b\n      imagePullPolcy: Always\n"
        "      ports: [{containerPort: 70000}]\n"
    )
    result = cluster.cli("apply", "-f", str(several), check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: pod/y is invalid (3 errors):",
        '  spec.containers[0].imagePullPolcy: unknown field "imagePullPolcy"',
        "  spec.containers[0].ports[0].containerPort: Invalid value 70000: must be between 1 "
        "and 65535, inclusive",
        '  spec.hostNetwork: Invalid value "yes-please": must be true or false',
        "error: 1 of 1 objects were not applied",
    ]
    unknown = cluster.cli("get", "gizmos", check=False)
    assert (
        unknown.returncode == 1
        and unknown.stderr.startswith("error: ")
        and len(unknown.stderr.splitlines()) == 1
    )
    assert cluster.down() == 0


def test_bad_feature_gates_stop_up_and_scheduler_before_they_start(cluster: Cluster) -> None:
    for command in (["up", "--data-dir", str(cluster.data_dir)], ["scheduler"]):
        result = cluster.cli(
            *command,
            "--feature-gates",
            "TaintTolerationComparisonOperators=maybe,Bogus=true",
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines() == [
            "error: 2 errors:",
            "  --feature-gates: invalid value of TaintTolerationComparisonOperators=maybe, err: "
            'strconv.ParseBool: parsing "maybe": invalid syntax',
            "  --feature-gates: unrecognized feature gate: Bogus (known gates: "
            "TaintTolerationComparisonOperators (ALPHA, default false))",
        ]
    assert not (cluster.data_dir / "nats-server.pid").exists()


def test_a_bad_scheduler_configuration_is_refused_with_every_problem(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = tmp_path / "scheduler.yaml"
    config.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1\n"
        "kind: KubeSchedulerConfiguration\n"
        "percentageOfNodesToScore: 120\n"
        "profiles:\n"
        "  - pluginConfig:\n"
        "      - name: NodeResourcesFit\n"
        "        args:\n"
        "          scoringStrategy:\n"
        "            type: LeastAllocated\n"
        "            resources: [{name: cpu, weight: 200}]\n"
        "          ignoredResourceGroup: [example.com]\n"
    )
    expected = [
        f"error: {config} is invalid (3 errors):",
        "  profiles[0].pluginConfig[0].args.ignoredResourceGroup: unknown field "
        '"ignoredResourceGroup"',
        "  percentageOfNodesToScore: Invalid value 120: not in valid range [0-100]",
        "  profiles[0].pluginConfig[0].args.scoringStrategy.resources[0].weight: Invalid value "
        "200: resource weight of cpu not in valid range (0, 100]",
    ]
    for command in (
        ["up", "--data-dir", str(cluster.data_dir), "--scheduler-config", str(config)],
        ["scheduler", "--config", str(config)],
    ):
        result = cluster.cli(*command, check=False)
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines() == expected
    assert not (cluster.data_dir / "nats-server.pid").exists()
