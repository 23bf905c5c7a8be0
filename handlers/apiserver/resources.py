"""The REST verbs on every kind: get, list, create, update, delete, deletecollection, watch.

Why this exists: this is the Kubernetes door's translation (DESIGN.md, "Two doors, one
gateway"). Every write becomes the same command the NATS door sends (``create``, ``apply``,
``delete`` through ``streams.commandbus``), so admission, quotas, audit and events are the
gateway's; the caller's certificate names the actor and the connection the source. Every read
comes from the cluster read model (``projections.cluster``) after it has applied the log as far
as the request asks (``core.kubeapi.versions``). An update's ``resourceVersion`` is checked
against the object's last event and pinned to its aggregate version on the command, so a
write racing in between is refused by the gateway as a Conflict, never lost.

Subresources (``status``, ``scale``, ``log``, …) are routed to ``handlers.apiserver.subresources``;
one that is not served yet is refused with a Status that says so, never faked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web
from nats.aio.client import Client

from core.access.secretdata import redacted_manifest
from core.errors import FieldError, FleetError
from core.kubeapi import fieldsets
from core.kubeapi.objects import Preconditions, api_object, list_object, writable
from core.kubeapi.patch import APPLY_PATCH, PATCH_TYPES, apply_patch
from core.kubeapi.paths import ResourcePath, not_found
from core.kubeapi.resources import BY_KIND, METRICS_GROUP, APIResource
from core.kubeapi.selectors import FieldSelector, parse_field_selector
from core.kubeapi.status import (
    MODIFIED,
    APIError,
    Target,
    bad_request,
    conflict,
    from_fleet_error,
    invalid,
    method_not_allowed,
    success,
    too_large_resource_version,
    unsupported_media_type,
)
from core.kubeapi.tables import Columns, columns_for, include_object, table, table_row
from core.kubeapi.versions import Continue, ReadAt, list_read, parse_resource_version, watch_from
from core.meta.labels import Selector, parse_selector_text
from core.meta.timestamps import format_stamp
from handlers.apiserver.http import APPLY_YAML, flag, read_json, respond, response_format, warn
from handlers.apiserver.identity import Identity
from handlers.apiserver.watch import (
    DEFAULT_TIMEOUT_S,
    Watches,
    WatchRequest,
    object_of,
    selector_matcher,
)
from projections.cluster import ClusterModel, ObjectRecord
from projections.runtime import Projection
from streams.commandbus import CommandClient, CommandFailed, NoGateway, Outcome
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.identity import credentials_of
from streams.secretkeys import SecretKeys
from streams.subjects import event_filter

READ_WAIT_S = 5.0
"""How long a read waits for the read model to reach the log's end or a requested version."""
DELETE_CONCURRENCY = 16
PATCH_ATTEMPTS = 5
RETURNS_DELETED_OBJECT = frozenset({"Pod"})
"""Kinds whose delete answers the object (kube's graceful deletion of pods; clients decode
the answer as a Pod), where other kinds answer a Status."""
PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")
MAX_FIELD_MANAGER = 128


@dataclass(frozen=True)
class Caller:
    identity: Identity
    source: str
    """``https <address>:<port> <user agent>``: the audit record's source."""


