"""LimitRanger admission: Kubernetes' defaults and bounds per container, the cluster default
where a namespace has no LimitRange, and the annotation that records what was added."""

from __future__ import annotations

from typing import Any

import pytest

from core.api.manifests import dump_manifest, parse_manifest
from core.errors import ValidationFailed
from core.policy.admission import (
    LIMIT_RANGER_ANNOTATION,
    apply_limit_ranges,
    check_limit_ranges,
    default_limit_ranges,
)


def pod(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = init
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": spec}
    return dump_manifest(parse_manifest(manifest))  # as the gateway hands it to admission


def container(name: str = "main", **resources: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": "nginx"}
    if resources:
        out["resources"] = resources
    return out


def limit_range(*items: dict[str, Any]) -> dict[str, Any]:
    manifest = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "limits"},
        "spec": {"limits": [{"type": "Container", **item} for item in items]},
    }
    return dump_manifest(parse_manifest(manifest))


def resources(manifest: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return manifest["spec"]["containers"][index].get("resources", {})


def note(manifest: dict[str, Any]) -> str | None:
    return (manifest["metadata"].get("annotations") or {}).get(LIMIT_RANGER_ANNOTATION)


# -- the cluster default (no LimitRange in the namespace) -------------------------------------


def test_a_container_stating_nothing_gets_the_cluster_default() -> None:
    admitted = apply_limit_ranges(pod(container()), [])
    assert resources(admitted) == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    }
    assert note(admitted) == (
        "LimitRanger plugin set: cpu, memory request for container main; "
        "cpu, memory limit for container main"
    )


