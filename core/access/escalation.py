"""Kubernetes' privilege-escalation prevention for RBAC objects: who may write a role or a
binding without thereby gaining rights it does not hold.

Why this exists: RBAC alone lets anyone allowed to write a Role or a RoleBinding grant itself
anything (a namespace ``admin`` binding ``cluster-admin`` to itself). kube-apiserver's RBAC
storage (``pkg/registry/rbac/{role,clusterrole,rolebinding,clusterrolebinding}/policybased``)
refuses that, and fleetlog refuses it the same way, with the same words:

* a Role or ClusterRole may be written only by a requester that already holds every permission
  it grants (in the role's namespace; cluster-wide for a ClusterRole: ``ConfirmNoEscalation``
  with ``Covers``' rule semantics), or that RBAC allows ``escalate`` on ``roles`` /
  ``clusterroles`` there; a ClusterRole with an ``aggregationRule`` (new or old) needs, beside
  that, the full ``*``/``*`` authority, unless ``escalate`` allowed it;
* a RoleBinding or ClusterRoleBinding may be written only by a requester that RBAC allows
  ``bind`` on the referenced role (by name, in the binding's namespace), or that holds every
  permission of that role there; a binding to a role that does not exist is then refused as
  not found;
* ``system:masters`` (kube's ``EscalationAllowed``) and the control plane skip all of it (the
  gateway decides that, as it does for RBAC itself).

Pure, on plain manifests and a :class:`core.access.rbac.Policy`: the gateway asks
:func:`check_role` / :func:`check_binding` after RBAC allowed the write itself. The uncovered
permissions are listed as kube lists them (``CompactRules`` then ``CompactString``, sorted,
one a line), Go-quoted, so the denial reads byte for byte as kube-apiserver's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from core.access.rbac import (
    API_GROUP_ALL,
    NON_RESOURCE_ALL,
    RESOURCE_ALL,
    VERB_ALL,
    Policy,
    Request,
    User,
)

RBAC_GROUP: Final = "rbac.authorization.k8s.io"
ROLE_KINDS: Final = ("Role", "ClusterRole")
BINDING_KINDS: Final = ("RoleBinding", "ClusterRoleBinding")
ESCALATE: Final = "escalate"
BIND: Final = "bind"

FULL_AUTHORITY: Final[tuple[Mapping[str, Any], ...]] = (
    {"apiGroups": [API_GROUP_ALL], "resources": [RESOURCE_ALL], "verbs": [VERB_ALL]},
    {"nonResourceURLs": [NON_RESOURCE_ALL], "verbs": [VERB_ALL]},
)
"""What setting an ``aggregationRule`` needs (it can gather anything)."""
AGGREGATION_REFUSED: Final = "must have cluster-admin privileges to use the aggregationRule"

_PLURALS: Final = {
    "Role": "roles",
    "ClusterRole": "clusterroles",
    "RoleBinding": "rolebindings",
    "ClusterRoleBinding": "clusterrolebindings",
}


def _strings(rule: Mapping[str, Any], key: str) -> list[str]:
    return [str(v) for v in rule.get(key) or ()]


# --------------------------------------------------------------------------------------------
# Covering rules (``component-helpers/auth/rbac/validation/policy_comparator.go``)
# --------------------------------------------------------------------------------------------


def breakdown(rule: Mapping[str, Any]) -> list[dict[str, list[str]]]:
    """``BreakdownRule``: the rule as rules of one group, resource, verb (and resource name),
    then one non-resource URL and verb each; each is covered whole by one owner rule or not."""
    names = _strings(rule, "resourceNames")
    subrules: list[dict[str, list[str]]] = []
    for group in _strings(rule, "apiGroups"):
        for resource in _strings(rule, "resources"):
            for verb in _strings(rule, "verbs"):
                base = {"apiGroups": [group], "resources": [resource], "verbs": [verb]}
                if names:
                    subrules.extend({**base, "resourceNames": [name]} for name in names)
                else:
                    subrules.append(base)
    for url in _strings(rule, "nonResourceURLs"):
        for verb in _strings(rule, "verbs"):
            subrules.append({"nonResourceURLs": [url], "verbs": [verb]})
    return subrules


def _has_all(owned: Sequence[str], wanted: Iterable[str]) -> bool:
    return set(wanted) <= set(owned)


def _resources_cover(owned: Sequence[str], wanted: Sequence[str]) -> bool:
    if RESOURCE_ALL in owned or _has_all(owned, wanted):
        return True
    for resource in wanted:
        if resource in owned:
            continue
        # Only "*/sub" covers a subresource beyond its exact name ("pods/*" is not a wildcard).
        if "/" not in resource:
            return False
        if "*/" + resource.split("/", 1)[1] not in owned:
            return False
    return True


def non_resource_url_covers(owned: str, wanted: str) -> bool:
    """An owned URL covers itself, and a trailing ``*`` covers every path it prefixes."""
    if owned == wanted:
        return True
    return owned.endswith("*") and wanted.startswith(owned.rstrip("*"))


def _urls_cover(owned: Sequence[str], wanted: Sequence[str]) -> bool:
    return all(any(non_resource_url_covers(o, w) for o in owned) for w in wanted)


def rule_covers(owner: Mapping[str, Any], subrule: Mapping[str, Any]) -> bool:
    """``ruleCovers``: whether ``owner`` grants all of ``subrule`` (one of
    :func:`breakdown`'s). A ``*`` in the subrule is covered only by a ``*`` (holding every verb
    one by one is not holding ``*``); an owner limited to resource names covers only those."""
    verbs, groups = _strings(owner, "verbs"), _strings(owner, "apiGroups")
    owner_names = _strings(owner, "resourceNames")
    wanted_names = _strings(subrule, "resourceNames")
    if wanted_names:
        names_ok = not owner_names or _has_all(owner_names, wanted_names)
    else:
        names_ok = not owner_names
    return (
        (VERB_ALL in verbs or _has_all(verbs, _strings(subrule, "verbs")))
        and (API_GROUP_ALL in groups or _has_all(groups, _strings(subrule, "apiGroups")))
        and _resources_cover(_strings(owner, "resources"), _strings(subrule, "resources"))
        and _urls_cover(_strings(owner, "nonResourceURLs"), _strings(subrule, "nonResourceURLs"))
        and names_ok
    )


def covers(
    owner_rules: Iterable[Mapping[str, Any]], servant_rules: Iterable[Mapping[str, Any]]
) -> tuple[bool, list[dict[str, list[str]]]]:
    """``Covers``: whether ``owner_rules`` grant everything ``servant_rules`` do, and the
    broken-down rules they do not cover."""
    owners = list(owner_rules)
    uncovered = [
        subrule
        for rule in servant_rules
        for subrule in breakdown(rule)
        if not any(rule_covers(owner, subrule) for owner in owners)
    ]
    return not uncovered, uncovered


# --------------------------------------------------------------------------------------------
# The words (``CompactRules``, ``CompactString``, ``ConfirmNoEscalation``, ``NewForbidden``)
# --------------------------------------------------------------------------------------------


def _is_simple(rule: Mapping[str, Any]) -> bool:
    """One API group, one resource, verbs, and nothing else."""
    return (
        set(rule) <= {"apiGroups", "resources", "verbs"}
        and len(rule.get("apiGroups") or ()) == 1
        and len(rule.get("resources") or ()) == 1
    )


def compact(rules: Iterable[Mapping[str, Any]]) -> list[dict[str, list[str]]]:
    """``CompactRules``: simple rules of the same group and resource become one rule with all
    their verbs (in order, repeats kept); every other rule stays as it is."""
    compacted: list[dict[str, list[str]]] = []
    simple: dict[tuple[str, str], dict[str, list[str]]] = {}
    for rule in rules:
        copy = {key: _strings(rule, key) for key in rule}
        if not _is_simple(rule):
            compacted.append(copy)
            continue
        key = (copy["apiGroups"][0], copy["resources"][0])
        if key in simple:
            simple[key]["verbs"].extend(copy.get("verbs", []))
        else:
            simple[key] = copy
    return compacted + list(simple.values())


def go_quote(value: str) -> str:
    """Go's ``%q`` of a string (``strconv.Quote``): double quotes, backslash escapes."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES: Final = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
}  # fmt: skip


