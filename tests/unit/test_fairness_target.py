"""API Priority and Fairness classifies a command before its manifest is parsed
(``handlers.gateway.fairness.target_of``): for every command ``resolve_target`` accepts, the
request read from the raw body is the one the parsed target gives; a malformed body still gets
a request (it is refused afterwards by ``resolve_target``, with the same error as before)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.access.rbac import Request
from core.api.catalog import KINDS
from core.kubeapi.resources import BY_KIND
from handlers.gateway.admission import resolve_target
from handlers.gateway.context import CommandContext
from handlers.gateway.fairness import KUBE_VERBS, SUBRESOURCES, request_of, target_of
from handlers.gateway.intake import route
from streams.subjects import command_subject

MISSING = object()
"""A field left out of the generated document."""


def routed(kind: str, verb: str, body: dict[str, Any]) -> CommandContext:
    raw = {"id": "cmd-00000001", "actor": "user:alice", "body": body}
    ctx = CommandContext(subject=command_subject(kind, verb), data=b"", received_ns=0, raw=raw)
    asyncio.run(route(ctx))
    return ctx


def request_from_ref(ctx: CommandContext) -> Request:
    """The request as the gateway classified it before, from the target ``resolve_target``
    set (the reference the new classification must equal)."""
    resource = BY_KIND.get(ctx.kind)
    assert ctx.ref is not None
    return Request(
        verb=KUBE_VERBS.get(ctx.verb, ctx.verb),
        resource=resource.plural if resource is not None else ctx.kind.lower() + "s",
        api_group=resource.group if resource is not None else "",
        namespace=ctx.ref.namespace,
        name=ctx.ref.name,
        subresource=SUBRESOURCES.get(ctx.verb, ""),
    )


def resolved(ctx: CommandContext) -> Exception | None:
    """Run ``resolve_target`` on ``ctx``: None when it accepts the command, else its error."""
    try:
        asyncio.run(resolve_target(ctx))
    except Exception as exc:  # a refusal, whatever its type: compared, never hidden
        return exc
    return None


def manifest_of(kind: str, meta: object, manifest_kind: str | None = None) -> dict[str, Any]:
    """A manifest of ``kind`` valid apart from its metadata (for the kinds below)."""
    doc: dict[str, Any] = {"apiVersion": KINDS[kind].api_version, "kind": manifest_kind or kind}
    if meta is not MISSING:
        doc["metadata"] = meta
    if kind == "Pod":
        doc["spec"] = {"containers": [{"name": "main", "image": "nginx:1.27"}]}
    elif kind == "ConfigMap":
        doc["data"] = {"a": "b"}
    return doc


# Kinds whose manifest is valid with metadata alone (or the spec ``manifest_of`` gives):
# namespaced and cluster-scoped.
VALID_KINDS = ("Pod", "ConfigMap", "Secret", "Namespace", "ClusterRole", "Role")
NAMES = st.sampled_from(["web", "a.b-c", "", "Bad_Name", 5, None, MISSING, "x" * 300])
NAMESPACES = st.sampled_from(["shop", "default", "kube-system", "", None, MISSING, 7, "Bad_NS"])


def metadata(name: object, namespace: object) -> dict[str, Any]:
    return {k: v for k, v in (("name", name), ("namespace", namespace)) if v is not MISSING}


def check(ctx: CommandContext) -> bool:
    """The request read before the parse; when ``resolve_target`` accepts the command, it
    equals the one from the parsed target. Returns whether it was accepted."""
    early = request_of(ctx)
    if resolved(ctx) is not None:
        return False
    assert early == request_from_ref(ctx)
    assert target_of(ctx) == (ctx.ref.namespace, ctx.ref.name)  # type: ignore[union-attr]
    return True


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(VALID_KINDS),
    verb=st.sampled_from(["create", "apply"]),
    name=NAMES,
    namespace=NAMESPACES,
    shape=st.sampled_from(["meta", "meta", "meta", "no-meta", "list-meta", "other-kind"]),
)
def test_a_manifests_request_read_raw_is_the_parsed_ones(
    kind: str, verb: str, name: object, namespace: object, shape: str
) -> None:
    meta: object = metadata(name, namespace)
    if shape == "no-meta":
        meta = MISSING
    elif shape == "list-meta":
        meta = [meta]
    other = "ConfigMap" if kind != "ConfigMap" else "Secret"
    ctx = routed(
        kind, verb, {"manifest": manifest_of(kind, meta, other if shape == "other-kind" else None)}
    )
    check(ctx)


@pytest.mark.parametrize(
    ("kind", "meta", "expected"),
    [
        ("Pod", {"name": "web", "namespace": "shop"}, ("shop", "web")),
        ("Pod", {"name": "web"}, ("default", "web")),
        ("Pod", {"name": "web", "namespace": ""}, ("default", "web")),
        ("ConfigMap", {"name": "cfg", "namespace": "kube-system"}, ("kube-system", "cfg")),
        ("Namespace", {"name": "shop"}, ("", "shop")),
        ("Namespace", {"name": "shop", "namespace": ""}, ("", "shop")),
        ("ClusterRole", {"name": "reader"}, ("", "reader")),
    ],
)
def test_valid_manifests_are_classified_as_their_parsed_target(
    kind: str, meta: dict[str, Any], expected: tuple[str, str]
) -> None:
    ctx = routed(kind, "apply", {"manifest": manifest_of(kind, meta)})
    assert target_of(ctx) == expected
    assert check(ctx), "resolve_target refused a valid manifest"


@pytest.mark.parametrize(
    "manifest",
    [
        manifest_of("Pod", MISSING),
        manifest_of("Pod", ["web"]),
        manifest_of("Pod", {"name": 5, "namespace": 7}),
        manifest_of("Pod", {"name": "web", "namespace": "Bad_NS"}),
        manifest_of("Namespace", {"name": "shop", "namespace": "shop"}),
        manifest_of("Pod", {"name": "web"}, manifest_kind="ConfigMap"),
        {"kind": "Pod"},
        {},
    ],
)
def test_a_malformed_manifest_gets_a_request_and_the_same_refusal(manifest: dict[str, Any]) -> None:
    ctx = routed("Pod" if manifest.get("kind") != "Namespace" else "Namespace", "create",
                 {"manifest": manifest})  # fmt: skip
    request_of(ctx)  # classifying it does not fail
    fresh = routed(ctx.kind, "create", {"manifest": manifest})
    refusal, again = resolved(fresh), resolved(ctx)
    assert refusal is not None and again is not None
    assert (type(again), str(again)) == (type(refusal), str(refusal))


BODY_VERBS = {
    "delete": ("Pod", "ConfigMap", "Namespace", "Node", "ClusterRole"),
    "scale": ("Deployment", "ReplicaSet", "StatefulSet", "Pod"),
    "cordon": ("Node", "Pod"),
    "uncordon": ("Node",),
    "evict": ("Pod", "ConfigMap"),
    "status": ("Pod", "Node", "Deployment", "ConfigMap"),
}


@settings(max_examples=300, deadline=None)
@given(
    verb_kind=st.sampled_from([(v, k) for v, kinds in BODY_VERBS.items() for k in kinds]),
    name=st.sampled_from(["web", "n1", "Bad_Name", "a.b"]),
    namespace=st.sampled_from(["shop", "default", "", "Bad_NS", MISSING]),
)
def test_a_commands_named_object_is_its_target(
    verb_kind: tuple[str, str], name: str, namespace: object
) -> None:
    verb, kind = verb_kind
    body: dict[str, Any] = {"name": name}
    if namespace is not MISSING and verb not in ("cordon", "uncordon"):
        body["namespace"] = namespace
    if verb == "scale":
        body["replicas"] = 3
    try:
        ctx = routed(kind, verb, body)
    except Exception:  # the body itself is refused by route, before APF, as before
        return
    check(ctx)


def test_the_generated_commands_are_mostly_accepted() -> None:
    """The comparisons above are not vacuous: the valid shapes resolve."""
    accepted = sum(
        check(
            routed(kind, "apply", {"manifest": manifest_of(kind, {"name": "x", "namespace": ns})})
        )
        for kind in VALID_KINDS
        for ns in ("shop", "")
    )
    assert accepted >= 8
