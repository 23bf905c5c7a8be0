"""``kubectl auth whoami`` and ``kubectl auth can-i``: kube's SelfSubjectReview
(``authentication.k8s.io/v1``) and SelfSubjectAccessReview (``authorization.k8s.io/v1``),
answered by the door from the caller it authenticated and the RBAC policy it authorizes with.

Why this exists: a person holding a kubeconfig asks the cluster who it takes them for and what
it would let them do; the answer must be the door's own (its authentication, the gateway's
policy), so it is what the next request will meet. The NATS door answers the same questions
(``fleetlog auth whoami|can-i``, ``handlers/gateway/reviews.py``). Both reviews are served to
every authenticated caller, as kube's built-in ``system:basic-user`` grants; answers are
``201 Created`` with the review's status filled in, nothing is stored or audited.

kubectl sends these as protobuf; ``http.read_json`` reads that as its JSON (a
SelfSubjectReview's body says nothing and is not read). The answer is JSON, which kube's
clients decode whatever they sent.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from core.access import rbac
from core.kubeapi.status import bad_request, method_not_allowed
from handlers.apiserver.http import read_json, respond
from handlers.apiserver.identity import DoorAccess, Identity

AUTHENTICATION: Final = "authentication.k8s.io"
AUTHORIZATION: Final = "authorization.k8s.io"
_REVIEWS: Final = {
    ("apis", AUTHENTICATION, "v1", "selfsubjectreviews"): (AUTHENTICATION, "SelfSubjectReview"),
    ("apis", AUTHORIZATION, "v1", "selfsubjectaccessreviews"): (
        AUTHORIZATION,
        "SelfSubjectAccessReview",
    ),
    ("apis", AUTHORIZATION, "v1", "selfsubjectrulesreviews"): (
        AUTHORIZATION,
        "SelfSubjectRulesReview",
    ),
}


def is_review(segments: list[str]) -> bool:
    return tuple(segments) in _REVIEWS


def review_of(method: str, segments: list[str]) -> rbac.Request | None:
    """The request a review URL makes (``create selfsubjectreviews``), None for any other."""
    if not is_review(segments):
        return None
    verb = "create" if method == "POST" else method.lower()
    return rbac.Request(verb=verb, resource=segments[3], api_group=segments[1])


async def serve(request: web.Request, identity: Identity, doors: DoorAccess) -> web.Response:
    segments = [s for s in request.path.split("/") if s]
    group, kind = _REVIEWS[tuple(segments)]
    if request.method != "POST":
        raise method_not_allowed()
    answer: dict[str, Any] = {
        "kind": kind,
        "apiVersion": f"{group}/v1",
        "metadata": {"creationTimestamp": None},
    }
    if kind == "SelfSubjectReview":
        user_info = {"username": identity.user, "groups": list(identity.groups)}
        answer["status"] = {"userInfo": user_info}
        return respond(answer, status=201)
    body = await read_json(request)  # JSON, or kubectl's protobuf read as its JSON
    if not isinstance(body, dict):
        raise bad_request(f"a {kind} must be an object")
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    if kind == "SelfSubjectRulesReview":
        answer["spec"] = spec
        answer["status"] = _rules_status(
            await doors.rules(identity, str(spec.get("namespace") or ""))
        )
        return respond(answer, status=201)
    asked = _asked(spec)
    decision = await doors.authorize(identity, asked)
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.allowed:
        status["reason"] = decision.reason
    answer["spec"] = spec
    answer["status"] = status
    return respond(answer, status=201)


def _rules_status(rules: list[Any]) -> dict[str, Any]:
    """A SelfSubjectRulesReview's status: each rule as a resource rule, a non-resource rule or
    both (kube's ``ConvertToResourceRules`` / ``ConvertToNonResourceRules``); RBAC is the only
    authorizer, so the list is complete."""
    resource_rules: list[dict[str, Any]] = []
    non_resource_rules: list[dict[str, Any]] = []
    for rule in rules:
        verbs = list(rule.get("verbs") or [])
        if rule.get("resources"):
            entry: dict[str, Any] = {"verbs": verbs, "apiGroups": list(rule.get("apiGroups") or []),
                                     "resources": list(rule["resources"])}  # fmt: skip
            if rule.get("resourceNames"):
                entry["resourceNames"] = list(rule["resourceNames"])
            resource_rules.append(entry)
        if rule.get("nonResourceURLs"):
            non_resource_rules.append(
                {"verbs": verbs, "nonResourceURLs": list(rule["nonResourceURLs"])}
            )
    return {
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": False,
    }


def _asked(spec: dict[str, Any]) -> rbac.Request:
    """The request a SelfSubjectAccessReview's spec describes (resource or non-resource)."""
    resource = spec.get("resourceAttributes")
    if isinstance(resource, dict):
        return rbac.Request(
            verb=str(resource.get("verb") or ""),
            resource=str(resource.get("resource") or ""),
            api_group=str(resource.get("group") or ""),
            namespace=str(resource.get("namespace") or ""),
            name=str(resource.get("name") or ""),
            subresource=str(resource.get("subresource") or ""),
        )
    other = spec.get("nonResourceAttributes")
    if isinstance(other, dict) and other.get("path"):
        return rbac.Request(verb=str(other.get("verb") or ""), path=str(other["path"]))
    raise bad_request(
        "spec.resourceAttributes or spec.nonResourceAttributes is required: exactly one of "
        "them must be given"
    )
