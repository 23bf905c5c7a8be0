"""Server-side ``Table`` output: the rows kubectl prints for ``get``, ``get -o wide`` and ``-w``.

Why this exists: kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints
the columns the server defines (priority 0 always, priority 1 with ``-o wide``), adding
NAMESPACE and LABELS itself from each row's object metadata. The cells are kubectl's own
columns per kind; how each is computed is the CLI's table (``ops.render.objects.COLUMNS``),
handed to the server by whoever starts it, so ``fleetlog get`` and ``kubectl get`` agree
without this package reaching up into ``ops``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from core.kubeapi.objects import list_metadata
from core.kubeapi.status import bad_request

Row = Callable[[dict[str, Any], int, bool], list[str]]
"""(read-model item, now in ns, wide) -> the row's cells."""

IncludeObject = Literal["None", "Metadata", "Object"]


class Columns(NamedTuple):
    """A kind's headers, its ``-o wide`` headers, and its row."""

    headers: Sequence[str]
    wide: Sequence[str]
    row: Row


def _default_row(item: dict[str, Any], now_ns: int, wide: bool) -> list[str]:
    from core.meta.timestamps import format_stamp

    return [item["name"], format_stamp(item["created_ns"])]


DEFAULT = Columns(["NAME", "CREATED AT"], [], _default_row)
"""kube's default table for a kind without printers: NAME and CREATED AT."""

_UPPER_WORDS = frozenset({"IP", "DNS", "NATS", "CIDR"})


def column_name(header: str) -> str:
    """``NOMINATED NODE`` -> ``Nominated Node`` (kubectl upper-cases it back)."""
    return " ".join(
        "-".join(part if part in _UPPER_WORDS else part.capitalize() for part in word.split("-"))
        for word in header.split(" ")
    )


def column_definitions(columns: Columns) -> list[dict[str, Any]]:
    definitions = []
    for priority, headers in ((0, columns.headers), (1, columns.wide)):
        for header in headers:
            definition: dict[str, Any] = {
                "name": column_name(header),
                "type": "string",
                "format": "name" if header == "NAME" else "",
                "description": "",
                "priority": priority,
            }
            definitions.append(definition)
    return definitions


def include_object(value: str | None) -> IncludeObject:
    if value in (None, "", "Metadata"):
        return "Metadata"
    if value in ("None", "Object"):
        return value  # type: ignore[return-value]
    raise bad_request(
        f'includeObject: Unsupported value: "{value[:32]}": supported values: "Metadata", '
        '"None", "Object"'
    )


def row_object(obj: Mapping[str, Any], include: IncludeObject) -> dict[str, Any] | None:
    """What a row carries of its object: its metadata (``PartialObjectMetadata``, the
    default: kubectl reads namespace and labels from it), the whole object, or nothing."""
    if include == "None":
        return None
    if include == "Object":
        return dict(obj)
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def table_row(
    columns: Columns,
    item: dict[str, Any],
    obj: Mapping[str, Any],
    *,
    now_ns: int,
    include: IncludeObject,
) -> dict[str, Any]:
    cells: list[Any] = list(columns.row(item, now_ns, True))
    width = len(columns.headers) + len(columns.wide)
    cells = (cells + [""] * width)[:width]
    row: dict[str, Any] = {"cells": cells}
    shown = row_object(obj, include)
    if shown is not None:
        row["object"] = shown
    return row


def table(
    columns: Columns,
    rows: Iterable[dict[str, Any]],
    *,
    resource_version: int,
    continue_token: str = "",
    remaining: int | None = None,
    with_definitions: bool = True,
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table (a watch's later events carry no column definitions)."""
    metadata = list_metadata(resource_version, continue_token, remaining)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(columns) if with_definitions else [],
        "rows": list(rows),
    }


def columns_for(table_columns: Mapping[str, Columns], kind: str) -> Columns:
    return table_columns.get(kind, DEFAULT)
