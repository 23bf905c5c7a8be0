"""Time travel against a real nats-server: ``get``/``describe --at``, ``replay --to`` and
``diff`` (in-process through click's CliRunner, in a thread with its own event loop).

A scenario creates, changes, deletes and re-creates objects, remembering the stream sequence
after each step; every read at a point is then compared with a cluster model replayed to that
sequence by the projection runtime (digest equality), at every sequence of the log.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result

from ops import render, timetravel
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from tests.integration.support import cli

pytestmark = pytest.mark.integration


async def ok(server: str, *args: str) -> Result:
    result = await cli(server, *args)
    assert result.exit_code == 0, result.output
    return result


def pod(name: str, image: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "app:v1"}]},
            },
        },
    }


@dataclass
class Scenario:
    seqs: list[int]  # the log's last sequence after each step (step 0: the default namespace)
    between: int  # an instant (ns) after step 2 and before step 3


async def play(store: EventStore, client: CommandClient) -> Scenario:
    seqs = [await store.stream_last_seq()]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    await client.send("Namespace", "apply", {"manifest": namespace})
    await client.send("Pod", "apply", {"manifest": pod("worker", "busybox", "team")})
    await client.send("Pod", "apply", {"manifest": pod("web", "nginx:1")})
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    await client.send("Node", "apply", {"manifest": node})
    await client.send("Deployment", "apply", {"manifest": deployment("api")})
    seqs.append(await store.stream_last_seq())
    await client.send("Pod", "apply", {"manifest": pod("web", "nginx:2")})
    await client.send("Deployment", "scale", {"name": "api", "replicas": 3, "reason": "load"})
    await client.send("Node", "cordon", {"name": "n1", "reason": "kernel"})
    seqs.append(await store.stream_last_seq())
    await asyncio.sleep(0.05)
    between = time.time_ns()
    await asyncio.sleep(0.05)
    await client.send("Pod", "delete", {"name": "web", "namespace": "default"})
    await client.send("Pod", "create", {"manifest": pod("db", "postgres:16")})
    seqs.append(await store.stream_last_seq())
    await client.send("Pod", "create", {"manifest": pod("web", "nginx:3")})
    seqs.append(await store.stream_last_seq())
    assert seqs == sorted(set(seqs))
    return Scenario(seqs, between)


async def replayed(store: EventStore, seq: int) -> ClusterModel:
    """The reference: the projection runtime's own replay to a sequence."""
    return (await Projection.replayed(ClusterModel(), store, until_seq=seq)).model


def manifests(model: ClusterModel, kind: str, namespace: str | None) -> list[dict[str, Any]]:
    return [render.full_manifest(r.as_dict()) for r in model.list(kind, namespace)]


async def test_reads_at_every_sequence_are_the_replayed_state(
    nats_server, store: EventStore, client: CommandClient, queries: None
) -> None:
    scenario = await play(store, client)
    url, last = nats_server.url, scenario.seqs[-1]
    kinds = ["Namespace", "Pod", "Node", "Deployment"]
    keys = set()
    for seq in range(last + 1):
        keys |= set((await replayed(store, seq)).objects)
    for seq in range(last + 1):
        reference = await replayed(store, seq)
        # Listing per kind (a filtered replay), all kinds together: the same state, same digest.
        listed = ClusterModel()
        listed.restore(
            [item for kind in kinds for item in await timetravel.list_at(store, seq, kind, None)]
        )
        assert listed.digest() == reference.digest(), seq
        # Each object from its own subject alone.
        for key in keys:
            item, events = await timetravel.object_at(store, *key, seq)
            expected = reference.get(*key)
            assert item == (expected.as_dict() if expected else None), (seq, key)
            assert all(ev.seq <= seq for ev in events)
        # And through the CLI.
        result = await ok(url, "get", "pods", "-A", "--at", str(seq), "-o", "json")
        assert json.loads(result.stdout)["items"] == manifests(reference, "Pod", None), seq
        web = reference.get("Pod", "default", "web")
        result = await cli(url, "get", "pod", "web", "--at", f"seq:{seq}", "-o", "yaml")
        if web is None:
            assert result.exit_code == 1
            assert result.stderr.startswith(f'error: pods "web" not found at sequence {seq}')
        else:
            assert result.exit_code == 0, result.output
            assert yaml.safe_load(result.stdout) == render.full_manifest(web.as_dict())


