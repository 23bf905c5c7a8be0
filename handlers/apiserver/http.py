"""What every request of the Kubernetes API shares: answers in JSON, refusals as ``Status``
objects, content negotiation (JSON or a server-side Table), bodies read within kube's limit.

Why this exists: each verb's handler should read as "parse, decide, answer"; the rules about
media types, body limits and error shapes are Kubernetes' and the same for every resource.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterable
from typing import Any, Literal

import yaml
from aiohttp import web

from core.kubeapi import protobuf
from core.kubeapi.status import (
    MAX_BODY_BYTES,
    APIError,
    bad_request,
    not_acceptable,
    too_large,
    unsupported_media_type,
)

Format = Literal["json", "table"]
JSON = "application/json"
PROTOBUF = protobuf.MEDIA_TYPE
OBJECT_TYPES = (JSON, PROTOBUF)
"""What an object's body may be sent as: JSON, or protobuf (client-go's typed clients, so
``kubectl create …``, send it since 1.32)."""


_WARNINGS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "apiserver_warnings", default=None
)
"""The warnings of the request being served (admission's, for the ``Warning`` headers)."""


def collect_warnings() -> contextvars.Token[list[str] | None]:
    """Start collecting the warnings of the request this task serves."""
    return _WARNINGS.set([])


def warn(warnings: Iterable[str]) -> None:
    """Warnings for the client of the request being served (none is being served: dropped)."""
    collected = _WARNINGS.get()
    if collected is not None:
        collected.extend(warnings)


def add_warning_headers(
    response: web.StreamResponse, token: contextvars.Token[list[str] | None]
) -> None:
    """The request's warnings as kube-apiserver sends them, one ``Warning: 299 - "text"``
    header each (RFC 7234's warn-code 299, no agent), so kubectl prints ``Warning: text``;
    then stop collecting."""
    collected = _WARNINGS.get() or []
    _WARNINGS.reset(token)
    if response.prepared:
        return  # a streamed answer's headers are gone
    for text in dict.fromkeys(collected):
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        response.headers.add("Warning", f'299 - "{quoted}"')


def reset_warnings(token: contextvars.Token[list[str] | None]) -> None:
    """Stop collecting (the request ended without an answer to add them to)."""
    _WARNINGS.reset(token)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def respond(value: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=dumps(value), status=status, content_type=JSON)


def refusal(error: APIError) -> web.Response:
    response = respond(error.status(), status=error.code)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    ranges = []
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            params[key.strip()] = value.strip()
        ranges.append((pieces[0].lower(), params))
    return ranges


def response_format(request: web.Request, *, table_allowed: bool) -> Format:
    """Which answer the client accepts: a ``meta.k8s.io`` Table (``as=Table``) where the
    request can be one, else plain JSON; 406 when it accepts neither (protobuf only, YAML
    only, ``as=PartialObjectMetadata``: not served yet)."""
    accept = request.headers.get("Accept", "")
    ranges = _media_ranges(accept)
    if not ranges:
        return "json"
    for media, params in ranges:
        if media not in (JSON, "application/*", "*/*"):
            continue
        shape = params.get("as")
        if shape is None:
            return "json"
        if (
            shape == "Table"
            and table_allowed
            and params.get("g") == "meta.k8s.io"
            and params.get("v") in ("v1", "v1beta1")
        ):
            return "table"
    raise not_acceptable("application/json, application/json;as=Table;v=v1;g=meta.k8s.io")


async def read_json(
    request: web.Request, *, required: bool = True, media_types: tuple[str, ...] = OBJECT_TYPES
) -> Any:
    """The request's body as JSON values (None when empty and not required), within 3 MiB,
    sent as one of ``media_types`` (a protobuf body is read as the JSON it stands for)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large()
    data = await request.content.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise too_large()
    if not data.strip():
        if required:
            raise bad_request("the request has no body: an object is required")
        return None
    # No Content-Type reads as JSON, as kube-apiserver takes its first serializer.
    media = (request.headers.get("Content-Type") or JSON).split(";")[0].strip().lower()
    if media not in media_types:
        raise unsupported_media_type(media or "(none)", media_types)
    if media == APPLY_YAML:
        return _yaml_document(data)
    if media == PROTOBUF:
        try:
            return protobuf.decode(data)
        except protobuf.UnreadKind as exc:
            raise APIError(415, "UnsupportedMediaType", str(exc)) from None
        except protobuf.NotProtobuf as exc:
            raise bad_request(str(exc)) from None
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"the body of the request could not be decoded as JSON: {exc}") from None


APPLY_YAML = "application/apply-patch+yaml"


def _yaml_document(data: bytes) -> Any:
    """A server-side apply body: YAML (JSON is YAML; kubectl sends JSON). Anchors and aliases
    are refused before anything is built, so a small body cannot expand into a huge object
    (the "billion laughs"); nesting too deep for the parser is a BadRequest, not a crash."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        pass
    try:
        text = data.decode()
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
                raise bad_request("YAML anchors and aliases are not accepted in an apply patch")
        return yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise bad_request(f"error decoding YAML: {reason[:200]}") from None


def flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "") in ("true", "1")
