"""Every kind's evolve in one table: event type -> how it changes the object's manifest.

Why this exists: the cluster read model (``projections/cluster.py``) folds every kind's events,
and looks each type up here once; the aggregates use their own kind's table
(``Resource.EVOLVE``), which is the same functions (``core.meta.evolve`` says why). Light:
nothing here loads pydantic or eventsourcing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from core.api.events import RESOURCE_KINDS
from core.autoscaling.status import EVOLVE as HPA_EVOLVE
from core.disruption.status import EVOLVE as PDB_EVOLVE
from core.meta.evolve import Evolve, replaced
from core.namespaces.status import EVOLVE as NAMESPACE_EVOLVE
from core.nodes.status import EVOLVE as NODE_EVOLVE
from core.pods.status import EVOLVE as POD_EVOLVE
from core.policy.quota import EVOLVE as QUOTA_EVOLVE
from core.workloads.status import EVOLVE as WORKLOAD_EVOLVE

EVOLVE: Mapping[str, Evolve] = MappingProxyType(
    {
        **{f"{kind}Updated": replaced for kind in RESOURCE_KINDS},
        **POD_EVOLVE,
        **NODE_EVOLVE,
        **WORKLOAD_EVOLVE,
        **QUOTA_EVOLVE,
        **NAMESPACE_EVOLVE,
        **HPA_EVOLVE,
        **PDB_EVOLVE,
    }
)
"""Event type -> its evolve. ``…Created`` (a new object with the event's manifest) and
``…Deleted`` (the object is gone) are not here unless a kind does more at creation (a quota
shows what it has used): they make or end an object rather than change one."""
