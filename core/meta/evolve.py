"""The *evolve* half of every kind: how one recorded event changes an object's manifest.

Why this exists: two folds read the same events. The aggregates fold them when a handler
decides (``core/<kind>/aggregate.py``, through eventsourcing), and the cluster read model folds
them when the log is replayed (``projections/cluster.py``, at replay speed, on plain data). Both
look the event's type up in its kind's table (``core.pods.status.EVOLVE``,
``core.nodes.status.EVOLVE`` …; every table at once in ``core.api.evolve``) and call the same
function, so the two can no longer disagree.

An evolve function sees the object through the small :class:`Evolving` protocol (an aggregate
and a read-model record both satisfy it), the event's payload as plain data (a mapping with the
payload's field names; fields an older event lacks are read with their defaults) and the
event's condition stamp (``core.meta.timestamps``: whole seconds, as Kubernetes writes them). It
returns the new manifest and never changes the one it was given (readers may hold it).

What an aggregate knows beyond its manifest (a node's allocation ledger, a quota's charges, a
workload's generation counter, whether it was deleted) is folded by the aggregate alone: no
read model needs it from the manifest fold.

Nothing here imports pydantic or eventsourcing: the read model runs in light processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol


class Evolving(Protocol):
    """What an evolve function may read of the object an event happened to."""

    @property
    def manifest(self) -> dict[str, Any]: ...

    @property
    def uid(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...


Evolve = Callable[[Evolving, Mapping[str, Any], str], dict[str, Any]]
"""``evolve(state, payload, stamp) -> manifest``: the object's manifest after the event."""


def replaced(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    """``…Updated``: the manifest the event carries replaces the object's."""
    manifest: dict[str, Any] = payload["manifest"]
    return manifest