def go_quote_list(values: Iterable[str]) -> str:
    """Go's ``%q`` of a ``[]string``: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(v) for v in values) + "]"


def compact_string(rule: Mapping[str, Any]) -> str:
    """``CompactString``: ``{APIGroups:[""], Resources:["pods"], Verbs:["get"]}``."""
    parts = [
        f"{label}:{go_quote_list(_strings(rule, key))}"
        for label, key in (
            ("APIGroups", "apiGroups"),
            ("Resources", "resources"),
            ("NonResourceURLs", "nonResourceURLs"),
            ("ResourceNames", "resourceNames"),
            ("Verbs", "verbs"),
        )
        if rule.get(key)
    ]
    return "{" + ", ".join(parts) + "}"


def escalation_message(user: User, missing: Iterable[Mapping[str, Any]]) -> str:
    """``ConfirmNoEscalation``'s error: who, and each permission not held (compacted, unique,
    sorted, one a line)."""
    listed = sorted({compact_string(rule) for rule in compact(missing)})
    return (
        f"user {go_quote(user.name)} (groups={go_quote_list(user.groups)}) is attempting to "
        "grant RBAC permissions not currently held:\n" + "\n".join(listed)
    )


def forbidden(kind: str, name: str, *, reason: str) -> str:
    """``NewForbidden``'s message: ``rolebindings.rbac.authorization.k8s.io "x" is forbidden:
    <reason>``."""
    resource = f"{_PLURALS[kind]}.{RBAC_GROUP}"
    target = f"{resource} {go_quote(name)}" if name else resource
    return f"{target} is forbidden: {reason}"


def not_found(role_ref: Mapping[str, Any]) -> str:
    """The role getter's NotFound for a binding whose role does not exist."""
    kind = str(role_ref.get("kind") or "")
    plural = _PLURALS.get(kind, kind.lower() + "s")
    return f"{plural}.{RBAC_GROUP} {go_quote(str(role_ref.get('name') or ''))} not found"


