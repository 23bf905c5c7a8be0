"""ConfigMap and Secret (core/v1), validated as ``pkg/apis/core/validation`` validates them.

Why this exists: pods take their configuration from these two kinds, so what the log accepts
must be what Kubernetes accepts: keys are config keys (``[-._a-zA-Z0-9]+``, not ``.`` or
``..``), a ConfigMap's ``data`` and ``binaryData`` share no key and hold at most 1 MiB, a
Secret's ``data`` is base64 and at most 1 MiB once decoded, its ``type`` (``Opaque`` by default)
demands the keys the type needs (``kubernetes.io/tls``: ``tls.crt`` and ``tls.key`` …), and
``stringData`` is merged into ``data`` on write (its values win) and never stored itself, as the
API server does. Errors name keys, never values: a Secret's value must not reach a log line or an
audit record through its own error message.

Immutability (``immutable: true``) is an update rule: :func:`update_problems`, used by the
aggregates.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final, Literal, Self

from pydantic import model_validator

from core.meta.model import Problems, invalid
from core.meta.names import config_key_errors
from core.meta.types import ResourceBase

MAX_SIZE: Final = 1024 * 1024
"""``corev1.MaxSecretSize``: the most a ConfigMap or a Secret may hold, in bytes."""

OPAQUE: Final = "Opaque"
TLS: Final = "kubernetes.io/tls"
BASIC_AUTH: Final = "kubernetes.io/basic-auth"
SSH_AUTH: Final = "kubernetes.io/ssh-auth"
DOCKERCFG: Final = "kubernetes.io/dockercfg"
DOCKER_CONFIG_JSON: Final = "kubernetes.io/dockerconfigjson"
SERVICE_ACCOUNT_TOKEN: Final = "kubernetes.io/service-account-token"
SERVICE_ACCOUNT_NAME: Final = "kubernetes.io/service-account.name"
IMMUTABLE: Final = "field is immutable when `immutable` is set"


def _key_problems(found: Problems, keys: Mapping[str, Any], field: str) -> None:
    for key in keys:
        for message in config_key_errors(key):
            found.add(invalid(key, message), field, key)


def decode_base64(text: str) -> bytes | None:
    """A ``[]byte`` field's value as Go's JSON decoding reads it (standard alphabet, padded);
    None if it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class ConfigMap(ResourceBase):
    """Configuration in clear: ``data`` (UTF-8 text) and ``binaryData`` (base64)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["ConfigMap"] = "ConfigMap"
    data: dict[str, str] | None = None
    binary_data: dict[str, str] | None = None
    immutable: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        found = Problems()
        data, binary = self.data or {}, self.binary_data or {}
        _key_problems(found, data, "data")
        _key_problems(found, binary, "binaryData")
        size = sum(len(v.encode()) for v in data.values())
        for key, text in binary.items():
            if key in data:
                found.add(invalid(key, "duplicate of key present in data"), "binaryData")
            raw = decode_base64(text)
            if raw is None:
                found.add("Invalid value: illegal base64 data", "binaryData", key)
                continue
            size += len(raw)
        if size > MAX_SIZE:
            found.add(f"Too long: may not be more than {MAX_SIZE} bytes", "data")
        found.check()
        return self


class Secret(ResourceBase):
    """Confidential configuration: ``data`` (base64), ``stringData`` (write-only, merged into
    ``data``), a ``type`` and ``immutable``. How its values are kept out of the log in clear
    is the gateway's concern (``core.access.secretdata``)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    data: dict[str, str] | None = None
    string_data: dict[str, str] | None = None
    type: str | None = None
    immutable: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        found = Problems()
        # The API server merges stringData into data before validating: a bad key of either
        # is reported under data.
        _key_problems(found, {**(self.data or {}), **(self.string_data or {})}, "data")
        values: dict[str, bytes] = {}
        for key, text in (self.data or {}).items():
            raw = decode_base64(text)
            if raw is None:
                found.add("Invalid value: illegal base64 data", "data", key)
            else:
                values[key] = raw
        for key, text in (self.string_data or {}).items():
            values[key] = text.encode()
        if self.string_data is not None:
            # The API server's conversion: stringData is merged into data (its values win)
            # and is never stored, nor shown by a read.
            self.data = {k: base64.b64encode(v).decode() for k, v in values.items()}
            self.string_data = None
        if not self.type:
            self.type = OPAQUE
        if sum(len(v) for v in values.values()) > MAX_SIZE:
            found.add(f"Too long: may not be more than {MAX_SIZE} bytes", "data")
        found.extend(type_problems(self.type, values, self.metadata.annotations or {}).items)
        found.check()
        return self


def string_data_merged(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret body as the API server's conversion leaves it: ``stringData`` merged into
    ``data`` (its values win) and gone, so what a write changes, and who owns it, is judged on
    ``data`` (kube's managed fields never name ``stringData``). A body whose ``stringData`` or
    ``data`` is malformed is returned as it is, for validation to name the fault."""
    string_data = manifest.get("stringData")
    data = manifest.get("data")
    if not isinstance(string_data, dict) or not isinstance(data, dict | None):
        return dict(manifest)
    if not all(isinstance(v, str) for v in string_data.values()):
        return dict(manifest)
    merged = {k: v for k, v in manifest.items() if k != "stringData"}
    merged["data"] = {
        **(data or {}),
        **{k: base64.b64encode(v.encode()).decode() for k, v in string_data.items()},
    }
    return merged


def type_problems(
    secret_type: str, values: Mapping[str, bytes], annotations: Mapping[str, str]
) -> Problems:
    """What ``ValidateSecret`` demands of each built-in type (an unknown type: nothing)."""
    found = Problems()
    if secret_type == SERVICE_ACCOUNT_TOKEN:
        if not annotations.get(SERVICE_ACCOUNT_NAME):
            found.add("Required value", "metadata", "annotations", SERVICE_ACCOUNT_NAME)
    elif secret_type in (DOCKERCFG, DOCKER_CONFIG_JSON):
        key = ".dockercfg" if secret_type == DOCKERCFG else ".dockerconfigjson"
        if key not in values:
            found.add("Required value", "data", key)
        else:
            try:
                json.loads(values[key])
            except ValueError as error:
                found.add(f"Invalid value: <secret contents redacted>: {error}", "data", key)
    elif secret_type == BASIC_AUTH:
        if "username" not in values and "password" not in values:
            found.add("Required value", "data", "username")
            found.add("Required value", "data", "password")
    elif secret_type == SSH_AUTH:
        if not values.get("ssh-privatekey"):
            found.add("Required value", "data", "ssh-privatekey")
    elif secret_type == TLS:
        for key in ("tls.crt", "tls.key"):
            if key not in values:
                found.add("Required value", "data", key)
    return found


def update_problems(old: Mapping[str, Any], new: Mapping[str, Any], *, kind: str) -> Problems:
    """``ValidateConfigMapUpdate`` / ``ValidateSecretUpdate``: an immutable object keeps its
    contents and stays immutable; a Secret's type never changes."""
    found = Problems()
    if kind == "Secret" and (old.get("type") or OPAQUE) != (new.get("type") or OPAQUE):
        found.add(invalid(new.get("type") or OPAQUE, "field is immutable"), "type")
    if old.get("immutable"):
        if not new.get("immutable"):
            found.add(f"Forbidden: {IMMUTABLE}", "immutable")
        fields = ("data",) if kind == "Secret" else ("data", "binaryData")
        for field in fields:
            if (old.get(field) or None) != (new.get(field) or None):
                found.add(f"Forbidden: {IMMUTABLE}", field)
    return found
