"""The HorizontalPodAutoscaler aggregate: a stored object whose status its controller records.

Why this exists: the gateway stores every kind through an aggregate (``core.api.catalog``).
Beyond the common create / apply / delete, an HPA (and a VPA) takes the ``status`` verb
(Kubernetes' ``horizontalpodautoscalers/status``): the HPA controller records currentReplicas,
desiredReplicas, currentMetrics, conditions and lastScaleTime as a
``HorizontalPodAutoscalerStatusUpdated`` event. Its scaling decisions are ``ScaledTo`` events
on the target, carrying the why record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from core.api import payloads
from core.autoscaling.status import EVOLVE as HPA_EVOLVE
from core.autoscaling.status import VPA_EVOLVE
from core.errors import InvalidTransition
from core.meta.aggregate import Resource


class HorizontalPodAutoscaler(Resource):
    KIND = "HorizontalPodAutoscaler"
    EVOLVE = HPA_EVOLVE

    class StatusUpdated(Resource.Event, payloads.StatusUpdated):
        SUFFIX: ClassVar[str] = "StatusUpdated"

    def update_status(
        self,
        *,
        status: dict[str, Any] | None,
        annotations: dict[str, str],
        at: datetime,
        why: dict[str, Any] | None = None,
    ) -> None:
        """Record what the controller observed (``why``: the decision record of an evaluation
        that scaled nothing for a new reason, kept in the event); the same status again changes
        nothing. An HPA has no annotations a controller owns."""
        self.require_exists()
        if annotations:
            raise InvalidTransition(
                "a horizontal pod autoscaler's status update sets no annotations",
                field="body.annotations",
            )
        if status is None or status == self.manifest.get("status"):
            return
        self.trigger_event(self.StatusUpdated, status=status, annotations={}, why=why, timestamp=at)


class VerticalPodAutoscaler(HorizontalPodAutoscaler):
    """A VPA: stored like every kind; its recommender records ``status.recommendation`` and
    the RecommendationProvided condition through the ``status`` verb
    (``VerticalPodAutoscalerStatusUpdated``), the same rule as an HPA's status — except that
    the updater's record of what it did to pods (a ``why`` with ``updater``: resized in place,
    evicted, waited) is an event even when the status stays the same, as the VPA's updater
    emits its ``EvictedPod`` events on the VPA."""

    KIND = "VerticalPodAutoscaler"
    EVOLVE = VPA_EVOLVE

    def update_status(
        self,
        *,
        status: dict[str, Any] | None,
        annotations: dict[str, str],
        at: datetime,
        why: dict[str, Any] | None = None,
    ) -> None:
        if why and "updater" in why and not annotations:
            self.require_exists()
            kept = status if status is not None else (self.manifest.get("status") or {})
            self.trigger_event(
                self.StatusUpdated, status=kept, annotations={}, why=why, timestamp=at
            )
            return
        super().update_status(status=status, annotations=annotations, at=at, why=why)