def test_the_cluster_default_applies_per_resource() -> None:
    stated = container(requests={"cpu": "2"})
    admitted = apply_limit_ranges(pod(stated), [])
    # cpu is the container's own (no cluster cap is put on a stated request); memory defaults.
    assert resources(admitted) == {
        "requests": {"cpu": "2", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert note(admitted) == (
        "LimitRanger plugin set: memory request for container main; memory limit for container main"
    )


def test_a_container_stating_everything_is_left_alone_and_not_annotated() -> None:
    full = container(
        requests={"cpu": "250m", "memory": "64Mi"}, limits={"cpu": "1", "memory": "256Mi"}
    )
    manifest = pod(full)
    assert apply_limit_ranges(manifest, []) is manifest


def test_a_limit_without_a_request_sets_the_request_to_the_limit() -> None:
    admitted = apply_limit_ranges(pod(container(limits={"cpu": "300m", "memory": "1Gi"})), [])
    assert resources(admitted)["requests"] == {"cpu": "300m", "memory": "1Gi"}
    assert note(admitted) is None


def test_the_cluster_default_does_not_apply_where_a_limit_range_exists() -> None:
    only_memory = limit_range({"default": {"memory": "256Mi"}})
    admitted = apply_limit_ranges(pod(container()), [only_memory])
    assert resources(admitted) == {
        "requests": {"memory": "256Mi"},  # defaultRequest defaults to default
        "limits": {"memory": "256Mi"},
    }


def test_other_kinds_pass_unchanged() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    assert apply_limit_ranges(service, []) is service


# -- a namespace's LimitRange -------------------------------------------------------------------


def test_default_request_and_default_fill_what_each_container_does_not_state() -> None:
    lr = limit_range(
        {"default": {"cpu": "800m", "memory": "1Gi"}, "defaultRequest": {"cpu": "200m"}}
    )
    admitted = apply_limit_ranges(
        pod(container(), container("side", requests={"cpu": "50m"})), [lr]
    )
    assert resources(admitted, 0) == {
        "requests": {"cpu": "200m", "memory": "1Gi"},
        "limits": {"cpu": "800m", "memory": "1Gi"},
    }
    assert resources(admitted, 1) == {
        "requests": {"cpu": "50m", "memory": "1Gi"},
        "limits": {"cpu": "800m", "memory": "1Gi"},
    }
    assert note(admitted) == (
        "LimitRanger plugin set: cpu, memory request for container main; "
        "cpu, memory limit for container main; memory request for container side; "
        "cpu, memory limit for container side"
    )


def test_a_limit_without_a_request_keeps_request_equal_to_limit_not_the_default_request() -> None:
    lr = limit_range({"default": {"cpu": "1"}, "defaultRequest": {"cpu": "100m"}})
    admitted = apply_limit_ranges(pod(container(limits={"cpu": "400m"})), [lr])
    assert resources(admitted) == {"requests": {"cpu": "400m"}, "limits": {"cpu": "400m"}}
    assert note(admitted) is None


def test_limit_range_defaults_follow_kubernetes_item_defaulting() -> None:
    # default <- max; defaultRequest <- default, then min.
    lr = limit_range({"max": {"cpu": "2"}, "min": {"memory": "64Mi"}})
    item = lr["spec"]["limits"][0]
    assert item["default"] == {"cpu": "2"}
    assert item["defaultRequest"] == {"cpu": "2", "memory": "64Mi"}


def test_init_containers_are_defaulted_and_named_as_such() -> None:
    admitted = apply_limit_ranges(pod(container(), init=[container("setup")]), [])
    init = admitted["spec"]["initContainers"][0]["resources"]
    assert init["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert "cpu, memory request for init container setup" in str(note(admitted))


def test_the_annotation_keeps_the_pods_own_annotations() -> None:
    manifest = pod(container())
    manifest["metadata"]["annotations"] = {"team": "web"}
    admitted = apply_limit_ranges(manifest, [])
    assert admitted["metadata"]["annotations"]["team"] == "web"
    assert manifest["metadata"]["annotations"] == {"team": "web"}  # the input is not changed


# -- bounds ----------------------------------------------------------------------------------


def test_a_container_above_max_is_refused_with_kubernetes_words() -> None:
    lr = limit_range({"max": {"cpu": "1"}})
    with pytest.raises(ValidationFailed) as refused:
        apply_limit_ranges(pod(container(limits={"cpu": "2"})), [lr])
    assert refused.value.code == "forbidden"
    assert refused.value.message == (
        'pods "web" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
    )


def test_a_container_below_min_is_refused() -> None:
    lr = limit_range({"min": {"memory": "64Mi"}, "default": {"memory": "128Mi"}})
    with pytest.raises(ValidationFailed, match="minimum memory usage per Container is 64Mi, "
                       "but request is 32Mi"):  # fmt: skip
        apply_limit_ranges(pod(container(requests={"memory": "32Mi"})), [lr])


def test_every_problem_is_named() -> None:
    lr = limit_range({"max": {"cpu": "1", "memory": "1Gi"}})
    with pytest.raises(ValidationFailed) as refused:
        apply_limit_ranges(pod(container(limits={"cpu": "2", "memory": "2Gi"})), [lr])
    assert "maximum cpu usage" in refused.value.message
    assert "maximum memory usage" in refused.value.message


def test_a_defaulted_container_within_bounds_is_admitted() -> None:
    lr = limit_range({"max": {"cpu": "1"}, "min": {"cpu": "100m"}})
    admitted = apply_limit_ranges(pod(container()), [lr])
    assert resources(admitted) == {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}


def test_max_limit_request_ratio() -> None:
    lr = limit_range({"maxLimitRequestRatio": {"cpu": "2"}})
    ok = container(requests={"cpu": "500m"}, limits={"cpu": "1"})
    apply_limit_ranges(pod(ok), [lr])
    too_bursty = container(requests={"cpu": "100m"}, limits={"cpu": "1"})
    with pytest.raises(ValidationFailed, match=r"provided ratio is 10\.000000"):
        apply_limit_ranges(pod(too_bursty), [lr])


def test_an_inconsistent_limit_range_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="greater than max"):
        limit_range({"max": {"cpu": "1"}, "default": {"cpu": "2"}})
    with pytest.raises(ValidationFailed, match="default request value"):
        limit_range({"default": {"cpu": "1"}, "defaultRequest": {"cpu": "2"}})


def test_the_mutating_half_says_what_it_defaulted_and_the_validating_half_refuses() -> None:
    lr = limit_range({"max": {"cpu": "1"}, "default": {"cpu": "500m"}})
    defaulted, notes = default_limit_ranges(pod(container(requests={"cpu": "100m"})), [lr])
    assert notes == ["cpu limit for container main"]
    assert defaulted["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "500m"}
    check_limit_ranges(defaulted, [lr])
    with pytest.raises(ValidationFailed, match="maximum cpu usage per Container is 1"):
        check_limit_ranges(pod(container(limits={"cpu": "2"})), [lr])
