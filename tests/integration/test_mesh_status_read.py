"""``fleetlog mesh status`` reads every proxy's latest report from the status bucket: each key
once, the latest value, deleted keys left out, an absent bucket read as no proxies — from the
bucket stream's subjects (nats-py's ``keys()`` watcher could end before a report it had been
sent was counted, and a CI run under load then showed "No proxies found.")."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.aio.client import Client

from core.mesh.push import ProxyStatus
from handlers.mesh.status import read_statuses, status_key
from streams.definitions import mesh_status_bucket, open_key_value
from tests.integration.support import cli

pytestmark = pytest.mark.integration


async def test_every_reported_proxy_is_read_once_as_of_its_latest_report(
    nc: Client, nats_server: Any
) -> None:
    assert await read_statuses(nc) == []  # no bucket yet: no proxies, no error
    kv = await open_key_value(nc, mesh_status_bucket())
    assert await read_statuses(nc) == []
    proxies = {f"sidecar~10.0.0.{i}~web-{i}.shop~shop.svc.cluster.local": i for i in range(40)}
    for handler in ("h0", "h1", "h2"):
        await asyncio.gather(*(
            kv.put(status_key(proxy), json.dumps(ProxyStatus(
                id=proxy, name=f"web-{index}.shop", kind="sidecar", handler=handler,
            ).as_dict()).encode())
            for proxy, index in proxies.items()
        ))  # fmt: skip
    gone = sorted(proxies)[:2]
    await kv.delete(status_key(gone[0]))
    await kv.purge(status_key(gone[1]))

    read = await read_statuses(nc)
    assert sorted(status.id for status in read) == sorted(set(proxies) - set(gone))
    assert [(s.name, s.id) for s in read] == sorted((s.name, s.id) for s in read)
    assert {status.handler for status in read} == {"h2"}
    shown = await cli(nats_server.url, "mesh", "status")
    assert shown.exit_code == 0, shown.output
    rows = shown.output.strip().splitlines()[1:]
    assert sorted(row.split()[0] for row in rows) == sorted(s.name for s in read)
