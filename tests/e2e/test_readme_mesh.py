"""End to end: the README's "The service mesh" block, read from README.md and run command by
command against a real ``fleetlog up`` with its node agent (issue 18).

Why this exists: the mesh example is what a newcomer copies to see the mesh work — sidecars
injected by the namespace label (READY 2/2), a VirtualService's 80/20 split seen by a plain
``http://web.shop/`` client under STRICT mTLS, every proxy SYNCED, istioctl-analyze's clean
bill, and a Gateway answering on the machine's own port. Commands run in the shell as written
(the Gateway's port is swapped for a free one: tests run side by side); what the comments
promise is checked, with generous deadlines.
"""

from __future__ import annotations

import ast
import time

import pytest

from streams.server import free_port
from tests.e2e.conftest import pod_network_unavailable
from tests.e2e.test_cli import Cluster
from tests.e2e.test_readme import README, Shell, _rows, shell, walk_through_commands  # noqa: F401

pytestmark = pytest.mark.e2e

README_GATEWAY_PORT = "8088"
INGRESS_WITHIN_S = 60.0
"""From the Gateway's apply to its port answering: the agent starts Envoy, which fetches its
listeners and routes over ADS, on a loaded machine."""


def test_the_readme_mesh_example_runs_as_written(
    cluster: Cluster,
    shell: Shell,  # noqa: F811
) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up(agent=True)
    steps = walk_through_commands(README.read_text(), "### The service mesh")
    port = str(free_port())
    ran: list[str] = []
    for step in steps:
        command = step.command.replace(README_GATEWAY_PORT, port)
        ran.append(step.command)
        if command.startswith("python3 -c") and f"127.0.0.1:{port}" in command:
            deadline = time.monotonic() + INGRESS_WITHIN_S
            while (result := shell.run_unchecked(command)).returncode != 0:
                assert time.monotonic() < deadline, result.stderr
                time.sleep(1.0)
            assert result.stdout.strip() == "v1", result.stdout  # the Gateway's route: v1 only
            continue
        out = shell.run(command, timeout=180).stdout
        if command == "fleetlog apply -f mesh.yaml":
            assert out.splitlines() == [
                "namespace/shop created", "deployment/web-v1 created",
                "deployment/web-v2 created", "service/web created",
                "destinationrule/web created", "virtualservice/web created",
                "peerauthentication/default created",
            ], out  # fmt: skip
        elif command == "fleetlog get pods -n shop":
            rows = _rows(out)
            assert len(rows) == 2 and all(row[1] == "2/2" for row in rows), out
        elif command == "fleetlog logs fetch -n shop":
            counts = dict(ast.literal_eval(out.strip().splitlines()[-1]))
            assert sum(counts.values()) == 100, counts
            # 80/20 within ±15 points over 100 calls (a binomial's 3.75 sigma).
            assert 65 <= counts.get("v1", 0) <= 95, counts
        elif command == "fleetlog mesh status":
            rows = [row for row in _rows(out) if row[0].endswith(".shop")]
            assert {row[0].split("-")[0] for row in rows} >= {"web", "fetch.shop"}, out
            assert all(row[1:5] == ["SYNCED"] * 4 for row in rows), out
        elif command == "fleetlog mesh analyze -n shop":
            assert "No validation issues found when analyzing namespace: shop" in out, out
    assert ran == [step.command for step in steps]
    assert ran[-1] == "fleetlog delete -f mesh.yaml"
