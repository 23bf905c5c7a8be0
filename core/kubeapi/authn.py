"""Who calls the Kubernetes door, and which request kube's authorizer would see: the pure rules
of kube-apiserver's authentication chain and of its ``RequestInfo``.

Why this exists: the HTTP door must map its callers onto the cluster's identities, RBAC and
audit exactly as the NATS door does (issue 17), in kube's own terms so kubectl's credentials
work unchanged:

* **x509** (``staticcert``): a client certificate the door's CA signed names the user (CN) and
  its groups (every O), as kube-apiserver's x509 authenticator does; a User of the log of the
  same name that is revoked refuses it (revoking a person ends every door, not only NATS).
* **Bearer tokens** (``Authorization: Bearer …``): the token's SHA-256 must be an unrevoked,
  unexpired User's ``spec.tokenHash`` (``core.access.users``); its groups are the User's.
* Every authenticated caller is also in ``system:authenticated``; a caller presenting nothing is
  ``system:anonymous`` in ``system:unauthenticated`` (the door lets it read only what RBAC lets
  that group: ``system:public-info-viewer``'s health and version URLs).

:func:`request_attributes` is kube's ``RequestInfoFactory`` for the paths this door serves: the
HTTP method and URL as an RBAC (and FlowSchema) request. Pure: the door passes the users of the
read model and the time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from core.access.bootstrap import AUTHENTICATED, UNAUTHENTICATED
from core.access.rbac import Request, User
from core.access.users import token_hash
from core.kubeapi.paths import ResourcePath

ANONYMOUS: Final = User("system:anonymous", (UNAUTHENTICATED,))
CONNECT_SUBRESOURCES: Final = frozenset({"exec", "attach", "portforward", "proxy"})
"""kube's "connect" subresources: whatever the HTTP method (a WebSocket upgrade is a GET), the
request is ``create`` on ``pods/exec``… (kube ≥ 1.31 asks ``create`` for WebSocket upgrades too)."""
_METHOD_VERBS: Final = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True, slots=True)
class Refused:
    """Credentials were presented and are not good (kube answers 401 even where an anonymous
    caller would be let in); ``why`` is for the door's log, never the caller."""

    why: str


def authenticated(name: str, groups: Iterable[str]) -> User:
    """``name`` in ``groups`` and ``system:authenticated`` (once, last, as kube adds it)."""
    listed = [g for g in groups if g != AUTHENTICATED]
    return User(name, (*dict.fromkeys(listed), AUTHENTICATED))


def _user_named(users: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((u for u in users if (u.get("metadata") or {}).get("name") == name), None)


def from_certificate(
    subject: Iterable[Iterable[tuple[str, str]]], users: Iterable[Mapping[str, Any]]
) -> User | Refused:
    """kube's x509 authenticator over a verified certificate's subject (``ssl``'s
    ``getpeercert()['subject']``): CN the user, every O a group."""
    name, groups = "", []
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    if not name:
        return Refused("the client certificate has no common name")
    stored = _user_named(users, name)
    if stored is not None and (stored.get("spec") or {}).get("revoked"):
        return Refused(f"user {name!r} is revoked")
    return authenticated(name, groups)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (kube: the scheme is
    case-insensitive, the token must not be empty); None without one, '' when malformed."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def _expired(spec: Mapping[str, Any], now: datetime) -> bool:
    value = spec.get("tokenExpiresAt")
    if not value:
        return False
    try:
        expires = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return True  # unreadable: never honoured
    return now >= expires


def from_token(token: str, users: Iterable[Mapping[str, Any]], *, now: datetime) -> User | Refused:
    """The User whose ``spec.tokenHash`` is the token's (compared in constant time)."""
    if not token:
        return Refused("empty bearer token")
    wanted = token_hash(token)
    for manifest in users:
        spec = manifest.get("spec") or {}
        stored = spec.get("tokenHash")
        if not isinstance(stored, str) or not hmac.compare_digest(stored, wanted):
            continue
        name = str((manifest.get("metadata") or {}).get("name") or "")
        if spec.get("revoked"):
            return Refused(f"user {name!r} is revoked")
        if _expired(spec, now):
            return Refused(f"the token of user {name!r} has expired")
        return authenticated(name, [str(g) for g in spec.get("groups") or ()])
    return Refused("unknown bearer token")


def request_attributes(method: str, path: ResourcePath, *, watch: bool) -> Request:
    """The RBAC request of ``method`` on ``path`` (kube's ``RequestInfo``): GET is ``get``,
    ``list`` or ``watch`` (a list or watch without a namespace is at the cluster scope), DELETE
    of a collection ``deletecollection``, a connect subresource ``create``."""
    resource = path.resource
    subresource = path.subresource or ""
    if subresource in CONNECT_SUBRESOURCES:
        verb = "create"
    elif method in ("GET", "HEAD"):
        verb = "watch" if watch else ("get" if path.name is not None else "list")
    elif method == "DELETE" and path.name is None:
        verb = "deletecollection"
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    return Request(
        verb=verb,
        resource=resource.plural,
        api_group=resource.group,
        namespace=(path.namespace or "") if resource.namespaced else "",
        name=path.name or "",
        subresource=subresource,
    )


def door_authorizes(request: Request) -> bool:
    """Whether the door itself authorizes ``request``: reads, connect subresources and
    ``deletecollection`` (no single command says it); every other write is a command the
    gateway authorizes with the caller's identity."""
    return (
        request.verb in ("get", "list", "watch", "deletecollection")
        or request.subresource in CONNECT_SUBRESOURCES
    )