# --------------------------------------------------------------------------------------------
# The checks of the policybased storages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """May the write go ahead: why (for the audit record), or kube's refusal."""

    allowed: bool
    reason: str
    role_missing: bool = False
    """Refused because the binding's role does not exist (kube answers NotFound)."""


def confirm_no_escalation(
    policy: Policy, user: User, *, namespace: str, rules: Iterable[Mapping[str, Any]]
) -> str:
    """``ConfirmNoEscalation``: '' when ``user``'s rules in ``namespace`` ('' = cluster-wide)
    cover ``rules``, else the message naming what it lacks."""
    held, missing = covers(policy.rules_for(user, namespace), rules)
    return "" if held else escalation_message(user, missing)


def escalate_request(kind: str, *, namespace: str, name: str) -> Request:
    """``RoleEscalationAuthorized``'s question: ``escalate`` on the request's resource.

    ``name`` is the request's (kube's ``RequestInfo``): '' for a create, which is a POST to the
    collection, so an ``escalate`` rule limited to resource names allows only updates."""
    return Request(
        verb=ESCALATE,
        resource=_PLURALS[kind],
        api_group=RBAC_GROUP,
        namespace=namespace,
        name=name,
    )


def bind_request(role_ref: Mapping[str, Any], *, namespace: str) -> Request | None:
    """``BindingAuthorized``'s question: ``bind`` on the referenced role by name, in the
    binding's namespace ('' for a ClusterRoleBinding); None for an unknown roleRef kind."""
    kind = role_ref.get("kind")
    if kind not in ROLE_KINDS:
        return None
    return Request(
        verb=BIND,
        resource=_PLURALS[str(kind)],
        api_group=str(role_ref.get("apiGroup") or ""),
        namespace=namespace,
        name=str(role_ref.get("name") or ""),
    )


