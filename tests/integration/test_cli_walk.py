"""Defects seen walking through the README, fixed as kubectl behaves, each checked through the
real CLI (in process) against a real nats-server with the gateway and the query service: logs of
a pod on a simulated node, manifests with an unknown kind or no object at all for ``apply -f``
and ``delete -f``, and the audit trail of a refused unknown kind."""

from __future__ import annotations

import json
from typing import Any

import pytest
from nats.aio.client import Client

from core.api.kinds import NAMESPACED
from handlers.simnodes import SimNodeSpec
from ops.cli.observe import SIMULATED_NODE_LABEL
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from tests.integration.support import cli, eventually, workload_roles

pytestmark = pytest.mark.integration


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "process", "command": ["sleep", "1"]}]},
    }


def test_the_cli_knows_the_label_of_simulated_nodes() -> None:
    key, value = SIMULATED_NODE_LABEL
    assert SimNodeSpec().manifest(0)["metadata"]["labels"][key] == value


async def test_logs_of_a_pod_on_a_simulated_node_say_there_are_none(
    nats_server: Any,
    nc: Client,
    store: EventStore,
    client: CommandClient,
    projection: Projection[ClusterModel],
    queries: None,
) -> None:
    async with workload_roles(nc, store, projection, nodes=1):
        await client.send("Pod", "apply", {"manifest": pod("hello")})

        async def running() -> bool:
            record = projection.model.get("Pod", "default", "hello")
            return (
                record is not None
                and (record.manifest.get("status") or {}).get("phase") == "Running"
            )

        await eventually(running)
        result = await cli(nats_server.url, "logs", "hello")
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr.strip() == (
            'error: pod "hello" is on node "sim-0", a simulated node (fleetlog sim): it runs '
            'no containers, so container "main" has no logs'
        )


MIXED = """\
apiVersion: v1
kind: Pod
metadata: {name: a}
spec:
  containers: [{name: main, image: process, command: [sleep, "1"]}]
---
apiVersion: example.com/v1
kind: Gizmo
metadata: {name: g}
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec:
  containers: [{name: main, image: process, command: [sleep, "1"]}]
"""
GIZMO_REFUSED = (
    'error: gizmo/g: no matches for kind "Gizmo" in version "example.com/v1"; known kinds: '
    f"{', '.join(sorted(NAMESPACED))} (at kind)"
)


async def test_apply_and_delete_of_a_manifest_with_an_unknown_kind_do_the_rest_and_fail(
    nats_server: Any, queries: None, tmp_path: Any
) -> None:
    url = nats_server.url
    manifest = tmp_path / "mixed.yaml"
    manifest.write_text(MIXED)
    applied = await cli(url, "--as", "user:walker", "apply", "-f", str(manifest))
    assert applied.exit_code == 1
    assert applied.stdout.splitlines() == ["pod/a created", "pod/b created"]
    assert applied.stderr.splitlines() == [
        GIZMO_REFUSED,
        "error: 1 of 3 objects were not applied",
    ]
    listed = await cli(url, "get", "pods", "-o", "json")
    assert [p["metadata"]["name"] for p in json.loads(listed.stdout)["items"]] == ["a", "b"]
    assert (await cli(url, "get", "pods", "-o", "name")).stdout == "pod/a\npod/b\n"

    deleted = await cli(url, "--as", "user:walker", "delete", "-f", str(manifest))
    assert deleted.exit_code == 1
    assert deleted.stdout.splitlines() == ['pod "a" deleted', 'pod "b" deleted']
    assert deleted.stderr.splitlines() == [
        'error: gizmo/g: the server doesn\'t have a resource type "gizmo"; known: '
        + ", ".join(sorted(kind.lower() for kind in NAMESPACED)),
        "error: 1 of 3 objects were not deleted",
    ]
    listed = await cli(url, "get", "pods", "-o", "json")
    assert json.loads(listed.stdout)["items"] == []
    # A kind on the command line the CLI does not know goes to the gateway too.
    by_name = await cli(url, "--as", "user:walker", "delete", "gizmos", "g")
    assert by_name.exit_code == 1
    assert by_name.stderr.startswith(
        'error: the server doesn\'t have a resource type "gizmos"; known: clusterrole, '
        "clusterrolebinding, configmap, deployment"
    )

    # Every refusal was the gateway's, so each is in the audit trail: who, what, why.
    audited = await cli(url, "audit", "--outcome", "rejected", "-o", "json")
    records = [json.loads(line) for line in audited.stdout.splitlines()]
    assert [(r["actor"], r["verb"], r["kind"], r["name"], r["code"]) for r in records] == [
        ("user:walker", "apply", "gizmo", "g", "unknown_kind"),
        ("user:walker", "delete", "gizmo", "g", "unknown_kind"),
        ("user:walker", "delete", "gizmos", "g", "unknown_kind"),
    ]
    assert records[0]["message"].startswith('no matches for kind "Gizmo" in version')
    table = await cli(url, "audit", "--outcome", "rejected", "--kind", "gizmo")
    assert len(table.stdout.splitlines()) == 3 and "user:walker" in table.stdout


