"""Server-side apply's field sets, managers and conflicts (core.kubeapi.fieldsets).

The cases follow the situations structured-merge-diff's and the apiserver fieldmanager's own
tests pin (apply twice, apply/update/apply with and without a conflict, an applier that stops
applying a field it shares, keyed list elements), written here against fleetlog's objects.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.kubeapi.fieldsets import (
    APPLY,
    BEFORE_FIRST_APPLY,
    UNMANAGED,
    UPDATE,
    Manager,
    apply,
    decode,
    fields_of,
    fields_v1,
    from_fields_v1,
    path_text,
    update,
)
from core.kubeapi.fieldsets import _walk as _walk
from core.kubeapi.status import APIError, Target

TARGET = Target("deployments", "apps", "web", "Deployment")
T1, T2, T3 = "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z"


def deployment(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", **metadata},
        "spec": spec,
    }


def owners(obj: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    return {
        (m.manager, m.operation): {path_text(p) for p in m.fields}
        for m in decode(obj["metadata"].get("managedFields"))
    }


def do_apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str, *,
             force: bool = False, now: str = T1) -> dict[str, Any]:  # fmt: skip
    return apply(
        live, config, manager=manager, api_version="apps/v1", force=force, now=now, target=TARGET
    ).object


def do_update(live: dict[str, Any], new: dict[str, Any], manager: str, now: str = T2) -> dict:
    return update(live, new, manager=manager, api_version="apps/v1", now=now, target=TARGET).object


def test_fields_of_a_pod_template_uses_keys_for_containers_ports_and_env():
    obj = deployment(
        {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx",
                            "args": ["a", "b"],
                            "ports": [{"containerPort": 80}],
                            "env": [{"name": "A", "value": "1"}],
                        }
                    ]
                }
            },
        },
        finalizers=["x/y"],
        labels={"app": "web"},
    )
    obj["status"] = {"replicas": 1}
    paths = {path_text(p) for p in fields_of(obj)}
    c = '.spec.template.spec.containers[name="web"]'
    assert paths == {
        ".spec.replicas",
        '.metadata.finalizers[="x/y"]',
        ".metadata.labels.app",
        c,
        f"{c}.name",
        f"{c}.image",
        f"{c}.args",
        f'{c}.ports[containerPort=80,protocol="TCP"]',
        f'{c}.ports[containerPort=80,protocol="TCP"].containerPort',
        f'{c}.env[name="A"]',
        f'{c}.env[name="A"].name',
        f'{c}.env[name="A"].value',
    }


def test_fields_v1_round_trip_marks_members_with_children():
    obj = deployment({"template": {"spec": {"containers": [{"name": "web", "image": "x"}]}}})
    tree = fields_v1(fields_of(obj))
    element = tree["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert element == {".": {}, "f:image": {}, "f:name": {}}
    assert from_fields_v1(tree) == fields_of(obj)


def test_apply_creates_and_apply_twice_changes_nothing():
    config = deployment({"replicas": 1})
    first = do_apply(None, config, "kubectl")
    assert first["spec"] == {"replicas": 1}
    assert owners(first) == {("kubectl", APPLY): {".spec.replicas"}}
    again = do_apply(first, config, "kubectl", now=T2)
    assert again == first  # same time: an apply that changes nothing writes nothing new


def test_apply_update_apply_with_conflict_then_force():
    live = do_apply(None, deployment({"replicas": 1, "paused": False}), "default")
    live = do_update(live, deployment({"replicas": 1, "paused": True, "minReadySeconds": 5}),
                     "controller")  # fmt: skip
    assert owners(live)[("controller", UPDATE)] == {".spec.paused", ".spec.minReadySeconds"}
    wanted = deployment({"replicas": 2, "paused": False})
    with pytest.raises(APIError) as refused:
        do_apply(live, wanted, "default", now=T3)
    error = refused.value
    assert (error.code, error.reason) == (409, "Conflict")
    assert error.message == (
        'Apply failed with 1 conflict: conflict with "controller" using apps/v1: .spec.paused'
    )
    assert error.causes == (
        {"reason": "FieldManagerConflict", "message": 'conflict with "controller" using apps/v1',
         "field": ".spec.paused"},
    )  # fmt: skip
    forced = do_apply(live, wanted, "default", force=True, now=T3)
    assert forced["spec"] == {"replicas": 2, "paused": False, "minReadySeconds": 5}
    assert owners(forced) == {
        ("default", APPLY): {".spec.replicas", ".spec.paused"},
        ("controller", UPDATE): {".spec.minReadySeconds"},
    }


def test_apply_with_the_same_value_shares_the_field():
    live = do_apply(None, deployment({"replicas": 3}), "one")
    shared = do_apply(live, deployment({"replicas": 3}), "two")
    assert owners(shared) == {("one", APPLY): {".spec.replicas"},
                              ("two", APPLY): {".spec.replicas"}}  # fmt: skip


def test_conflicts_with_several_fields_are_listed_by_manager():
    live = do_apply(None, deployment({"replicas": 1, "paused": False}), "kubectl-client-side-apply")
    with pytest.raises(APIError) as refused:
        do_apply(live, deployment({"replicas": 2, "paused": True}), "other")
    assert refused.value.message == (
        'Apply failed with 2 conflicts: conflicts with "kubectl-client-side-apply":\n'
        "- .spec.paused\n- .spec.replicas"
    )


def test_a_field_no_longer_applied_is_removed_when_only_its_applier_owned_it():
    live = do_apply(None, deployment({"replicas": 1, "paused": True}), "default")
    after = do_apply(live, deployment({"replicas": 1}), "default", now=T2)
    assert after["spec"] == {"replicas": 1}
    assert owners(after) == {("default", APPLY): {".spec.replicas"}}


def test_a_field_no_longer_applied_stays_when_another_manager_shares_it():
    live = do_apply(None, deployment({"replicas": 1, "paused": True}), "one")
    live = do_apply(live, deployment({"paused": True}), "two")
    after = do_apply(live, deployment({"replicas": 1}), "one", now=T2)
    assert after["spec"] == {"replicas": 1, "paused": True}
    assert owners(after) == {("one", APPLY): {".spec.replicas"}, ("two", APPLY): {".spec.paused"}}


def test_update_takes_fields_from_appliers_and_an_empty_apply_leaves_them():
    live = do_apply(None, deployment({"replicas": 2}), "default")
    live = do_update(live, deployment({"replicas": 1}), "controller")
    assert owners(live) == {("controller", UPDATE): {".spec.replicas"}}
    after = do_apply(live, deployment({}), "default", now=T3)
    assert after["spec"] == {"replicas": 1}


def test_keyed_list_elements_merge_by_key_and_a_dropped_element_goes():
    two = [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
    live = do_apply(None, deployment({"template": {"spec": {"containers": two}}}), "default")
    live = do_update(
        live,
        deployment({"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1", "args": ["x"]}]}}}),
        "editor",
    )  # fmt: skip
    after = do_apply(
        live,
        deployment({"template": {"spec": {"containers": [{"name": "a", "image": "a:2"}]}}}),
        "default",
        now=T3,
    )
    containers = after["spec"]["template"]["spec"]["containers"]
    # b stays with its key and the part the editor owns (its args); its image goes.
    assert containers == [{"name": "a", "image": "a:2"}, {"name": "b", "args": ["x"]}]
    solo = do_apply(None, deployment({"template": {"spec": {"containers": two}}}), "default")
    dropped = do_apply(
        solo,
        deployment({"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}}),
        "default",
        now=T3,
    )
    assert dropped["spec"]["template"]["spec"]["containers"] == [{"name": "a", "image": "a:1"}]


def test_ports_are_keyed_by_port_and_protocol_with_the_default_protocol():
    live = deployment(
        {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "ports": [
                                {"containerPort": 80, "protocol": "TCP"},
                                {"containerPort": 53, "protocol": "UDP"},
                            ],
                        }
                    ]
                }
            }
        }
    )
    config = deployment({"template": {"spec": {"containers": [{"name": "a", "ports": [
        {"containerPort": 80, "name": "http"}]}]}}})  # fmt: skip
    created = do_apply(None, live, "one")
    merged = do_apply(created, config, "two")
    ports = merged["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert ports == [{"containerPort": 80, "protocol": "TCP", "name": "http"},
                     {"containerPort": 53, "protocol": "UDP"}]  # fmt: skip


def test_first_apply_to_an_object_without_managers_conflicts_with_before_first_apply():
    live = deployment({"replicas": 1})
    with pytest.raises(APIError) as refused:
        do_apply(live, deployment({"replicas": 2}), "kubectl")
    assert f'conflict with "{BEFORE_FIRST_APPLY}" using apps/v1: .spec.replicas' in (
        refused.value.message
    )
    same = do_apply(live, deployment({"replicas": 1}), "kubectl")
    assert ("kubectl", APPLY) in owners(same)


def test_server_fields_and_status_are_never_managed():
    obj = deployment({"replicas": 1}, uid="u", resourceVersion="5")
    obj["status"] = {"replicas": 1}
    assert {path_text(p) for p in fields_of(obj)} == {".spec.replicas"}


def test_unmanaged_subtrees_are_left_out_exactly_as_filtering_every_path_would() -> None:
    """``fields_of`` does not walk status and the server's metadata at all; what it finds is
    every path of the object but those under an unmanaged one, nested names included."""
    template = {
        "metadata": {"name": "t", "labels": {"a": "b"}},
        "spec": {
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}], "env": []}]
        },
    }
    obj = deployment({"replicas": 2, "template": template}, uid="u", resourceVersion="5",
                     labels={"app": "web"}, managedFields=[{"manager": "m"}], finalizers=["x"],
                     creationTimestamp=T1, generation=3)  # fmt: skip
    obj["status"] = {"replicas": 1, "conditions": [{"type": "Available"}]}
    obj["spec"]["status"] = "kept: a member named status below the top"
    walked: list[tuple[str, ...]] = []
    _walk(obj, (), "", None, walked)
    every = set(walked)
    expected = {p for p in every if not any(p[: len(u)] == u for u in UNMANAGED)}
    assert fields_of(obj) == expected
    assert ("f:spec", "f:template", "f:metadata", "f:name") in expected
    assert ("f:metadata", "f:labels", "f:app") in expected
    assert not {p for p in expected if p[0] == "f:status" or p[:2] == ("f:metadata", "f:uid")}
    assert fields_of({"status": {}, "metadata": {}}) == {("f:metadata",)}


def test_managers_are_ordered_appliers_first():
    live = do_update(deployment({}), deployment({"paused": True}), "zed", now=T1)
    live = do_apply(live, deployment({"replicas": 1}), "alpha", now=T2)
    entries = live["metadata"]["managedFields"]
    assert [(e["manager"], e["operation"]) for e in entries] == [("alpha", APPLY), ("zed", UPDATE)]
    assert entries[1] == {
        "manager": "zed", "operation": "Update", "apiVersion": "apps/v1", "time": T1,
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:paused": {}}},
    }  # fmt: skip
    assert isinstance(decode(entries)[0], Manager)


def test_managers_a_write_states_replace_the_live_ones_and_a_single_empty_entry_clears():
    live = do_apply(None, deployment({"replicas": 1}), "kubectl-client-side-apply")
    moved = [{**live["metadata"]["managedFields"][0], "manager": "kubectl"}]
    edited = do_update(live, deployment({"replicas": 1}, managedFields=moved), "kubectl-patch")
    assert owners(edited) == {("kubectl", APPLY): {".spec.replicas"}}
    cleared = do_update(live, deployment({"replicas": 1}, managedFields=[{}]), "kubectl-patch")
    assert "managedFields" not in cleared["metadata"]
    kept = do_update(live, deployment({"replicas": 1}, managedFields=[]), "kubectl-patch")
    assert owners(kept) == owners(live)
