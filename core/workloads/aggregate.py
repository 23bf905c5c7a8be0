"""The workload aggregates (Deployment, ReplicaSet): a desired replica count and the status
their controller records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from core.api import payloads
from core.errors import (
    InvalidTransition,
)
from core.meta.aggregate import Resource
from core.workloads.status import EVOLVE as WORKLOAD_EVOLVE
from core.workloads.status import with_generation, with_status_update

CONTROLLER_ANNOTATION_PREFIX = "deployment.kubernetes.io/"
"""Annotations the deployment controller owns (revision, desired-replicas, max-replicas): a
status update may set them, and a client's apply that does not state them keeps them."""


class Workload(Resource):
    """A kind with a desired replica count and a status its controller records (Deployment,
    ReplicaSet). Its ``metadata.generation`` counts spec changes (scaling included), so a
    controller's ``status.observedGeneration`` says which spec it has acted on."""

    EVOLVE = WORKLOAD_EVOLVE

    class ScaledTo(Resource.Event, payloads.ScaledTo):
        TYPE: ClassVar[str] = "ScaledTo"

        def apply(self, aggregate: Resource) -> None:
            aggregate.generation += 1
            super().apply(aggregate)

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
        """Status, generation and the controller's annotations are the server's."""
        manifest = super().carry_server_fields(manifest)
        metadata = dict(manifest.get("metadata") or {})
        owned = {
            k: v
            for k, v in ((self.manifest.get("metadata") or {}).get("annotations") or {}).items()
            if k.startswith(CONTROLLER_ANNOTATION_PREFIX)
        }
        stated = metadata.get("annotations") or {}
        if owned.keys() - stated.keys():
            metadata["annotations"] = {**owned, **stated}
        spec_changed = manifest.get("spec") != self.manifest.get("spec")
        metadata["generation"] = self.generation + (1 if spec_changed else 0)
        return {**manifest, "metadata": metadata}

    @property
    def replicas(self) -> int:
        return int(self.manifest.get("spec", {}).get("replicas", 1))

    def scale(
        self, *, replicas: int, reason: str, at: datetime, why: dict[str, Any] | None = None
    ) -> None:
        """Set the desired replica count (``why``: the autoscaler's decision record, kept in
        the event); the same count again changes nothing."""
        self.require_exists()
        if replicas == self.replicas:
            return
        self.trigger_event(
            self.ScaledTo, replicas=replicas, previous=self.replicas, reason=reason, why=why,
            timestamp=at,
        )  # fmt: skip

    def update_status(
        self,
        *,
        status: dict[str, Any] | None,
        annotations: dict[str, str],
        at: datetime,
        why: dict[str, Any] | None = None,
    ) -> None:
        """Record what a controller observed (``None``: keep the recorded status, set only the
        annotations); the same again changes nothing. A workload's status has no why."""
        self.require_exists()
        if why is not None:
            raise InvalidTransition(
                "only a horizontal pod autoscaler's status update carries a why record",
                field="body.why",
            )
        if status is None:
            status = dict(self.manifest.get("status") or {})
        foreign = sorted(k for k in annotations if not k.startswith(CONTROLLER_ANNOTATION_PREFIX))
        if foreign:
            raise InvalidTransition(
                f"a status update may only set {CONTROLLER_ANNOTATION_PREFIX}* annotations, "
                f"not {foreign[0]!r}",
                field="body.annotations",
            )
        if with_status_update(self.manifest, status, annotations) == self.manifest:
            return
        self.trigger_event(self.StatusUpdated, status=status, annotations=annotations, timestamp=at)


class Deployment(Workload):
    KIND = "Deployment"


class ReplicaSet(Workload):
    KIND = "ReplicaSet"
