"""Server-side apply: field sets, managers, merges and conflicts (``metadata.managedFields``).

Why this exists: ``kubectl apply --server-side`` sends the fields a manager wants and lets the
server merge them into the object, remember which manager set which field, refuse to
overwrite a field another manager set to something else (a Conflict, unless forced), and
remove the fields a manager stops applying when nobody else wants them. Kubernetes does this
with structured-merge-diff's field sets; this module is fleetlog's own rendition of the same
rules, pure so the rules are pinned by unit tests:

* a *field set* is a set of paths, each a tuple of FieldsV1 path elements: ``f:<field>``,
  ``k:<json of the key fields>`` for an element of a list keyed by fields (containers by
  ``name``, ports by ``containerPort`` and ``protocol`` …), ``v:<json>`` for an element of a
  list of scalars kept as a set (``finalizers``); other lists are atomic (one leaf);
* the fields of an object are its leaves and its keyed list elements; ``apiVersion``,
  ``kind``, the server's metadata and ``status`` are never managed;
* an Apply merges the applied configuration into the live object (maps by key, keyed lists by
  their keys, atomic lists replaced), prunes what the manager applied last time and no longer
  applies when no other manager owns it, and conflicts on every field another manager owns
  whose value the apply changes; an Update gives its manager every field it added or
  changed and takes them from the others.

The managers are kept in the object's ``metadata.managedFields`` in the manifest the gateway
stores, so the log holds them and a replay shows the same ones.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from core.kubeapi.status import APIError, Target

Path = tuple[str, ...]
FieldSet = frozenset[Path]

APPLY, UPDATE = "Apply", "Update"
BEFORE_FIRST_APPLY = "before-first-apply"
"""The manager kube gives every field of an object that had no managers when it is first
applied (so a first apply changing a field set earlier conflicts, as in Kubernetes)."""

NATS_DOOR_MANAGER = "fleetlog"
"""The manager of what a person writes through the NATS door (``fleetlog apply``)."""
KUBERNETES_DOOR_SOURCE = "https"
"""The first word of the source the Kubernetes door gives its commands (``https <peer>
<user agent>``): they state their managers already."""


def from_kubernetes_door(source: str | None) -> bool:
    """Whether a command came through the Kubernetes door (which records managers itself)."""
    return (source or "").split(" ", 1)[0] == KUBERNETES_DOOR_SOURCE


LIST_KEYS: Mapping[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "resourceClaims": ("name",),
    "schedulingGates": ("name",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "resizePolicy": ("resourceName",),
    "ports": ("containerPort", "protocol"),
}
"""Lists whose elements are told apart by key fields (the core types' ``listType=map`` with
their ``listMapKey``s). ``ports`` of a service are keyed by ``port`` instead (see ``_keys``)."""
KEY_DEFAULTS: Mapping[str, Any] = {"protocol": "TCP"}
"""Key fields the server defaults, so an element applied without one matches the stored one."""
SET_LISTS = frozenset({"finalizers"})
"""Lists of scalars kept as sets (``listType=set``)."""

UNMANAGED: tuple[Path, ...] = (
    ("f:apiVersion",),
    ("f:kind",),
    ("f:status",),
    *(
        ("f:metadata", f"f:{name}")
        for name in (
            "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
            "selfLink", "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds",
        )
    ),
)  # fmt: skip
"""Paths (and everything under them) no manager owns: identity, the server's metadata and
status (whose writer is the status subresource, not an apply of the object)."""
_UNMANAGED_SET: Final = frozenset(UNMANAGED)
_UNMANAGED_DEPTH: Final = max(len(u) for u in UNMANAGED)


# -- paths -----------------------------------------------------------------------------------


def _keys(field: str, items: Iterable[Any]) -> tuple[str, ...] | None:
    keys = LIST_KEYS.get(field)
    if field == "ports" and not any(isinstance(i, dict) and "containerPort" in i for i in items):
        return ("port", "protocol")
    return keys


def _key_element(keys: tuple[str, ...], item: Mapping[str, Any]) -> str:
    values = tuple(item.get(k, KEY_DEFAULTS.get(k)) for k in keys)
    if all(type(v) in _PLAIN_KEYS for v in values):
        # Every container, port, env entry … of every object a command writes has one: the
        # text of plain values is remembered, keyed with their types (True and 1 are equal
        # keys to a dict, and JSON writes them differently).
        return _plain_key_element(keys, tuple((type(v), v) for v in values))
    return _encode_key_element(keys, values)


_PLAIN_KEYS: Final = frozenset({str, int, type(None)})


@functools.lru_cache(maxsize=4096)
def _plain_key_element(keys: tuple[str, ...], typed: tuple[tuple[type, Any], ...]) -> str:
    return _encode_key_element(keys, tuple(v for _, v in typed))


def _encode_key_element(keys: tuple[str, ...], values: tuple[Any, ...]) -> str:
    present = {k: v for k, v in zip(keys, values, strict=True) if v is not None}
    return "k:" + json.dumps(present, sort_keys=True, separators=(",", ":"))


def _value_element(value: Any) -> str:
    return "v:" + json.dumps(value, sort_keys=True, separators=(",", ":"))


def _walk(
    value: Any, prefix: Path, field: str, skip: frozenset[Path] | None, out: list[Path]
) -> None:
    """Add the paths of ``value`` (found at ``prefix``, under the field named ``field``) to
    ``out``, but none under a member of ``skip`` (members of objects only, as
    :data:`UNMANAGED` are). Appends to one list rather than yielding: this walks every object
    a command writes, and nested generators were most of the cost of a pod's managed fields."""
    if isinstance(value, dict) and value:
        deeper = skip if skip and len(prefix) + 1 < _UNMANAGED_DEPTH else None
        for key, child in value.items():
            path = (*prefix, f"f:{key}")
            if skip and path in skip:
                continue
            if child and isinstance(child, (dict, list)):
                _walk(child, path, str(key), deeper, out)
            else:
                out.append(path)  # a leaf (what the call would have found), without the call
        return
    if isinstance(value, list) and value:
        if field in SET_LISTS and not any(isinstance(i, (dict, list)) for i in value):
            out.extend((*prefix, _value_element(item)) for item in value)
            return
        keys = _keys(field, value)
        if keys is not None and all(isinstance(i, dict) for i in value):
            for item in value:
                element = (*prefix, _key_element(keys, item))
                out.append(element)
                for key, child in item.items():
                    if child and isinstance(child, (dict, list)):
                        _walk(child, (*element, f"f:{key}"), str(key), None, out)
                    else:
                        out.append((*element, f"f:{key}"))
            return
    if prefix:
        out.append(prefix)


