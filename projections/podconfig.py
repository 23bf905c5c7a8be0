"""The values of a pod's ConfigMaps and Secrets, served to the node agent that runs the pod.

Why this exists: a Secret's values are sealed in the log, so an agent cannot read them there;
it asks the control plane on ``fleet.qry.podconfig`` for one pod, and is answered the values of
exactly the ConfigMaps and Secrets that pod references, opened, and only if the pod is bound to
the node that asks (the kubelet's node authorizer in spirit: a node reads the secrets of its
own pods, no others). The NATS wall keeps the subject to control-plane identities (users and
admins may not send it); agents share one such identity, so the asking node is the one the
request names. The values travel on the request's reply inbox, never into a stream. The read
model is caught up to the log's end first, so a ConfigMap created just before the pod is found.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from nats.aio.client import Client

from core.config.consume import referenced
from core.errors import FleetError, NotFound
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.secretkeys import SecretKeys
from streams.serving import msgpack_answers, serve
from streams.subjects import POD_CONFIG_SUBJECT

POD_CONFIG_QUEUE = "fleet-podconfig"


class PodConfigService:
    """Answers ``{node, namespace, pod}`` with ``{configMaps, secrets}``: name -> key -> the
    value's bytes (a ConfigMap also lists its text keys, the only ones variables take)."""

    def __init__(
        self, nc: Client, projection: Projection[ClusterModel], secret_keys: SecretKeys | None
    ) -> None:
        self._nc = nc
        self._projection = projection
        self._secret_keys = secret_keys

    async def run(self, ready: asyncio.Event | None = None) -> None:
        await serve(
            self._nc,
            POD_CONFIG_SUBJECT,
            queue=POD_CONFIG_QUEUE,
            handler=msgpack_answers(self._nc, self.answer, failure_event="podconfig.failed"),
            ready=ready,
        )

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        node, namespace, name = request["node"], request["namespace"], request["pod"]
        await self._projection.wait_for_log_end(timeout=3.0)
        model = self._projection.model
        pod = model.get("Pod", namespace, name)
        if pod is None:
            raise NotFound(f'pod "{name}" not found in namespace "{namespace}"')
        if (pod.manifest.get("spec") or {}).get("nodeName") != node:
            raise FleetError(
                f'node "{node}" cannot read the configuration of pod "{name}": the pod is '
                "not bound to it",
                code="forbidden",
            )
        config_map_names, secret_names = referenced(pod.manifest)
        config_maps: dict[str, dict[str, bytes]] = {}
        text_keys: dict[str, list[str]] = {}
        for cm_name in sorted(config_map_names):
            record = model.get("ConfigMap", namespace, cm_name)
            if record is None:
                continue
            data = record.manifest.get("data") or {}
            binary = record.manifest.get("binaryData") or {}
            config_maps[cm_name] = {
                **{k: v.encode() for k, v in data.items()},
                **{k: base64.b64decode(v) for k, v in binary.items()},
            }
            text_keys[cm_name] = sorted(data)
        secrets: dict[str, dict[str, bytes]] = {}
        for secret_name in sorted(secret_names):
            record = model.get("Secret", namespace, secret_name)
            if record is None or self._secret_keys is None:
                continue
            values = await self._secret_keys.values(
                record.manifest, namespace=namespace, name=secret_name, uid=record.uid
            )
            if values is None:
                continue  # its key is gone: its values open for nobody, as if deleted
            secrets[secret_name] = values
        return {"ok": True, "configMaps": config_maps, "textKeys": text_keys, "secrets": secrets}
