"""A faster header parser for nats-py, installed once when fleetlog connects.

Every event fleetlog stores carries a few headers (its Msg-Id, the concurrency expectation, the
batch markers), and nats-py parses the headers of every delivered message before any callback
sees it. Its parser checks header names for whitespace one character at a time through a
generator, which makes header parsing the largest single cost of reading the log (more than
decoding and folding the events). :func:`parse_header_lines` gives the same result for every
input — the test suite compares both on generated header blocks — using whole-string operations.
"""

from __future__ import annotations

from nats.aio.client import Client

_CRLF = b"\r\n"


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


_original_parse_header_lines = Client._parse_header_lines


def install() -> None:
    """Use :func:`parse_header_lines` for every nats-py client in this process."""
    Client._parse_header_lines = staticmethod(parse_header_lines)  # type: ignore[method-assign]


def original_parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's own parser, kept for the equivalence test."""
    return _original_parse_header_lines(raw)
