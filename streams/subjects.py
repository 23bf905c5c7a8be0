"""The subject scheme, and the one reversible function that turns names into subject tokens.

Every aggregate has its own subject, ``fleet.evt.<kind>.<namespace>.<name>``; commands travel on
``fleet.cmd.<kind>.<verb>``. Kubernetes names may contain ``.`` and other characters that a NATS
subject token may not (``.``, ``*``, ``>``, whitespace), and a hostile caller can send anything,
so names are encoded into tokens by :func:`encode_token` and recovered by :func:`decode_token`.

The encoding keeps ``[A-Za-z0-9-]`` as it is (so ordinary names stay readable in ``nats`` tools)
and writes every other UTF-8 byte as ``_`` followed by two upper-case hex digits. The empty
string becomes a lone ``_``, which no escape sequence can produce, so cluster-scoped objects (no
namespace) use ``_`` as their namespace token and decoding stays unambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from core.errors import ValidationFailed

EVENT_PREFIX = "fleet.evt"
COMMAND_PREFIX = "fleet.cmd"
QUERY_PREFIX = "fleet.qry"
POD_CONFIG_SUBJECT = f"{QUERY_PREFIX}.podconfig"
"""Where a node agent asks for a pod's ConfigMap and Secret values (``projections.podconfig``):
a query only nodes may send (``streams.natsauth``)."""
WATCH_PREFIX = "fleet.watch"
"""Core NATS subjects a read model publishes changes on (``fleet.watch.endpoints.…``)."""
ALL_EVENTS = f"{EVENT_PREFIX}.>"
ALL_COMMANDS = f"{COMMAND_PREFIX}.>"

EMPTY_TOKEN = "_"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_ESCAPE = re.compile(r"_([0-9A-F]{2})")
_PLAIN = re.compile(r"[A-Za-z0-9-]+")
_VALID_TOKEN = re.compile(r"(?:[A-Za-z0-9-]|_[0-9A-F]{2})+")


def encode_token(name: str) -> str:
    """Encode any string as one valid, reversible subject token."""
    if name == "":
        return EMPTY_TOKEN
    if _PLAIN.fullmatch(name):
        return name
    return "".join(chr(b) if b in _SAFE else f"_{b:02X}" for b in name.encode("utf-8"))


def decode_token(token: str) -> str:
    """Invert :func:`encode_token`; reject anything it could not have produced."""
    if token == EMPTY_TOKEN:
        return ""
    if not _VALID_TOKEN.fullmatch(token):
        raise ValidationFailed(f"{token!r} is not an encoded subject token")
    if "_" not in token:
        return token
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(token):
        raw += token[pos : match.start()].encode()
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += token[pos:].encode()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"{token!r} does not decode to UTF-8 text") from exc


@dataclass(frozen=True)
class AggregateRef:
    """Which aggregate an event belongs to: its kind, namespace ("" if cluster-scoped), name."""

    kind: str
    namespace: str
    name: str

    @cached_property
    def subject(self) -> str:
        return event_subject(self.kind, self.namespace, self.name)

    @property
    def id(self) -> str:
        """The aggregate id used by the domain model (``Pod/default/web``)."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    def __str__(self) -> str:
        scope = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.lower()}/{scope}{self.name}"


def event_subject(kind: str, namespace: str, name: str) -> str:
    """The subject of one aggregate's events."""
    return f"{EVENT_PREFIX}.{kind.lower()}.{encode_token(namespace)}.{encode_token(name)}"


def event_filter(
    kind: str | None = None, namespace: str | None = None, name: str | None = None
) -> str:
    """A subject filter over events; ``None`` leaves a position open."""
    parts = [
        kind.lower() if kind else "*",
        "*" if namespace is None else encode_token(namespace),
        "*" if name is None else encode_token(name),
    ]
    if parts == ["*", "*", "*"]:
        return ALL_EVENTS
    return f"{EVENT_PREFIX}.{'.'.join(parts)}"


def parse_event_subject(subject: str) -> tuple[str, str, str]:
    """(kind in lower case, namespace, name) of an event subject."""
    parts = subject.split(".")
    if len(parts) != 5 or f"{parts[0]}.{parts[1]}" != EVENT_PREFIX:
        raise ValidationFailed(f"{subject!r} is not an event subject")
    return parts[2], decode_token(parts[3]), decode_token(parts[4])


def command_subject(kind: str, verb: str) -> str:
    """The subject a command for ``kind`` with ``verb`` is sent on."""
    return f"{COMMAND_PREFIX}.{encode_token(kind.lower())}.{encode_token(verb.lower())}"


def parse_command_subject(subject: str) -> tuple[str, str]:
    """(kind in lower case, verb) of a command subject."""
    parts = subject.split(".")
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != COMMAND_PREFIX:
        raise ValidationFailed(
            f"{subject!r} is not a command subject: use {COMMAND_PREFIX}.<kind>.<verb>"
        )
    return decode_token(parts[2]), decode_token(parts[3])
