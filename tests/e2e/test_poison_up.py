"""End to end: poison published raw on a running ``fleetlog up``'s event subjects neither stops
it nor its next start; every role serves, and ``audit verify`` lists what was quarantined."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from core.api.events import RESOURCE_KINDS
from streams.subjects import event_subject
from tests.e2e.test_cli import Cluster
from tests.integration.test_poison import publish_poison

pytestmark = pytest.mark.e2e

SHOP = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: first, namespace: shop}
spec:
  containers: [{name: main, image: busybox, command: [sleep, "3600"]}]
"""


def pod(name: str) -> str:
    return SHOP.split("---")[-1].replace("name: first", f"name: {name}")


async def poison(server: str, seed_file: Path) -> dict[int, str]:
    # A control-plane identity: the embedded server refuses events from anyone else.
    nc = await nats.connect(server, nkeys_seed=str(seed_file))
    try:
        expected: dict[int, str] = {}
        for kind in RESOURCE_KINDS:
            subject = event_subject(kind, "shop", "victim")
            expected |= await publish_poison(nc, subject, kind, "victim")
        subject = event_subject("Pod", "shop", "first")
        expected |= await publish_poison(nc, subject, "Pod", "first")
        return expected
    finally:
        await nc.close()


def test_poison_on_every_event_subject_neither_stops_up_nor_its_next_start(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.up()
    cluster.cli("apply", "-f", "-", stdin=SHOP)
    expected = asyncio.run(poison(cluster.server, cluster.data_dir / "pki/nkeys/control-plane.nk"))
    cluster.cli("apply", "-f", "-", stdin=pod("second"))  # the running up still serves
    assert cluster.down() == 0

    cluster.up()  # every role catches up over the poison
    cluster.cli("apply", "-f", "-", stdin=pod("third"))
    listed = cluster.cli("get", "pods", "-n", "shop").stdout
    assert all(name in listed for name in ("first", "second", "third"))
    assert "victim" not in listed
    events = [json.loads(line) for line in cluster.cli("events", "-o", "json").stdout.splitlines()]
    assert not any(e["name"] == "victim" for e in events)
    assert "PodCreated" in cluster.cli("why", "pod/third", "-n", "shop").stdout
    assert "PodCreated" in cluster.cli("history", "pod/first", "-n", "shop").stdout
    verified = cluster.cli("audit", "verify", check=False)
    assert verified.returncode == 1
    quarantined = [
        line.split()[2] for line in verified.stdout.splitlines() if line.startswith("QUARANTINED")
    ]
    assert sorted(map(int, quarantined)) == sorted(expected)
    assert f"the log has {len(expected)} quarantined event(s)" in verified.stderr
    assert cluster.down() == 0
    assert "event.quarantined" in (tmp_path / "up.log").read_text()
