"""End to end: the README's walk-through, read from README.md and run command by command, in its
order, in a shell against a real ``fleetlog up`` (with its node agent and pod network).

Why this exists: the walk-through is the first thing a newcomer runs; it must not rot. The
commands are taken from the README itself, so an edit that breaks one fails here. Each must
exit 0; what the README's comments promise is checked where it matters (READY 3/3 then 5/5,
``rollout status`` returning, every replica answering requests to the service's cluster IP,
a pod reaching the service by its DNS name). What runs until stopped is bounded: ``events
--follow`` for a few seconds, background jobs (``… &``) kept by PID and stopped by PID.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from streams.telemetry import USAGE_PERIOD_S
from tests.e2e.conftest import pod_network_unavailable
from tests.e2e.ctrlc import sigint_restored
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
HEREDOC = re.compile(r"<<\s*'?(\w+)'?")
ASSIGNMENT = re.compile(r"([A-Z_][A-Z0-9_]*)=\$\((.*)\)")
FOLLOW_SECONDS = 3.0
"""How long ``events --follow`` runs before the test stops it (it runs until Ctrl-C)."""
SHIPPED_WITHIN_S = 15.0
"""Container output reaches NATS in batches: a read right after a request may not show it yet
(a person typing the next command would). Reads of logs are repeated until then."""

SAMPLED_WITHIN_S = 2 * USAGE_PERIOD_S
"""The node agent samples usage every period (10 s): after ``rollout undo`` every web pod is
new, and ``top pods`` says "metrics not available yet" (as kubectl does) until the first sample
of one of them; a person reading that message runs it again. One period, and one for a loaded
machine."""

T = TypeVar("T")

PROXY_FOLLOWS_S = 2.0
"""A node's service proxy applies a change of the slices within a second (docs/benchmarks.md);
twice that, for a loaded machine."""


@dataclass
class Step:
    command: str
    comment: str


def walk_through_commands(readme: str, heading: str = "## A short walk-through") -> list[Step]:
    """The shell commands of the README's first ``sh`` block under ``heading`` ("A short
    walk-through" unless told): one per line, a heredoc kept whole with its command,
    comment-only lines dropped (a trailing comment kept apart)."""
    section = readme.split(f"{heading}\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    lines = block.splitlines()
    steps: list[Step] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command, comment = _split_comment(line)
        if heredoc := HEREDOC.search(command):
            body = []
            while lines[index] != heredoc.group(1):
                body.append(lines[index])
                index += 1
            index += 1
            command = "\n".join([command, *body, heredoc.group(1)])
        steps.append(Step(command.strip(), comment))
    return steps


def _split_comment(line: str) -> tuple[str, str]:
    """A line's command and its trailing ``# comment`` (a ``#`` inside quotes is not one)."""
    quote = ""
    for position, char in enumerate(line):
        if char in "'\"" and not quote:
            quote = char
        elif char == quote:
            quote = ""
        elif char == "#" and not quote and (position == 0 or line[position - 1].isspace()):
            return line[:position].rstrip(), line[position + 1 :].strip()
    return line, ""


def test_the_walk_through_block_is_read_as_commands() -> None:
    steps = walk_through_commands(README.read_text())
    commands = [step.command for step in steps]
    assert commands[0].startswith("cat > web.yaml <<'YAML'\napiVersion: apps/v1")
    assert commands[0].endswith("ports: [{port: 80, targetPort: 8080}]\nYAML")
    assert commands[1] == "fleetlog apply -f web.yaml"
    assert steps[1].comment == "deployment/web created, service/web created"
    assert commands[-1] == "fleetlog delete -f web.yaml"
    assert not any(command.startswith("#") for command in commands)


