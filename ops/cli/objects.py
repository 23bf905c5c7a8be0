"""``fleetlog apply``, ``delete``, ``get`` and ``describe``: kubectl's everyday verbs, on
objects of any kind.

Why this exists: these commands share how a kind and an object are named (``ops.cliargs``), how
a manifest file is read and how an object is shown (``ops.render``). Writes go through the
command gateway; ``get`` and ``describe`` read the cluster projection, or with ``--at`` a fold
of the log up to that point (``ops.timetravel``, imported only then).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from core.errors import FleetError, ValidationFailed
from ops import render
from ops.cliargs import (
    ENDPOINTS_VIEW,
    POINT_HELP,
    command_kind,
    is_namespaced,
    labels_of,
    resolve_kind,
    split_command_ref,
)
from ops.clitools import Failure, open_session, run
from streams.subjects import event_filter


class OutputFormat(click.ParamType):
    """kubectl's ``-o``: a named format, or ``jsonpath=TEMPLATE`` (``ops.render.jsonpath``)."""

    name = "table|wide|yaml|json|name|jsonpath=TEMPLATE"
    NAMED = ("table", "wide", "yaml", "json", "name")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if text in self.NAMED or text.startswith("jsonpath="):
            return text
        self.fail(
            f"unable to match a printer suitable for the output format {text!r}, the formats "
            f"are: {', '.join(self.NAMED)}, jsonpath=TEMPLATE",
            param,
            ctx,
        )


OUTPUTS = OutputFormat()
AT_OPTION = click.option(
    "--at", default=None, metavar="TIME|SEQ", help=f"As it was at {POINT_HELP}."
)


# -- writes ---------------------------------------------------------------------------------------


def _read_documents(path: str) -> list[dict[str, Any]]:
    import yaml  # only ``apply`` reads YAML; the other commands should not pay for loading it

    from ops.safeyaml import YAMLLimitExceeded, load_all

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ValidationFailed(f"cannot read {path}: {exc.strerror}") from exc
    try:
        loaded = [doc for doc in load_all(text) if doc is not None]
    except YAMLLimitExceeded as exc:
        raise ValidationFailed(f"{path}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{path} is not valid YAML: {exc}") from exc
    documents: list[dict[str, Any]] = []
    for index, doc in enumerate(loaded):
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "List"
            and isinstance(doc.get("items"), list)
        ):
            documents += doc["items"]
        elif isinstance(doc, dict):
            documents.append(doc)
        else:
            raise ValidationFailed(f"{path}: document {index + 1} is not a mapping")
    return documents


def _doc_name(doc: dict[str, Any]) -> str:
    kind = str(doc.get("kind", "?")).lower()
    name = (
        (doc.get("metadata") or {}).get("name", "?")
        if isinstance(doc.get("metadata"), dict)
        else "?"
    )
    return f"{kind}/{name}"


def _doc_kind(doc: dict[str, Any]) -> str:
    """The kind a document's command is sent for: its ``kind`` as written (an unknown or
    missing one included: the gateway refuses it, and audits the refusal)."""
    kind = doc.get("kind")
    return command_kind(kind) if isinstance(kind, str) else ""


def _manifest_documents(path: str, verb: str) -> list[dict[str, Any]]:
    """The objects of a manifest; none at all (an empty file, only comments, only ``---``) is
    kubectl's ``error: no objects passed to apply`` (or ``delete``)."""
    documents = _read_documents(path)
    if not documents:
        raise Failure(f"no objects passed to {verb}")
    return documents


@click.command()
@click.option("-f", "--filename", "path", required=True, help="Manifest file, or - for stdin.")
@click.pass_context
@run
async def apply(ctx: click.Context, path: str) -> None:
    """Create or update objects from a (multi-document) YAML manifest: each object is applied
    on its own; those refused are reported (and the command fails) without stopping the
    rest, as kubectl does."""
    documents = _manifest_documents(path, "apply")
    failures = 0
    async with open_session(ctx) as s:
        for doc in documents:
            try:
                outcome = await s.commands.send(_doc_kind(doc), "apply", {"manifest": doc})
            except FleetError as exc:
                failures += 1
                _warn(getattr(exc, "warnings", ()))
                for line in render.error_lines(_doc_name(doc), exc):
                    click.echo(line, err=True)
                continue
            _warn(outcome.warnings)
            if outcome.unchanged:
                verb = "unchanged"
            elif any(e.endswith("Created") for e in outcome.events):
                verb = "created"
            else:
                verb = "configured"
            click.echo(f"{_doc_name(doc)} {verb}")
    if failures:
        raise Failure(f"{failures} of {len(documents)} objects were not applied")


