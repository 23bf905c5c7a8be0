"""fleetlog's speed-ups that lean on nats-py's insides fail safe when nats-py changes.

Each case runs a fresh interpreter that alters nats-py *before* importing fleetlog, the way a
newer nats-py might differ, then connects to a real server, sets the streams up, appends, reads
an aggregate and replays the log twice. The header-parser replacement (streams/natsfix.py) must
then stand aside, and the bulk reader (streams/logreader.py) give way to nats-py's ordered
consumer, each with exactly one warning, and fleetlog must read everything.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHANGES = {
    "as-tested": "",
    "header-hook-missing": """
parse = Client._parse_header_lines
del Client._parse_header_lines
# nats-py still parses headers, but not through a class attribute fleetlog could replace.
def __getattr__(self, name):
    if name == "_parse_header_lines":
        return parse
    raise AttributeError(name)
Client.__getattr__ = __getattr__
""",
    "header-hook-changed": """
def parse(raw):  # a nats-py that also keeps header names with inner whitespace
    out = {}
    for line in raw.split(b"\\r\\n"):
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().decode("ascii", "replace")] = value.strip().decode("utf-8", "replace")
    return out
Client._parse_header_lines = staticmethod(parse)
""",
    "client-without-connected-url": """
del Client.connected_url  # what the bulk reader reads to find the server
""",
}

PROGRAM = """
import asyncio, json, sys
import structlog
structlog.configure(
    processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
    logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
)
from nats.aio.client import Client
{change}
from streams import natsfix
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.eventstore import EventStore, Write
from streams.subjects import event_subject
from tests.integration.support import event_bytes

async def main(url):
    nc = await connect(url, name="probe")
    again = await connect(url, name="probe-again")
    await ensure_streams(nc)
    web = event_subject("Pod", "default", "web")
    async with EventStore(nc) as store:
        seqs = []
        for version in (1, 2, 3):
            data = event_bytes("web", version, event_type="PodCreated", payload={{"uid": "u", "manifest": {{}}}})
            seqs += await store.append([Write(web, [data], seqs[-1] if seqs else 0)], token=f"w{{version}}")
        read = [event.seq for event in await store.read_subject(web)]
        replays = []
        for _ in range(2):
            seen = []
            await store.replay(lambda event: seen.append(event.seq))
            replays.append(seen)
    await again.close()
    await nc.close()
    print(json.dumps({{"seqs": seqs, "read": read, "replays": replays, "fast_headers": natsfix._installed}}))

asyncio.run(main(sys.argv[1]))
"""


async def run_changed(url: str, change: str) -> tuple[dict[str, object], list[dict[str, str]]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROGRAM.format(change=change),
        url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    logs = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    return json.loads(out), logs


@pytest.mark.parametrize(
    ("case", "fast_headers", "warnings"),
    [
        ("as-tested", True, []),
        ("header-hook-missing", False, ["natsfix.not_installed"]),
        ("header-hook-changed", False, ["natsfix.not_installed"]),
        ("client-without-connected-url", True, ["logreader.unavailable"]),
    ],
)
async def test_a_changed_nats_py_costs_speed_not_function(
    nats_server: RunningServer, case: str, fast_headers: bool, warnings: list[str]
) -> None:
    result, logs = await run_changed(nats_server.url, CHANGES[case])
    assert result["seqs"] == result["read"] == [1, 2, 3]
    assert result["replays"] == [[1, 2, 3], [1, 2, 3]]
    assert result["fast_headers"] is fast_headers
    assert [e["event"] for e in logs if e["level"] == "warning"] == warnings
    for entry in logs:
        if entry["event"] == "natsfix.not_installed":
            assert "_parse_header_lines" in entry["reason"]
