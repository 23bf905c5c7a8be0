"""End to end: the README's "Autoscaling" block, read from README.md and run command by
command against a real ``fleetlog up`` with ``fleetlog sim`` (issue 19).

Why this exists: the HPA example is what a newcomer copies first; it must scale as its
comments say, from a load set with ``fleetlog metrics load`` and from an External metric
published with ``fleetlog metrics publish``. Commands run in the shell as written; what the
comments promise (REPLICAS 3, then 4) is waited for with generous deadlines.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_cli import Cluster
from tests.e2e.test_readme import README, Shell, _rows, shell, walk_through_commands  # noqa: F401

pytestmark = pytest.mark.e2e

SCALED_WITHIN_S = 120.0
"""From the load to the replicas: a sample every 10 s, the CPU readiness rule discounting the
first sample after a pod became ready, a pod start on simulated nodes, on a loaded machine."""


def _replicas_reach(shell: Shell, hpa: str, replicas: str) -> str:  # noqa: F811
    deadline = time.monotonic() + SCALED_WITHIN_S
    while True:
        out = shell.run(f"fleetlog get hpa {hpa}").stdout
        rows = _rows(out)
        if rows and rows[0][-2] == replicas:
            return out
        assert time.monotonic() < deadline, f"hpa/{hpa} did not reach {replicas}:\n{out}"
        time.sleep(1.0)


def test_the_readme_autoscaling_example_runs_as_written(
    cluster: Cluster,
    shell: Shell,  # noqa: F811
) -> None:
    cluster.up()
    steps = walk_through_commands(README.read_text(), "### Autoscaling")
    assert steps[0].command.startswith("fleetlog sim")
    ran: list[str] = []
    for step in steps:
        command = step.command
        ran.append(command)
        if command.endswith("&"):
            job = shell.start(command.removesuffix("&").strip())
            time.sleep(1.0)
            assert job.poll() is None, f"{command!r} stopped: {job.returncode}"
            continue
        if command == "fleetlog get hpa api":
            out = _replicas_reach(shell, "api", "3")
            assert "cpu: 150%/50%" in out, out
            continue
        if command == "fleetlog get hpa worker":
            _replicas_reach(shell, "worker", "4")
            continue
        if command.startswith("fleetlog metrics load"):
            # The simulator answers once it is subscribed (its nodes a moment after start).
            deadline = time.monotonic() + 30
            while (result := shell.run_unchecked(command)).returncode != 0:
                assert time.monotonic() < deadline, result.stderr
                time.sleep(0.5)
            assert "load set on" in result.stdout, result.stdout
            continue
        out = shell.run(command).stdout
        if command == "fleetlog apply -f api.yaml":
            assert out.splitlines() == [
                "deployment/api created", "horizontalpodautoscaler/api created",
            ], out  # fmt: skip
        elif command.startswith("fleetlog metrics publish"):
            assert out.startswith("published fleet.metrics.external.default.queue_5Fdepth"), out
        elif command.startswith("fleetlog describe hpa"):
            assert "Last decision:  ScaledTo #" in out and "-> 3 replicas" in out, out
        elif command.startswith("fleetlog why deployment/api"):
            assert "horizontal pod autoscaler api: 1 -> 3 replicas" in out, out
            assert "utilization 150% of requests" in out, out
    assert ran == [step.command for step in steps]
