"""The gateway validates a pod once: after the LimitRanger, only what it changed is validated
again (``validate_limited``). These tests hold that shortcut to the full validation it replaced
(``dump_manifest(parse_manifest(...))``): the same manifest, key order included (the stored
bytes), and the same error, path and count of further errors included. Also: event ids and
uids made without ``uuid.UUID`` are the same text."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.api.manifests import dump_manifest, parse_manifest
from core.errors import FleetError
from core.policy.admission import (
    apply_limit_ranges,
    default_toleration_seconds,
    resolve_priority,
    validate_limited,
)
from streams.repository import uuid5_text


def admitted(raw: dict[str, Any]) -> dict[str, Any]:
    """A pod as the gateway hands it to the LimitRanger: validated, then the earlier
    admission steps (default tolerations, priority)."""
    return resolve_priority(default_toleration_seconds(dump_manifest(parse_manifest(raw))), {})


def limit_range(**item: dict[str, str]) -> dict[str, Any]:
    manifest = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "limits"},
        "spec": {"limits": [{"type": "Container", **item}]},
    }
    return dump_manifest(parse_manifest(manifest))


def container(name: str = "main", **resources: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": "nginx"}
    if resources:
        out["resources"] = resources
    return out


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    metadata = spec.pop("metadata", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", **metadata},
        "spec": {"containers": list(containers), **spec},
    }


def outcome(compute: Any) -> tuple[Any, ...]:
    try:
        return ("ok", json.dumps(compute()))  # JSON text: key order counts
    except FleetError as exc:
        return ("refused", type(exc).__name__, exc.code, exc.message, exc.field)


def assert_same_as_full_validation(raw: dict[str, Any], limit_ranges: list[Any]) -> None:
    manifest = admitted(raw)
    try:
        limited = apply_limit_ranges(manifest, limit_ranges)
    except FleetError:
        return  # refused by the LimitRanger itself: nothing is validated again
    full = outcome(lambda: dump_manifest(parse_manifest(limited)))
    assert outcome(lambda: validate_limited(limited, manifest)) == full


CPU_OVER_REQUEST = limit_range(default={"cpu": "1"}, defaultRequest={"cpu": "500m"})
HUGE = {"big": "x" * (256 * 1024 - 60)}


@pytest.mark.parametrize(
    ("raw", "limit_ranges"),
    [
        (pod(container()), []),
        (pod(container(requests={"cpu": "100m"})), []),
        (pod(container(limits={"cpu": "1"})), []),
        (pod(container(), container("b", requests={"memory": "1Gi"})), []),
        (pod(container(), initContainers=[container("setup")]), []),
        (pod(container(), metadata={"labels": {"app": "web"}, "annotations": {"a": "b"}}), []),
        (
            pod(
                container(),
                priorityClassName="system-node-critical",
                os={"name": "linux"},
                overhead={"cpu": "10m"},
                topologySpreadConstraints=[
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
                ],
            ),
            [],
        ),
        (pod(container()), [limit_range(default={"cpu": "300m"}, max={"cpu": "1"})]),
        # A default limit below a stated request: invalid, as in Kubernetes.
        (pod(container(requests={"cpu": "2"})), [CPU_OVER_REQUEST]),
        (
            pod(container(requests={"cpu": "2"}), container("b", requests={"cpu": "3"})),
            [CPU_OVER_REQUEST],
        ),
        # The LimitRanger's annotation takes the annotations over their size limit.
        (pod(container(), metadata={"annotations": HUGE}), []),
        (pod(container(requests={"cpu": "2"}), metadata={"annotations": HUGE}), [CPU_OVER_REQUEST]),
        # Extended resources: a request must equal its limit.
        (
            pod(container()),
            [
                limit_range(
                    default={"example.com/gpu": "2"}, defaultRequest={"example.com/gpu": "1"}
                )
            ],
        ),
    ],
)
def test_validating_what_the_limit_ranger_changed_equals_validating_the_pod(
    raw: dict[str, Any], limit_ranges: list[Any]
) -> None:
    assert_same_as_full_validation(raw, limit_ranges)


quantities = st.sampled_from(["50m", "100m", "250m", "1", "2", "64Mi", "128Mi", "1Gi", "3Gi"])
resource_lists = st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities, max_size=2)


@st.composite
def containers(draw: st.DrawFn, name: str) -> dict[str, Any]:
    stated = {
        section: values for section in ("requests", "limits") if (values := draw(resource_lists))
    }
    return container(name, **stated)


@settings(max_examples=150, deadline=None)
@given(
    first=containers("main"),
    second=st.one_of(st.none(), containers("side")),
    init=st.one_of(st.none(), containers("setup")),
    defaults=st.one_of(
        st.none(),
        st.fixed_dictionaries({"default": resource_lists, "defaultRequest": resource_lists}),
    ),
)
def test_any_pod_and_defaults_validate_as_the_full_model_does(
    first: dict[str, Any],
    second: dict[str, Any] | None,
    init: dict[str, Any] | None,
    defaults: dict[str, dict[str, str]] | None,
) -> None:
    spec: dict[str, Any] = {"initContainers": [init]} if init else {}
    raw = pod(first, *([second] if second else []), **spec)
    try:
        parse_manifest(raw)
    except FleetError:
        return  # not a valid pod to begin with (a request above its limit)
    limit_ranges: list[Any] = []
    if defaults is not None:
        try:
            limit_ranges = [limit_range(**defaults)]
        except FleetError:
            return
    assert_same_as_full_validation(raw, limit_ranges)


@given(namespace=st.uuids(), name=st.text(max_size=80))
def test_uuid5_text_is_uuid5(namespace: uuid.UUID, name: str) -> None:
    assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))
