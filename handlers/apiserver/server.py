"""The Kubernetes API server: HTTPS on a loopback port, client certificates required.

Why this exists: it wires the door together: TLS with the cluster CA (``certs``), who the
caller is (``identity``), discovery and OpenAPI (``discovery``), the REST verbs and watches
(``resources``, ``watch``), and one rule for every failure: a Kubernetes ``Status`` (``http``).
It runs inside ``fleetlog up`` beside the gateway and the read model it translates to, and stops
with it: the listening socket closes first, then open watches end.

Requests without a certificate may read ``/healthz``, ``/livez``, ``/readyz`` and ``/version``
(kube's ``system:public-info-viewer``); everything else answers 401 Unauthorized.
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

from core.kubeapi.fieldsets import KUBERNETES_DOOR_SOURCE
from core.kubeapi.paths import not_found, parse_resource_path
from core.kubeapi.status import APIError
from core.kubeapi.tables import Columns
from handlers.apiserver import discovery
from handlers.apiserver.certs import PKI
from handlers.apiserver.http import (
    add_warning_headers,
    collect_warnings,
    refusal,
    reset_warnings,
    respond,
)
from handlers.apiserver.identity import Authenticator, Identity, client_certificate
from handlers.apiserver.resources import Caller, Resources
from handlers.apiserver.watch import Watches
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.eventstore import EventStore
from streams.secretkeys import SecretKeys

log = structlog.get_logger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})
_IDENTITY = web.AppKey("identity", Identity)


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
        authenticate: Authenticator = client_certificate,
        bookmark_every_s: float = 60.0,
        secret_keys: SecretKeys | None = None,
    ) -> None:
        """``secret_keys``: how a Secret's values are opened for a get (without them, a
        Secret is shown with each value ``<sealed, N bytes>``)."""
        self._host = host
        self._port = port
        self.pki = pki
        self._authenticate = authenticate
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
        return app

    async def start(self) -> None:
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

    def _caller(self, request: web.Request) -> Caller | None:
        transport = request.transport
        certificate = transport.get_extra_info("peercert") if transport is not None else None
        identity = self._authenticate(certificate)
        if identity is None:
            return None
        peer = request.remote or "?"
        peername = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(peername, tuple) and len(peername) >= 2:
            peer = f"{peername[0]}:{peername[1]}"
        agent = request.headers.get("User-Agent", "")
        source = f"{KUBERNETES_DOOR_SOURCE} {peer} {agent}".strip()[:256]
        return Caller(identity=identity, source=source)

    # -- routes ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return respond(discovery.version_info(self._version))
        caller = self._caller(request)
        if caller is None:
            raise APIError(401, "Unauthorized", "Unauthorized")
        segments = [s for s in path.split("/")][1:]
        if segments and segments[-1] == "":
            segments = segments[:-1]
        get = request.method == "GET"
        if segments == ["api"] and get:
            return discovery.discovery_response(request, legacy=True)
        if segments == ["apis"] and get:
            return discovery.discovery_response(request, legacy=False)
        if segments[:1] == ["openapi"] and get:
            return self._openapi_route(request, segments[1:])
        if segments[:1] == ["api"] and len(segments) >= 2:
            if segments[1] != "v1":
                raise not_found()
            if len(segments) == 2:
                if not get:
                    raise not_found()
                return respond(discovery.api_resource_list("", "v1"))
            return await self._resources.handle(
                request, parse_resource_path("", "v1", segments[2:]), caller
            )
        if segments[:1] == ["apis"] and len(segments) >= 2:
            group = segments[1]
            if len(segments) == 2 and get:
                return respond(discovery.named_group(group))
            if len(segments) == 3 and get:
                return respond(discovery.group_version_resources(group, segments[2]))
            if len(segments) > 3:
                return await self._resources.handle(
                    request, parse_resource_path(group, segments[2], segments[3:]), caller
                )
        raise not_found()

    def _openapi_route(self, request: web.Request, rest: list[str]) -> web.Response:
        if rest == ["v2"]:
            return self._openapi.v2(request)
        if rest == ["v3"]:
            return self._openapi.v3_index(request)
        if rest[:1] == ["v3"] and len(rest) > 1:
            return self._openapi.v3_document(request, "/".join(rest[1:]))
        raise not_found()


def kubeconfig_path(data_dir: Path) -> Path:
    return data_dir / "kubeconfig"
