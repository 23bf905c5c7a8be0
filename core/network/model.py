"""The PodCIDR (networking.fleetlog.dev/v1alpha1): one node range of the cluster CIDR, held.

Why this exists: Kubernetes' node IPAM controller keeps the ranges it handed out in memory and
rebuilds them from the nodes at start; two controllers overlapping during a leader hand-over
could then give one range to two nodes. Here each range is an object of its own, named after
the range (``100.96.3.0-24``), created "must be new" in the same atomic append as the node's
``NodePodCIDRAssigned``: two racing assignments of one range can never both be written, and
the ranges in use are in the log for anyone to list (``fleetlog get podcidrs``). An object
without a node reserves its range (nothing will be assigned from it); deleting a node
releases its range.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from core.errors import ValidationFailed
from core.meta.model import K8sModel, field_error
from core.meta.names import dns1123_subdomain_errors
from core.meta.types import ResourceBase
from core.network.ranges import cidr_object_name, parse_cidr

API_VERSION = "networking.fleetlog.dev/v1alpha1"


class PodCIDRSpec(K8sModel):
    cidr: str
    node_name: str | None = None
    node_uid: str | None = Field(default=None, alias="nodeUID")


class PodCIDR(ResourceBase):
    """A node range of the cluster CIDR, held by a node (or reserved); cluster-scoped, named
    after its range."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)
    NAMESPACED = False

    api_version: Literal["networking.fleetlog.dev/v1alpha1"] = API_VERSION
    kind: Literal["PodCIDR"] = "PodCIDR"
    spec: PodCIDRSpec

    @model_validator(mode="after")
    def _named_after_its_range(self) -> Self:
        try:
            cidr = parse_cidr(self.spec.cidr, what="spec.cidr")
        except ValidationFailed as exc:
            raise field_error(exc.message, "spec", "cidr") from None
        expected = cidr_object_name(cidr)
        name = self.metadata.name
        if name and name != expected:
            raise field_error(
                f"Invalid value: {name!r}: a PodCIDR is named after its range: {expected!r}",
                "metadata",
                "name",
            )
        return self
