"""Keeping Python's cyclic garbage collector off the hot paths of long-running roles.

Why this exists: a control-plane process holds a large read model (every node, every pod, their
manifests) that never becomes garbage, and with the default thresholds the collector walks all
of it again and again: a full collection stalls every command or binding in flight for 100 ms
or more, and a scheduler replica spent about a quarter of its CPU per pod in collections.
Kubernetes' Go components have no such pause to tune; this is the Python equivalent of their
GOGC setting, applied once a role has loaded its state, and like GOGC an operator may set it
(``FLEETLOG_GC_YOUNG_THRESHOLD``): fewer allocations between young collections mean shorter
pauses and more of them.
"""

from __future__ import annotations

import gc
import os

import structlog

log = structlog.get_logger(__name__)

YOUNG_THRESHOLD = 10_000
"""Allocations between young collections (CPython's default is 700). Measured on a quiet host
(docs/benchmarks.md, "Session 14's closing figures"): 50,000 let a middle collection walk a
million survivors at once (pauses of 250-330 ms, the tail of commands at a steady 500/s); with
10,000 the pauses stay under ~60 ms, for the same or less cpu in `up`, the agent and the
scheduler."""
YOUNG_THRESHOLD_ENV = "FLEETLOG_GC_YOUNG_THRESHOLD"
YOUNG_THRESHOLD_BOUNDS = (100, 10_000_000)


def young_threshold(environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """The operator's threshold, or :data:`YOUNG_THRESHOLD` when unset or unusable (said)."""
    text = environ.get(YOUNG_THRESHOLD_ENV)
    if text is None:
        return YOUNG_THRESHOLD
    low, high = YOUNG_THRESHOLD_BOUNDS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not low <= value <= high:
        log.warning(
            "gc.threshold_ignored", variable=YOUNG_THRESHOLD_ENV, value=text,
            reason=f"not a whole number from {low} to {high}", used=YOUNG_THRESHOLD,
        )  # fmt: skip
        return YOUNG_THRESHOLD
    return value


def tune_gc() -> None:
    """Move everything alive now (the folded read model, imported modules) out of the
    collector's sight, and run young collections less often. Call it once the role has caught
    up with the log, before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold(), 20, 100)
