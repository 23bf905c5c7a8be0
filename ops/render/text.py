"""The building blocks every printed page uses: tables laid out as kubectl lays them out,
kubectl's ages and durations, RFC 3339 times, YAML and JSON of a stored object, and refusals
with one line per problem.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.errors import FleetError


def error_lines(subject: str, error: FleetError) -> list[str]:
    """How a refusal of ``subject`` (``pod/web``, a file) reads: ``error: …`` and, when the input
    had several problems, one indented line per problem (``path: message``), as kubectl lists
    every field error of an invalid object."""
    text = error_text(subject, error)
    return [f"error: {text[0]}", *text[1:]]


def error_text(subject: str, error: FleetError) -> list[str]:
    """:func:`error_lines` without the ``error:`` prefix (for a message that gets it later)."""
    if len(error.errors) <= 1:
        return [f"{subject}: {error}"]
    return [f"{subject} is invalid ({len(error.errors)} errors):"] + [
        f"  {problem}" for problem in error.errors
    ]


def human_duration(seconds: int) -> str:
    """kubectl's ``HumanDuration`` (what its AGE columns and "… ago" show): seconds up to two
    minutes, then minutes with seconds below ten minutes (``2m30s``), minutes below three
    hours, hours with minutes below eight hours (``5h4m``), hours below two days, days with
    hours below eight days (``3d4h``), days below two years, years with days below eight
    years."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y{rest}d" if rest else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(since_ns: int | None, now_ns: int) -> str:
    """How long ago ``since_ns`` was, as kubectl writes it (:func:`human_duration`), or
    ``<unknown>`` without a time (kubectl's answer for an object with no creation time)."""
    if since_ns is None:
        return "<unknown>"
    # Truncated towards zero, as Go's Duration.Seconds() converted to int.
    elapsed = now_ns - since_ns
    seconds = elapsed // 1_000_000_000 if elapsed >= 0 else -(-elapsed // 1_000_000_000)
    return human_duration(seconds)


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tabulated(*args: Any, **kwargs: Any) -> str:
    """``tabulate.tabulate``, imported on first use: it takes longer to import than most
    commands take to run, and :func:`table` rarely needs it."""
    from tabulate import tabulate

    return tabulate(*args, **kwargs)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """kubectl-style columns: upper-case headers, left-aligned, no borders.

    tabulate's ``plain`` format, laid out directly when every cell is one line of ASCII (the
    usual case): tabulate spends ~50 µs a row, which made the table of a 1,000-event history
    cost more than reading it. The result is the same text (a property test compares them);
    anything else (wide characters, several lines) goes to tabulate itself."""
    materialised = [["" if cell is None else str(cell) for cell in row] for row in rows]
    header_cells = [str(h) for h in headers]
    # Printable ASCII only: tabulate drops control characters a plain layout would keep.
    simple = all(
        cell.isascii() and cell.isprintable()
        for row in [header_cells, *materialised]
        for cell in row
    )
    if not simple or any(len(row) != len(header_cells) for row in materialised):
        return tabulated(
            materialised,
            headers=header_cells,
            tablefmt="plain",
            disable_numparse=True,
            stralign="left",
        )
    stripped = [[cell.strip() for cell in row] for row in materialised]
    widths = [len(h) + 2 for h in header_cells]
    for row in stripped:
        for column, cell in enumerate(row):
            if len(cell) > widths[column]:
                widths[column] = len(cell)
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header_cells, *stripped]
    )


def full_manifest(item: dict[str, Any]) -> dict[str, Any]:
    """The stored manifest with the server-managed metadata filled in, as kubectl shows it
    (a built-in object that was never stored, such as a system PriorityClass, has none)."""
    manifest = dict(item["manifest"])
    metadata = dict(manifest.get("metadata", {}))
    if item.get("uid"):
        metadata.update(
            uid=item["uid"],
            resourceVersion=str(item["last_seq"]),
            creationTimestamp=iso(item["created_ns"]),
        )
    manifest["metadata"] = metadata
    return manifest


def to_yaml(documents: Sequence[dict[str, Any]]) -> str:
    import yaml  # loaded by the outputs that print YAML, not by every command

    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str)