@pytest.mark.parametrize("text", ["", "# nothing here\n", "---\n", "---\n# only comments\n---\n"])
async def test_a_manifest_without_objects_is_an_error(
    nats_server: Any, queries: None, tmp_path: Any, text: str
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    for verb in ("apply", "delete"):
        result = await cli(nats_server.url, verb, "-f", str(empty))
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr == f"error: no objects passed to {verb}\n"


async def test_describe_shows_what_the_workload_controllers_did(
    nats_server: Any,
    nc: Client,
    store: EventStore,
    client: CommandClient,
    projection: Projection[ClusterModel],
    queries: None,
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "app:1", "command": ["x"]}]},
            },
        },
    }
    async with workload_roles(nc, store, projection, nodes=1):
        await client.send("Deployment", "apply", {"manifest": deployment})

        async def running() -> bool:
            pods = list(projection.model.list("Pod", "default"))
            return len(pods) == 2 and all(
                (p.manifest.get("status") or {}).get("phase") == "Running" for p in pods
            )

        await eventually(running)
        (rs,) = projection.model.list("ReplicaSet", "default")
        pods = sorted(p.name for p in projection.model.list("Pod", "default"))
        url = nats_server.url

        def events_of(page: str) -> list[list[str]]:
            return [line.split(None, 4) for line in page.split("Events:\n")[1].splitlines()[2:]]

        page = (await cli(url, "describe", "deployment", "web")).stdout
        assert [row[1:2] + row[3:] for row in events_of(page)] == [
            [
                "ScalingReplicaSet",
                "deployment-controller",
                f"Scaled up replica set {rs.name} from 0 to 2",
            ]
        ]
        page = (await cli(url, "describe", "rs", rs.name)).stdout
        created = [row[4] for row in events_of(page) if row[1] == "SuccessfulCreate"]
        assert sorted(created) == [f"Created pod: {name}" for name in pods]
        assert {row[3] for row in events_of(page)} == {"replicaset-controller"}
        page = (await cli(url, "describe", "pod", pods[0])).stdout
        assert [row[1] for row in events_of(page)] == ["Scheduled", "Created", "Started"]
        assert events_of(page)[1][3] == "kubelet"  # the simulator plays the kubelet's part


async def test_a_reader_that_goes_away_stops_the_output_quietly(
    nats_server: Any, queries: None, client: CommandClient
) -> None:
    """``fleetlog events -o json | head -n 1``: the rest of the output has nowhere to go; the
    command stops without a traceback, as a Unix filter does."""
    import asyncio
    import os
    import sys

    for index in range(300):
        await client.send("Pod", "apply", {"manifest": pod(f"p{index}")})
    env = {**os.environ, "FLEETLOG_SERVER": nats_server.url}
    piped = await asyncio.create_subprocess_shell(
        f"{sys.executable} -m ops events -o json | head -n 1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(piped.communicate(), 60)
    assert json.loads(out)["type"] == "NamespaceCreated" or json.loads(out)["seq"] == 1
    assert err.decode() == ""
