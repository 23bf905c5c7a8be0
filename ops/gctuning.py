"""Keeping Python's cyclic garbage collector off the hot paths of long-running roles.

Why this exists: a control-plane process holds a large read model (every node, every pod, their
manifests) that never becomes garbage, and with the default thresholds the collector walks all
of it again and again: a full collection stalls every command or binding in flight for 100 ms
or more, and a scheduler replica spent about a quarter of its CPU per pod in collections.
Kubernetes' Go components have no such pause to tune; this is the Python equivalent of their
GOGC setting, applied once a role has loaded its state.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Allocations between young collections (CPython's default is 700)."""


def tune_gc() -> None:
    """Move everything alive now (the folded read model, imported modules) out of the
    collector's sight, and run young collections less often. Call it once the role has caught
    up with the log, before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
