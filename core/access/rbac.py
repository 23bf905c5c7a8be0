"""Kubernetes RBAC: may this user do this verb on this resource here — and which rule said so.

Why this exists: the front door (issue 17) authorizes every command at the gateway and every
read at the query service and the HTTP door with Kubernetes' RBAC, from Role, ClusterRole,
RoleBinding and ClusterRoleBinding manifests users bring as YAML. The decision must be
Kubernetes' exactly (``plugin/pkg/auth/authorizer/rbac``: rule matching with ``*``,
``*/subresource``, resource names, non-resource URLs with a trailing ``*``; cluster role
bindings first, then the role bindings of the request's namespace; a RoleBinding may grant a
ClusterRole's rules inside its namespace; service account subjects default to the binding's
namespace), and so must the words: an allow names the binding, role and subject that allowed
it (the audit records it), a denial reads as kube-apiserver's Forbidden message.

Pure and on plain manifests (as stored in the log), like the scheduler's rules: readers build
a :class:`Policy` from the read model and ask it; nothing here loads pydantic or does I/O.
ClusterRole aggregation (``aggregationRule.clusterRoleSelectors``) is resolved here when the
policy is built, rather than by a controller writing the union back: the log keeps what users
wrote and the effective rules are a function of it, so replay and ``--at`` agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from core.meta.labels import Selector

VERB_ALL: Final = "*"
RESOURCE_ALL: Final = "*"
API_GROUP_ALL: Final = "*"
NON_RESOURCE_ALL: Final = "*"
SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"

READ_VERBS: Final = ("get", "list", "watch")


@dataclass(frozen=True, slots=True)
class User:
    """The authenticated caller: kube's ``user.Info`` (name and groups)."""

    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Request:
    """kube's ``authorizer.Attributes``: a resource request, or a non-resource one (``path``)."""

    verb: str
    resource: str = ""
    api_group: str = ""
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    path: str = ""
    """Set only for a non-resource request (``/healthz``, ``/version``, ``/metrics``)."""

    @property
    def is_resource_request(self) -> bool:
        return not self.path

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    """An allow: the binding, role and subject that allowed it (kube's wording, for the audit).
    A denial: kube-apiserver's Forbidden message for the request."""


# --------------------------------------------------------------------------------------------
# Rules (``pkg/apis/rbac/v1/evaluation_helpers.go``)
# --------------------------------------------------------------------------------------------


def verb_matches(rule: Mapping[str, Any], verb: str) -> bool:
    return any(v in (VERB_ALL, verb) for v in rule.get("verbs") or ())


def api_group_matches(rule: Mapping[str, Any], group: str) -> bool:
    return any(g in (API_GROUP_ALL, group) for g in rule.get("apiGroups") or ())


def resource_matches(rule: Mapping[str, Any], combined: str, subresource: str) -> bool:
    for resource in rule.get("resources") or ():
        if resource in (RESOURCE_ALL, combined):
            return True
        # "*/scale" grants the scale subresource of every resource, and nothing else.
        if subresource and resource == f"*/{subresource}":
            return True
    return False


def resource_name_matches(rule: Mapping[str, Any], name: str) -> bool:
    names = rule.get("resourceNames") or ()
    return not names or name in names


def non_resource_url_matches(rule: Mapping[str, Any], path: str) -> bool:
    for url in rule.get("nonResourceURLs") or ():
        if url in (NON_RESOURCE_ALL, path):
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(rule: Mapping[str, Any], request: Request) -> bool:
    if not request.is_resource_request:
        return verb_matches(rule, request.verb) and non_resource_url_matches(rule, request.path)
    return (
        verb_matches(rule, request.verb)
        and api_group_matches(rule, request.api_group)
        and resource_matches(rule, request.combined_resource, request.subresource)
        and resource_name_matches(rule, request.name)
    )


# --------------------------------------------------------------------------------------------
# Subjects
# --------------------------------------------------------------------------------------------


def service_account_user(namespace: str, name: str) -> str:
    """The user name a service account authenticates as (``system:serviceaccount:<ns>:<name>``)."""
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def applies_to(subject: Mapping[str, Any], user: User, binding_namespace: str) -> bool:
    """``appliesToUser``: a subject names the user, one of its groups, or its service account
    (whose namespace defaults to the binding's)."""
    kind = subject.get("kind")
    name = subject.get("name", "")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and user.name == service_account_user(namespace, name)
    return False


def describe_subject(subject: Mapping[str, Any], binding_namespace: str) -> str:
    name = subject.get("name", "")
    if subject.get("kind") == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return f'ServiceAccount "{namespace}/{name}"'
    return f'{subject.get("kind")} "{name}"'


# --------------------------------------------------------------------------------------------
# The policy: roles and bindings, with aggregation resolved
# --------------------------------------------------------------------------------------------


