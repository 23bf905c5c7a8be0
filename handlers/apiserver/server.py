"""The Kubernetes API server: HTTPS on a loopback port, its callers authenticated, authorized
and queued fairly as kube-apiserver's are.

Why this exists: it wires the door together: TLS with the cluster CA (``certs``), who the
caller is and what it may do (``identity``: client certificates and bearer tokens, RBAC over
the gateway's policy), API Priority and Fairness (``handlers.fairgate``: each request is
classified by the cluster's FlowSchemas and waits for a seat of its priority level, or is
refused 429 with ``Retry-After``; every answer carries kube's ``X-Kubernetes-PF-*`` headers),
discovery and OpenAPI (``discovery``), the REST verbs and watches (``resources``, ``watch``),
``kubectl auth whoami|can-i`` (``reviews``) and one rule for every failure: a Kubernetes
``Status`` (``http``). It runs inside ``fleetlog up`` beside the gateway and the read model it
translates to, and stops with it: the listening socket closes first, then open watches end.

The order is kube-apiserver's filter chain: authentication (401), priority and fairness (429),
authorization (403), then the handler. A caller presenting no credentials is
``system:anonymous``: it may read only what RBAC gives ``system:unauthenticated`` (the
built-in ``system:public-info-viewer``: ``/healthz``, ``/livez``, ``/readyz``, ``/version``);
anything else answers 401, as kube-apiserver with anonymous authentication disabled. Discovery
and OpenAPI are served to every authenticated caller. Long-running requests hold no seat while
they stream (kube's rule): a watch queues for a seat and gives it back as it starts; logs with
``follow`` and exec, attach and port-forward are classified (their headers) but never queued.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

import structlog
from aiohttp import web
from nats.aio.client import Client

from core.access import rbac
from core.access.flowdefaults import flow_user
from core.kubeapi.authn import CONNECT_SUBRESOURCES, door_authorizes, request_attributes
from core.kubeapi.fieldsets import KUBERNETES_DOOR_SOURCE
from core.kubeapi.paths import ResourcePath, not_found, parse_resource_path
from core.kubeapi.status import APIError, Target
from core.kubeapi.tables import Columns
from handlers.apiserver import discovery, reviews
from handlers.apiserver.certs import PKI
from handlers.apiserver.http import (
    add_warning_headers,
    collect_warnings,
    flag,
    refusal,
    reset_warnings,
    respond,
)
from handlers.apiserver.identity import AccessSource, DoorAccess, Identity, unauthorized
from handlers.apiserver.resources import Caller, Resources
from handlers.apiserver.watch import Watches
from handlers.fairgate import FairGate, Seat, StoredFlowControl, TooManyRequests
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.eventstore import EventStore
from streams.secretkeys import SecretKeys

log = structlog.get_logger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})
"""What an anonymous caller may read when the door has no RBAC to ask (kube's
``system:public-info-viewer``)."""
FLOW_SCHEMA_UID_HEADER = "X-Kubernetes-PF-FlowSchema-UID"
PRIORITY_LEVEL_UID_HEADER = "X-Kubernetes-PF-PriorityLevel-UID"
DEFAULT_MAX_IN_FLIGHT = 600
"""kube-apiserver's default seats: ``--max-requests-inflight`` 400 plus
``--max-mutating-requests-inflight`` 200, shared by the priority levels."""
_FLOW = web.RequestKey("flow", tuple[str, str])


def _fleetlog_version() -> str:
    try:
        return package_version("fleetlog")
    except PackageNotFoundError:
        return "dev"


def tls_context(pki: PKI) -> ssl.SSLContext:
    """The server side of mutual TLS: our certificate, and client certificates checked
    against the cluster CA (optional at the handshake, so health checks work without one;
    required by every API path)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(cafile=pki.ca_cert)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


