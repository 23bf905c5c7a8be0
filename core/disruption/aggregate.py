"""The PodDisruptionBudget aggregate: a stored object whose status its controller records and
an eviction updates.

Why this exists: the gateway stores every kind through an aggregate (``core.api.catalog``).
Beyond the common create / apply / delete, a PDB takes the ``status`` verb (kube's
``poddisruptionbudgets/status``, written by the disruption controller) and the status an
allowed eviction leaves (one disruption used, the pod in ``disruptedPods``), recorded as the
same ``PodDisruptionBudgetStatusUpdated`` event in the same append as the pod's deletion
(``core.disruption.budget.decide_eviction`` decides it). ``metadata.generation`` counts spec
changes, as kube's, so an eviction can tell a status computed for an older spec.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from core.api import payloads
from core.disruption.status import EVOLVE as PDB_EVOLVE
from core.errors import InvalidTransition
from core.meta.aggregate import Resource
from core.workloads.status import with_generation


class PodDisruptionBudget(Resource):
    KIND = "PodDisruptionBudget"
    EVOLVE = PDB_EVOLVE

    class StatusUpdated(Resource.Event, payloads.StatusUpdated):
        SUFFIX: ClassVar[str] = "StatusUpdated"

    def begin_life(self, manifest: dict[str, Any], uid: str) -> None:
        super().begin_life(manifest, uid)
        self.generation = int((manifest.get("metadata") or {}).get("generation") or 1)

    @classmethod
    def create(
        cls,
        current: Resource | None,
        *,
        agg_id: str,
        manifest: dict[str, Any],
        uid: str,
        at: datetime,
    ) -> Resource:
        manifest = with_generation(manifest, 1)
        return super().create(current, agg_id=agg_id, manifest=manifest, uid=uid, at=at)

    def carry_server_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Status and generation are the server's; a changed spec is a new generation."""
        manifest = super().carry_server_fields(manifest)
        spec_changed = manifest.get("spec") != self.manifest.get("spec")
        return with_generation(manifest, self.generation + (1 if spec_changed else 0))

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.manifest.get("spec") or {})

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.manifest.get("status") or {})

    def update_status(
        self,
        *,
        status: dict[str, Any] | None,
        annotations: dict[str, str],
        at: datetime,
        why: dict[str, Any] | None = None,
    ) -> None:
        """Record a status (the controller's, or an eviction's); the same status again changes
        nothing. A PDB has no annotations a controller owns, and its status no why record."""
        self.require_exists()
        if why is not None:
            raise InvalidTransition(
                "only a horizontal pod autoscaler's status update carries a why record",
                field="body.why",
            )
        if annotations:
            raise InvalidTransition(
                "a pod disruption budget's status update sets no annotations",
                field="body.annotations",
            )
        if status is None or status == self.manifest.get("status"):
            return
        self.trigger_event(self.StatusUpdated, status=status, annotations={}, timestamp=at)