class Shell:
    """Runs a walk-through command as a person's shell would, in the walk-through's directory,
    with the variables earlier commands set."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.workdir = workdir
        fleetlog = Path(sys.executable).parent / "fleetlog"
        assert fleetlog.exists(), f"{fleetlog} is missing: install the project (pip install -e .)"
        self.env = {
            **os.environ,
            "PATH": f"{fleetlog.parent}{os.pathsep}{os.environ['PATH']}",
            "FLEETLOG_SERVER": cluster.server,
            "FLEETLOG_USER": "user:readme",
            # The key `fleetlog up` found in its default data directory on a user's machine;
            # this cluster's data directory is the test's own.
            "FLEETLOG_SEAL_KEY": cluster.env["FLEETLOG_SEAL_KEY"],
        }
        self.background: list[subprocess.Popen[bytes]] = []
        self.service_cidr = cluster.service_cidr

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if assignment := ASSIGNMENT.fullmatch(command):
            result = self.run(assignment.group(2), timeout)
            self.env[assignment.group(1)] = result.stdout.strip()
            return result
        result = subprocess.run(
            ["bash", "-c", command], cwd=self.workdir, env=self.env, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip
        assert result.returncode == 0, f"{command!r} exited {result.returncode}: {result.stderr}"
        return result

    def run_unchecked(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command whose failure the caller looks at (one retried until a job is ready)."""
        return subprocess.run(
            ["bash", "-c", command], cwd=self.workdir, env=self.env, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip

    def start(self, command: str) -> subprocess.Popen[bytes]:
        """A job the README runs with ``&`` (or until Ctrl-C): its own process group, so the
        fixture stops it, and whatever it started, by that group's id."""
        log = (self.workdir / f"job-{len(self.background)}.log").open("wb")
        job = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=self.workdir, env=self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=sigint_restored,
        )  # fmt: skip
        self.background.append(job)
        return job

    def stop_all(self) -> None:
        for job in self.background:
            if job.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.pid, signal.SIGTERM)
                try:
                    job.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(job.pid, signal.SIGKILL)
                    job.wait()


@pytest.fixture
def shell(cluster: Cluster, tmp_path: Path) -> Iterator[Shell]:
    workdir = tmp_path / "walk"
    workdir.mkdir()
    running = Shell(cluster, workdir)
    try:
        yield running
    finally:
        running.stop_all()


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines()[1:]]


def _repeat_until(
    read: Callable[[], T], good: Callable[[T], bool], what: str, within: float = SHIPPED_WITHIN_S
) -> T:
    deadline = time.monotonic() + within
    while True:
        text = read()
        if good(text):
            return text
        assert time.monotonic() < deadline, f"{what}; last output:\n{text}"
        time.sleep(0.5)


def test_the_readme_walk_through_runs_as_written(cluster: Cluster, shell: Shell) -> None:
    if why := pod_network_unavailable():
        pytest.fail(f"the walk-through's replicas need pod networks (run as root): {why}")
    cluster.up(agent=True)
    steps = walk_through_commands(README.read_text())
    ran: list[str] = []
    for step in steps:
        command = step.command
        ran.append(command)
        if command.endswith("&"):
            job = shell.start(command.removesuffix("&").strip())
            time.sleep(1.0)
            assert job.poll() is None, f"{command!r} stopped: {job.returncode}"
            if command.startswith("fleetlog sim"):
                _wait_for_nodes(shell, 101)
            continue
        if command == "fleetlog events --follow":
            _follow_briefly(shell, command)
            continue
        if command.startswith("fleetlog logs -l app=web"):
            _every_replica_answered(shell, command)
            continue
        if command == "fleetlog top pods":
            _top_lists_the_running_pods(shell, command)
            continue
        if command == "fleetlog logs fetch":
            _repeat_until(
                lambda ran=command: shell.run(ran).stdout, lambda out: out.strip() == "200",
                "the pod's request to http://web.default/ did not print 200",
            )  # fmt: skip
            continue
        result = shell.run(command)
        _check(step, result.stdout, shell)
    # Every command of the README ran, in its order (the loop above would have stopped).
    assert ran == [step.command for step in steps]


