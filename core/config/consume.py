"""How a pod consumes ConfigMaps and Secrets: which it references, and the files a volume of
one holds, as the kubelet builds them.

Why this exists: the node agent gets the values of exactly the objects a pod references from
the control plane (never from the log, where a Secret's values are sealed), then makes the
container's environment (``core.pods.downward``) and its configMap/secret volumes from them.
The rules are the kubelet's (``makeEnvironmentVariables``, the configmap and secret volume
plugins): a missing object or key fails the container unless the reference is ``optional``;
a volume's ``items`` choose keys and paths, ``defaultMode`` (0644) or an item's ``mode`` the
file's permissions. Pure: values are passed in.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

DEFAULT_MODE: Final = 0o644


class ConfigUnavailable(ValueError):
    """A referenced ConfigMap, Secret or key does not exist (the kubelet's message)."""


@dataclass(frozen=True, kw_only=True)
class ConfigSources:
    """The values of the ConfigMaps and Secrets a pod references that exist (name -> key ->
    bytes; a ConfigMap's ``binaryData`` included)."""

    namespace: str = "default"
    config_maps: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)
    env_only: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """A ConfigMap's keys that are ``data`` (text): only those become variables."""

    def source(self, kind: str, name: str) -> Mapping[str, bytes] | None:
        return (self.config_maps if kind == "configmap" else self.secrets).get(name)


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from spec.get("initContainers") or ()
    yield from spec.get("containers") or ()


def referenced(manifest: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The names of the ConfigMaps and of the Secrets the pod references (env, envFrom,
    volumes): all the agent may ask for."""
    spec = manifest.get("spec") or {}
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for container in _containers(spec):
        for source in container.get("envFrom") or ():
            if "configMapRef" in source:
                config_maps.add(str(source["configMapRef"].get("name", "")))
            if "secretRef" in source:
                secrets.add(str(source["secretRef"].get("name", "")))
        for entry in container.get("env") or ():
            value_from = entry.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                config_maps.add(str(value_from["configMapKeyRef"].get("name", "")))
            if "secretKeyRef" in value_from:
                secrets.add(str(value_from["secretKeyRef"].get("name", "")))
    for volume in spec.get("volumes") or ():
        if volume.get("configMap") is not None:
            config_maps.add(str(volume["configMap"].get("name", "")))
        if volume.get("secret") is not None:
            secrets.add(str(volume["secret"].get("secretName", "")))
    return config_maps - {""}, secrets - {""}


def not_found(kind: str, name: str) -> ConfigUnavailable:
    return ConfigUnavailable(f'{kind} "{name}" not found')


def missing_key(kind: str, key: str, namespace: str, name: str) -> ConfigUnavailable:
    title = "ConfigMap" if kind == "configmap" else "Secret"
    return ConfigUnavailable(f"couldn't find key {key} in {title} {namespace}/{name}")


def volume_files(
    volume: Mapping[str, Any], sources: ConfigSources
) -> dict[str, tuple[bytes, int]] | None:
    """The files (relative path -> content, mode) a configMap or secret volume holds; None if
    it is not such a volume. An optional volume of a missing object is empty."""
    if volume.get("configMap") is not None:
        kind, source = "configmap", volume["configMap"]
        name = str(source.get("name", ""))
    elif volume.get("secret") is not None:
        kind, source = "secret", volume["secret"]
        name = str(source.get("secretName", ""))
    else:
        return None
    values = sources.source(kind, name)
    optional = bool(source.get("optional"))
    if values is None:
        if optional:
            return {}
        raise ConfigUnavailable(
            f'MountVolume.SetUp failed for volume "{volume.get("name", "")}" : '
            f'{kind} "{name}" not found'
        )
    default_mode = int(source.get("defaultMode", DEFAULT_MODE))
    items = source.get("items")
    if not items:
        return {key: (value, default_mode) for key, value in values.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        key = str(item.get("key", ""))
        if key not in values:
            if optional:
                continue
            raise ConfigUnavailable(
                f'MountVolume.SetUp failed for volume "{volume.get("name", "")}" : '
                f"{kind} references non-existent config key: {key}"
            )
        path = posixpath.normpath(str(item.get("path", key)))
        if path.startswith(("/", "..")):
            # The API server refuses such paths; a stored pod from before cannot escape.
            raise ConfigUnavailable(f"volume item path {path!r} leaves the volume")
        files[path] = (values[key], int(item.get("mode", default_mode)))
    return files
