"""The garbage collector's decision (``core.meta.ownership``) and the core rules it relies
on: Kubernetes' owner semantics, protected namespaces, mutable pod ownership."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from core.api.commands import parse_command
from core.errors import FleetError
from core.meta.ownership import OwnerStatus, assess, without_references
from core.namespaces.aggregate import Namespace
from core.pods.aggregate import Pod

AT = datetime(2025, 1, 1, tzinfo=UTC)


def owned_by(*uids: str) -> dict[str, Any]:
    refs = [{"apiVersion": "v1", "kind": "Deployment", "name": f"o{u}", "uid": u} for u in uids]
    return {"metadata": {"name": "p", "ownerReferences": refs}}


def statuses(**by_uid: OwnerStatus) -> Callable[[Mapping[str, Any]], OwnerStatus]:
    return lambda ref: by_uid[ref["uid"]]


def test_no_owner_alive_and_one_deleted_means_delete_with_its_policy() -> None:
    verdict = assess(owned_by("a", "b"), statuses(a="Foreground", b="absent"))
    assert verdict.action == "delete" and verdict.propagation_policy == "Foreground"
    assert verdict.removed_uids == ("a", "b")
    assert assess(owned_by("a"), statuses(a="absent")).reason.endswith("does not exist")


def test_a_live_owner_keeps_the_object_but_dangling_references_are_removed() -> None:
    assert assess(owned_by("a"), statuses(a="alive")).action == "keep"
    verdict = assess(owned_by("a", "b"), statuses(a="alive", b="Background"))
    assert verdict.action == "unown" and [r["uid"] for r in verdict.keep_references] == ["a"]
    assert assess(owned_by("a", "b"), statuses(a="unknown", b="absent")).action == "unown"


def test_orphan_removes_only_that_reference() -> None:
    verdict = assess(owned_by("a", "b"), statuses(a="Orphan", b="alive"))
    assert verdict.action == "unown" and verdict.removed_uids == ("a",)
    only = assess(owned_by("a"), statuses(a="Orphan"))
    assert only.action == "unown" and only.keep_references == ()
    assert "ownerReferences" not in without_references(owned_by("a"), ())["metadata"]


def test_a_deleted_namespace_deletes_whatever_the_owners() -> None:
    verdict = assess(owned_by("a"), statuses(a="alive"), deleted_namespace="team")
    assert verdict.action == "delete" and verdict.reason == 'namespace "team" was deleted'
    assert assess({"metadata": {"name": "p"}}, statuses()).action == "keep"


def test_default_and_kube_system_may_not_be_deleted() -> None:
    for name in ("default", "kube-system"):
        namespace = Namespace.create(
            None, agg_id=f"Namespace//{name}", manifest={"metadata": {"name": name}}, uid="u",
            at=AT,
        )  # fmt: skip
        with pytest.raises(FleetError) as refused:
            namespace.delete(reason="", at=AT)
        assert refused.value.code == "forbidden"
    team = Namespace.create(None, agg_id="Namespace//team", manifest={}, uid="u", at=AT)
    team.delete(reason="", at=AT, propagation_policy="Orphan")
    assert team.deleted


def test_a_pods_owner_references_may_change() -> None:
    manifest = {"metadata": {"name": "p", "ownerReferences": [{"uid": "a"}]}, "spec": {}}
    pod = Pod.create(None, agg_id="Pod/default/p", manifest=manifest, uid="u", at=AT)
    Pod.apply_manifest(
        pod, agg_id="Pod/default/p", manifest={"metadata": {"name": "p"}, "spec": {}}, uid="u",
        at=AT,
    )  # fmt: skip
    assert "ownerReferences" not in pod.manifest["metadata"]


def test_delete_commands_default_to_background_and_refuse_unknown_policies() -> None:
    body = {"name": "web"}
    command = parse_command("Deployment", "delete", {"id": "key-12345", "actor": "a", "body": body})
    assert command.body.propagationPolicy == "Background"  # type: ignore[attr-defined]
    with pytest.raises(FleetError):
        parse_command(
            "Deployment", "delete",
            {"id": "key-12345", "actor": "a", "body": {**body, "propagationPolicy": "Later"}},
        )  # fmt: skip


def test_a_pod_bound_to_a_deleted_node_is_deleted_whatever_its_owners():
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}}
    verdict = assess(pod, lambda ref: "alive", deleted_node="n1")
    assert verdict.action == "delete"
    assert verdict.reason == 'garbage collected: pod bound to node "n1", which no longer exists'