async def test_get_and_describe_at_a_point(
    nats_server, store: EventStore, client: CommandClient, queries: None
) -> None:
    scenario = await play(store, client)
    url = nats_server.url
    _, s1, s2, s3, s4 = scenario.seqs
    at_s2 = await replayed(store, s2)

    # An instant between steps 2 and 3 is the state after step 2.
    instant = timetravel.format_ns(scenario.between)
    result = await ok(url, "get", "pod", "web", "--at", instant, "-o", "json")
    assert [json.loads(result.stdout)] == manifests(at_s2, "Pod", "default")  # web only
    assert json.loads(result.stdout)["spec"]["containers"][0]["image"] == "nginx:2"
    result = await ok(url, "get", "deployments", "--at", instant, "-o", "json")
    assert json.loads(result.stdout)["items"] == manifests(at_s2, "Deployment", "default")
    # The sequence of step 2 gives the same answer (web's last event then: its update).
    by_seq = await ok(url, "get", "pod", "web", "--at", str(s2), "-o", "json")
    assert (
        by_seq.stdout == (await ok(url, "get", "pod", "web", "--at", instant, "-o", "json")).stdout
    )
    assert json.loads(by_seq.stdout)["metadata"]["resourceVersion"] == str(s2 - 2)

    # Cluster-scoped objects, and a table rendered as `get` renders it.
    node_s1 = await ok(url, "get", "node", "n1", "--at", str(s1), "-o", "json")
    assert "unschedulable" not in json.loads(node_s1.stdout).get("spec", {})
    node_s2 = await ok(url, "get", "node", "n1", "--at", str(s2), "-o", "json")
    assert json.loads(node_s2.stdout)["spec"]["unschedulable"] is True
    table = (await ok(url, "get", "nodes", "--at", str(s2))).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert table[1].split()[:2] == ["n1", "Unknown,SchedulingDisabled"]
    table = (await ok(url, "get", "pods", "--at", str(s3))).stdout.splitlines()
    assert [line.split()[0] for line in table] == ["NAME", "db"]  # web deleted, worker in team
    table = (await ok(url, "get", "pods", "-A", "--at", str(s1))).stdout.splitlines()
    assert [line.split()[:2] for line in table[1:]] == [["default", "web"], ["team", "worker"]]

    # Relative times: a day ago the log was empty; zero seconds ago is the live state.
    result = await cli(url, "get", "pod", "web", "--at", "-1d")
    assert result.exit_code == 1
    assert result.stderr.startswith('error: pods "web" not found at sequence 0 (')
    result = await ok(url, "get", "pods", "--at", "-1d")
    assert result.stdout == "" and "No resources found in default namespace." in result.stderr
    live = await ok(url, "get", "pods", "-A", "-o", "json")
    assert (await ok(url, "get", "pods", "-A", "--at", "-0s", "-o", "json")).stdout == live.stdout
    assert (await ok(url, "get", "pods", "-A", "--at", "now", "-o", "json")).stdout == live.stdout

    # describe: the object then, and only the events up to then (of that incarnation).
    page = (await ok(url, "describe", "pod", "web", "--at", str(s2))).stdout
    assert "image: nginx:2" in page and "Events:       <none>" in page
    assert f"(stream sequence {s2 - 2})" in page
    result = await cli(url, "describe", "pod", "web", "--at", str(s3))
    assert result.exit_code == 1 and f"not found at sequence {s3}" in result.stderr
    page = (await ok(url, "describe", "pod/web", "--at", str(s4))).stdout
    assert "image: nginx:3" in page and f"(stream sequence {s4})" in page
    page = (await ok(url, "describe", "node", "n1", "--at", str(s1))).stdout
    events = page.split("Events:\n")[1].splitlines()[2:]
    assert [line.split()[:2] for line in events] == [["Normal", "RegisteredNode"]]
    page = (await ok(url, "describe", "node", "n1", "--at", str(s2))).stdout
    events = page.split("Events:\n")[1].splitlines()[2:]
    assert [line.split()[:2] for line in events] == [
        ["Normal", "RegisteredNode"],
        ["Normal", "NodeNotSchedulable"],
    ]
    assert events[1].split(None, 4)[3:] == [
        "user:alice",
        "Node n1 status is now: NodeNotSchedulable",
    ]
    page = (await ok(url, "describe", "deployment", "api", "--at", str(s1))).stdout
    assert "Replicas:     1 desired" in page
    page = (await ok(url, "describe", "deployment", "api", "--at", str(s2))).stdout
    assert "Replicas:     3 desired" in page


