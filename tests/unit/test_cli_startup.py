"""The CLI starts light: defining its commands, and printing a command's help, load no models,
no NATS client and no event loop.

``fleetlog --help`` and every read command pay for what ``ops.cli`` imports before anything
runs; it used to be about a second (pydantic models, eventsourcing aggregates, the read-model
fold). Each check runs in a fresh interpreter, since this one has long imported everything.
Start-up time itself is measured, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.kinds import NAMESPACED
from core.resources import KINDS
from ops.audit_cli import OUTCOMES as CLI_OUTCOMES
from streams.audit import OUTCOMES

ROOT = Path(__file__).resolve().parents[2]

HEAVY_PACKAGES = {"pydantic", "eventsourcing", "numpy", "nats", "structlog", "tabulate", "asyncio"}
"""Packages loaded only when a command runs (and for some, only by the commands needing them)."""
HEAVY_MODULES = ("core.aggregates", "core.resources", "projections", "ops.client", "ops.timetravel")
"""Modules of this project that the start-up path must not load (nor anything below them)."""


def _heavy_modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"heavy = {sorted(HEAVY_PACKAGES)!r}, {HEAVY_MODULES!r}\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in heavy[0]\n"
        "          or any(m == h or m.startswith(h + '.') for h in heavy[1])]\n"
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


def test_the_light_kind_table_agrees_with_the_resource_models() -> None:
    assert dict(NAMESPACED) == {kind: info.namespaced for kind, info in KINDS.items()}


def test_the_cli_offers_the_audit_outcomes_the_audit_trail_records() -> None:
    assert CLI_OUTCOMES == OUTCOMES
