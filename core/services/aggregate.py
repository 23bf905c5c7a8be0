"""The aggregates of services and what follows from them: what may change about a service, its
allocation records and its endpoint slices once they exist.

A service's ``clusterIPs`` never change once allocated (``may not change once set``, as
``ValidateServiceUpdate`` says); an address or port record keeps its parent for life; a slice
keeps its address type. Which allocations a service's create, update or delete makes or gives
back is decided by ``core.services.allocation``, on these aggregates together.
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import InvalidTransition
from core.meta.aggregate import Resource


def _immutable(path: str, value: object) -> InvalidTransition:
    return InvalidTransition(
        f"{path}: Invalid value: {json.dumps(value)}: field is immutable", field=path
    )


class Service(Resource):
    KIND = "Service"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        old = self.manifest.get("spec") or {}
        new = manifest.get("spec") or {}
        if old.get("type") == "ExternalName" or new.get("type") == "ExternalName":
            return  # an ExternalName service has no address to keep (it may gain one)
        old_ips = old.get("clusterIPs") or ([old["clusterIP"]] if old.get("clusterIP") else [])
        new_ips = new.get("clusterIPs") or ([new["clusterIP"]] if new.get("clusterIP") else [])
        if old_ips and new_ips[:1] != old_ips[:1]:
            raise InvalidTransition(
                f"spec.clusterIPs[0]: Invalid value: {json.dumps(new_ips)}: may not change "
                f"once set (it is {old_ips[0]})",
                field="spec.clusterIPs[0]",
            )

    @property
    def cluster_ips(self) -> list[str]:
        """The addresses the service holds (none for a headless or ExternalName service)."""
        spec = self.manifest.get("spec") or {}
        return [ip for ip in spec.get("clusterIPs") or () if ip != "None"]


class Allocation(Resource):
    """A value allocated to a service (an address, a port): it keeps its parent for life."""

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        if any(path.startswith("spec") for path in changed):
            raise _immutable("spec.parentRef", (manifest.get("spec") or {}).get("parentRef"))

    @property
    def parent(self) -> dict[str, Any]:
        return dict((self.manifest.get("spec") or {}).get("parentRef") or {})


class IPAddress(Allocation):
    """An allocated ClusterIP."""

    KIND = "IPAddress"


class NodePortAllocation(Allocation):
    """An allocated node port."""

    KIND = "NodePortAllocation"


class EndpointSlice(Resource):
    """A share of a service's endpoints; its address type is fixed at creation."""

    KIND = "EndpointSlice"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        if "addressType" in changed:
            raise _immutable("addressType", manifest.get("addressType"))