def _top_lists_the_running_pods(shell: Shell, command: str) -> None:
    """``top pods`` lists the web replicas (and, once sampled, ``hello``) with their cpu and
    memory; before the first sample of any of them it says so, and a person runs it again."""

    def attempt() -> subprocess.CompletedProcess[str]:
        result = shell.run_unchecked(command)
        if result.returncode != 0:
            assert result.stderr.strip() == "error: metrics not available yet", result.stderr
        return result

    result = _repeat_until(
        attempt, lambda ran: ran.returncode == 0,
        f"no pod usage {SAMPLED_WITHIN_S} s after the start", within=SAMPLED_WITHIN_S,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"], result.stdout
    rows = [line.split() for line in lines[1:]]
    assert rows and all(name.startswith(("web-", "hello")) for name, _, _ in rows), result.stdout
    assert all(cpu.endswith("m") and memory.endswith("Mi") for _, cpu, memory in rows), rows


def _check(step: Step, out: str, shell: Shell) -> None:
    """What the README's comment on a command promises, where a newcomer would look."""
    command = step.command
    if command == "fleetlog apply -f web.yaml":
        assert out.splitlines() == ["deployment/web created", "service/web created"], out
    elif command == "fleetlog get deployments":
        assert _rows(out)[0][:2] == ["web", "3/3"] or _ready_in_time(shell, "3/3"), out
    elif command.startswith("fleetlog rollout status"):
        assert 'deployment "web" successfully rolled out' in out
        deployments = shell.run("fleetlog get deployments").stdout
        assert _rows(deployments)[0][:2] == ["web", "5/5"], deployments
    elif command == "fleetlog get endpoints web":
        # The slices follow the pods' readiness (a moment after ``rollout status``), and each
        # node's proxy follows the slices within a second: a person reads this table before
        # sending requests; the test waits for what the table will say, and that second.
        _repeat_until(
            lambda: (
                shell.run(
                    "fleetlog get endpoints web -o jsonpath='{.subsets[*].addresses[*].ip}'"
                ).stdout
            ),
            lambda ips: len(ips.split()) == 5,
            "the service's endpoints did not list the five replicas",
        )
        time.sleep(PROXY_FOLLOWS_S)
    elif command.startswith("CLUSTER_IP="):
        address = shell.env["CLUSTER_IP"]
        assert ipaddress.ip_address(address) in ipaddress.ip_network(shell.service_cidr), address
    elif command.startswith("for i in"):
        assert out.split() == ["200"] * 10, out
    elif command == "fleetlog get pods -o wide":
        assert out.splitlines()[0].split()[5:7] == ["IP", "NODE"], out
    elif command.startswith("fleetlog rollout history"):
        assert [row[0] for row in _rows(out)[1:]] == ["1", "2"], out
    elif command.startswith("fleetlog get priorityclass"):
        names = [row[0] for row in _rows(out)]
        assert names == ["high-priority", "system-cluster-critical", "system-node-critical"]
    elif command.startswith("fleetlog why"):
        # The command's author is the verified signer: the admin of up's context.
        assert "issued by fleetlog-admin" in out, out
    elif command.startswith("fleetlog audit verify"):
        assert "no breaks" in out.lower(), out
    elif command == "fleetlog delete -f web.yaml":
        assert out.splitlines() == ['deployment "web" deleted', 'service "web" deleted'], out


def _ready_in_time(shell: Shell, ready: str) -> bool:
    """``get deployments`` right after ``apply`` may still count pods starting; READY reaches
    ``ready`` within a minute (three ``python -m http.server`` replicas, each its own IP)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _rows(shell.run("fleetlog get deployments").stdout)[0][1] == ready:
            return True
        time.sleep(0.5)
    return False


def _wait_for_nodes(shell: Shell, count: int) -> None:
    _repeat_until(
        lambda: shell.run("fleetlog get nodes").stdout,
        lambda out: sum(row[1] == "Ready" for row in _rows(out)) >= count,
        f"{count} nodes were not Ready",
    )


def _follow_briefly(shell: Shell, command: str) -> None:
    """Nothing may be happening at this point of the walk (the rollout is paused): the test
    makes an event of its own (a namespace) for the follower to show."""
    job = shell.start(command)
    time.sleep(FOLLOW_SECONDS / 2)
    shell.run(
        "printf 'apiVersion: v1\\nkind: Namespace\\nmetadata: {name: followed}\\n' | fleetlog apply -f -"
    )
    time.sleep(FOLLOW_SECONDS / 2)
    assert job.poll() is None, "events --follow stopped by itself"
    os.killpg(job.pid, signal.SIGINT)
    assert job.wait(timeout=20) in (0, 130), "events --follow did not end as Ctrl-C ends it"
    printed = (shell.workdir / f"job-{len(shell.background) - 1}.log").read_text()
    assert "Traceback" not in printed, printed
    assert re.search(r"NamespaceCreated +namespace/followed", printed), printed[:2000]


def _every_replica_answered(shell: Shell, command: str) -> None:
    """The ten requests were spread over the five replicas: each one's access log has a line."""
    replicas = {
        name.removeprefix("pod/")
        for name in shell.run("fleetlog get pods -l app=web -o name").stdout.split()
    }
    assert len(replicas) == 5, replicas

    def answered(out: str) -> Counter[str]:
        return Counter(
            match.group(1)
            for match in re.finditer(r'^\[pod/([^/]+)/main\] .*"GET / HTTP/1\.1" 200', out, re.M)
        )

    out = _repeat_until(
        lambda: shell.run(command).stdout,
        lambda text: set(answered(text)) == replicas and sum(answered(text).values()) == 10,
        "not every replica answered a request to the cluster IP",
    )
    assert sum(answered(out).values()) == 10