async def test_points_that_are_not_in_the_log_are_refused(
    nats_server, store: EventStore, client: CommandClient, queries: None
) -> None:
    scenario = await play(store, client)
    url, last = nats_server.url, scenario.seqs[-1]
    result = await cli(url, "get", "pods", "--at", str(last + 100))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: --at {last + 100}: beyond the end of the log")
    assert f"the log ends at sequence {last}, stored 20" in result.stderr
    result = await cli(url, "describe", "pod", "web", "--at", "2100-01-01T00:00:00Z")
    assert result.exit_code == 1
    assert "2100-01-01T00:00:00.000000000Z is in the future" in result.stderr
    assert f"the log ends at sequence {last}" in result.stderr
    for args in (["get", "pods", "--at", "yesterday"], ["replay", "--to", "-5"]):
        result = await cli(url, *args)
        assert result.exit_code == 1
        assert "is not a point in the log: use a stream sequence" in result.stderr
    result = await cli(url, "diff", "--from", str(scenario.seqs[3]), "--to", str(scenario.seqs[1]))
    assert result.exit_code == 1
    assert f"error: --to is sequence {scenario.seqs[1]} (" in result.stderr
    assert f"before --from at sequence {scenario.seqs[3]} (" in result.stderr


async def test_replay_writes_the_state_at_a_point(
    nats_server,
    store: EventStore,
    client: CommandClient,
    queries: None,
    projection: Projection[ClusterModel],
    tmp_path: Path,
) -> None:
    scenario = await play(store, client)
    url, s2 = nats_server.url, scenario.seqs[2]
    reference = await replayed(store, s2)
    everything = [
        render.full_manifest(reference.objects[key].as_dict()) for key in sorted(reference.objects)
    ]

    result = await ok(url, "replay", "--to", str(s2), "-o", "json")
    document = json.loads(result.stdout)
    assert document["position"] == s2 and document["time"].startswith("20")
    assert document["items"] == everything
    assert f"to sequence {s2} (" in result.stderr
    assert f"digest {reference.digest()}" in result.stderr

    out = tmp_path / "state.yaml"
    instant = timetravel.format_ns(scenario.between)
    result = await ok(url, "replay", "--to", instant, "--out", str(out))
    assert result.stdout == ""
    assert [doc for doc in yaml.safe_load_all(out.read_text()) if doc] == everything
    assert f"digest {reference.digest()}" in result.stderr  # the same state: the same digest
    result = await ok(url, "replay", "--to", str(s2), "--out", str(tmp_path / "state.json"))
    assert json.loads((tmp_path / "state.json").read_text())["items"] == everything

    # Replaying to the end gives what the live projection folded as the events came.
    assert await projection.wait_for_log_end()
    result = await ok(url, "replay", "--to", "now")
    assert f"digest {projection.model.digest()}" in result.stderr


async def test_diff_names_what_changed_between_two_points(
    nats_server, store: EventStore, client: CommandClient, queries: None
) -> None:
    scenario = await play(store, client)
    url = nats_server.url
    _, s1, s2, s3, s4 = scenario.seqs

    result = await ok(url, "diff", "--from", str(s1), "--to", str(s4), "-o", "json")
    document = json.loads(result.stdout)
    assert document["from"]["position"] == s1 and document["to"]["position"] == s4
    changes = {(c["change"], c["kind"], c["name"]): c for c in document["changes"]}
    assert sorted(changes) == [
        ("changed", "Deployment", "api"),
        ("changed", "Node", "n1"),
        ("created", "Pod", "db"),
        ("recreated", "Pod", "web"),
    ]
    assert "spec.replicas" in changes[("changed", "Deployment", "api")]["fields"]
    assert changes[("changed", "Node", "n1")]["fields"] == ["spec.unschedulable"]
    assert changes[("recreated", "Pod", "web")]["fields"] == ["spec.containers[0].image"]
    web_now = (await replayed(store, s4)).get("Pod", "default", "web")
    assert web_now is not None and changes[("recreated", "Pod", "web")]["uid"] == web_now.uid

    result = await ok(url, "diff", "--from", str(s2), "--to", timetravel.format_ns(time.time_ns()))
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [
        ["CHANGE", "KIND", "NAMESPACE", "NAME", "FIELDS"],
        ["created", "Pod", "default", "db", "-"],
        ["recreated", "Pod", "default", "web", "spec.containers[0].image"],
    ]
    assert "1 created, 0 deleted, 0 changed, 1 recreated" in result.stderr

    rows = [
        line.split()
        for line in (await ok(url, "diff", "--from", str(s2), "--to", str(s3))).stdout.splitlines()
    ]
    assert rows[1:] == [
        ["created", "Pod", "default", "db", "-"],
        ["deleted", "Pod", "default", "web", "-"],
    ]

    instant = timetravel.format_ns(scenario.between)
    document = json.loads((await ok(url, "diff", "--from", instant, "-o", "json")).stdout)
    assert document["from"]["position"] == s2 and document["to"]["position"] == s4
    result = await ok(url, "diff", "--from", str(s4))  # --to defaults to now
    assert result.stdout == "" and "0 created, 0 deleted, 0 changed, 0 recreated" in result.stderr