def _warn(warnings: Iterable[str]) -> None:
    """Admission's warnings, on stderr as kubectl prints them."""
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)


CASCADE_POLICIES = {
    "background": "Background",
    "foreground": "Foreground",
    "orphan": "Orphan",
    "true": "Background",
    "false": "Orphan",
}
"""kubectl delete's ``--cascade`` values and the propagation policy each one asks for."""


@click.command()
@click.argument("kind", required=False)
@click.argument("name", required=False)
@click.option("-f", "--filename", "path", default=None, help="Delete the objects in this manifest.")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--reason", default="", help="Recorded with the deletion.")
@click.option(
    "--cascade",
    type=click.Choice(sorted(CASCADE_POLICIES), case_sensitive=False),
    default="background",
    show_default=True,
    help="What becomes of dependents (objects whose ownerReferences name this one): "
    "background/foreground let the garbage collector delete them, orphan keeps them "
    "(true/false are kubectl's deprecated spellings of background/orphan).",
)
@click.pass_context
@run
async def delete(
    ctx: click.Context,
    kind: str | None,
    name: str | None,
    path: str | None,
    namespace: str,
    reason: str,
    cascade: str,
) -> None:
    """Delete an object (KIND NAME or KIND/NAME) or every object in a manifest (-f)."""
    from streams.commandbus import CommandFailed

    policy = CASCADE_POLICIES[cascade.lower()]
    targets: list[tuple[str, str, str]] = []
    if path:
        for doc in _manifest_documents(path, "delete"):
            meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
            targets.append(
                (_doc_kind(doc), str(meta.get("namespace") or namespace), str(meta.get("name", "")))
            )
    elif kind and "/" in kind and not name:
        ref_kind, ref_name = split_command_ref(kind)
        targets.append((ref_kind, namespace, ref_name))
    elif kind and name:
        targets.append((command_kind(kind), namespace, name))
    else:
        raise ValidationFailed("say what to delete: KIND NAME, KIND/NAME or -f FILE")
    deleted_namespaces: set[str] = set()
    failures = 0
    async with open_session(ctx) as s:
        for target_kind, target_ns, target_name in targets:
            body = {
                "name": target_name,
                "namespace": target_ns,
                "reason": reason,
                "propagationPolicy": policy,
            }
            shown = f'{target_kind.lower()} "{target_name}"'
            try:
                await s.commands.send(target_kind, "delete", body)
            except CommandFailed as exc:
                # Deleting a namespace deletes what is in it (the garbage collector may have
                # got there first): an object of a namespace this command deleted is gone.
                if exc.code == "not_found" and target_ns in deleted_namespaces:
                    click.echo(f'{shown} deleted (with namespace "{target_ns}")')
                    continue
                if len(targets) == 1:
                    raise
                # As kubectl: what can be deleted is, each refusal is reported, and the
                # command fails at the end.
                failures += 1
                for line in render.error_lines(f"{target_kind.lower()}/{target_name}", exc):
                    click.echo(line, err=True)
                continue
            if target_kind == "Namespace":
                deleted_namespaces.add(target_name)
            click.echo(f"{shown} deleted")
    if failures:
        raise Failure(f"{failures} of {len(targets)} objects were not deleted")


# -- reads ----------------------------------------------------------------------------------------

DEPENDENTS = {"Deployment": "ReplicaSet", "ReplicaSet": "Pod"}
"""The kind whose events ``describe`` reads to show what a kind's controller did (see
``projections.kube_events``)."""


def _builtin_item(name: str) -> dict[str, Any] | None:
    """A built-in PriorityClass as a read-model item: it exists without having been stored, so
    it has no uid, version or creation time (kubectl shows the API server's own copy)."""
    from core.policy.systemclasses import system_class_manifest

    manifest = system_class_manifest(name)
    if manifest is None:
        return None
    return {
        "kind": "PriorityClass",
        "namespace": "",
        "name": name,
        "uid": None,
        "version": None,
        "last_seq": None,
        "created_ns": None,
        "manifest": manifest,
    }


def with_builtin(kind: str, items: list[dict[str, Any]], name: str | None) -> list[dict[str, Any]]:
    """``items`` with the built-in objects of ``kind`` that were not stored (the two system
    PriorityClasses, as ``kubectl get priorityclass`` lists them), by name."""
    if kind != "PriorityClass":
        return items
    from core.policy.systemclasses import SYSTEM_CLASS_MANIFESTS

    stored = {item["name"] for item in items}
    wanted = [name] if name else list(SYSTEM_CLASS_MANIFESTS)
    extra = [
        item
        for wanted_name in wanted
        if wanted_name not in stored and (item := _builtin_item(wanted_name)) is not None
    ]
    return sorted([*items, *extra], key=lambda item: item["name"]) if extra else items