def _namespace(manifest: Mapping[str, Any], kind: str) -> str:
    if kind in ("ClusterRole", "ClusterRoleBinding"):
        return ""
    return str((manifest.get("metadata") or {}).get("namespace") or "")


def _name(manifest: Mapping[str, Any]) -> str:
    return str((manifest.get("metadata") or {}).get("name") or "")


def has_aggregation_rule(manifest: Mapping[str, Any] | None) -> bool:
    aggregation = (manifest or {}).get("aggregationRule")
    return bool(aggregation and aggregation.get("clusterRoleSelectors"))


def check_role(
    policy: Policy,
    user: User,
    *,
    manifest: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
) -> Verdict:
    """Whether ``user`` may write the Role or ClusterRole ``manifest`` (``old``: the stored
    one, for an update): ``escalate`` allows anything; otherwise the requester must hold every
    rule of the role, and the full authority to set (or change) an ``aggregationRule``."""
    kind = str(manifest.get("kind") or "")
    namespace, name = _namespace(manifest, kind), _name(manifest)
    request = escalate_request(kind, namespace=namespace, name=name if old is not None else "")
    decision = policy.authorize(user, request)
    if decision.allowed:
        return Verdict(True, f"{ESCALATE} {request.resource}: {decision.reason}")
    lacking = confirm_no_escalation(
        policy, user, namespace=namespace, rules=manifest.get("rules") or ()
    )
    if lacking:
        return Verdict(False, forbidden(kind, name, reason=lacking))
    # An aggregation rule can gather anything (and, removed, stop a tightening): setting or
    # changing one needs every right there is.
    aggregates = has_aggregation_rule(manifest) or has_aggregation_rule(old)
    if (
        kind == "ClusterRole"
        and aggregates
        and confirm_no_escalation(policy, user, namespace="", rules=FULL_AUTHORITY)
    ):
        return Verdict(False, forbidden(kind, name, reason=AGGREGATION_REFUSED))
    return Verdict(True, f"escalation check: {kind} {go_quote(name)} grants nothing not held")


def check_binding(policy: Policy, user: User, *, manifest: Mapping[str, Any]) -> Verdict:
    """Whether ``user`` may write the RoleBinding or ClusterRoleBinding ``manifest``: ``bind``
    on its role allows it; otherwise the requester must hold every rule of the role in the
    binding's namespace (a role that does not exist: refused as not found)."""
    kind = str(manifest.get("kind") or "")
    namespace, name = _namespace(manifest, kind), _name(manifest)
    role_ref: Mapping[str, Any] = manifest.get("roleRef") or {}
    request = bind_request(role_ref, namespace=namespace)
    if request is not None:
        decision = policy.authorize(user, request)
        if decision.allowed:
            what = f"{BIND} {request.resource} {go_quote(request.name)}"
            return Verdict(True, f"{what}: {decision.reason}")
    rules = policy.role_reference_rules(role_ref, namespace)
    if rules is None:
        return Verdict(False, not_found(role_ref), role_missing=True)
    lacking = confirm_no_escalation(policy, user, namespace=namespace, rules=rules)
    if lacking:
        return Verdict(False, forbidden(kind, name, reason=lacking))
    role = f"{role_ref.get('kind')} {go_quote(str(role_ref.get('name') or ''))}"
    return Verdict(True, f"escalation check: {role} grants nothing not held")


def check_write(
    policy: Policy,
    user: User,
    *,
    manifest: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
) -> Verdict | None:
    """The check a create or update of ``manifest`` needs (None: not an RBAC object)."""
    kind = manifest.get("kind")
    if kind in ROLE_KINDS:
        return check_role(policy, user, manifest=manifest, old=old)
    if kind in BINDING_KINDS:
        return check_binding(policy, user, manifest=manifest)
    return None
