"""``resourceVersion`` and ``continue``: Kubernetes' read rules over fleetlog's log positions.

Why this exists: a resourceVersion here is a stream sequence of the ``FLEET`` log: an object's
is the sequence of its last event, a list's the position of the read model that served it. So
the rules Kubernetes states in terms of etcd revisions map exactly: "not older than N" waits
until the read model has applied N, "exactly N" folds the log up to N — which fleetlog can do
for any N the log still holds, because nothing is compacted away — and a watch from N replays
the log from N+1. Parsing and validating those parameters, and the opaque ``continue`` token
of a paged list, are pure and live here.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Literal

from core.kubeapi.status import APIError, bad_request

ReadMode = Literal["latest", "not_older_than", "exact"]


def parse_resource_version(text: str | None, *, what: str = "resourceVersion") -> int | None:
    """A resourceVersion as given (None when absent or empty); BadRequest unless it is one of
    the numbers this server hands out."""
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise bad_request(
            f'invalid {what} "{text[:64]}": must be a resourceVersion from this server'
        )
    return int(text)


@dataclass(frozen=True, slots=True)
class ReadAt:
    """Which state a list reads: the latest (``latest``: after everything in the log now has
    been applied), any state at least as new as ``rv`` (``not_older_than``; rv 0 = whatever
    the read model holds), or exactly the state at ``rv`` (``exact``)."""

    mode: ReadMode
    rv: int = 0


def list_read(resource_version: str | None, match: str | None, *, continuing: bool) -> ReadAt:
    """The state a list request asks for (``resourceVersion``, ``resourceVersionMatch``, and
    whether it continues an earlier page), with kube-apiserver's refusals."""
    rv = parse_resource_version(resource_version)
    if match:
        if match not in ("Exact", "NotOlderThan"):
            raise bad_request(
                f'resourceVersionMatch: Unsupported value: "{match[:64]}": supported values: '
                '"Exact", "NotOlderThan"'
            )
        if rv is None:
            raise bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless "
                "resourceVersion is provided"
            )
        if continuing:
            raise bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when "
                "continue is provided"
            )
        if match == "Exact" and rv == 0:
            raise bad_request(
                'resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden '
                'for resourceVersion "0"'
            )
    if continuing and rv is not None and rv != 0:
        raise bad_request("specifying resource version is not allowed when using continue")
    if rv is None:
        return ReadAt("latest")
    if match == "Exact":
        return ReadAt("exact", rv)
    return ReadAt("not_older_than", rv)


@dataclass(frozen=True, slots=True)
class WatchFrom:
    """Where a watch starts: with the current state as synthetic ADDED events (``initial``),
    then every change after ``rv`` (for an initial state, the position it was read at)."""

    initial: bool
    rv: int = 0
    initial_events_end: bool = False
    """Close the initial events with a BOOKMARK annotated ``k8s.io/initial-events-end``
    (``sendInitialEvents=true``, the streaming list)."""


def watch_from(
    resource_version: str | None, match: str | None, send_initial_events: str | None
) -> WatchFrom:
    """Kubernetes' watch rules: no resourceVersion or "0" starts with the current state; a
    number N replays every change after N (in fleetlog, from anywhere the log still holds);
    ``sendInitialEvents=true`` (with ``resourceVersionMatch=NotOlderThan``) is the streaming
    list: the state, a bookmark, then the changes."""
    rv = parse_resource_version(resource_version)
    initial_events = send_initial_events in ("true", "1")
    if send_initial_events not in (None, "", "true", "false", "1", "0"):
        raise bad_request(f'sendInitialEvents: Invalid value: "{send_initial_events[:16]}"')
    if initial_events:
        if match != "NotOlderThan":
            raise bad_request(
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                "resourceVersionMatch to NotOlderThan"
            )
        return WatchFrom(initial=True, rv=rv or 0, initial_events_end=True)
    if match:
        raise bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch "
            "unless sendInitialEvents is provided"
        )
    if not rv:
        return WatchFrom(initial=True)
    return WatchFrom(initial=False, rv=rv)


@dataclass(frozen=True, slots=True)
class Continue:
    """Where the next page of a list starts: after the object ``(namespace, name)``, of a list
    first served at ``rv``."""

    rv: int
    after: tuple[str, str]
    exact: bool = False
    """The list read the state at exactly ``rv``: so do its next pages."""

    def encode(self) -> str:
        data: dict[str, object] = {"v": "meta.k8s.io/v1", "rv": self.rv, "start": list(self.after)}
        if self.exact:
            data["exact"] = True
        raw = json.dumps(data, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Continue:
        def refuse(why: str) -> APIError:
            return bad_request(f"continue key is not valid: {why}")

        if len(token) > 4096:
            raise refuse("too long")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
        except (binascii.Error, ValueError) as exc:
            raise refuse("not a token this server gave") from exc
        if not isinstance(data, dict) or data.get("v") != "meta.k8s.io/v1":
            raise refuse("not a token this server gave")
        rv, after = data.get("rv"), data.get("start")
        if (
            not isinstance(rv, int)
            or rv < 0
            or not isinstance(after, list)
            or len(after) != 2
            or not all(isinstance(part, str) for part in after)
        ):
            raise refuse("not a token this server gave")
        return cls(rv=rv, after=(after[0], after[1]), exact=data.get("exact") is True)
