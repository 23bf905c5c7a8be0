"""The faster field-set walk and FieldsV1 encoding give exactly what the earlier ones gave.

Why this exists: ``fields_of`` and ``fields_v1`` run for every object a command writes (a
pod's managed fields were the largest single cost of its create), so they were rewritten
for speed (one list instead of nested generators; one pass to build the FieldsV1 tree, a
plain sort per level). The earlier implementations are kept here, verbatim in behaviour, as
the reference: on varied manifests (nested maps, keyed lists of every kind, set lists,
atomic lists, unmanaged subtrees, empty values) both must give the same paths, the same
FieldsV1 tree with the same key order, and the same managers for a create and an update.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.kubeapi import fieldsets
from core.kubeapi.fieldsets import (
    _UNMANAGED_DEPTH,
    _UNMANAGED_SET,
    KEY_DEFAULTS,
    SET_LISTS,
    Path,
    _keys,
    _value_element,
    fields_of,
    fields_v1,
    update,
)
from core.kubeapi.status import Target

# -- the reference: the implementations before the rewrite ----------------------------------


def _old_key_element(keys: tuple[str, ...], item: dict[str, Any]) -> str:
    values = {k: item.get(k, KEY_DEFAULTS.get(k)) for k in keys}
    return "k:" + json.dumps(
        {k: v for k, v in values.items() if v is not None}, sort_keys=True, separators=(",", ":")
    )


def _old_walk(value: Any, prefix: Path, field: str, skip: frozenset[Path] | None = None
              ) -> Iterator[Path]:  # fmt: skip
    if isinstance(value, dict) and value:
        deeper = skip if skip and len(prefix) + 1 < _UNMANAGED_DEPTH else None
        for key, child in value.items():
            path = (*prefix, f"f:{key}")
            if skip and path in skip:
                continue
            yield from _old_walk(child, path, str(key), deeper)
        return
    if isinstance(value, list) and value:
        if field in SET_LISTS and not any(isinstance(i, (dict, list)) for i in value):
            for item in value:
                yield (*prefix, _value_element(item))
            return
        keys = _keys(field, value)
        if keys is not None and all(isinstance(i, dict) for i in value):
            for item in value:
                element = (*prefix, _old_key_element(keys, item))
                yield element
                for key, child in item.items():
                    yield from _old_walk(child, (*element, f"f:{key}"), str(key))
            return
    if prefix:
        yield prefix


def old_fields_of(obj: dict[str, Any]) -> frozenset[Path]:
    return frozenset(_old_walk(dict(obj), (), "", _UNMANAGED_SET))


def old_fields_v1(fields: frozenset[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(fields):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    for path in fields:
        node = tree
        for element in path:
            node = node[element]
        if node and "." not in node:
            node["."] = {}
    return _old_sorted_tree(tree)


def _old_sorted_tree(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _old_sorted_tree(tree[k]) for k in sorted(tree, key=lambda k: (k != ".", k))}


# -- varied manifests -----------------------------------------------------------------------

NAMES = st.sampled_from(
    ["name", "image", "a", "b", "status", "metadata", "spec", "labels", "uid", "protocol",
     "containerPort", "port", "value", "x.y/z", "", "."]
)  # fmt: skip
FIELDS = st.sampled_from(
    ["containers", "ports", "env", "finalizers", "conditions", "args", "volumes", "items",
     "topologySpreadConstraints", "ownerReferences", "other"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "a", "TCP", "UDP", "web"])
)


def _values() -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        element = st.fixed_dictionaries(
            {},
            optional={
                "name": st.one_of(
                    st.sampled_from(["a", "b", "1"]), st.integers(0, 1), st.booleans()
                ),
                "containerPort": st.integers(1, 3),
                "protocol": st.sampled_from(["TCP", "UDP"]),
                "port": st.integers(1, 3),
                "type": st.sampled_from(["Ready", "Available"]),
                "uid": st.sampled_from(["u1", "u2"]),
                "topologyKey": st.sampled_from(["zone", "host"]),
                "whenUnsatisfiable": st.sampled_from(["DoNotSchedule"]),
                "value": children,
            },
        )
        return st.one_of(
            st.dictionaries(st.one_of(NAMES, FIELDS), children, max_size=4),
            st.lists(children, max_size=3),
            st.lists(element, max_size=3),
            st.lists(SCALARS, max_size=3),
        )

    return st.recursive(SCALARS, extend, max_leaves=20)


MANIFESTS = st.fixed_dictionaries(
    {"apiVersion": st.just("v1"), "kind": st.just("Pod")},
    optional={
        "metadata": st.fixed_dictionaries(
            {"name": st.just("p")},
            optional={
                "labels": st.dictionaries(NAMES, SCALARS, max_size=3),
                "finalizers": st.lists(SCALARS, max_size=3),
                "uid": st.just("u"),
                "annotations": _values(),
                "ownerReferences": _values(),
            },
        ),
        "spec": st.dictionaries(st.one_of(NAMES, FIELDS), _values(), max_size=5),
        "status": _values(),
        "data": _values(),
    },
)


@settings(max_examples=400, deadline=None)
@given(MANIFESTS)
def test_the_walk_finds_the_same_paths(manifest: dict[str, Any]) -> None:
    assert fields_of(manifest) == old_fields_of(manifest)


@settings(max_examples=400, deadline=None)
@given(MANIFESTS)
def test_fields_v1_is_the_same_tree_in_the_same_order(manifest: dict[str, Any]) -> None:
    fields = old_fields_of(manifest)
    new, old = fields_v1(fields), old_fields_v1(fields)
    # json.dumps keeps each level's key order: equal text is equal trees in equal order.
    assert json.dumps(new) == json.dumps(old)


@settings(max_examples=200, deadline=None)
@given(MANIFESTS, MANIFESTS)
def test_a_create_and_an_update_record_the_same_managers(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    target = Target(kind="Pod", name="p")
    for live, new in ((None, first), (first, second)):
        options: dict[str, Any] = {"manager": "fleetlog", "api_version": "v1",
                                   "now": "2026-12-06T00:00:00Z", "target": target}  # fmt: skip
        ours = update(live, new, **options).object
        with _reference():
            theirs = update(live, new, **options).object
        assert json.dumps(ours, sort_keys=False) == json.dumps(theirs, sort_keys=False)


class _reference:
    """The module's ``fields_of`` and ``fields_v1`` swapped for the reference ones while in
    the block (``update`` looks them up in the module on each call)."""

    def __enter__(self) -> None:
        self._saved = fieldsets.fields_of, fieldsets.fields_v1
        fieldsets.fields_of, fieldsets.fields_v1 = old_fields_of, old_fields_v1

    def __exit__(self, *exc: object) -> None:
        fieldsets.fields_of, fieldsets.fields_v1 = self._saved