class APIServer:
    """The Kubernetes API over HTTPS, translating to fleetlog's gateway and read model."""

    def __init__(
        self,
        *,
        nc: Client,
        projection: Projection[ClusterModel],
        store: EventStore,
        pki: PKI,
        columns: Mapping[str, Columns],
        host: str = "127.0.0.1",
        port: int = 6443,
        access: AccessSource | None = None,
        bookmark_every_s: float = 60.0,
        secret_keys: SecretKeys | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        queue_wait_s: float = 15.0,
    ) -> None:
        """``access``: the cluster's users and RBAC policy (the gateway's), given when this
        door's commands are signed (see ``identity``); ``secret_keys``: how a Secret's values
        are opened for a get (without them, a Secret is shown with each value ``<sealed, N
        bytes>``); ``max_in_flight``: the seats API Priority and Fairness shares out."""
        self._host = host
        self._port = port
        self.pki = pki
        self.doors = DoorAccess(access)
        self.flow_control = StoredFlowControl(store)
        self.fairness = FairGate(
            total_seats=max_in_flight,
            read=self.flow_control.read,
            version=self.flow_control.version,
            queue_wait_s=queue_wait_s,
        )
        self._version = _fleetlog_version()
        self._openapi = discovery.OpenAPI(self._version)
        self.watches = Watches(projection, store, bookmark_every_s=bookmark_every_s)
        self._resources = Resources(
            nc=nc, projection=projection, store=store, columns=columns, watches=self.watches,
            secret_keys=secret_keys,
        )  # fmt: skip
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    @property
    def url(self) -> str:
        return f"https://{self._host}:{self.bound_port or self._port}"

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._statuses], client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.on_response_prepare.append(_flow_headers)
        return app

    async def start(self) -> None:
        await self.flow_control.start()
        self._runner = web.AppRunner(self.application(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=tls_context(self.pki))
        await site.start()
        server = site._server  # aiohttp keeps the asyncio server here: the bound port
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("apiserver.serving", url=self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.flow_control.stop()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled."""
        await self.start()
        if ready is not None:
            ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop())

    # -- middleware ------------------------------------------------------------------------

    @web.middleware
    async def _statuses(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Every refusal as a Kubernetes Status; an unexpected failure as InternalError.
        Admission's warnings go with the answer, refusal or not, as ``Warning`` headers."""
        collecting = collect_warnings()
        try:
            response = await self._answer(request, handler)
        except BaseException:
            reset_warnings(collecting)
            raise
        add_warning_headers(response, collecting)
        return response

    async def _answer(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except APIError as error:
            return refusal(error)
        except web.HTTPRequestEntityTooLarge:
            from core.kubeapi.status import too_large

            return refusal(too_large())
        except (asyncio.CancelledError, web.HTTPException):
            raise
        except Exception as exc:
            log.exception("apiserver.internal_error", path=request.path)
            return refusal(
                APIError(500, "InternalError", f"Internal error occurred: {type(exc).__name__}")
            )

    async def _identity(self, request: web.Request) -> Identity:
        transport = request.transport
        certificate = transport.get_extra_info("peercert") if transport is not None else None
        return await self.doors.authenticate(
            peer_certificate=certificate, authorization=request.headers.get("Authorization")
        )

    @staticmethod
    def _caller(request: web.Request, identity: Identity) -> Caller:
        transport = request.transport
        peer = request.remote or "?"
        peername = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(peername, tuple) and len(peername) >= 2:
            peer = f"{peername[0]}:{peername[1]}"
        agent = request.headers.get("User-Agent", "")
        source = f"{KUBERNETES_DOOR_SOURCE} {peer} {agent}".strip()[:256]
        return Caller(identity=identity, source=source)

    # -- routes ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        identity = await self._identity(request)
        segments = [s for s in request.path.split("/")][1:]
        if segments and segments[-1] == "":
            segments = segments[:-1]
        try:
            resource_path = _resource_path(segments)
        except APIError:
            if identity.anonymous:
                raise unauthorized() from None
            raise
        review = reviews.review_of(request.method, segments)
        attributes = (
            request_attributes(
                request.method, resource_path, watch=_watching(request, resource_path)
            )
            if resource_path is not None
            else review or rbac.Request(verb=_non_resource_verb(request.method), path=request.path)
        )
        if identity.anonymous and not await self._public(identity, attributes):
            raise unauthorized()
        seat = await self._queue(request, identity, attributes, resource_path)
        try:
            if resource_path is not None and door_authorizes(attributes):
                await self._authorize(identity, attributes, resource_path.target)
            if review is not None:
                return await reviews.serve(request, identity, self.doors)
            return await self._route(request, segments, resource_path, identity)
        finally:
            if seat is not None:
                self.fairness.release(seat)

    async def _public(self, identity: Identity, attributes: rbac.Request) -> bool:
        """What an anonymous caller may read: non-resource URLs RBAC grants it (without RBAC,
        kube's public-info paths)."""
        if attributes.is_resource_request:
            return False
        if not self.doors.enforcing:
            return attributes.path in PUBLIC_PATHS and attributes.verb == "get"
        return (await self.doors.authorize(identity, attributes)).allowed

    async def _queue(
        self,
        request: web.Request,
        identity: Identity,
        attributes: rbac.Request,
        path: ResourcePath | None,
    ) -> Seat | None:
        """API Priority and Fairness: the request's schema and level (the headers of its
        answer) and, unless it is long-running, a seat held until it is answered."""
        user = flow_user(identity.user, identity.groups)
        classification = self.fairness.classify(user, attributes)
        request[_FLOW] = self.flow_control.uids(classification)
        if path is not None and _long_running(request, path, attributes):
            if attributes.verb != "watch":
                return None  # kube serves these outside priority and fairness
            # A watch queues like any request, and gives its seat back once it starts.
            self.fairness.release(await self._seat(user, attributes))
            return None
        return await self._seat(user, attributes)

    async def _seat(self, user: rbac.User, attributes: rbac.Request) -> Seat:
        try:
            return await self.fairness.acquire(user, attributes)
        except TooManyRequests as refused:
            raise APIError(
                429, "TooManyRequests", refused.message, retry_after=refused.retry_after_s
            ) from None

    async def _authorize(
        self, identity: Identity, attributes: rbac.Request, target: Target
    ) -> None:
        decision = await self.doors.authorize(identity, attributes)
        if not decision.allowed:
            raise APIError(
                403,
                "Forbidden",
                rbac.forbidden_status_message(
                    identity.as_user, attributes, qualified_resource=target.qualified_resource
                ),
                target,
            )

    async def _route(
        self,
        request: web.Request,
        segments: list[str],
        resource_path: ResourcePath | None,
        identity: Identity,
    ) -> web.StreamResponse:
        path = request.path
        get = request.method == "GET"
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return respond(discovery.version_info(self._version))
        if resource_path is not None:
            return await self._resources.handle(
                request, resource_path, self._caller(request, identity)
            )
        if segments == ["api"] and get:
            return discovery.discovery_response(request, legacy=True)
        if segments == ["apis"] and get:
            return discovery.discovery_response(request, legacy=False)
        if segments[:1] == ["openapi"] and get:
            return self._openapi_route(request, segments[1:])
        if segments[:1] == ["api"] and len(segments) >= 2:
            if segments[1] != "v1" or len(segments) != 2 or not get:
                raise not_found()
            return respond(discovery.api_resource_list("", "v1"))
        if segments[:1] == ["apis"] and len(segments) in (2, 3) and get:
            if len(segments) == 2:
                return respond(discovery.named_group(segments[1]))
            return respond(discovery.group_version_resources(segments[1], segments[2]))
        raise not_found()

    def _openapi_route(self, request: web.Request, rest: list[str]) -> web.Response:
        if rest == ["v2"]:
            return self._openapi.v2(request)
        if rest == ["v3"]:
            return self._openapi.v3_index(request)
        if rest[:1] == ["v3"] and len(rest) > 1:
            return self._openapi.v3_document(request, "/".join(rest[1:]))
        raise not_found()


def _resource_path(segments: list[str]) -> ResourcePath | None:
    """What a resource URL names (None: not a resource URL; :func:`not_found` for an unknown
    group, version or resource)."""
    if segments[:1] == ["api"] and len(segments) > 2:
        if segments[1] != "v1":
            raise not_found()
        return parse_resource_path("", "v1", segments[2:])
    if segments[:1] == ["apis"] and len(segments) > 3:
        if reviews.is_review(segments):
            return None
        return parse_resource_path(segments[1], segments[2], segments[3:])
    return None


def _watching(request: web.Request, path: ResourcePath) -> bool:
    return path.legacy_watch or flag(request, "watch")


def _non_resource_verb(method: str) -> str:
    """kube's verb for a non-resource URL: the method's name in lower case (GET: ``get``)."""
    return {"HEAD": "get"}.get(method, method.lower())


def _long_running(request: web.Request, path: ResourcePath, attributes: rbac.Request) -> bool:
    """kube's long-running requests: watches, connect subresources, a followed log."""
    if attributes.verb == "watch" or path.subresource in CONNECT_SUBRESOURCES:
        return True
    return path.subresource == "log" and flag(request, "follow")


async def _flow_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer names the schema and level that classified its request (kube's
    ``X-Kubernetes-PF-*`` headers), refusals and streams included."""
    uids = request.get(_FLOW)
    if uids is not None:
        response.headers[FLOW_SCHEMA_UID_HEADER], response.headers[PRIORITY_LEVEL_UID_HEADER] = uids


def kubeconfig_path(data_dir: Path) -> Path:
    return data_dir / "kubeconfig"