class Resources:
    def __init__(
        self,
        *,
        nc: Client,
        projection: Projection[ClusterModel],
        store: EventStore,
        columns: Mapping[str, Columns],
        watches: Watches,
        secret_keys: SecretKeys | None = None,
    ) -> None:
        self._nc = nc
        self._projection = projection
        self._store = store
        self._columns = columns
        self._watches = watches
        self._secret_keys = secret_keys

    # -- routing ---------------------------------------------------------------------------

    async def handle(
        self, request: web.Request, path: ResourcePath, caller: Caller
    ) -> web.StreamResponse:
        resource = path.resource
        if resource.derived:
            from handlers.apiserver import events, metrics

            if path.subresource is not None:
                raise not_found()
            if resource.group == METRICS_GROUP:
                return await metrics.serve(self, request, path)
            return await events.serve(self, request, path)
        if path.subresource is not None:
            from handlers.apiserver.subresources import HANDLERS

            serve = HANDLERS.get((resource.plural, path.subresource))
            if serve is None or path.name is None:
                raise not_found(
                    f"{resource.plural}/{path.subresource}: this subresource is not served by "
                    "fleetlog yet"
                )
            return await serve(self, request, path, caller)
        if (
            resource.namespaced
            and path.namespace is None
            and request.method
            not in (
                "GET",
                "DELETE",
            )
        ):
            raise method_not_allowed(path.target)
        method = request.method
        watching = path.legacy_watch or flag(request, "watch")
        if method == "GET":
            if watching:
                return await self.watch(request, path)
            if path.name is None:
                return await self.list(request, path)
            return await self.get(request, path)
        if watching:
            raise method_not_allowed(path.target)
        if method == "POST" and path.name is None:
            return await self.create(request, path, caller)
        if method == "PUT" and path.name is not None:
            return await self.update(request, path, caller)
        if method == "DELETE":
            if path.name is None:
                return await self.delete_collection(request, path, caller)
            return await self.delete(request, path, caller)
        if method == "PATCH" and path.name is not None:
            return await self.patch(request, path, caller)
        raise method_not_allowed(path.target)

    # -- reads -----------------------------------------------------------------------------

    @property
    def store(self) -> EventStore:
        return self._store

    @property
    def position(self) -> int:
        """The log sequence the read model has applied."""
        return self._projection.position

    async def read_model(self) -> ClusterModel:
        """The read model once it has applied everything in the log now."""
        await self.reach(None)
        return self._projection.model

    async def reach(self, rv: int | None) -> None:
        """Wait until the read model has applied ``rv`` (None: everything in the log now)."""
        if rv is None:
            await self._projection.wait_for_log_end(timeout=READ_WAIT_S)
        elif rv and not await self._projection.wait_for(rv, timeout=READ_WAIT_S):
            raise too_large_resource_version(rv, self._projection.position)

    def columns_of(self, kind: str) -> Columns:
        """The server-side Table columns of ``kind`` (kube's default ones without an entry)."""
        return columns_for(self._columns, kind)

    def follow(self, listener: Callable[[StoredEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every event the read model applies from now on (after it is
        folded); the answer stops that."""
        self._projection.listeners.append(listener)
        return lambda: self._projection.listeners.remove(listener)

    @property
    def nc(self) -> Client:
        """The NATS connection (subresources reach nodes and telemetry streams through it)."""
        return self._nc

    async def current(self, path: ResourcePath) -> ObjectRecord:
        """The object ``path`` names, as of the log's end now; kube's NotFound if none."""
        await self._projection.wait_for_log_end(timeout=READ_WAIT_S)
        record = self.record(path)
        if record is None:
            raise not_found_object(path)
        return record

    def record(self, path: ResourcePath, name: str | None = None) -> ObjectRecord | None:
        """The object ``path`` names (or ``name`` of its kind) in the read model as it is (no
        wait)."""
        namespace = path.namespace or "" if path.resource.namespaced else ""
        return self._projection.model.get(path.resource.kind, namespace, name or path.name or "")

    def lookup(self, kind: str, namespace: str, name: str) -> ObjectRecord | None:
        """Any object in the read model (a subresource's other party: a binding's node)."""
        return self._projection.model.get(kind, namespace, name)

    async def shown(self, record: ObjectRecord) -> ObjectRecord:
        """The object as its reader sees it: a Secret with its values opened (the read model,
        like the log, holds them sealed), as kube-apiserver answers a get; every write of a
        Secret starts from this, so a patch changes values, never their sealed text."""
        if record.kind != "Secret":
            return record
        if self._secret_keys is None:
            manifest = redacted_manifest(record.manifest)
        else:
            manifest = await self._secret_keys.opened(
                record.manifest, namespace=record.namespace, name=record.name, uid=record.uid
            )
        return dataclasses.replace(record, manifest=manifest)

    def as_api_object(self, resource: APIResource, record: ObjectRecord) -> dict[str, Any]:
        return api_object(
            resource,
            manifest=record.manifest,
            namespace=record.namespace,
            uid=record.uid,
            resource_version=record.last_seq,
            created_ns=record.created_ns,
        )

    async def get(self, request: web.Request, path: ResourcePath) -> web.StreamResponse:
        fmt = response_format(request, table_allowed=True)
        rv = parse_resource_version(request.query.get("resourceVersion"))
        await self.reach(rv if rv is not None else None)
        record = self.record(path)
        if record is None:
            raise not_found_object(path)
        record = await self.shown(record)
        obj = self.as_api_object(path.resource, record)
        if fmt == "table":
            columns = columns_for(self._columns, path.resource.kind)
            include = include_object(request.query.get("includeObject"))
            row = table_row(columns, record.as_dict(), obj, now_ns=time.time_ns(), include=include)
            return respond(table(columns, [row], resource_version=record.last_seq))
        return respond(obj)

    def _selectors(self, request: web.Request, kind: str) -> tuple[Selector, FieldSelector]:
        try:
            labels = parse_selector_text(request.query.get("labelSelector", ""))
        except FleetError as exc:
            raise bad_request(f"unable to parse requirement: {exc.message}") from None
        return labels, parse_field_selector(request.query.get("fieldSelector"), kind)

    async def _model_at(
        self, read: ReadAt, resource: APIResource, namespace: str | None
    ) -> tuple[ClusterModel, int]:
        """The read model a list reads, and its resourceVersion."""
        if read.mode == "exact":
            if read.rv > self._projection.position:
                await self.reach(read.rv)
            first = int((await self._store.stream_info())["state"].get("first_seq") or 1)
            if read.rv < first - 1:
                raise APIError(410, "Expired", f"too old resource version: {read.rv} ({first - 1})")
            private = Projection(
                ClusterModel(),
                self._store,
                filter_subject=event_filter(resource.kind, namespace),
            )
            await private.catch_up(until_seq=read.rv)
            return private.model, read.rv
        await self.reach(None if read.mode == "latest" else read.rv)
        return self._projection.model, self._projection.position

    async def list(self, request: web.Request, path: ResourcePath) -> web.StreamResponse:
        resource = path.resource
        fmt = response_format(request, table_allowed=True)
        include = include_object(request.query.get("includeObject"))
        token = request.query.get("continue") or ""
        after: tuple[str, str] | None = None
        read = list_read(
            request.query.get("resourceVersion"),
            request.query.get("resourceVersionMatch"),
            continuing=bool(token),
        )
        if token:
            cont = Continue.decode(token)
            after = cont.after
            read = ReadAt("exact", cont.rv) if cont.exact else ReadAt("latest")
        limit = _limit(request.query.get("limit"))
        labels, fields = self._selectors(request, resource.kind)
        matches = selector_matcher(labels.matches, None if fields.empty else fields.matches)
        model, list_rv = await self._model_at(read, resource, path.namespace)
        now_ns = time.time_ns()
        columns = columns_for(self._columns, resource.kind)
        items: list[dict[str, Any]] = []
        last: tuple[str, str] | None = None
        remaining = 0
        more = False
        for record in model.list(resource.kind, path.namespace):
            if after is not None and (record.namespace, record.name) <= after:
                continue
            item = record.as_dict()
            if not matches(item):
                continue
            if limit and len(items) == limit:
                more = True
                remaining += 1
                continue
            obj = self.as_api_object(resource, await self.shown(record))
            if fmt == "table":
                obj = table_row(columns, item, obj, now_ns=now_ns, include=include)
            items.append(obj)
            last = (record.namespace, record.name)
        token_out = ""
        if more and last is not None:
            token_out = Continue(rv=list_rv, after=last, exact=read.mode == "exact").encode()
        selected = bool(request.query.get("labelSelector") or request.query.get("fieldSelector"))
        count = None if selected else remaining
        if fmt == "table":
            return respond(
                table(columns, items, resource_version=list_rv, continue_token=token_out,
                      remaining=count)
            )  # fmt: skip
        return respond(
            list_object(resource, items, resource_version=list_rv, continue_token=token_out,
                        remaining=count)
        )  # fmt: skip

    async def watch(self, request: web.Request, path: ResourcePath) -> web.StreamResponse:
        resource = path.resource
        fmt = response_format(request, table_allowed=True)
        labels, fields = self._selectors(request, resource.kind)
        if path.name is not None:
            fields = parse_field_selector(
                ",".join(filter(None, [request.query.get("fieldSelector"),
                                       f"metadata.name={path.name}"])),
                resource.kind,
            )  # fmt: skip
        start = watch_from(
            request.query.get("resourceVersion"),
            request.query.get("resourceVersionMatch"),
            request.query.get("sendInitialEvents"),
        )
        timeout = request.query.get("timeoutSeconds")
        try:
            timeout_s = float(int(timeout)) if timeout else DEFAULT_TIMEOUT_S
        except ValueError:
            raise bad_request(f'invalid timeoutSeconds "{timeout[:32]}"') from None
        watch = WatchRequest(
            resource=resource,
            namespace=path.namespace if resource.namespaced else None,
            matches=selector_matcher(labels.matches, None if fields.empty else fields.matches),
            start=start,
            format=fmt,
            columns=columns_for(self._columns, resource.kind),
            include=include_object(request.query.get("includeObject")),
            bookmarks=flag(request, "allowWatchBookmarks"),
            timeout_s=max(0.0, timeout_s),
        )
        return await self._watches.serve(request, watch)

    # -- writes ----------------------------------------------------------------------------

    def _client(self, caller: Caller) -> CommandClient:
        # Signed (the door holds a control-plane key): the command impersonates the caller,
        # so the gateway's RBAC decides with its identity and the audit names it, the door
        # recorded as the impersonator. Unsigned (an open server): the stated actor, as any
        # unsigned command there.
        if credentials_of(self._nc) is None:
            return CommandClient(self._nc, actor=caller.identity.actor, source=caller.source)
        return CommandClient(
            self._nc, actor=caller.identity.user, source=caller.source, impersonate=True,
            groups=caller.identity.groups,
        )  # fmt: skip

    async def send(
        self,
        caller: Caller,
        target: Target,
        kind: str,
        verb: str,
        body: dict[str, Any],
        *,
        expected_version: int | None = None,
        refusal: Callable[[FleetError], APIError | None] | None = None,
    ) -> int:
        """Send one command; the highest sequence it wrote (0: it changed nothing).
        ``refusal`` answers a subresource's own reading of a gateway refusal (None: the
        usual one)."""
        outcome = await self._outcome(
            caller, target, kind, verb, body, expected_version=expected_version, refusal=refusal
        )
        return max(outcome.seqs, default=0)

    async def send_dry(
        self,
        caller: Caller,
        target: Target,
        kind: str,
        verb: str,
        body: dict[str, Any],
        *,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Send one command as a dry run: decided by the gateway exactly as a real one
        (authorization, admission, the object's rules), nothing appended; the object as it
        would be (a Secret's values open)."""
        outcome = await self._outcome(
            caller, target, kind, verb, body, expected_version=expected_version, dry_run=True
        )
        answered: dict[str, Any] = outcome.extra["object"]
        return answered

    async def _outcome(
        self,
        caller: Caller,
        target: Target,
        kind: str,
        verb: str,
        body: dict[str, Any],
        *,
        expected_version: int | None,
        refusal: Callable[[FleetError], APIError | None] | None = None,
        dry_run: bool = False,
    ) -> Outcome:
        """The gateway's answer, its warnings passed on; a refusal as kube's Status."""
        try:
            outcome = await self._client(caller).send(
                kind, verb, body, expected_version=expected_version, dry_run=dry_run
            )
        except NoGateway as exc:
            raise APIError(503, "ServiceUnavailable", exc.message, target) from None
        except FleetError as exc:
            if isinstance(exc, CommandFailed):
                warn(exc.warnings)
            answer = refusal(exc) if refusal is not None else None
            raise (answer or from_fleet_error(exc, target)) from None
        warn(outcome.warnings)
        return outcome

    def dry_object(
        self,
        path: ResourcePath,
        answered: Mapping[str, Any],
        current: ObjectRecord | None,
    ) -> dict[str, Any]:
        """A dry run's answer as kube gives it: an update keeps the object's resourceVersion
        (nothing was stored), a create has none yet."""
        obj = api_object(
            path.resource,
            manifest=answered["manifest"],
            namespace=path.namespace or "",
            uid=str(answered["uid"]),
            resource_version=current.last_seq if current is not None else 0,
            created_ns=current.created_ns if current is not None else time.time_ns(),
        )
        if current is None:
            del obj["metadata"]["resourceVersion"]
        return obj

    async def send_on_object(
        self,
        caller: Caller,
        path: ResourcePath,
        verb: str,
        body: dict[str, Any],
        *,
        expected_version: int | None,
    ) -> ObjectRecord:
        """Send a command on the object ``path`` names and answer the object as the read
        model has it once the command's events are applied (kube's NotFound if it is gone)."""
        assert path.name is not None
        seq = await self.send(
            caller, path.target, path.resource.kind, verb, body, expected_version=expected_version
        )
        after = await self.after_write(path, path.name, seq)
        if after is None:
            raise not_found_object(path)
        return after

    async def after_write(self, path: ResourcePath, name: str, seq: int) -> ObjectRecord | None:
        record = await self._after_write(path, name, seq)
        return await self.shown(record) if record is not None else None

    async def _after_write(self, path: ResourcePath, name: str, seq: int) -> ObjectRecord | None:
        if seq:
            await self._projection.wait_for(seq, timeout=READ_WAIT_S)
        return self.record(path, name)

    def _check_namespace(self, path: ResourcePath) -> None:
        namespace = path.namespace if path.resource.namespaced else None
        if namespace is not None and self._projection.model.get("Namespace", "", namespace) is None:
            raise not_found_object_of(BY_KIND["Namespace"], namespace)

    async def create(
        self, request: web.Request, path: ResourcePath, caller: Caller
    ) -> web.StreamResponse:
        dry = dry_run_of(_all(request.query, "dryRun"))
        body = await read_json(request)
        written = writable(
            body,
            path.resource,
            namespace=path.namespace or "",
            name_entropy=secrets.token_bytes(8),
        )
        target = Target(path.resource.plural, path.resource.group, written.name, path.resource.kind)
        manifest = _managed_update(
            request, path.resource, None, written.manifest, _stated_managers(body), target
        )
        await self._projection.wait_for_log_end(timeout=READ_WAIT_S)
        self._check_namespace(path)
        if dry:
            answered = await self.send_dry(
                caller, target, path.resource.kind, "create", {"manifest": manifest}
            )
            return respond(self.dry_object(path, answered, None), status=201)
        seq = await self.send(caller, target, path.resource.kind, "create", {"manifest": manifest})
        record = await self.after_write(path, written.name, seq)
        if record is None:
            raise not_found(f'{target.qualified_resource} "{written.name}" was deleted at once')
        return respond(self.as_api_object(path.resource, record), status=201)

    async def update(
        self, request: web.Request, path: ResourcePath, caller: Caller
    ) -> web.StreamResponse:
        dry = dry_run_of(_all(request.query, "dryRun"))
        assert path.name is not None
        body = await read_json(request)
        written = writable(body, path.resource, namespace=path.namespace or "", name=path.name)
        await self._projection.wait_for_log_end(timeout=READ_WAIT_S)
        record = self.record(path)
        if record is None:
            raise not_found_object(path)
        record = await self.shown(record)
        expected = check_preconditions(path, record, written.preconditions)
        manifest = _managed_update(
            request, path.resource, record.manifest, written.manifest, _stated_managers(body),
            path.target,
        )  # fmt: skip
        if dry:
            answered = await self.send_dry(
                caller, path.target, path.resource.kind, "apply", {"manifest": manifest},
                expected_version=expected,
            )  # fmt: skip
            return respond(self.dry_object(path, answered, record))
        seq = await self.send(
            caller, path.target, path.resource.kind, "apply", {"manifest": manifest},
            expected_version=expected,
        )  # fmt: skip
        after = await self.after_write(path, path.name, seq)
        if after is None:
            raise not_found_object(path)
        return respond(self.as_api_object(path.resource, after))

    async def patch(
        self, request: web.Request, path: ResourcePath, caller: Caller
    ) -> web.StreamResponse:
        """Apply the patch to the object as it is and store the result as an update, pinned
        to the version it was computed from; a write racing in between makes it start over
        (as kube-apiserver retries a patch), unless the patch itself named a
        resourceVersion."""
        dry = dry_run_of(_all(request.query, "dryRun"))
        assert path.name is not None
        media = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media == APPLY_PATCH:
            return await self.server_side_apply(request, path, caller, dry=dry)
        if media not in PATCH_TYPES:
            raise unsupported_media_type(media or "(none)", (*PATCH_TYPES, APPLY_PATCH))
        if "force" in request.query:
            raise _invalid_patch_options(
                "force", "Forbidden: may not be specified for non-apply patch"
            )
        _field_manager(request)
        body = await read_json(request, media_types=PATCH_TYPES)
        for attempt in range(PATCH_ATTEMPTS):
            await self._projection.wait_for_log_end(timeout=READ_WAIT_S)
            record = self.record(path)
            if record is None:
                raise not_found_object(path)
            record = await self.shown(record)
            current = self.as_api_object(path.resource, record)
            patched = apply_patch(media, current, body)
            written = writable(patched, path.resource, namespace=path.namespace or "",
                               name=path.name)  # fmt: skip
            stated = written.preconditions.resource_version not in (None, record.last_seq)
            expected = check_preconditions(path, record, written.preconditions)
            manifest = _managed_update(
                request, path.resource, record.manifest, written.manifest,
                _stated_managers(patched), path.target,
            )  # fmt: skip
            try:
                if dry:
                    answered = await self.send_dry(
                        caller, path.target, path.resource.kind, "apply",
                        {"manifest": manifest}, expected_version=expected,
                    )  # fmt: skip
                    return respond(self.dry_object(path, answered, record))
                seq = await self.send(
                    caller, path.target, path.resource.kind, "apply",
                    {"manifest": manifest}, expected_version=expected,
                )  # fmt: skip
            except APIError as exc:
                if exc.reason != "Conflict" or stated or attempt == PATCH_ATTEMPTS - 1:
                    raise
                continue
            after = await self.after_write(path, path.name, seq)
            if after is None:
                raise not_found_object(path)
            return respond(self.as_api_object(path.resource, after))
        raise AssertionError("unreachable")

    async def server_side_apply(
        self, request: web.Request, path: ResourcePath, caller: Caller, *, dry: bool = False
    ) -> web.StreamResponse:
        """``application/apply-patch+yaml``: merge the applied configuration into the object
        (or create it) as its field manager, refusing with kube's Conflict to change a field
        another manager owns unless ``force=true``. Pinned to the version it was computed
        from, like any patch; a write racing in between makes it start over."""
        assert path.name is not None
        manager = _field_manager(request)
        if not manager:
            raise _invalid_patch_options(
                "fieldManager", "Required value: is required for apply patch"
            )
        force = request.query.get("force", "false")
        if force not in ("true", "false"):
            raise bad_request(f'invalid force "{force[:32]}": must be true or false')
        body = await read_json(request, media_types=(APPLY_YAML,))
        config = writable(body, path.resource, namespace=path.namespace or "", name=path.name)
        for attempt in range(PATCH_ATTEMPTS):
            await self._projection.wait_for_log_end(timeout=READ_WAIT_S)
            record = self.record(path)
            if record is not None:
                record = await self.shown(record)
            if record is None:
                self._check_namespace(path)
            elif config.preconditions != Preconditions():
                check_preconditions(path, record, config.preconditions)
            outcome = fieldsets.apply(
                record.manifest if record is not None else None,
                config.manifest,
                manager=manager,
                api_version=path.resource.group_version,
                force=force == "true",
                now=format_stamp(time.time_ns()),
                target=path.target,
            )
            # status is the status subresource's to write, never an apply's
            manifest = {k: v for k, v in outcome.object.items() if k != "status"}
            verb = "create" if record is None else "apply"
            try:
                if dry:
                    answered = await self.send_dry(
                        caller, path.target, path.resource.kind, verb, {"manifest": manifest},
                        expected_version=None if record is None else record.version,
                    )  # fmt: skip
                    return respond(
                        self.dry_object(path, answered, record),
                        status=201 if record is None else 200,
                    )
                seq = await self.send(
                    caller, path.target, path.resource.kind, verb, {"manifest": manifest},
                    expected_version=None if record is None else record.version,
                )  # fmt: skip
            except APIError as exc:
                retry = exc.reason == "Conflict" or (
                    record is None and exc.reason == "AlreadyExists"
                )
                if not retry or attempt == PATCH_ATTEMPTS - 1:
                    raise
                continue
            after = await self.after_write(path, path.name, seq)
            if after is None:
                raise not_found_object(path)
            return respond(
                self.as_api_object(path.resource, after), status=201 if record is None else 200
            )
        raise AssertionError("unreachable")

    async def delete_one(
        self, path: ResourcePath, record: ObjectRecord, caller: Caller, options: DeleteOptions
    ) -> int:
        target = Target(path.resource.plural, path.resource.group, record.name, path.resource.kind)
        expected = check_preconditions(
            ResourcePath(path.resource, path.namespace, record.name), record, options.preconditions
        )
        body: dict[str, Any] = {"name": record.name, "propagationPolicy": options.propagation}
        if path.resource.namespaced:
            body["namespace"] = record.namespace
        if options.dry_run:
            await self.send_dry(
                caller, target, path.resource.kind, "delete", body, expected_version=expected
            )
            return 0
        seq = await self.send(
            caller, target, path.resource.kind, "delete", body, expected_version=expected
        )
        if seq:
            await self._projection.wait_for(seq, timeout=READ_WAIT_S)
        return seq

    async def delete(
        self, request: web.Request, path: ResourcePath, caller: Caller
    ) -> web.StreamResponse:
        options = await _delete_options(request, path.target)
        await self._projection.wait_for_log_end(timeout=READ_WAIT_S)
        record = self.record(path)
        if record is None:
            raise not_found_object(path)
        seq = await self.delete_one(path, record, caller, options)
        still = self.record(path)
        if still is not None and still.uid == record.uid and not options.dry_run:
            return respond(self.as_api_object(path.resource, still))
        if path.resource.kind in RETURNS_DELETED_OBJECT:
            return respond(object_of(path.resource, record.as_dict(), seq or record.last_seq))
        return respond(success(target=path.target, uid=record.uid))

    async def delete_collection(
        self, request: web.Request, path: ResourcePath, caller: Caller
    ) -> web.StreamResponse:
        options = await _delete_options(request, path.target)
        if options.preconditions != Preconditions():
            raise bad_request("preconditions are not allowed on a delete of a collection")
        labels, fields = self._selectors(request, path.resource.kind)
        matches = selector_matcher(labels.matches, None if fields.empty else fields.matches)
        await self._projection.wait_for_log_end(timeout=READ_WAIT_S)
        chosen = [
            record
            for record in self._projection.model.list(path.resource.kind, path.namespace)
            if matches(record.as_dict())
        ]
        deleted: list[dict[str, Any]] = []
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def one(record: ObjectRecord) -> None:
            async with gate:
                try:
                    await self.delete_one(path, record, caller, options)
                except APIError as exc:
                    if exc.code != 404:  # gone meanwhile: what was asked is done
                        raise
                    return
                deleted.append(object_of(path.resource, record.as_dict(), record.last_seq))

        async with asyncio.TaskGroup() as tasks:
            for record in chosen:
                tasks.create_task(one(record))
        deleted.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return respond(
            list_object(path.resource, deleted, resource_version=self._projection.position)
        )


# -- helpers -------------------------------------------------------------------------------


def not_found_object(path: ResourcePath) -> APIError:
    return not_found_object_of(path.resource, path.name or "")


def not_found_object_of(resource: APIResource, name: str) -> APIError:
    target = Target(resource.plural, resource.group, name, resource.kind)
    return APIError(404, "NotFound", f'{target.qualified_resource} "{name}" not found', target)


def _limit(text: str | None) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise bad_request(f'invalid limit "{text[:32]}": must be a non-negative integer')
    return int(text)


def _field_manager(request: web.Request) -> str:
    """The ``fieldManager`` the request names ("" when none), within kube's limit."""
    manager = request.query.get("fieldManager", "")
    if len(manager) > MAX_FIELD_MANAGER:
        raise _invalid_patch_options(
            "fieldManager", f"Too long: may not be more than {MAX_FIELD_MANAGER} bytes"
        )
    if any(not c.isprintable() for c in manager):
        raise _invalid_patch_options(
            "fieldManager", "Invalid value: must only contain printable characters"
        )
    return manager


def _invalid_patch_options(field: str, message: str) -> APIError:
    return invalid(Target(kind="PatchOptions", group="meta.k8s.io"), (FieldError(field, message),))


def _update_manager(request: web.Request) -> str:
    """Who an ordinary write's fields belong to: its ``fieldManager``, else the client's name
    from its User-Agent (``kubectl`` of ``kubectl/v1.37.0 (linux/amd64) …``), as kube does."""
    manager = _field_manager(request)
    if manager:
        return manager
    agent = request.headers.get("User-Agent", "")
    return agent.split("/", 1)[0][:MAX_FIELD_MANAGER] or "unknown"


def _stated_managers(body: Any) -> Any:
    """The ``managedFields`` a written object states itself (before they are stripped)."""
    metadata = body.get("metadata") if isinstance(body, dict) else None
    return metadata.get("managedFields") if isinstance(metadata, dict) else None


def _managed_update(
    request: web.Request,
    resource: APIResource,
    live: Mapping[str, Any] | None,
    manifest: dict[str, Any],
    stated: Any,
    target: Target,
) -> dict[str, Any]:
    """``manifest`` with its managers after this ordinary write (``core.kubeapi.fieldsets``)."""
    new = manifest
    if stated is not None:
        new = {**manifest, "metadata": {**manifest.get("metadata", {}), "managedFields": stated}}
    return fieldsets.update(
        live,
        new,
        manager=_update_manager(request),
        api_version=resource.group_version,
        now=format_stamp(time.time_ns()),
        target=target,
    ).object


def no_dry_run(request: web.Request) -> None:
    """A subresource's write: its dry run is not served (kube serves it; say so)."""
    if request.query.get("dryRun"):
        raise bad_request(
            "dryRun on a subresource is not supported by fleetlog yet: nothing was done"
        )


def dry_run_of(values: list[str] | str | None) -> bool:
    """kube's ``dryRun`` (query or DeleteOptions): ``All`` decides everything and stores
    nothing; absent, a real write; any other value is refused as ``ValidateDryRun`` does."""
    if values is None or values == []:
        return False
    listed = [values] if isinstance(values, str) else values
    if not isinstance(listed, list):
        raise bad_request("dryRun must be a list of strings")
    for value in listed:
        if value != "All":
            raise bad_request(
                f'dryRun: Unsupported value: "{str(value)[:32]}": supported values: "All"'
            )
    return True


async def read_patch(request: web.Request, target: Target) -> tuple[str, Any]:
    """A subresource PATCH's media type (one of the three patch formats) and its decoded
    body."""
    media = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media == APPLY_PATCH:
        raise APIError(
            415,
            "UnsupportedMediaType",
            "server-side apply (application/apply-patch+yaml) on a subresource is not served "
            "by fleetlog yet: use a merge, strategic merge or JSON patch",
            target,
        )
    if media not in PATCH_TYPES:
        raise unsupported_media_type(media or "(none)", PATCH_TYPES)
    return media, await read_json(request, media_types=PATCH_TYPES)


class _Asked(Protocol):
    """A decoded subresource write: what it asks for, with the preconditions it states."""

    @property
    def preconditions(self) -> Preconditions: ...


AskedT = TypeVar("AskedT", bound=_Asked)


async def patch_subresource(
    resources: Resources,
    request: web.Request,
    path: ResourcePath,
    *,
    shown: Callable[[ObjectRecord], dict[str, Any]],
    asked: Callable[[Any, dict[str, Any]], AskedT],
    write: Callable[[ObjectRecord, AskedT], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """A PATCH on a subresource (status, scale, resize): the patch applied to the subresource as
    ``shown`` for the object as it is now, read by ``asked`` (the patched body and what it was
    applied to), then ``write`` pinned to that version; a conflict is retried as
    kube-apiserver retries a patch, unless the body stated its own resourceVersion."""
    media, patch = await read_patch(request, path.target)
    for attempt in range(PATCH_ATTEMPTS):
        record = await resources.current(path)
        current = shown(record)
        wanted = asked(apply_patch(media, current, patch), current)
        stated = wanted.preconditions.resource_version not in (None, record.last_seq)
        try:
            return await write(record, wanted)
        except APIError as exc:
            if exc.reason != "Conflict" or stated or attempt == PATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def check_preconditions(
    path: ResourcePath, record: ObjectRecord, preconditions: Preconditions
) -> int | None:
    """Refuse a write whose preconditions the object no longer meets (kube's Conflict); the
    aggregate version to pin the command to when a resourceVersion was stated, so a change
    racing in between is refused by the gateway."""
    if preconditions.uid is not None and preconditions.uid != record.uid:
        raise conflict(
            path.target,
            f"Precondition failed: UID in precondition: {preconditions.uid}, UID in object "
            f"meta: {record.uid}",
        )
    if preconditions.resource_version is None:
        return None
    if preconditions.resource_version != record.last_seq:
        raise conflict(path.target, MODIFIED)
    return record.version


@dataclass(frozen=True)
class DeleteOptions:
    propagation: str
    preconditions: Preconditions
    dry_run: bool = False


async def _delete_options(request: web.Request, target: Target) -> DeleteOptions:
    """DeleteOptions from the body (kubectl sends one) and the query (the Python client's)."""
    body = await read_json(request, required=False)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise bad_request("DeleteOptions must be a JSON object", target)
    return delete_options(body, request.query, target)


def delete_options(
    body: Mapping[str, Any], query: Mapping[str, str], target: Target
) -> DeleteOptions:
    """DeleteOptions from a body (a delete's, or the one inside an Eviction) and a query."""
    stated = body.get("dryRun")
    dry_run = dry_run_of(stated if stated is not None else _all(query, "dryRun"))
    policy = body.get("propagationPolicy") or query.get("propagationPolicy")
    orphan = body.get("orphanDependents")
    if orphan is None and query.get("orphanDependents"):
        orphan = query.get("orphanDependents") == "true"
    if orphan is not None and policy:
        raise invalid(
            target,
            (FieldError("propagationPolicy", "Invalid value: orphanDependents and "
                        "propagationPolicy cannot both be set"),),
        )  # fmt: skip
    if policy is None:
        policy = "Orphan" if orphan else "Background"
    if policy not in PROPAGATION_POLICIES:
        raise invalid(
            target,
            (FieldError("propagationPolicy", f'Unsupported value: "{str(policy)[:32]}": '
                        'supported values: "Foreground", "Background", "Orphan"'),),
        )  # fmt: skip
    pre = body.get("preconditions") or {}
    if not isinstance(pre, dict):
        raise bad_request("preconditions must be an object", target)
    uid, rv = pre.get("uid"), pre.get("resourceVersion")
    return DeleteOptions(
        propagation=str(policy),
        preconditions=Preconditions(
            uid=uid if isinstance(uid, str) and uid else None,
            resource_version=parse_resource_version(rv if isinstance(rv, str) else None),
        ),
        dry_run=dry_run,
    )


def _all(query: Mapping[str, str], key: str) -> list[str] | None:
    """Every value of a repeated query parameter (aiohttp's MultiDict), or None."""
    getall = getattr(query, "getall", None)
    if getall is not None:
        values: list[str] = getall(key, [])
        return values or None
    value = query.get(key)
    return [value] if value is not None else None
