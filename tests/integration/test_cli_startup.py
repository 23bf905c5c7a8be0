"""The CLI starts light: defining its commands, and printing a command's help, load no models,
no NATS client and no event loop; a read command, which does connect, loads no models either.

``fleetlog --help`` and every read command pay for what ``ops.cli`` imports before anything
runs; it used to be about a second (pydantic models, eventsourcing aggregates, the read-model
fold). A read command then pays for its session stack (the NATS client, the event store, the
envelope codec): that stack used to load pydantic (through the event catalog), about a fifth
of ``fleetlog history``'s run. Each check runs in a fresh interpreter, since this one has long
imported everything. Start-up time itself is measured, never asserted here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.api.catalog import KINDS
from core.api.kinds import NAMESPACED
from ops.cli.audit import OUTCOMES as CLI_OUTCOMES
from streams.audit import OUTCOMES
from tests.conftest import RunningServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

HEAVY_PACKAGES = {"pydantic", "eventsourcing", "numpy", "nats", "structlog", "tabulate", "asyncio"}
"""Packages loaded only when a command runs (and for some, only by the commands needing them)."""
AGGREGATE_MODULES = (
    "core.meta.aggregate",
    "core.api.catalog",
    *(
        f"core.{kind}.aggregate"
        for kind in ("pods", "nodes", "workloads", "services", "namespaces")
    ),
    "core.policy.aggregates",
)
"""The aggregates: eventsourcing and the payload models."""
MODEL_MODULES = (
    "core.meta.model",
    "core.meta.types",
    "core.meta.fields",
    "core.api.manifests",
    *(f"core.pods.{part}" for part in ("model", "containers", "env", "resources", "affinity")),
    *(f"core.{kind}.model" for kind in ("nodes", "services", "namespaces")),
    "core.workloads.models",
    *(f"core.policy.{kind}" for kind in ("resourcequota", "limitrange", "priorityclass")),
)
"""The pydantic resource models."""
HEAVY_MODULES = (*AGGREGATE_MODULES, *MODEL_MODULES, "projections", "ops.client", "ops.timetravel")
"""Modules of this project that the start-up path must not load (nor anything below them)."""

READ_HEAVY_PACKAGES = {"pydantic", "eventsourcing", "numpy", "tabulate"}
"""Packages a read command never needs, even once it connects."""
READ_HEAVY_MODULES = (
    *AGGREGATE_MODULES,
    "core.api.payloads",
    "core.api.commands",
    *MODEL_MODULES,
    "ops.timetravel",
)
"""This project's modules that only writers (or time travel) need: the payload and command
models, the aggregates, the resource models."""
SESSION_STACK = (
    "ops.cli",
    "ops.client",
    "streams.connection",
    "streams.eventstore",
    "streams.envelope",
    "projections.history_service",
)
"""What a read command imports to talk to the cluster (``ops.client`` imports the rest, too)."""
RUN_SETUP = "from ops.logging import configure\nconfigure('warning')"
"""What ``ops.clitools.run`` does before a command body imports anything."""


def _heavy_modules_after(
    code: str,
    packages: set[str] = HEAVY_PACKAGES,
    modules: tuple[str, ...] = HEAVY_MODULES,
) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code`` (a module that was
    blocked with ``None`` in ``sys.modules`` is not held)."""
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"heavy = {sorted(packages)!r}, {modules!r}\n"
        "loaded = [m for m, module in sys.modules.items() if module is not None and (\n"
        "          m.split('.')[0] in heavy[0]\n"
        "          or any(m == h or m.startswith(h + '.') for h in heavy[1]))]\n"
        "print(json.dumps(sorted(loaded)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_models_nats_or_event_loop() -> None:
    assert _heavy_modules_after("import ops.cli") == []


@pytest.mark.parametrize("args", [["--help"], ["history", "--help"], ["get", "--help"]])
def test_printing_help_loads_no_models_nats_or_event_loop(args: list[str]) -> None:
    code = f"from ops.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass"
    assert _heavy_modules_after(code) == []


def test_the_session_stack_of_a_read_command_loads_no_models() -> None:
    code = f"{RUN_SETUP}\nimport {', '.join(SESSION_STACK)}"
    assert _heavy_modules_after(code, READ_HEAVY_PACKAGES, READ_HEAVY_MODULES) == []


@pytest.mark.parametrize(
    "args",
    [["history", "pod/web"], ["describe", "pod", "web"], ["get", "pods"], ["events"]],
)
async def test_a_read_command_connected_to_a_server_loads_no_models(
    nats_server: RunningServer, store: object, args: list[str]
) -> None:
    """The command runs for real against a real server with the streams set up (and no
    projection answering, so reads fall back to the log or end with an error): whichever way
    it goes, it loads no models."""
    command = ["--server", nats_server.url, *args]
    code = f"from ops.cli import main\ntry:\n    main({command!r})\nexcept SystemExit:\n    pass"
    loaded = await asyncio.to_thread(
        _heavy_modules_after, code, READ_HEAVY_PACKAGES, READ_HEAVY_MODULES
    )
    assert loaded == []


def test_the_light_kind_table_agrees_with_the_resource_models() -> None:
    assert dict(NAMESPACED) == {kind: info.namespaced for kind, info in KINDS.items()}


def test_the_cli_offers_the_audit_outcomes_the_audit_trail_records() -> None:
    assert CLI_OUTCOMES == OUTCOMES
