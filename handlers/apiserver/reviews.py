"""``kubectl auth whoami`` and ``kubectl auth can-i``: kube's SelfSubjectReview
(``authentication.k8s.io/v1``) and SelfSubjectAccessReview (``authorization.k8s.io/v1``),
answered by the door from the caller it authenticated and the RBAC policy it authorizes with.

Why this exists: a person holding a kubeconfig asks the cluster who it takes them for and what
it would let them do; the answer must be the door's own (its authentication, the gateway's
policy), so it is what the next request will meet. The NATS door answers the same questions
(``fleetlog auth whoami|can-i``, ``handlers/gateway/reviews.py``). Both reviews are served to
every authenticated caller, as kube's built-in ``system:basic-user`` grants; answers are
``201 Created`` with the review's status filled in, nothing is stored or audited.

kubectl sends these as protobuf (``application/vnd.kubernetes.protobuf``), which the rest of
the door does not speak: a SelfSubjectReview's body says nothing (it is not read), and the
fields of a SelfSubjectAccessReview's spec are read with protobuf's own wire decoder (kube's
``runtime.Unknown`` envelope, then ``authorization/v1`` ``generated.proto``'s field numbers).
The answer is JSON, which kube's clients decode whatever they sent.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from core.access import rbac
from core.kubeapi.status import MAX_BODY_BYTES, bad_request, method_not_allowed
from handlers.apiserver.http import read_json, respond
from handlers.apiserver.identity import DoorAccess, Identity

AUTHENTICATION: Final = "authentication.k8s.io"
AUTHORIZATION: Final = "authorization.k8s.io"
PROTOBUF: Final = "application/vnd.kubernetes.protobuf"
PROTOBUF_MAGIC: Final = b"k8s\x00"
_REVIEWS: Final = {
    ("apis", AUTHENTICATION, "v1", "selfsubjectreviews"): (AUTHENTICATION, "SelfSubjectReview"),
    ("apis", AUTHORIZATION, "v1", "selfsubjectaccessreviews"): (
        AUTHORIZATION,
        "SelfSubjectAccessReview",
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
    if (request.headers.get("Content-Type") or "").startswith(PROTOBUF):
        spec = _protobuf_spec(await request.content.read(MAX_BODY_BYTES))
    else:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request(f"a {kind} must be a JSON object")
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    asked = _asked(spec)
    decision = await doors.authorize(identity, asked)
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.allowed:
        status["reason"] = decision.reason
    answer["spec"] = spec
    answer["status"] = status
    return respond(answer, status=201)


def _fields(data: bytes) -> dict[int, bytes]:
    """A protobuf message's length-delimited fields by number (the last of each wins)."""
    message = empty_pb2.Empty()
    try:
        message.ParseFromString(data)
    except DecodeError:
        raise bad_request("the body of the request could not be decoded as protobuf") from None
    return {
        f.field_number: f.data
        for f in UnknownFieldSet(message)
        if f.wire_type == 2 and isinstance(f.data, bytes)
    }


_RESOURCE_FIELDS: Final = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource",
                           6: "subresource", 7: "name"}  # fmt: skip
_NON_RESOURCE_FIELDS: Final = {1: "path", 2: "verb"}


def _protobuf_spec(data: bytes) -> dict[str, Any]:
    """A protobuf SelfSubjectAccessReview's spec as its JSON form."""
    if not data.startswith(PROTOBUF_MAGIC):
        raise bad_request("a protobuf body must start with kube's k8s\\0 prefix")
    review = _fields(_fields(data[len(PROTOBUF_MAGIC) :]).get(2, b""))  # Unknown.raw
    spec = _fields(review.get(2, b""))  # SelfSubjectAccessReview.spec
    answer: dict[str, Any] = {}
    for number, key, names in (
        (1, "resourceAttributes", _RESOURCE_FIELDS),
        (2, "nonResourceAttributes", _NON_RESOURCE_FIELDS),
    ):
        if number in spec:
            found = _fields(spec[number])
            answer[key] = {names[n]: v.decode() for n, v in found.items() if n in names}
    return answer


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
