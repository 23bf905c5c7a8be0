"""What the garbage collector does with one object, given what became of its owners.

Kubernetes' garbage collector as a pure decision, so it can be tested without a server and the
handler (``handlers.garbage_collector``) stays a thin shell. An object's owners are the entries
of its ``metadata.ownerReferences`` (matched by uid: an owner deleted and re-created under the
same name is a different owner). Each owner is, as the handler sees it:

* ``alive``: an object with that uid exists;
* ``Background`` / ``Foreground`` / ``Orphan``: it was deleted, with that propagation policy;
* ``absent``: no object ever had that uid (the dependent was created after its owner was
  deleted, or names a uid that never existed): Kubernetes treats it as a deleted owner;
* ``unknown``: the handler cannot tell (a kind fleetlog does not know): left alone, as
  Kubernetes leaves owners it cannot resolve.

The rules are Kubernetes': with an owner still alive (or unknown) nothing is deleted, but
references to owners that are gone are removed; with no owner left and at least one deleted
without ``Orphan``, the object is deleted; references to owners deleted with ``Orphan`` are
removed and the object kept. An object in a namespace that was deleted is deleted whatever its
owners (the namespace controller's work, done by the same collector here), and so is a pod bound
to a node that was deleted (the pod garbage collector's work).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

OwnerStatus = Literal["alive", "absent", "Background", "Foreground", "Orphan", "unknown"]
GONE: frozenset[str] = frozenset({"absent", "Background", "Foreground"})


@dataclass(frozen=True)
class Collection:
    """The verdict for one object: ``keep`` it, ``delete`` it (with ``propagation_policy`` for
    its own dependents), or ``unown`` it (rewrite its ownerReferences to ``keep_references``).
    ``removed_uids`` are the owners that caused it (gone, or orphaning)."""

    action: Literal["keep", "delete", "unown"]
    reason: str = ""
    propagation_policy: str = "Background"
    keep_references: tuple[Mapping[str, Any], ...] = field(default=())
    removed_uids: tuple[str, ...] = field(default=())


KEEP = Collection("keep")


def owner_references(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The object's ownerReferences that name a uid."""
    refs = (manifest.get("metadata") or {}).get("ownerReferences") or []
    return [ref for ref in refs if isinstance(ref, Mapping) and ref.get("uid")]


def describe_owner(ref: Mapping[str, Any]) -> str:
    return f'{ref.get("kind", "?")} "{ref.get("name", "?")}" (uid {ref.get("uid")})'


def assess(
    manifest: Mapping[str, Any],
    status_of: Callable[[Mapping[str, Any]], OwnerStatus],
    *,
    deleted_namespace: str | None = None,
    deleted_node: str | None = None,
) -> Collection:
    """Decide what becomes of an object (``manifest``) whose owners' fates ``status_of``
    tells; ``deleted_namespace`` names its namespace when that namespace no longer exists, and
    ``deleted_node`` the node a pod is bound to when that node no longer exists (Kubernetes'
    PodGC deletes such pods, so their owners replace them)."""
    if deleted_namespace is not None:
        return Collection("delete", reason=f'namespace "{deleted_namespace}" was deleted')
    if deleted_node is not None:
        return Collection(
            "delete",
            reason=f'garbage collected: pod bound to node "{deleted_node}", which no longer exists',
        )
    refs = owner_references(manifest)
    if not refs:
        return KEEP
    statuses = [(ref, status_of(ref)) for ref in refs]
    solid = [ref for ref, status in statuses if status in ("alive", "unknown")]
    dangling = [(ref, status) for ref, status in statuses if status in GONE]
    orphaned = [ref for ref, status in statuses if status == "Orphan"]
    if dangling and not solid:
        ref, status = dangling[0]
        why = "does not exist" if status == "absent" else "was deleted"
        foreground = any(status == "Foreground" for _, status in dangling)
        return Collection(
            "delete",
            reason=f"garbage collected: owner {describe_owner(ref)} {why}",
            propagation_policy="Foreground" if foreground else "Background",
            removed_uids=tuple(str(ref["uid"]) for ref, _ in dangling),
        )
    if dangling or orphaned:
        removed = [ref for ref, _ in dangling] + orphaned
        if orphaned and not dangling:
            reason = f"orphaned: owner {describe_owner(orphaned[0])} was deleted with Orphan"
        else:
            reason = "removed references to deleted owners: " + ", ".join(
                describe_owner(ref) for ref in removed
            )
        return Collection(
            "unown",
            reason=reason,
            keep_references=tuple(solid),
            removed_uids=tuple(str(ref["uid"]) for ref in removed),
        )
    return KEEP


def without_references(
    manifest: Mapping[str, Any], keep: tuple[Mapping[str, Any], ...]
) -> dict[str, Any]:
    """The manifest with ``metadata.ownerReferences`` replaced by ``keep`` (dropped if empty,
    as Kubernetes omits an empty list)."""
    metadata = dict(manifest.get("metadata") or {})
    if keep:
        metadata["ownerReferences"] = [dict(ref) for ref in keep]
    else:
        metadata.pop("ownerReferences", None)
    return {**manifest, "metadata": metadata}
