"""Builders for the plain camelCase manifests the scheduling core reads."""

from __future__ import annotations

from typing import Any

from core.scheduling import NodeInfo, PodInfo


def pod_manifest(
    name: str = "p",
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    cpu: str | None = None,
    memory: str | None = None,
    extra: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    requests: dict[str, str] = {}
    if cpu is not None:
        requests["cpu"] = cpu
    if memory is not None:
        requests["memory"] = memory
    requests.update(extra or {})
    container: dict[str, Any] = {"name": "c", "image": "nginx:1.27"}
    if requests:
        container["resources"] = {"requests": requests, "limits": dict(extra or {})}
    body: dict[str, Any] = {"containers": [container]}
    body.update(spec)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def pod(name: str = "p", **kwargs: Any) -> PodInfo:
    return PodInfo.from_manifest(pod_manifest(name, **kwargs))


def node_manifest(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "32Gi",
    max_pods: str = "110",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "pods": max_pods, **(extra or {})}
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
        },
        "spec": spec,
        "status": {"capacity": allocatable, "allocatable": allocatable},
    }


def node(name: str, pods: list[PodInfo] | None = None, **kwargs: Any) -> NodeInfo:
    return NodeInfo.from_manifest(node_manifest(name, **kwargs), pods or [])
