"""The HorizontalPodAutoscaler aggregate: a stored object created, replaced and deleted.

Why this exists: the gateway stores every kind through an aggregate (``core.api.catalog``); an
HPA needs no decision beyond the common ones yet. Its status and the ``ScaledTo`` decisions
come with the controller (issue 19, later part).
"""

from __future__ import annotations

from core.meta.aggregate import Resource


class HorizontalPodAutoscaler(Resource):
    KIND = "HorizontalPodAutoscaler"
