"""The LimitRange (core/v1): per-namespace defaults and bounds for container resources.

Why this exists: most pods do not state requests and limits, and a scheduler or a quota cannot
count what is not stated. A LimitRange gives a namespace the values a container gets when it
states none (``default`` limits, ``defaultRequest`` requests) and the bounds a container must
stay within (``min``, ``max``, ``maxLimitRequestRatio``). Admission applies them
(``core.policy.admission.apply_limit_ranges``), as Kubernetes' LimitRanger plugin does.

Only items of type ``Container`` are enforced by fleetlog; ``Pod`` and
``PersistentVolumeClaim`` items are accepted (so manifests from a cluster load) and stored.
The defaulting of an item follows ``SetDefaults_LimitRangeItem``: a missing ``default`` takes
``max``, a missing ``defaultRequest`` takes ``default``, then ``min``.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from core.meta.model import K8sModel, field_error
from core.meta.names import dns1123_subdomain_errors
from core.meta.quantity import parse_quantity
from core.meta.types import ResourceBase
from core.pods.resources import ResourceList

LimitType = Literal["Container", "Pod", "PersistentVolumeClaim"]


class LimitRangeItem(K8sModel):
    """One ``spec.limits`` entry: bounds and defaults for one type of object."""

    type: LimitType
    max: ResourceList | None = None
    min: ResourceList | None = None
    default: ResourceList | None = None
    default_request: ResourceList | None = None
    max_limit_request_ratio: ResourceList | None = None

    @model_validator(mode="after")
    def _default_and_check(self) -> Self:
        if self.type == "Container":
            default = dict(self.default or {})
            for name, value in (self.max or {}).items():
                default.setdefault(name, value)
            request = dict(self.default_request or {})
            for source in (default, self.min or {}):
                for name, value in source.items():
                    request.setdefault(name, value)
            self.default = default or None
            self.default_request = request or None
        elif self.default or self.default_request:
            raise field_error(
                f"Forbidden: may not be specified when `type` is '{self.type}'", "default"
            )
        # ValidateLimitRange: min <= defaultRequest <= default <= max, per resource.
        low, high = self.min or {}, self.max or {}
        for field, values in (("defaultRequest", self.default_request), ("default", self.default)):
            for name, text in (values or {}).items():
                amount = parse_quantity(text)
                if name in low and amount < parse_quantity(low[name]):
                    raise field_error(
                        f"Invalid value: {text!r}: min value {low[name]} is greater than "
                        f"{field} value {text}",
                        field,
                        name,
                    )
                if name in high and amount > parse_quantity(high[name]):
                    raise field_error(
                        f"Invalid value: {text!r}: {field} value {text} is greater than max "
                        f"value {high[name]}",
                        field,
                        name,
                    )
        for name, text in (self.default_request or {}).items():
            limit = (self.default or {}).get(name)
            if limit is not None and parse_quantity(text) > parse_quantity(limit):
                raise field_error(
                    f"Invalid value: {text!r}: default request value {text} is greater than "
                    f"default limit value {limit}",
                    "defaultRequest",
                    name,
                )
        for name, text in (self.max_limit_request_ratio or {}).items():
            if parse_quantity(text) < parse_quantity("1"):
                raise field_error(
                    f"Invalid value: {text!r}: ratio {text} is less than 1",
                    "maxLimitRequestRatio",
                    name,
                )
        return self


class LimitRangeSpec(K8sModel):
    limits: list[LimitRangeItem]


class LimitRange(ResourceBase):
    """A limit range (core/v1, namespaced)."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)

    api_version: Literal["v1"] = "v1"
    kind: Literal["LimitRange"] = "LimitRange"
    spec: LimitRangeSpec


__all__ = ["LimitRange", "LimitRangeItem", "LimitRangeSpec", "LimitType"]