def fields_of(obj: Mapping[str, Any]) -> FieldSet:
    """The managed fields of an object (or of an applied configuration)."""
    # Unmanaged subtrees (status, the server's metadata) are not walked at all rather than
    # walked and filtered path by path: this runs for every object a command writes.
    out: list[Path] = []
    _walk(dict(obj), (), "", _UNMANAGED_SET, out)
    return frozenset(out)


def path_text(path: Path) -> str:
    """A path as kube prints it in a conflict: ``.spec.containers[name="web"].image``."""
    out = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            out += f".{rest}"
        elif kind == "k":
            pairs = json.loads(rest)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in pairs.items()) + "]"
        elif kind == "v":
            out += f"[={rest}]"
        else:
            out += f"[{rest}]"
    return out


_MISSING = object()


def _child(node: Any, element: str, field: str) -> Any:
    kind, _, rest = element.partition(":")
    if kind == "f":
        return node.get(rest, _MISSING) if isinstance(node, dict) else _MISSING
    if not isinstance(node, list):
        return _MISSING
    if kind == "v":
        wanted = json.loads(rest)
        return wanted if wanted in node else _MISSING
    keys = _keys(field, node)
    if keys is None:
        return _MISSING
    return next(
        (i for i in node if isinstance(i, dict) and _key_element(keys, i) == element), _MISSING
    )


