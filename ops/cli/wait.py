"""``fleetlog wait``: block until objects reach a state, as ``kubectl wait`` does, so a script
(or the README's walk-through) can run one step after another without sleeping and hoping.

Why this exists: a command is answered when its event is in the log, but what follows from it
(a pod scheduled, started, finished; a deployment available) happens later, in other handlers.
``--for=condition=Ready``, ``--for=jsonpath={.status.phase}=Succeeded``, ``--for=create`` and
``--for=delete`` read the cluster projection until every object matches or ``--timeout``
passes; a timeout is kubectl's ``timed out waiting for the condition on …`` and a non-zero exit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import click

from core.errors import FleetError, ValidationFailed
from core.meta.durations import parse_duration
from ops import render
from ops.cliargs import is_namespaced, resolve_kind
from ops.clitools import Failure, open_session, run

POLL_SECONDS = 0.25
"""How often the projection is read again: well under a person's notice, light on the server."""


@dataclass(frozen=True)
class Wanted:
    """What ``--for`` asks: a condition's status, a JSONPath's value, creation or deletion."""

    how: str  # "condition", "jsonpath", "create" or "delete"
    path: str = ""
    value: str = ""

    def met(self, item: dict[str, Any] | None) -> bool:
        if self.how == "delete":
            return item is None
        if item is None:
            return False
        if self.how == "create":
            return True
        manifest = render.full_manifest(item)
        if self.how == "condition":
            conditions = (manifest.get("status") or {}).get("conditions") or []
            return any(
                c.get("type", "").lower() == self.path.lower()
                and str(c.get("status", "")).lower() == self.value.lower()
                for c in conditions
            )
        from ops.render.jsonpath import jsonpath_text

        return jsonpath_text(self.path, manifest) == self.value


def parse_wanted(text: str) -> Wanted:
    """``--for``'s value, in kubectl's forms; anything else is refused saying what is accepted."""
    if text in ("delete", "create"):
        return Wanted(text)
    how, sep, rest = text.partition("=")
    if how == "condition" and sep and rest:
        name, _, value = rest.partition("=")
        return Wanted("condition", name, value or "True")
    if how == "jsonpath" and sep and rest:
        # The template ends at its last closing brace: what follows "=" is the value wanted.
        close = rest.rfind("}")
        if close > 0 and rest[close + 1 : close + 2] == "=":
            return Wanted("jsonpath", rest[: close + 1], rest[close + 2 :])
    raise ValidationFailed(
        f"--for={text!r}: use condition=NAME[=VALUE], jsonpath={{PATH}}=VALUE, create or delete",
        field="for",
    )


def _targets(refs: tuple[str, ...]) -> tuple[str, list[str]]:
    """``pod/a pod/b`` or ``pod a b``: one kind and its names."""
    if not refs:
        raise ValidationFailed("say what to wait for: wait KIND/NAME … or wait KIND NAME …")
    if "/" not in refs[0]:
        if len(refs) == 1:
            raise ValidationFailed(f"say which {refs[0]} to wait for: wait {refs[0]} NAME")
        return resolve_kind(refs[0]), list(refs[1:])
    kinds, names = set(), []
    for ref in refs:
        kind, sep, name = ref.partition("/")
        if not sep or not name:
            raise ValidationFailed(f"expected KIND/NAME, got {ref!r}")
        kinds.add(resolve_kind(kind))
        names.append(name)
    if len(kinds) != 1:
        raise ValidationFailed("wait for objects of one kind at a time")
    return kinds.pop(), names


@click.command()
@click.argument("refs", nargs=-1)
@click.option("--for", "wanted_text", required=True, help="condition=NAME[=VALUE], "
              "jsonpath={PATH}=VALUE, create or delete.")  # fmt: skip
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--timeout", default="30s", show_default=True, help="How long to wait (0: once).")
@click.pass_context
@run
async def wait(
    ctx: click.Context, refs: tuple[str, ...], wanted_text: str, namespace: str, timeout: str
) -> None:
    """Wait until the objects named reach the state ``--for`` describes, printing
    ``KIND/NAME condition met`` for each; exit 1 on timeout."""
    import asyncio

    wanted = parse_wanted(wanted_text)
    kind, names = _targets(refs)
    scope = namespace if is_namespaced(kind) else ""
    deadline = time.monotonic() + parse_duration(timeout)
    pending = list(dict.fromkeys(names))
    async with open_session(ctx) as s:
        while True:
            for name in list(pending):
                found = await s.query(kind, namespace=scope, name=name)
                item = found[0] if found else None
                if item is None and wanted.how not in ("delete", "create"):
                    raise FleetError(f'{kind.lower()}s "{name}" not found', code="not_found")
                if wanted.met(item):
                    pending.remove(name)
                    verb = "deleted" if wanted.how == "delete" else "condition met"
                    click.echo(f"{render.resource_name(kind, name)} {verb}")
            if not pending:
                return
            if time.monotonic() >= deadline:
                shown = ", ".join(f"{kind.lower()}s/{name}" for name in pending)
                raise Failure(f"timed out waiting for the condition on {shown}")
            await asyncio.sleep(POLL_SECONDS)
