"""A container's environment: ``env`` (values and references) and ``envFrom``.

Why this exists: environment variables are where manifests most often go wrong (a field path
the API server does not know, a name with ``=``); the checks are ``pkg/apis/core/validation``'s.
"""

from __future__ import annotations

import re
from typing import Final, Self

from pydantic import model_validator

from core.meta.fields import QuantityString
from core.meta.model import K8sModel, field_error, invalid
from core.meta.names import (
    ConfigKey,
    qualified_name_errors,
)
from core.meta.quantity import parse_quantity

# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------

_ENV_NAME_RE: Final = re.compile(r"[\x20-\x3c\x3e-\x7e]+")  # printable ASCII except '='


_FIELD_PATHS: Final = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "metadata.labels",
        "metadata.annotations",
        "spec.nodeName",
        "spec.serviceAccountName",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
    }
)
_SUBSCRIPT_PATH_RE: Final = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


class ObjectFieldSelector(K8sModel):
    """``fieldRef``: a field of the pod itself (``metadata.name``, ``status.podIP``, ...)."""

    api_version: str = "v1"
    field_path: str

    @model_validator(mode="after")
    def _supported(self) -> Self:
        path = self.field_path
        if path in _FIELD_PATHS:
            return self
        match = _SUBSCRIPT_PATH_RE.fullmatch(path)
        if match and not qualified_name_errors(match.group(2).lower()):
            return self
        supported = ", ".join(f'"{p}"' for p in sorted(_FIELD_PATHS))
        raise field_error(
            f"Unsupported value {path!r}: supported values: {supported}, "
            "\"metadata.labels['<KEY>']\", \"metadata.annotations['<KEY>']\"",
            "fieldPath",
        )


_RESOURCE_FIELD_REFS: Final = frozenset(
    {
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
    }
)


class ResourceFieldSelector(K8sModel):
    """``resourceFieldRef``: a container's request or limit, divided by ``divisor``."""

    container_name: str | None = None
    resource: str
    divisor: QuantityString | None = None

    @model_validator(mode="after")
    def _supported(self) -> Self:
        res = self.resource
        if res not in _RESOURCE_FIELD_REFS and not res.startswith(
            ("limits.hugepages-", "requests.hugepages-")
        ):
            supported = ", ".join(f'"{r}"' for r in sorted(_RESOURCE_FIELD_REFS))
            raise field_error(
                f"Unsupported value {res!r}: supported values: {supported}", "resource"
            )
        if self.divisor is not None and parse_quantity(self.divisor).sign() <= 0:
            raise field_error(invalid(self.divisor, "must be greater than 0"), "divisor")
        return self


class ConfigMapKeySelector(K8sModel):
    """``configMapKeyRef``: one key of a ConfigMap."""

    name: str
    key: ConfigKey
    optional: bool | None = None


class SecretKeySelector(K8sModel):
    """``secretKeyRef``: one key of a Secret."""

    name: str
    key: ConfigKey
    optional: bool | None = None


class EnvVarSource(K8sModel):
    """``valueFrom``: exactly one source."""

    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    secret_key_ref: SecretKeySelector | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [
            alias
            for name, alias in (
                ("field_ref", "fieldRef"),
                ("resource_field_ref", "resourceFieldRef"),
                ("config_map_key_ref", "configMapKeyRef"),
                ("secret_key_ref", "secretKeyRef"),
            )
            if getattr(self, name) is not None
        ]
        if not given:
            raise field_error(
                "Required value: must specify one of: `fieldRef`, `resourceFieldRef`, "
                "`configMapKeyRef` or `secretKeyRef`"
            )
        if len(given) > 1:
            raise field_error(
                "Forbidden: may not have more than one field specified at a time", given[1]
            )
        return self


class EnvVar(K8sModel):
    """One environment variable: a literal ``value`` or a ``valueFrom`` source."""

    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.name:
            raise field_error("Required value: an environment variable needs a name", "name")
        if not _ENV_NAME_RE.fullmatch(self.name):
            raise field_error(
                invalid(
                    self.name,
                    "a valid environment variable name must consist only of printable ASCII "
                    "characters other than '='",
                ),
                "name",
            )
        if self.value and self.value_from is not None:
            raise field_error(
                "Forbidden: may not be specified when `value` is not empty", "valueFrom"
            )
        return self


class LocalObjectReference(K8sModel):
    """A reference by name to an object in the same namespace."""

    name: str
    optional: bool | None = None


class EnvFromSource(K8sModel):
    """``envFrom``: every key of a ConfigMap or Secret, optionally prefixed."""

    prefix: str | None = None
    config_map_ref: LocalObjectReference | None = None
    secret_ref: LocalObjectReference | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if self.config_map_ref is None and self.secret_ref is None:
            raise field_error("Required value: must specify one of: `configMapRef` or `secretRef`")
        if self.config_map_ref is not None and self.secret_ref is not None:
            raise field_error(
                "Forbidden: may not have more than one field specified at a time", "secretRef"
            )
        return self
