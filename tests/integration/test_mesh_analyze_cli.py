"""``fleetlog mesh analyze``, ``describe vs|gw`` and ``mesh status`` reporting problems across
Istio objects as ``istioctl analyze`` does, against a real nats-server, the command gateway and
the query service."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from streams.commandbus import CommandClient
from tests.integration.support import cli

pytestmark = pytest.mark.integration


def _manifests() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "web", "namespace": "default"},
         "spec": {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "shop", "namespace": "default"},
         "spec": {"hosts": ["web"], "http": [{"route": [
             {"destination": {"host": "web", "subset": "v1"}, "weight": 50},
             {"destination": {"host": "web", "subset": "v2"}, "weight": 25},
             {"destination": {"host": "nope"}, "weight": 25}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "edge", "namespace": "default"},
         "spec": {"selector": {"app": "missing"}, "servers": [
             {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}},
    ]  # fmt: skip


HOST_LINE = 'Error [IST0101] (VirtualService shop.default) Referenced host not found: "nope"'
SUBSET_LINE = (
    "Error [IST0101] (VirtualService shop.default) Referenced host+subset in destinationrule "
    'not found: "web.default.svc.cluster.local+v2"'
)
SELECTOR_LINE = (
    'Error [IST0101] (Gateway edge.default) Referenced selector not found: "app=missing"'
)


async def _until_lines(server: str, count: int, *args: str, first: str = "") -> Any:
    """The command's result once its output has ``count`` lines (starting with ``first``)."""
    deadline = time.monotonic() + 60
    while True:
        shown = await cli(server, *args)
        done = len(shown.output.splitlines()) == count and shown.output.startswith(first)
        if done or time.monotonic() > deadline:
            return shown
        await asyncio.sleep(0.1)


async def test_analyze_describe_and_status_report_cross_object_problems(
    queries: None, client: CommandClient, nats_server: Any
) -> None:
    for manifest in _manifests():
        await client.send(manifest["kind"], "apply", {"manifest": manifest})

    # The query service's projection follows the log: wait until it has every object.
    shown = await _until_lines(nats_server.url, 3, "mesh", "analyze")
    assert shown.exit_code == 79, shown.output
    assert shown.output.splitlines() == [SELECTOR_LINE, HOST_LINE, SUBSET_LINE]

    elsewhere = await cli(nats_server.url, "mesh", "analyze", "-n", "other")
    assert elsewhere.exit_code == 0, elsewhere.output
    assert elsewhere.output.strip() == (
        "\u2714 No validation issues found when analyzing namespace: other."
    )

    described = await cli(nats_server.url, "describe", "vs", "shop")
    assert described.exit_code == 0, described.output
    lines = described.output.splitlines()
    at = lines.index("Analysis:")
    assert lines[at + 1 : at + 3] == [f"  {HOST_LINE}", f"  {SUBSET_LINE}"]
    rule = await cli(nats_server.url, "describe", "dr", "web")
    assert "Analysis:     <none>" in rule.output.splitlines(), rule.output

    status = await cli(nats_server.url, "mesh", "status")
    assert status.exit_code == 0, status.output
    assert status.output.splitlines()[-4:] == [
        "Analysis (istioctl analyze):", f"  {SELECTOR_LINE}", f"  {HOST_LINE}", f"  {SUBSET_LINE}"
    ]  # fmt: skip

    # Fixed: the subset defined, the host routed to a real service, the Gateway's workload
    # the node's ingress: nothing is left, and analyze exits 0.
    fixed = _manifests()
    fixed[1]["spec"]["subsets"].append({"name": "v2", "labels": {"version": "v2"}})
    fixed[2]["spec"]["http"][0]["route"][2]["destination"]["host"] = "web"
    fixed[3]["spec"]["selector"] = {"istio": "ingressgateway"}
    for manifest in fixed[1:]:
        await client.send(manifest["kind"], "apply", {"manifest": manifest})
    clean = await _until_lines(nats_server.url, 1, "mesh", "analyze", "-A", first="\u2714")
    assert clean.exit_code == 0, clean.output
    assert (
        clean.output.strip() == "\u2714 No validation issues found when analyzing all namespaces."
    )
