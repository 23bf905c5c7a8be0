"""The ResourceQuota (core/v1): a namespace's ceiling on what its pods may request.

Why this exists: one namespace must not take a whole cluster. A quota states ``spec.hard``
(requests and limits of cpu and memory, and the number of pods); each pod's create is charged
against it atomically with the ``PodCreated`` (the ``ResourceQuota`` aggregate keeps the ledger
and refuses a charge that would exceed ``hard``), and its delete gives the charge back.
``status.hard`` / ``status.used`` are server-managed and shown by ``get`` and ``describe``.

fleetlog tracks the compute resources and the pod count (``cpu`` and ``memory`` mean
``requests.cpu`` and ``requests.memory``, as in Kubernetes); other quota resources
(object counts, storage, scopes) are refused rather than silently not enforced.
"""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import model_validator

from core.meta.fields import QuantityString
from core.meta.model import K8sModel, field_error, invalid
from core.meta.names import dns1123_subdomain_errors
from core.meta.quantity import parse_quantity, resource_quantity_problem
from core.meta.types import ResourceBase

QUOTA_RESOURCES: Final = (
    "pods",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "cpu",
    "memory",
)
"""The quota resources fleetlog enforces (``cpu``/``memory`` are aliases of the requests)."""

QuotaList = dict[str, QuantityString]


def _check_names(values: dict[str, str], section: str) -> None:
    for name, text in values.items():
        if name not in QUOTA_RESOURCES:
            raise field_error(
                invalid(
                    name,
                    "fleetlog enforces only these quota resources: " + ", ".join(QUOTA_RESOURCES),
                ),
                section,
                name,
            )
        if (problem := resource_quantity_problem(name, parse_quantity(text))) is not None:
            raise field_error(problem, section, name)


class ResourceQuotaSpec(K8sModel):
    hard: QuotaList | None = None

    @model_validator(mode="after")
    def _known_resources(self) -> Self:
        _check_names(self.hard or {}, "hard")
        return self


class ResourceQuotaStatus(K8sModel):
    """Server-managed: what the quota allows and what its namespace's pods use now."""

    hard: QuotaList | None = None
    used: QuotaList | None = None


class ResourceQuota(ResourceBase):
    """A resource quota (core/v1, namespaced)."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)

    api_version: Literal["v1"] = "v1"
    kind: Literal["ResourceQuota"] = "ResourceQuota"
    spec: ResourceQuotaSpec | None = None
    status: ResourceQuotaStatus | None = None


__all__ = ["QUOTA_RESOURCES", "ResourceQuota", "ResourceQuotaSpec", "ResourceQuotaStatus"]
