"""metrics.k8s.io/v1beta1 ``pods`` and ``nodes``: what ``kubectl top`` reads.

Why this exists: in Kubernetes ``kubectl top`` asks metrics-server (an aggregated API) for the
latest cpu and memory of pods and nodes. fleetlog's node agents publish the same samples to the
metrics stream (``streams.telemetry``, read by ``fleetlog top``); this module serves the latest
one of each live pod and node as ``PodMetrics`` and ``NodeMetrics`` (``core.kubeapi.metrics``),
get and list with label and field selectors. Like metrics-server it answers no watch (405), and
an object without a current sample is NotFound (``podmetrics.metrics.k8s.io "ns/name" not
found``) on a get and absent from a list, which ``kubectl top`` turns into "metrics not
available yet".
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.errors import FleetError
from core.kubeapi import metrics
from core.kubeapi.objects import list_object
from core.kubeapi.paths import ResourcePath
from core.kubeapi.resources import NODE_METRICS, APIResource
from core.kubeapi.selectors import parse_field_selector
from core.kubeapi.status import APIError, Target, bad_request, method_not_allowed
from core.meta.labels import parse_selector_text
from handlers.apiserver.http import flag, respond
from projections.cluster import ClusterModel, ObjectRecord
from streams.telemetry import latest_usage

if TYPE_CHECKING:
    from handlers.apiserver.resources import Resources


async def serve(resources: Resources, request: web.Request, path: ResourcePath) -> web.Response:
    if request.method != "GET" or path.legacy_watch or flag(request, "watch"):
        raise method_not_allowed(path.target)
    try:
        labels = parse_selector_text(request.query.get("labelSelector", ""))
    except FleetError as exc:
        raise bad_request(f"unable to parse requirement: {exc.message}") from None
    fields = parse_field_selector(request.query.get("fieldSelector"), path.resource.kind)
    model = await resources.read_model()
    now_ns = time.time_ns()
    if path.resource is NODE_METRICS:
        found = await _node_metrics(resources, model, now_ns)
    else:
        found = await _pod_metrics(resources, model, path.namespace, now_ns)
    if path.name is not None:
        namespace = path.namespace if path.resource.namespaced else None
        item = next(
            (
                m
                for m in found
                if m["metadata"]["name"] == path.name
                and m["metadata"].get("namespace") == namespace
            ),
            None,
        )
        if item is None:
            raise _not_found(path.resource, path.name, namespace)
        return respond(item)
    items = [
        m for m in found if labels.matches(m["metadata"].get("labels") or {}) and fields.matches(m)
    ]
    return respond(list_object(path.resource, items, resource_version=resources.position))


def _not_found(resource: APIResource, name: str, namespace: str | None) -> APIError:
    # metrics-server names the resource in the singular-less form and the pod with its
    # namespace: podmetrics.metrics.k8s.io "default/web" not found.
    target = Target(f"{resource.kind.lower()}", resource.group, name, resource.kind)
    shown = f"{namespace}/{name}" if namespace is not None else name
    return APIError(404, "NotFound", f'{target.qualified_resource} "{shown}" not found', target)


def _labels(record: ObjectRecord) -> dict[str, str]:
    return dict((record.manifest.get("metadata") or {}).get("labels") or {})


async def _pod_metrics(
    resources: Resources, model: ClusterModel, namespace: str | None, now_ns: int
) -> list[dict[str, Any]]:
    live = {(r.namespace, r.name): r for r in model.list("Pod", namespace)}
    out = []
    for sample in await latest_usage(resources.nc, "pod", namespace=namespace):
        record = live.get((sample.namespace, sample.name))
        if record is None or not metrics.fresh(
            sampled_ns=sample.at_ns, created_ns=record.created_ns, now_ns=now_ns
        ):
            continue
        spec = (record.manifest.get("spec") or {}).get("containers") or []
        containers = metrics.ordered_containers(
            [str(c.get("name")) for c in spec if isinstance(c, dict)],
            {n: (u.cpu_millicores, u.memory_bytes) for n, u in sample.containers.items()},
        )
        out.append(
            metrics.pod_metrics(
                namespace=record.namespace,
                name=record.name,
                labels=_labels(record),
                created_ns=record.created_ns,
                sampled_ns=sample.at_ns,
                window_s=sample.window_s,
                containers=containers,
            )
        )
    return out


async def _node_metrics(
    resources: Resources, model: ClusterModel, now_ns: int
) -> list[dict[str, Any]]:
    live = {r.name: r for r in model.list("Node")}
    out = []
    for sample in await latest_usage(resources.nc, "node"):
        record = live.get(sample.name)
        if record is None or not metrics.fresh(
            sampled_ns=sample.at_ns, created_ns=record.created_ns, now_ns=now_ns
        ):
            continue
        out.append(
            metrics.node_metrics(
                name=record.name,
                labels=_labels(record),
                created_ns=record.created_ns,
                sampled_ns=sample.at_ns,
                window_s=sample.window_s,
                cpu_millicores=sample.cpu_millicores,
                memory_bytes=sample.memory_bytes,
            )
        )
    return out