@click.command()
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-o", "--output", type=OUTPUTS, default="table", show_default=True)
@click.option(
    "-l", "--selector", default=None, help="Only objects whose labels match (app=web,tier!=db)."
)
@AT_OPTION
@click.pass_context
@run
async def get(
    ctx: click.Context,
    kind: str,
    name: str | None,
    namespace: str,
    all_namespaces: bool,
    output: str,
    selector: str | None,
    at: str | None,
) -> None:
    """List objects of a kind, or show one (with --at: as it was then)."""
    from core.meta.labels import parse_selector_text

    chosen = parse_selector_text(selector or "")
    if "/" in kind and name is None:
        kind, name = kind.split("/", 1)
    # ``endpoints`` is a view of the EndpointSlices (fleetlog keeps no Endpoints objects).
    view = "Endpoints" if kind.lower() in ENDPOINTS_VIEW else None
    resolved = "EndpointSlice" if view else resolve_kind(kind)
    namespaced = is_namespaced(resolved)
    scope: str | None = (None if all_namespaces else namespace) if namespaced else ""
    now_ns, when = time.time_ns(), ""
    async with open_session(ctx) as s:
        point = None
        if at is not None:
            from ops import timetravel

            past = await timetravel.log_of(s)
            point = await timetravel.position_of(s.nc, past, at, now_ns=now_ns)
            now_ns, when = point.time_ns or now_ns, f" at {point.label()}"

        async def fetch(fetched_kind: str, fetched_name: str | None) -> list[dict[str, Any]]:
            if point is None:
                return await s.query(fetched_kind, namespace=scope, name=fetched_name)
            if fetched_name:
                item, _ = await timetravel.object_at(
                    past, fetched_kind, scope or "", fetched_name, point.seq, nc=s.nc
                )
                return [item] if item else []
            return await timetravel.list_at(past, point.seq, fetched_kind, scope)

        if view:
            views = render.endpoints_items(await fetch(resolved, None))
            items = [i for i in views if name is None or i["name"] == name]
        else:
            items = await fetch(resolved, name)
            if resolved == "Service" and output == "wide" and items:
                # fleetlog's wide service table adds the ready endpoints, from the slices.
                slices = render.endpoint_slice_items(items, await fetch("EndpointSlice", None))
                for item in items:
                    found = slices.get((item["namespace"], item["name"]), [])
                    item["endpoints"] = render.ready_endpoints_text(found)
    shown = view or resolved
    if not view:
        items = with_builtin(resolved, items, name)
    if not chosen.empty:
        items = [item for item in items if chosen.matches(labels_of(item))]
    if name and not items:
        raise FleetError(f'{shown.lower()}s "{name}" not found{when}', code="not_found")
    if output == "name":  # kubectl's resource/name, one a line: what other commands take
        for item in items:
            click.echo(render.resource_name(shown, item["name"]))
        return
    if output in ("yaml", "json") or output.startswith("jsonpath="):
        manifests = [render.full_manifest(item) for item in items]
        value: Any = (
            manifests[0] if name else {"apiVersion": "v1", "kind": "List", "items": manifests}
        )
        if output.startswith("jsonpath="):
            from ops.render.jsonpath import jsonpath_text

            click.echo(jsonpath_text(output.removeprefix("jsonpath="), value), nl=False)
        else:
            click.echo(render.to_yaml([value]) if output == "yaml" else render.to_json(value))
        return
    if not items:
        where = f" in {scope} namespace" if scope else ""
        click.echo(f"No resources found{where}.", err=True)
        return
    output_table = render.object_table(
        shown,
        items,
        now_ns=now_ns,
        wide=output == "wide",
        show_namespace=all_namespaces and namespaced,
    )
    click.echo(output_table)


