"""A pod's ConfigMaps and Secrets on the node: asked of the control plane, written as volumes.

Why this exists: the agent never reads a Secret from the log (its values are sealed there); it
asks ``fleet.qry.podconfig`` for the values of the objects one pod references
(``projections.podconfig``, which answers only for pods bound to this node), and writes each
configMap or secret volume into the pod's directory (``<root>/pods/<uid>/volumes/<name>``,
0700, each file with its ``defaultMode`` or item ``mode``), from where the runtime binds it
read-only at the container's ``mountPath``. The values are read when the pod starts and again
when a container restarts, so a restarted container sees them as they are then (the kubelet
also refreshes a mounted volume while the container runs; this does not yet).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from core.config.consume import ConfigSources, ConfigUnavailable, referenced, volume_files
from projections.podconfig import POD_CONFIG_SUBJECT

ASK_TIMEOUT_S = 5.0


class PodConfigClient:
    """Asks the control plane for one pod's configuration values."""

    def __init__(self, nc: Client, *, node: str, root: Path) -> None:
        """``root``: the agent's directory (volumes go under ``root/pods/<uid>/volumes``)."""
        self._nc = nc
        self._node = node
        self._root = root

    def volumes_dir(self, pod_uid: str) -> Path:
        return self._root / "pods" / pod_uid / "volumes"

    async def fetch(self, manifest: Mapping[str, Any]) -> ConfigSources:
        """The values of what the pod references; :class:`ConfigUnavailable` when the control
        plane does not answer or refuses."""
        metadata = manifest.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "default")
        config_maps, secrets = referenced(manifest)
        if not config_maps and not secrets:
            return ConfigSources(namespace=namespace)
        request = {"node": self._node, "namespace": namespace, "pod": metadata.get("name", "")}
        try:
            reply = await self._nc.request(
                POD_CONFIG_SUBJECT, msgpack.packb(request), timeout=ASK_TIMEOUT_S
            )
        except (NoRespondersError, NatsTimeout) as exc:
            raise ConfigUnavailable(
                "the control plane did not answer for the pod's ConfigMaps and Secrets"
            ) from exc
        answer = msgpack.unpackb(reply.data, raw=False)
        if not answer.get("ok"):
            raise ConfigUnavailable(str((answer.get("error") or {}).get("message", "refused")))
        return ConfigSources(
            namespace=namespace,
            config_maps=answer.get("configMaps") or {},
            secrets=answer.get("secrets") or {},
            env_only={k: frozenset(v) for k, v in (answer.get("textKeys") or {}).items()},
        )


def write_volumes(
    directory: Path, manifest: Mapping[str, Any], sources: ConfigSources
) -> dict[str, Path]:
    """Write every configMap and secret volume of the pod under ``directory``; volume name ->
    its directory. :class:`ConfigUnavailable` for a volume that cannot be made. A volume
    written before is updated in place (files rewritten, files no longer in it removed): a
    running container has it bound, and a directory replaced under it would vanish from its
    view."""
    written: dict[str, Path] = {}
    for volume in (manifest.get("spec") or {}).get("volumes") or ():
        files = volume_files(volume, sources)
        if files is None:
            continue
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        target = directory / str(volume["name"])
        target.mkdir(exist_ok=True, mode=0o700)
        for stale in sorted(target.rglob("*"), reverse=True):
            relative = str(stale.relative_to(target))
            if stale.is_file() and relative not in files:
                stale.unlink()
            elif stale.is_dir() and not any(f.startswith(relative + "/") for f in files):
                shutil.rmtree(stale)
        for relative, (content, mode) in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            # Written aside and renamed over: a reader never sees half a value.
            aside = path.with_name(f".{path.name}.new")
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            os.chmod(aside, mode & 0o777)
            os.replace(aside, path)
        # Readable by the workload however it runs; the directory above stays the agent's.
        os.chmod(target, 0o755)
        written[str(volume["name"])] = target
    return written


def container_mounts(
    container: Mapping[str, Any], volumes: Mapping[str, Path]
) -> tuple[tuple[str, str], ...]:
    """(source directory or file, mountPath) for each of the container's mounts of a written
    volume (``subPath`` picks one file or directory of it)."""
    mounts = []
    for mount in container.get("volumeMounts") or ():
        source = volumes.get(str(mount.get("name", "")))
        if source is None:
            continue
        sub = str(mount.get("subPath") or "")
        mounts.append((str(source / sub) if sub else str(source), str(mount["mountPath"])))
    return tuple(mounts)