def value_at(obj: Any, path: Path) -> Any:
    """The value at ``path`` (the module's ``_MISSING`` sentinel when there is none)."""
    node, field = obj, ""
    for element in path:
        node = _child(node, element, field)
        if node is _MISSING:
            return _MISSING
        if element.startswith("f:"):
            field = element[2:]
    return node


def _remove(obj: Any, path: Path, field: str = "") -> None:
    """Remove the field or list element at ``path`` from ``obj`` (in place)."""
    head, rest = path[0], path[1:]
    if rest:
        child = _child(obj, head, field)
        if child is not _MISSING:
            _remove(child, rest, head[2:] if head.startswith("f:") else field)
        return
    if head.startswith("f:") and isinstance(obj, dict):
        obj.pop(head[2:], None)
    elif isinstance(obj, list):
        child = _child(obj, head, field)
        if child is not _MISSING:
            obj.remove(child)


def _is_key_field(path: Path) -> bool:
    """A key field of a keyed list element: it goes with the element, never alone."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


# -- merging ---------------------------------------------------------------------------------


def merge(live: Any, config: Any, field: str = "") -> Any:
    """The applied configuration merged into the live object: maps key by key, keyed lists
    element by element (the live order, new elements after), set lists as a union, anything
    else replaced by the configuration's value."""
    if isinstance(live, dict) and isinstance(config, dict):
        out = dict(live)
        for key, value in config.items():
            out[key] = merge(live[key], value, str(key)) if key in live else copy.deepcopy(value)
        return out
    if isinstance(live, list) and isinstance(config, list):
        if field in SET_LISTS:
            return [*live, *(copy.deepcopy(v) for v in config if v not in live)]
        keys = _keys(field, [*live, *config])
        if keys is not None and all(isinstance(i, dict) for i in [*live, *config]):
            applied = {_key_element(keys, i): i for i in config}
            out = []
            for item in live:
                element = _key_element(keys, item)
                out.append(merge(item, applied.pop(element), field) if element in applied else item)
            return [*out, *(copy.deepcopy(i) for i in applied.values())]
    return copy.deepcopy(config)


@dataclass(frozen=True)
class Comparison:
    added: FieldSet
    removed: FieldSet
    modified: FieldSet


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> Comparison:
    """What changed from ``old`` to ``new``, field by field."""
    before, after = fields_of(old), fields_of(new)
    modified = frozenset(
        p
        for p in before & after
        if not p[-1].startswith("k:") and value_at(old, p) != value_at(new, p)
    )
    return Comparison(added=after - before, removed=before - after, modified=modified)


