"""``-o jsonpath=TEMPLATE``: kubectl's JSONPath templates, so a script can take one value out of
an object (``{.spec.clusterIP}``) without parsing a table.

Why this exists: kubectl's templates are text with ``{expression}`` parts, ``{range …}{end}``
loops and ``{"\\n"}`` literals; the expressions themselves are JSONPath, evaluated by
``jsonpath-ng`` (filters included: ``[?(@.type=="Ready")]``). As kubectl does by default
(``--allow-missing-template-keys=true``), a path that finds nothing prints nothing; several
results of one expression are joined by spaces; strings print raw and anything else as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.errors import ValidationFailed


@dataclass
class _Text:
    text: str


@dataclass
class _Path:
    expression: str


@dataclass
class _Range:
    expression: str
    body: list[_Text | _Path | _Range] = field(default_factory=list)


_Node = _Text | _Path | _Range


def _tokens(template: str) -> list[tuple[str, str]]:
    """``("text", …)`` and ``("action", …)`` pieces; braces inside quoted literals are text."""
    pieces: list[tuple[str, str]] = []
    index, text_start = 0, 0
    while index < len(template):
        if template[index] != "{":
            index += 1
            continue
        if index > text_start:
            pieces.append(("text", template[text_start:index]))
        end, quote = index + 1, ""
        while end < len(template) and (quote or template[end] != "}"):
            if template[end] in "\"'" and not quote:
                quote = template[end]
            elif template[end] == quote and template[end - 1] != "\\":
                quote = ""
            end += 1
        if end >= len(template):
            raise ValidationFailed(f"unclosed action in template {template!r}", field="output")
        pieces.append(("action", template[index + 1 : end].strip()))
        index = text_start = end + 1
    if text_start < len(template):
        pieces.append(("text", template[text_start:]))
    return pieces


def _literal(action: str) -> str | None:
    """The text of a quoted literal action (``"\\n"``, ``'-'``), escapes read as Go reads them."""
    if len(action) >= 2 and action[0] == action[-1] and action[0] in "\"'":
        return action[1:-1].encode().decode("unicode_escape")
    return None


def _parse(template: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[list[_Node]] = [root]
    for kind, piece in _tokens(template):
        if kind == "text":
            stack[-1].append(_Text(piece))
        elif (literal := _literal(piece)) is not None:
            stack[-1].append(_Text(literal))
        elif piece == "end":
            if len(stack) == 1:
                raise ValidationFailed(
                    f"{{end}} without {{range}} in template {template!r}", field="output"
                )
            stack.pop()
        elif piece.startswith("range "):
            loop = _Range(piece.removeprefix("range ").strip())
            stack[-1].append(loop)
            stack.append(loop.body)
        else:
            stack[-1].append(_Path(piece))
    if len(stack) != 1:
        raise ValidationFailed(
            f"{{range}} without {{end}} in template {template!r}", field="output"
        )
    return root


def _find(expression: str, data: Any) -> list[Any]:
    from jsonpath_ng.ext import parse

    path = expression.lstrip("@").lstrip("$")
    if path in ("", "."):
        return [data]
    try:
        compiled = parse("$" + (path if path.startswith(("[", ".")) else "." + path))
    except Exception as exc:  # jsonpath-ng's lexer and parser raise plain Exceptions
        raise ValidationFailed(
            f"error parsing jsonpath {expression!r}: {exc}", field="output"
        ) from exc
    return [match.value for match in compiled.find(data)]


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _execute(nodes: list[_Node], data: Any) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Path):
            out.append(" ".join(_shown(value) for value in _find(node.expression, data)))
        else:
            for found in _find(node.expression, data):
                for item in found if isinstance(found, list) else [found]:
                    out.append(_execute(node.body, item))
    return "".join(out)


def jsonpath_text(template: str, data: Any) -> str:
    """``template`` executed on ``data`` as ``kubectl -o jsonpath=…`` executes it; a template that
    cannot be read is a ValidationFailed saying where."""
    return _execute(_parse(template), data)