@click.command()
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@AT_OPTION
@click.pass_context
@run
async def describe(
    ctx: click.Context, kind: str, name: str | None, namespace: str, at: str | None
) -> None:
    """Show one object in detail, with its events (with --at: as it was then, and the events
    up to then)."""
    if "/" in kind and name is None:
        kind, name = kind.split("/", 1)
    if not name:
        raise ValidationFailed("say which object: describe KIND NAME")
    resolved = resolve_kind(kind)
    scope = namespace if is_namespaced(resolved) else ""
    now_ns, point = time.time_ns(), None
    if at is not None:  # a fold of the log up to then; without --at the projection answers
        from ops import timetravel
    async with open_session(ctx) as s:
        if at is not None:
            past = await timetravel.log_of(s)
            point = await timetravel.position_of(s.nc, past, at, now_ns=now_ns)
            now_ns = point.time_ns or now_ns
            item, history = await timetravel.object_at(
                past, resolved, scope, name, point.seq, nc=s.nc
            )
            items = [item] if item else []
        else:
            items = await s.query(resolved, namespace=scope, name=name)
        items = with_builtin(resolved, items, name)
        if not items:
            when = f" at {point.label()}" if point else ""
            raise FleetError(f'{resolved.lower()}s "{name}" not found{when}', code="not_found")
        if point is None:
            history = await s.history(resolved, scope, name) if items[0]["uid"] else []
        owned: list[dict[str, Any]] = []
        slices: list[dict[str, Any]] = []
        if resolved == "Service":
            every = (
                await s.query("EndpointSlice", namespace=scope)
                if point is None
                else await timetravel.list_at(past, point.seq, "EndpointSlice", scope)
            )
            slices = render.endpoint_slice_items(items, every).get((scope, name), [])
        if resolved == "Deployment":
            from ops import rollout as rollout_ops

            replica_sets = (
                await s.query("ReplicaSet", namespace=scope)
                if point is None
                else await timetravel.list_at(past, point.seq, "ReplicaSet", scope)
            )
            owned = rollout_ops.controlled_by(replica_sets, items[0]["uid"])
        created_seq = next(
            (ev.seq for ev in reversed(history) if ev.envelope.type.endswith("Created")), 0
        )
        related: list[Any] = []
        dependent = DEPENDENTS.get(resolved)
        if dependent is not None and created_seq:
            # What Kubernetes records on a deployment (a replica set) is what its controller
            # did to its replica sets (pods): their events in the namespace since its creation.
            from ops import timetravel

            # Through the stream read service for a namespaced reader (what it may list).
            source = past if point is not None else await timetravel.log_of(s)
            await source.replay(
                related.append,
                filter_subject=event_filter(dependent, scope),
                from_seq=created_seq,
                until_seq=point.seq if point is not None else None,
            )
        decision: dict[str, Any] | None = None
        if resolved == "HorizontalPodAutoscaler":
            until = point.seq if point is not None else None
            decision = await _last_decision(s, items[0], scope, until_seq=until)
            unchanged = _last_no_change(history, until_seq=until)
            if decision is None:
                decision = unchanged
            elif unchanged is not None and unchanged["seq"] > decision["seq"]:
                decision = {**decision, "since": unchanged}
        analysis: list[str] | None = None
        if resolved in MESH_ANALYZED and point is None:
            from core.mesh.analyze import of_object
            from ops.cli.mesh import analysis as mesh_analysis

            analysis = of_object(await mesh_analysis(s), kind=resolved, namespace=scope, name=name)
    events = [ev for ev in history if ev.seq >= created_seq]
    click.echo(
        render.describe(
            items[0], events, now_ns, replica_sets=owned, endpoint_slices=slices, related=related,
            decision=decision, analysis=analysis,
        )
    )  # fmt: skip


MESH_ANALYZED = frozenset({"VirtualService", "DestinationRule", "Gateway", "ServiceEntry"})
"""Kinds whose ``describe`` shows ``istioctl analyze``'s messages about them (as of now)."""


def _last_no_change(history: list[Any], *, until_seq: int | None) -> dict[str, Any] | None:
    """The HPA's last recorded "no change" (a status event carrying a why record)."""
    for ev in reversed(history):
        e = ev.envelope
        if until_seq is not None and ev.seq > until_seq:
            continue
        why = e.payload.get("why") if e.type.endswith("StatusUpdated") else None
        if isinstance(why, dict):
            return {"seq": ev.seq, "at_ns": e.timestamp_ns, "why": why, "type": e.type}
    return None


async def _last_decision(
    s: Any, hpa: dict[str, Any], namespace: str, *, until_seq: int | None
) -> dict[str, Any] | None:
    """The why of the last ``ScaledTo`` this HPA caused on its target (up to ``until_seq``),
    with the event's sequence and time: read from the target's events, not from the metrics."""
    ref = (hpa["manifest"].get("spec") or {}).get("scaleTargetRef") or {}
    kind, target = str(ref.get("kind", "")), str(ref.get("name", ""))
    if not kind or not target:
        return None
    try:
        events = await s.history(kind, namespace, target)
    except FleetError:
        return None
    for ev in reversed(events):
        e = ev.envelope
        why = e.payload.get("why") if e.type == "ScaledTo" else None
        if until_seq is not None and ev.seq > until_seq:
            continue
        if isinstance(why, dict) and why.get("hpa") == hpa["name"]:
            return {"seq": ev.seq, "at_ns": e.timestamp_ns, "why": why}
    return None