# -- managers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manager:
    """One ``managedFields`` entry: who set which fields, how, and when."""

    manager: str
    operation: str
    api_version: str
    time: str
    fields: FieldSet
    subresource: str = ""

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What makes two entries the same manager: an applier is one manager whatever
        apiVersion it applied at; an updater is one per apiVersion (kube's identifier)."""
        version = "" if self.operation == APPLY else self.api_version
        return (self.manager, self.operation, version, self.subresource)

    def described(self) -> str:
        """The manager as kube names it in a conflict message."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == UPDATE:
            text += f" using {self.api_version}"
        return text


def fields_v1(fields: FieldSet) -> dict[str, Any]:
    """A field set as FieldsV1 JSON: nested objects, ``"."`` marking a member that also has
    children."""
    tree: dict[str, Any] = {}
    members: list[dict[str, Any]] = []
    for path in fields:
        node = tree
        for element in path:
            child = node.get(element)
            if child is None:
                child = node[element] = {}
            node = child
        members.append(node)
    for node in members:
        if node and "." not in node:
            node["."] = {}
    return _sorted_tree(tree)


def _sorted_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with each level's keys sorted, ``"."`` first (kube's order)."""
    if not tree:
        return {}
    keys = sorted(tree)
    if keys[0] != "." and "." in tree:
        keys.remove(".")
        keys.insert(0, ".")
    return {k: _sorted_tree(tree[k]) if tree[k] else {} for k in keys}


def from_fields_v1(tree: Any, prefix: Path = ()) -> FieldSet:
    """The field set FieldsV1 JSON describes (malformed parts are ignored, not guessed at)."""
    if not isinstance(tree, dict):
        return frozenset()
    found: set[Path] = set()
    if prefix and (not tree or "." in tree):
        found.add(prefix)
    for element, child in tree.items():
        if element != "." and isinstance(element, str) and element[:2] in ("f:", "k:", "v:", "i:"):
            found |= from_fields_v1(child, (*prefix, element))
    return frozenset(found)


def decode(entries: Any) -> list[Manager]:
    """The managers of an object's ``metadata.managedFields`` (entries that are not FieldsV1
    entries are dropped)."""
    managers: list[Manager] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("fieldsType", "FieldsV1") != "FieldsV1":
            continue
        managers.append(
            Manager(
                manager=str(entry.get("manager", "")),
                operation=str(entry.get("operation", UPDATE)),
                api_version=str(entry.get("apiVersion", "")),
                time=str(entry.get("time", "")),
                fields=from_fields_v1(entry.get("fieldsV1")),
                subresource=str(entry.get("subresource", "")),
            )
        )
    return managers


def encode(managers: Iterable[Manager]) -> list[dict[str, Any]]:
    """``metadata.managedFields`` in kube's order: appliers first, then by time and name."""
    ordered = sorted(
        managers,
        key=lambda m: (m.operation, m.time, m.manager, m.api_version, m.subresource),
    )
    out: list[dict[str, Any]] = []
    for m in ordered:
        entry: dict[str, Any] = {
            "manager": m.manager,
            "operation": m.operation,
            "apiVersion": m.api_version,
            "time": m.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(m.fields),
        }
        if m.subresource:
            entry["subresource"] = m.subresource
        out.append(entry)
    return out


# -- apply and update ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """The object to store and its managers after an apply or an update."""

    object: dict[str, Any]
    managers: list[Manager]


def _settle(
    before: list[Manager],
    changes: Comparison,
    acting: Manager,
    *,
    force: bool,
    target: Target,
) -> list[Manager]:
    """Take the fields ``changes`` added or modified from every other manager (refusing with
    kube's Conflict when not forced) and forget the removed ones; empty managers go."""
    taken = changes.added | changes.modified
    conflicts = [
        (other, path)
        for other in before
        if other.identity != acting.identity
        for path in sorted(other.fields & taken)
    ]
    if conflicts and not force:
        raise conflict_error(conflicts, target)
    after = [acting]
    for other in before:
        if other.identity == acting.identity:
            continue
        kept = other.fields - taken - changes.removed
        if kept:
            after.append(other if kept == other.fields else replace(other, fields=kept))
    return after


def conflict_error(conflicts: list[tuple[Manager, Path]], target: Target) -> APIError:
    """kube's 409 for an apply that would change fields other managers own."""
    causes = tuple(
        {"reason": "FieldManagerConflict", "message": f"conflict with {m.described()}",
         "field": path_text(p)}
        for m, p in conflicts
    )  # fmt: skip
    if len(conflicts) == 1:
        manager, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {manager.described()}: " + (
            path_text(path)
        )
    else:
        by_manager: dict[str, list[str]] = {}
        for manager, path in conflicts:
            by_manager.setdefault(manager.described(), []).append(path_text(path))
        lines: list[str] = []
        for described in sorted(by_manager):
            lines.append(f"conflicts with {described}:")
            lines += [f"- {p}" for p in by_manager[described]]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return APIError(409, "Conflict", message, target, causes)


