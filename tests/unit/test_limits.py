"""What a user may ask for is bounded with Kubernetes' numbers: replica counts within int32,
quantities within int64 (cpu within int64 millicores), each refused with the field and the
bound."""

from __future__ import annotations

from typing import Any

import pytest

from core.api.commands import parse_command
from core.api.manifests import parse_manifest
from core.errors import InvalidQuantity, ValidationFailed

INT32_MAX = 2**31 - 1


def workload(kind: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "nginx"}]},
            },
        },
    }


def pod(resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "nginx", "resources": resources}]},
    }


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet"])
def test_replicas_beyond_int32_are_refused_as_kubernetes_refuses_them(kind: str) -> None:
    parsed = parse_manifest(workload(kind, INT32_MAX))
    assert parsed.spec.replicas == INT32_MAX  # type: ignore[attr-defined]
    with pytest.raises(ValidationFailed) as caught:
        parse_manifest(workload(kind, INT32_MAX + 1))
    assert caught.value.field == "spec.replicas"
    assert (
        caught.value.message == "Invalid value 2147483648: must be less than or equal to 2147483647"
    )


def test_scale_accepts_every_int32_replica_count_and_nothing_beyond() -> None:
    def scale(replicas: int) -> object:
        raw = {
            "v": 1,
            "id": "k-00000001",
            "actor": "alice",
            "body": {"name": "web", "replicas": replicas},
        }
        return parse_command("Deployment", "scale", raw)

    assert scale(INT32_MAX).body.replicas == INT32_MAX  # type: ignore[attr-defined]
    with pytest.raises(ValidationFailed) as caught:
        scale(INT32_MAX + 1)
    assert caught.value.field == "body.replicas"
    assert "2147483647" in caught.value.message


@pytest.mark.parametrize(
    ("section", "name", "value", "path"),
    [
        ("limits", "cpu", "1e308", "limits.cpu"),
        ("requests", "memory", "99999999999999999999999Ei", "requests.memory"),
        ("limits", "example.com/gpu", "1e308", "limits[example.com/gpu]"),
    ],
)
def test_a_container_asking_for_more_than_int64_is_refused(
    section: str, name: str, value: str, path: str
) -> None:
    with pytest.raises(InvalidQuantity) as caught:
        parse_manifest(pod({section: {name: value}}))
    assert caught.value.field == f"spec.containers[0].resources.{path}"
    assert caught.value.message == (
        f'Invalid value "{value}": must be less than or equal to 9223372036854775807 '
        "(quantities are counted in int64, as Kubernetes counts them)"
    )


def test_cpu_beyond_int64_millicores_is_refused_but_the_same_memory_is_not() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_manifest(pod({"requests": {"cpu": "10P"}}))
    assert caught.value.field == "spec.containers[0].resources.requests.cpu"
    assert "must be less than or equal to 9223372036854775807m" in caught.value.message
    parse_manifest(pod({"requests": {"memory": "10P"}}))


def test_a_quota_and_a_node_are_bounded_the_same_way() -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q", "namespace": "default"},
        "spec": {"hard": {"requests.cpu": "10P"}},
    }
    with pytest.raises(ValidationFailed, match="9223372036854775807m"):
        parse_manifest(quota)
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n"},
        "status": {"capacity": {"cpu": "1e308"}},
    }
    with pytest.raises(InvalidQuantity, match="9223372036854775807"):
        parse_manifest(node)
