"""Two hot paths nats-py makes slow, done faster through its private parts, if it is safe.

**Publishing many messages at once** (:func:`publish_many`). An atomic batch of 256 bindings is
512 messages; ``Client.publish`` checks, encodes its headers through a regular expression and
queues each one on its own (most of a publish's cost, paid 512 times). :func:`publish_many`
encodes the whole batch as nats-py would, message by message (``HPUB`` commands from nats-py's
own ``hpub_cmd``), and queues it as one buffer, flushed once; what the server answers is what
it answered before (an atomic batch's commit carries the reply subject, and the store checks
that ack as it did). Whenever the connection is not
up (an outage: nats-py then buffers or refuses), a header is not plain ASCII, or this nats-py
lacks the parts used, every message goes through ``Client.publish`` instead.

**A faster header parser** for nats-py, installed once when fleetlog connects, if it is safe.

Every event fleetlog stores carries a few headers (its Msg-Id, the concurrency expectation, the
batch markers), and nats-py parses the headers of every delivered message before any callback
sees it. Its parser checks header names for whitespace one character at a time through a
generator, which makes header parsing the largest single cost of reading the log (more than
decoding and folding the events). :func:`parse_header_lines` gives the same result for every
input — the test suite compares both on generated header blocks — using whole-string operations.

This reaches into a private part of nats-py (``Client._parse_header_lines``), so it fails safe:
:func:`install` replaces it only if it is there and still answers a set of probe header blocks
exactly as :func:`parse_header_lines` does. Otherwise nats-py is left alone (fleetlog works, its
reads are slower) and one warning says so. pyproject.toml pins nats-py to the versions this was
tested with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import structlog
from nats import errors
from nats.aio.client import Client
from nats.protocol.command import hpub_cmd

log = structlog.get_logger(__name__)

_CRLF = b"\r\n"
HOOK = "_parse_header_lines"

PROBES = (
    b"Nats-Msg-Id: t:0\r\nNats-Expected-Last-Subject-Sequence: 12\r\n\r\n",
    b"Nats-Stream: FLEET\r\nNats-Subject: fleet.evt.Pod.default.web\r\nNats-Sequence: 7\r\n"
    b"Nats-Time-Stamp: 2026-11-26T03:12:00.123456789Z\r\n\r\n",
    b"A B: inner space\r\n Lead: x\r\nTail : y\r\nK:\tv \r\nno colon\r\n\xc3\xa9: z\r\n"
    b"V: \xc3\xa9\xff\r\nDup: 1\r\nDup: 2\r\nEmpty:\r\n:anon\r\n\r\n",
)
"""Header blocks the replacement must read exactly as nats-py does before it is installed:
what fleetlog's messages carry, and the edge cases (whitespace in names, non-ASCII names,
undecodable values, repeated and empty names)."""


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """``Name: Value`` lines into a dict: names must be ASCII without inner whitespace, values
    are stripped and decoded as UTF-8 (undecodable bytes replaced), later names win."""
    out: dict[str, str] = {}
    for line in raw.split(_CRLF):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if key and key.split(None, 1) != [key]:  # whitespace inside the name
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


_original: Callable[[bytes], dict[str, str]] | None = getattr(Client, HOOK, None)
"""nats-py's own parser as imported (None when this nats-py has no such hook)."""
_installed: bool | None = None
"""None until :func:`install` decided; then whether the replacement is in place."""


def install() -> bool:
    """Use :func:`parse_header_lines` for every nats-py client in this process, if this
    nats-py still has the hook and it agrees on :data:`PROBES`; say once why not otherwise.
    Returns whether the replacement is in place."""
    global _installed
    if _installed is None:
        reason = _unsafe_because()
        if reason is None:
            setattr(Client, HOOK, staticmethod(parse_header_lines))
            _installed = True
        else:
            log.warning(
                "natsfix.not_installed",
                reason=reason,
                effect="nats-py parses headers itself (reads are slower)",
            )
            _installed = False
    return _installed


def _unsafe_because() -> str | None:
    if _original is None or not callable(_original):
        return f"nats-py has no Client.{HOOK}"
    for probe in PROBES:
        try:
            theirs = _original(probe)
        except Exception as exc:
            return f"Client.{HOOK} cannot be called as before ({exc!r})"
        if theirs != parse_header_lines(probe):
            return f"Client.{HOOK} reads {probe!r} differently"
    return None


def original_parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's own parser, kept for the equivalence test."""
    if _original is None:
        raise RuntimeError(f"nats-py has no Client.{HOOK}")
    return _original(raw)


_SENDER_PARTS = ("_send_command", "_flush_pending", "_flush_queue", "stats")

Outgoing = tuple[str, bytes, str, Mapping[str, str]]
"""``(subject, payload, reply, headers)`` of one message to publish (reply ``""``: none)."""


def encode_publishes(messages: Sequence[Outgoing]) -> bytes | None:
    """The protocol bytes nats-py's ``publish`` writes for each of ``messages``, in order, as
    one buffer; None when a subject, reply or header is one nats-py would refuse or rewrite
    (whitespace or a control character in a subject or a header, a header that is not
    ASCII): those go through ``publish``, which says why."""
    out: list[bytes] = []
    for subject, payload, reply, headers in messages:
        # One check over all of a message's tokens: printable ASCII without spaces is what
        # nats-py writes unchanged (header names are further held to its pattern).
        tokens = f"{subject}{reply}{''.join(headers.values())}"
        if not subject or not (tokens.isascii() and tokens.isprintable()) or " " in tokens:
            return None
        for name in headers:
            if name not in _plain_names:
                if not _HEADER_NAME.fullmatch(name):
                    return None
                _plain_names.add(name)
        block = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        out.append(hpub_cmd(subject, reply, b"NATS/1.0\r\n" + block.encode() + _CRLF, payload))
    return b"".join(out)


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name nats-py accepts (its own pattern: an HTTP token)."""
_plain_names: set[str] = set()
"""Header names already checked against :data:`_HEADER_NAME`."""


async def publish_many(nc: Client, messages: Sequence[Outgoing]) -> None:
    """Publish ``messages`` in order, as ``Client.publish`` one after another would, but queued
    as one buffer (see the module docstring)."""
    if not messages:
        return
    if nc.is_closed:
        raise errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise errors.ConnectionDrainingError
    buffer = None
    if nc.is_connected and all(hasattr(nc, part) for part in _SENDER_PARTS):
        if any(len(payload) > nc.max_payload for _, payload, _, _ in messages):
            raise errors.MaxPayloadError
        buffer = encode_publishes(messages)
    if buffer is None:
        for subject, payload, reply, headers in messages:
            await nc.publish(subject, payload, reply=reply, headers=dict(headers))
        return
    nc.stats["out_msgs"] += len(messages)
    nc.stats["out_bytes"] += sum(len(payload) for _, payload, _, _ in messages)
    await nc._send_command(buffer)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()