def _without_managed(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    metadata = dict(out.get("metadata") or {})
    metadata.pop("managedFields", None)
    out["metadata"] = metadata
    return out


def _stamp(acting: Manager, previous: list[Manager], *, changed: bool, now: str) -> Manager:
    """The acting manager's entry keeps its time unless the write changed something."""
    old = next((m for m in previous if m.identity == acting.identity), None)
    if old is not None and not changed and old.fields == acting.fields:
        return replace(acting, time=old.time)
    return acting if acting.time == now else replace(acting, time=now)


def apply(
    live: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    *,
    manager: str,
    api_version: str,
    force: bool,
    now: str,
    target: Target,
) -> Outcome:
    """Server-side apply of ``config`` by ``manager`` onto ``live`` (None: create it).

    The returned object carries its managers in ``metadata.managedFields``; ``now`` is the
    stamp of the acting manager when the apply changed something (the caller reads the clock).
    """
    current = _without_managed(live) if live is not None else {}
    previous = decode((live or {}).get("metadata", {}).get("managedFields"))
    if live is not None and not previous:
        previous = [Manager(BEFORE_FIRST_APPLY, UPDATE, api_version, now, fields_of(current))]
    applied = _without_managed(config)
    applied_fields = fields_of(applied)
    merged = merge(current, applied)
    last = next((m for m in previous if m.identity == (manager, APPLY, "", "")), None)
    if last is not None:
        owned_by_others = frozenset().union(
            *(m.fields for m in previous if m.identity != last.identity)
        )
        kept = applied_fields | owned_by_others
        for path in sorted(last.fields - kept, key=len, reverse=True):
            # An element another manager owns a part of stays (with that part).
            if not any(k[: len(path)] == path for k in kept) and not _is_key_field(path):
                _remove(merged, path)
    acting = Manager(manager, APPLY, api_version, now, applied_fields)
    changes = compare(current, merged)
    changed = bool(changes.added or changes.removed or changes.modified)
    acting = _stamp(acting, previous, changed=changed, now=now)
    managers = _settle(previous, changes, acting, force=force, target=target)
    return Outcome(object=_with_managers(merged, managers), managers=managers)


def update(
    live: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    manager: str,
    api_version: str,
    now: str,
    target: Target,
) -> Outcome:
    """An ordinary write (create, update, patch) by ``manager``: it owns what it added or
    changed, which no other manager owns any more; removed fields leave every manager.

    Managers the written object states itself (a client editing ``managedFields``, as
    kubectl does when it moves client-side apply's ownership to server-side apply) replace
    the live ones; ``[{}]`` clears them (kube's documented way), ``[]`` or none keeps them."""
    current = _without_managed(live) if live is not None else {}
    stated = new.get("metadata", {}).get("managedFields")
    if isinstance(stated, list) and stated:
        previous = [m for m in decode(stated) if m.fields]
    else:
        previous = decode((live or {}).get("metadata", {}).get("managedFields"))
    stored = _without_managed(new)
    changes = compare(current, stored)
    identity = (manager, UPDATE, api_version, "")
    old = next((m for m in previous if m.identity == identity), None)
    owned = (old.fields if old is not None else frozenset()) - changes.removed
    acting = Manager(manager, UPDATE, api_version, now, owned | changes.added | changes.modified)
    changed = bool(changes.added or changes.removed or changes.modified)
    acting = _stamp(acting, previous, changed=changed, now=now)
    managers = _settle(previous, changes, acting, force=True, target=target)
    if not acting.fields:
        managers = [m for m in managers if m is not acting]
    return Outcome(object=_with_managers(stored, managers), managers=managers)


def _with_managers(obj: dict[str, Any], managers: list[Manager]) -> dict[str, Any]:
    out = dict(obj)
    metadata = dict(out.get("metadata") or {})
    if managers:
        metadata["managedFields"] = encode(managers)
    else:
        metadata.pop("managedFields", None)
    out["metadata"] = metadata
    return out