def _name(manifest: Mapping[str, Any]) -> str:
    return str((manifest.get("metadata") or {}).get("name") or "")


def _namespace(manifest: Mapping[str, Any]) -> str:
    return str((manifest.get("metadata") or {}).get("namespace") or "")


def _labels(manifest: Mapping[str, Any]) -> Mapping[str, str]:
    return (manifest.get("metadata") or {}).get("labels") or {}


def aggregate_cluster_roles(
    cluster_roles: Iterable[Mapping[str, Any]],
) -> dict[str, tuple[Mapping[str, Any], ...]]:
    """ClusterRole name -> its effective rules.

    A role with an ``aggregationRule`` gets the rules of every *other* cluster role any of its
    selectors matches, in name order, without duplicates, as the aggregation controller
    computes them (its own ``rules`` are replaced, not kept). Aggregation is one level deep in
    the controller too; chains (admin ⊇ edit ⊇ view) work because the ``aggregate-to-*`` roles
    carry the labels of every level above them.
    """
    by_name = {_name(role): role for role in cluster_roles}
    effective: dict[str, tuple[Mapping[str, Any], ...]] = {}
    for name, role in by_name.items():
        aggregation = role.get("aggregationRule")
        if aggregation is None:
            effective[name] = tuple(role.get("rules") or ())
            continue
        selectors = [
            Selector.from_manifest(raw) for raw in aggregation.get("clusterRoleSelectors") or ()
        ]
        rules: list[Mapping[str, Any]] = []
        for other_name in sorted(by_name):
            other = by_name[other_name]
            if other_name == name or not any(s.matches(_labels(other)) for s in selectors):
                continue
            for rule in other.get("rules") or ():
                if rule not in rules:
                    rules.append(rule)
        effective[name] = tuple(rules)
    return effective


@dataclass(frozen=True, slots=True)
class _Grant:
    """A binding's subject list and the rules its role gives them, ready to visit."""

    source: str
    """``ClusterRoleBinding "x" of ClusterRole "y"`` (the subject is added when it matches)."""
    namespace: str
    subjects: tuple[Mapping[str, Any], ...]
    rules: tuple[Mapping[str, Any], ...]


DECISIONS_KEPT: Final = 8192


