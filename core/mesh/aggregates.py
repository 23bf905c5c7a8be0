"""The mesh's aggregates: Istio's objects are plain resources (any field may change)."""

from __future__ import annotations

from core.meta.aggregate import Resource


class VirtualService(Resource):
    KIND = "VirtualService"


class DestinationRule(Resource):
    KIND = "DestinationRule"


class Gateway(Resource):
    KIND = "Gateway"


class ServiceEntry(Resource):
    KIND = "ServiceEntry"


class PeerAuthentication(Resource):
    KIND = "PeerAuthentication"
