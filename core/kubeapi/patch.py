"""Patches: JSON merge patch, JSON patch and strategic merge patch, applied to an object.

Why this exists: ``kubectl apply`` (its client-side path), ``label``, ``annotate``, ``edit``,
``set image`` and ``rollout restart`` change objects with PATCH. The server applies the patch
to the object as it is and stores the result like an update (the gateway's ``apply``), so a
patch is judged by the same admission as any write. The three formats:

* ``application/merge-patch+json`` (RFC 7386): maps merge, ``null`` removes, lists are
  replaced whole.
* ``application/json-patch+json`` (RFC 6902): a list of add / remove / replace / move / copy /
  test operations at JSON pointers.
* ``application/strategic-merge-patch+json`` (Kubernetes'): a merge patch in which lists of
  objects with a *merge key* (containers by ``name``, container ports by ``containerPort`` …,
  as the core types' ``patchMergeKey`` tags say) are merged element by element, ``finalizers``
  as a set, and the directives ``$patch`` (replace / delete / merge), ``$retainKeys`` and
  ``$deleteFromPrimitiveList/<field>`` are honoured; ``$setElementOrder/<field>`` orders the
  merged list as the client has it.

Pure: the HTTP door parses, this module computes, the gateway decides.
"""

from __future__ import annotations

import copy
from typing import Any

from core.kubeapi.status import APIError, bad_request

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE_PATCH, JSON_PATCH, STRATEGIC_MERGE_PATCH)

MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resizePolicy": "resourceName",
}
"""List fields merged element by element, and the key that pairs the elements (the
``patchMergeKey`` of the core types' fields; ``ports`` is decided by its elements)."""
SET_LISTS = frozenset({"finalizers"})
"""Lists of scalars merged as sets (``patchStrategy: merge`` on a primitive list)."""


def unprocessable(message: str) -> APIError:
    return APIError(422, "Invalid", message)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- JSON patch ------------------------------------------------------------------------------


def _pointer(text: Any) -> list[str]:
    if not isinstance(text, str) or (text and not text.startswith("/")):
        raise unprocessable(f"invalid JSON pointer {str(text)[:100]!r}")
    if not text:
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise unprocessable(f"invalid array index {token[:20]!r}")
    index = int(token)
    if index > len(container) or (not adding and index == len(container)):
        raise unprocessable(f"array index {index} out of bounds")
    return index


def _parent(doc: Any, path: list[str]) -> Any:
    node = doc
    for token in path[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, adding=False)]
        else:
            raise unprocessable(f"path /{'/'.join(path)} does not exist")
    return node


def _get(doc: Any, path: list[str]) -> Any:
    if not path:
        return doc
    parent = _parent(doc, path)
    token = path[-1]
    if isinstance(parent, dict) and token in parent:
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, adding=False)]
    raise unprocessable(f"path /{'/'.join(path)} does not exist")


def _remove(doc: Any, path: list[str]) -> Any:
    if not path:
        raise unprocessable("cannot remove the whole document")
    parent = _parent(doc, path)
    token = path[-1]
    if isinstance(parent, dict) and token in parent:
        return parent.pop(token)
    if isinstance(parent, list):
        return parent.pop(_index(parent, token, adding=False))
    raise unprocessable(f"path /{'/'.join(path)} does not exist")


def _add(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _parent(doc, path)
    token = path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, adding=True), value)
    else:
        raise unprocessable(f"path /{'/'.join(path)} does not exist")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902, all or nothing (the target is not changed)."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for number, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise bad_request(f"JSON patch operation {number} is not an object")
        op = operation.get("op")
        path = _pointer(operation.get("path"))
        if op in ("add", "replace", "test") and "value" not in operation:
            raise unprocessable(f"JSON patch operation {number} ({op}) has no value")
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(operation["value"]))
        elif op == "remove":
            _remove(doc, path)
        elif op == "replace":
            _get(doc, path)
            if not path:
                doc = copy.deepcopy(operation["value"])
            else:
                _remove(doc, path)
                doc = _add(doc, path, copy.deepcopy(operation["value"]))
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from"))
            value = _remove(doc, source) if op == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, value)
        elif op == "test":
            if _get(doc, path) != operation["value"]:
                raise unprocessable(
                    f"testing value /{'/'.join(path)} failed: it is not the value given"
                )
        else:
            raise unprocessable(f"JSON patch operation {number}: unknown op {str(op)[:20]!r}")
    return doc


# -- strategic merge patch -------------------------------------------------------------------


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        if any(isinstance(i, dict) and "containerPort" in i for i in items):
            return "containerPort"
        return "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge patch of ``target`` (module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise bad_request(f"unknown patch directive {str(directive)[:20]!r}")
    result = dict(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            if isinstance(value, list):
                orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _ordered(field, result[field], order)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, target: Any, patch: list[Any]) -> list[Any]:
    current = list(target) if isinstance(target, list) else []
    if field in SET_LISTS:
        merged = list(current)
        merged += [v for v in patch if v not in merged]
        return merged
    key = _merge_key(field, [*current, *patch])
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [copy.deepcopy(v) for v in patch]
    if any(i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if "$patch" not in i]
    for item in patch:
        if key not in item:
            raise bad_request(f"{field}: an element of a merged list needs its {key}")
        position = next(
            (n for n, c in enumerate(current) if isinstance(c, dict) and c.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                current.pop(position)
            continue
        if position is None:
            current.append(strategic_merge_patch(None, item))
        else:
            current[position] = strategic_merge_patch(current[position], item)
    return current


def _ordered(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    """``items`` in the order ``$setElementOrder`` gives (by merge key, or value); the rest
    after them, as they were."""
    key = _merge_key(field, items)

    def identity(value: Any) -> Any:
        return value.get(key) if key is not None and isinstance(value, dict) else value

    wanted = [identity(o) for o in order]
    rank = {repr(w): n for n, w in enumerate(wanted)}
    return sorted(items, key=lambda i: rank.get(repr(identity(i)), len(rank)))


def apply_patch(media_type: str, target: dict[str, Any], patch: Any) -> Any:
    if media_type == MERGE_PATCH:
        return merge_patch(target, patch)
    if media_type == JSON_PATCH:
        return json_patch(target, patch)
    return strategic_merge_patch(target, patch)