@dataclass(slots=True)
class Policy:
    """Every role and binding of the cluster, indexed for :meth:`authorize`.

    Built from manifests by :meth:`build`; a binding whose role does not exist grants nothing
    (kube: the binding stays, its rules resolve to none until the role appears).
    """

    cluster_grants: list[_Grant] = field(default_factory=list)
    namespace_grants: dict[str, list[_Grant]] = field(default_factory=dict)
    cluster_role_rules: dict[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    """Each ClusterRole's effective rules (aggregation resolved), by name."""
    role_rules: dict[tuple[str, str], tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    """Each Role's rules, by (namespace, name)."""
    _decided: dict[tuple[User, Request], Decision] = field(default_factory=dict, repr=False)
    """Decisions already taken: a policy is never changed once built (a new one replaces it),
    so a caller's next command of the same shape is answered without walking its roles' rules
    again (``edit`` alone holds dozens). Bounded by :data:`DECISIONS_KEPT`."""
    _allowed_any_name: dict[tuple[object, ...], Decision] = field(default_factory=dict, repr=False)
    """Allows that no rule naming ``resourceNames`` took part in, by the request without its
    object's name: the same allow for every object of that shape (a user creating pod after
    pod is answered without walking the rules again). Bounded by :data:`DECISIONS_KEPT`."""

    @classmethod
    def build(
        cls,
        *,
        roles: Iterable[Mapping[str, Any]] = (),
        cluster_roles: Iterable[Mapping[str, Any]] = (),
        role_bindings: Iterable[Mapping[str, Any]] = (),
        cluster_role_bindings: Iterable[Mapping[str, Any]] = (),
    ) -> Policy:
        cluster_rules = aggregate_cluster_roles(cluster_roles)
        role_rules = {
            (_namespace(role), _name(role)): tuple(role.get("rules") or ()) for role in roles
        }
        policy = cls(cluster_role_rules=cluster_rules, role_rules=role_rules)
        for binding in sorted(cluster_role_bindings, key=_name):
            ref = binding.get("roleRef") or {}
            if ref.get("kind") != "ClusterRole":
                continue  # validation refuses it; a stored one grants nothing
            policy.cluster_grants.append(
                _Grant(
                    source=f'ClusterRoleBinding "{_name(binding)}" of ClusterRole '
                    f'"{ref.get("name", "")}"',
                    namespace="",
                    subjects=tuple(binding.get("subjects") or ()),
                    rules=cluster_rules.get(ref.get("name", ""), ()),
                )
            )
        for binding in sorted(role_bindings, key=lambda b: (_namespace(b), _name(b))):
            ref = binding.get("roleRef") or {}
            namespace = _namespace(binding)
            if ref.get("kind") == "ClusterRole":
                rules = cluster_rules.get(ref.get("name", ""), ())
            elif ref.get("kind") == "Role":
                rules = role_rules.get((namespace, ref.get("name", "")), ())
            else:
                continue
            policy.namespace_grants.setdefault(namespace, []).append(
                _Grant(
                    source=f'RoleBinding "{_name(binding)}/{namespace}" of {ref.get("kind")} '
                    f'"{ref.get("name", "")}"',
                    namespace=namespace,
                    subjects=tuple(binding.get("subjects") or ()),
                    rules=rules,
                )
            )
        return policy

    def _grants_for(self, namespace: str) -> Iterator[_Grant]:
        yield from self.cluster_grants
        if namespace:
            yield from self.namespace_grants.get(namespace, ())

    def authorize(self, user: User, request: Request) -> Decision:
        """kube's RBAC authorizer: allowed by the first rule that allows, else denied."""
        key = (user, request)
        decided = self._decided.get(key)
        if decided is not None:
            return decided
        shape = (user, request.verb, request.api_group, request.resource, request.subresource,
                 request.namespace, request.path)  # fmt: skip
        decided = self._allowed_any_name.get(shape)
        if decided is not None:
            return decided
        decided, by_name = self._authorize(user, request)
        if len(self._decided) >= DECISIONS_KEPT:
            self._decided.clear()
        self._decided[key] = decided
        if decided.allowed and not by_name:
            if len(self._allowed_any_name) >= DECISIONS_KEPT:
                self._allowed_any_name.clear()
            self._allowed_any_name[shape] = decided
        return decided

    def _authorize(self, user: User, request: Request) -> tuple[Decision, bool]:
        """The decision, and whether a rule naming ``resourceNames`` took part in it (only
        then may another object's name be decided otherwise)."""
        by_name = False
        for grant in self._grants_for(request.namespace):
            subject = next(
                (s for s in grant.subjects if applies_to(s, user, grant.namespace)), None
            )
            if subject is None:
                continue
            for rule in grant.rules:
                by_name = by_name or bool(rule.get("resourceNames"))
                if rule_allows(rule, request):
                    who = describe_subject(subject, grant.namespace)
                    return Decision(True, f"RBAC: allowed by {grant.source} to {who}"), by_name
        return Decision(False, forbidden_message(user, request)), by_name

    def role_reference_rules(
        self, role_ref: Mapping[str, Any], namespace: str
    ) -> tuple[Mapping[str, Any], ...] | None:
        """``GetRoleReferenceRules``: the rules a binding in ``namespace`` ('' for a
        ClusterRoleBinding) grants through ``role_ref`` (None: no such role)."""
        name = str(role_ref.get("name") or "")
        if role_ref.get("kind") == "ClusterRole":
            return self.cluster_role_rules.get(name)
        if role_ref.get("kind") == "Role" and namespace:
            return self.role_rules.get((namespace, name))
        return None

    def rules_for(self, user: User, namespace: str) -> list[Mapping[str, Any]]:
        """Every rule that applies to ``user`` in ``namespace`` (``auth can-i --list``)."""
        rules: list[Mapping[str, Any]] = []
        for grant in self._grants_for(namespace):
            if any(applies_to(s, user, grant.namespace) for s in grant.subjects):
                rules.extend(r for r in grant.rules if r not in rules)
        return rules


# --------------------------------------------------------------------------------------------
# The words of a denial (``apiserver/pkg/endpoints/handlers/responsewriters``)
# --------------------------------------------------------------------------------------------


def forbidden_message(user: User, request: Request) -> str:
    """Why ``request`` is refused, as kube-apiserver words it."""
    if not request.is_resource_request:
        return f'User "{user.name}" cannot {request.verb} path "{request.path}"'
    where = (
        f'in the namespace "{request.namespace}"' if request.namespace else "at the cluster scope"
    )
    return (
        f'User "{user.name}" cannot {request.verb} resource "{request.combined_resource}" '
        f'in API group "{request.api_group}" {where}'
    )


def forbidden_status_message(
    user: User, request: Request, *, qualified_resource: str, reason: str = ""
) -> str:
    """The message of the Forbidden ``Status``: ``pods "x" is forbidden: User "a" cannot …``
    (``qualified_resource`` is ``pods`` or ``deployments.apps``)."""
    target = f'{qualified_resource} "{request.name}"' if request.name else qualified_resource
    message = f"{target} is forbidden: {forbidden_message(user, request)}"
    return f"{message}: {reason}" if reason else message
