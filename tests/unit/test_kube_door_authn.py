"""The Kubernetes door's authentication and request attributes (``core.kubeapi.authn``): x509
subjects and bearer tokens map onto the log's users as kube-apiserver's authenticators do, and
HTTP requests onto the RBAC requests kube's RequestInfo makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.access import bootstrap, rbac
from core.access.users import token_hash
from core.kubeapi.authn import (
    ANONYMOUS,
    Refused,
    bearer_token,
    door_authorizes,
    from_certificate,
    from_token,
    request_attributes,
)
from core.kubeapi.paths import parse_resource_path

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def user(name: str, *, token: str = "", revoked: bool = False, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"publicKey": "U", "groups": ["team"], "revoked": revoked, **spec}
    if token:
        body["tokenHash"] = token_hash(token)
    return {"kind": "User", "metadata": {"name": name}, "spec": body}


def subject(cn: str, *orgs: str) -> list[list[tuple[str, str]]]:
    return [[("organizationName", o)] for o in orgs] + [[("commonName", cn)]]


def test_a_certificate_names_the_user_and_its_groups_plus_authenticated() -> None:
    found = from_certificate(subject("alice", "dev", "ops"), [])
    assert found == rbac.User("alice", ("dev", "ops", bootstrap.AUTHENTICATED))


def test_a_certificate_of_a_revoked_user_is_refused() -> None:
    assert isinstance(from_certificate(subject("alice"), [user("alice", revoked=True)]), Refused)
    assert isinstance(from_certificate(subject("alice"), [user("alice")]), rbac.User)
    assert isinstance(from_certificate([[("organizationName", "x")]], []), Refused)


def test_a_token_is_its_users_and_only_while_unrevoked_and_unexpired() -> None:
    users = [user("bob", token="t0k3n"), user("eve", token="old", revoked=True)]
    assert from_token("t0k3n", users, now=NOW) == rbac.User(
        "bob", ("team", bootstrap.AUTHENTICATED)
    )
    assert isinstance(from_token("nope", users, now=NOW), Refused)
    assert isinstance(from_token("old", users, now=NOW), Refused)
    assert isinstance(from_token("", users, now=NOW), Refused)
    later = (NOW + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    earlier = (NOW - timedelta(seconds=1)).isoformat()
    assert isinstance(
        from_token("t", [user("c", token="t", tokenExpiresAt=later)], now=NOW), rbac.User
    )
    expired = from_token("t", [user("c", token="t", tokenExpiresAt=earlier)], now=NOW)
    assert isinstance(expired, Refused) and "expired" in expired.why


@pytest.mark.parametrize(
    ("header", "token"),
    [(None, None), ("Basic abc", None), ("Bearer abc", "abc"), ("bearer  abc ", "abc"),
     ("Bearer", "")],
)  # fmt: skip
def test_bearer_tokens_are_read_as_kube_reads_them(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_anonymous_is_unauthenticated_and_may_read_only_public_info() -> None:
    policy = rbac.Policy.build(
        cluster_roles=bootstrap.CLUSTER_ROLES,
        cluster_role_bindings=bootstrap.CLUSTER_ROLE_BINDINGS,
    )
    assert policy.authorize(ANONYMOUS, rbac.Request(verb="get", path="/version")).allowed
    assert not policy.authorize(ANONYMOUS, rbac.Request(verb="get", path="/api")).allowed


@pytest.mark.parametrize(
    ("method", "url", "watch", "expected"),
    [
        ("GET", "namespaces/a/pods", False, ("list", "pods", "a", "", "")),
        ("GET", "pods", False, ("list", "pods", "", "", "")),
        ("GET", "namespaces/a/pods", True, ("watch", "pods", "a", "", "")),
        ("GET", "namespaces/a/pods/p", False, ("get", "pods", "a", "p", "")),
        ("GET", "namespaces/a/pods/p/log", False, ("get", "pods", "a", "p", "log")),
        ("GET", "namespaces/a/pods/p/exec", False, ("create", "pods", "a", "p", "exec")),
        ("POST", "namespaces/a/pods/p/portforward", False,
         ("create", "pods", "a", "p", "portforward")),
        ("POST", "namespaces/a/pods", False, ("create", "pods", "a", "", "")),
        ("PUT", "namespaces/a/pods/p", False, ("update", "pods", "a", "p", "")),
        ("PATCH", "namespaces/a/pods/p", False, ("patch", "pods", "a", "p", "")),
        ("DELETE", "namespaces/a/pods/p", False, ("delete", "pods", "a", "p", "")),
        ("DELETE", "namespaces/a/pods", False, ("deletecollection", "pods", "a", "", "")),
        ("GET", "nodes/n", False, ("get", "nodes", "", "n", "")),
    ],
)  # fmt: skip
def test_requests_map_to_kubes_request_attributes(
    method: str, url: str, watch: bool, expected: tuple[str, str, str, str, str]
) -> None:
    found = request_attributes(method, parse_resource_path("", "v1", url.split("/")), watch=watch)
    assert (found.verb, found.resource, found.namespace, found.name, found.subresource) == expected


def test_the_door_authorizes_reads_and_connects_and_leaves_commands_to_the_gateway() -> None:
    assert door_authorizes(rbac.Request(verb="list", resource="pods"))
    assert door_authorizes(rbac.Request(verb="create", resource="pods", subresource="exec"))
    assert door_authorizes(rbac.Request(verb="deletecollection", resource="pods"))
    assert not door_authorizes(rbac.Request(verb="create", resource="pods"))
    assert not door_authorizes(
        rbac.Request(verb="update", resource="deployments", subresource="scale")
    )
