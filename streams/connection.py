"""Connecting to NATS: reconnect forever, log what happens, refuse servers that are too old.

Every process role (gateway, projections, CLI) connects through :func:`connect`, so reconnect
behaviour, the version check and the JetStream domain (:mod:`streams.jsapi`) are the same
everywhere. Credentials ride in the URL (``nats://user:password@host``, ``nats://token@host``)
and a TLS context can be given; the bulk log reader reuses both (:mod:`streams.logreader`).
A server behind TLS (``fleetlog up --tls``) is verified against the CA the context names
(``certificate-authority``, :func:`trust` for the whole process); a ``tls://`` URL refuses a
server that does not speak TLS, and a certificate the CA did not sign is :class:`Untrusted`.
A URL may list several servers of one cluster, comma-separated (``nats://a:4222,nats://b:4222``):
the client connects to any of them and fails over to the others.

An outage of the server is something every long-running role rides through, whatever its
length: nats-py reconnects for ever and re-subscribes, and this module says so once — one
``nats.disconnected`` warning when the link drops and one ``nats.reconnected`` line with how
long it was down — instead of an error line per failed attempt. What a role's own loops do with
a request that failed meanwhile is theirs to handle: :data:`OUTAGE_ERRORS` names what such a
call raises while the server is away.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client
from nats.errors import (
    AuthorizationError,
    ConnectionClosedError,
    NoRespondersError,
    NoServersError,
    OutboundBufferLimitError,
    StaleConnectionError,
    UnexpectedEOF,
)
from nats.errors import Error as NatsError
from nats.js.errors import NoStreamResponseError

from streams import identity, jsapi, natsfix
from streams.identity import Credentials
from streams.server import parse_version, require_version

log = structlog.get_logger(__name__)


OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,  # nats.errors.TimeoutError is one too
    NoRespondersError,  # the server is back but JetStream (or the service) is not yet
    NoStreamResponseError,
    NoServersError,
    ConnectionClosedError,
    OutboundBufferLimitError,  # the buffer of what waits for the reconnection is full
    StaleConnectionError,
    ConnectionError,
)
"""What a request, publish or key-value call raises while the server is unreachable or just
restarting: a role's loop retries the call later (with back-off) instead of ending."""


LINK_ERRORS: tuple[type[BaseException], ...] = (
    UnexpectedEOF,
    StaleConnectionError,
    ConnectionClosedError,
    OSError,
)
"""What nats-py reports when the link itself drops."""


def servers_of(url: str) -> list[str]:
    """The servers a URL names: one, or several of one cluster separated by commas."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise Unreachable(url)
    return servers


RESUBSCRIBE_RETRY_SECONDS = 1.0
"""How often a follower tries to take its consumer up again after a reconnection, while the
server is still recovering its streams."""

RECOVERY_SECONDS = 15.0
"""After a reconnection, how long failed calls still count as the outage's (JetStream recovers
its streams and the cluster elects its leaders a little after the server accepts clients)."""


class _Link:
    """Whether the connection is down, since when: so an outage is reported once, with its
    length, however many reconnection attempts it takes."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.down_since: float | None = None
        self.up_since = time.monotonic()
        self.callbacks: list[Callable[[], Awaitable[None]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def reconnected(self) -> None:
        for callback in list(self.callbacks):
            task = asyncio.create_task(_quietly(callback))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @property
    def expected(self) -> bool:
        """A deliberate close or drain reports a disconnect too: that one is no news."""
        return self.client is None or self.client.is_closed or self.client.is_draining


_links: weakref.WeakKeyDictionary[Client, _Link] = weakref.WeakKeyDictionary()


def in_outage(nc: Client | None = None) -> bool:
    """Whether a call that failed on ``nc`` (None: on any connection of this process) failed
    because of an outage already reported (the link is down, or came back moments ago): a
    role then logs its retry quietly."""
    if nc is None:
        links = list(_links.values())
    elif nc in _links:
        links = [_links[nc]]
    else:
        return not nc.is_connected
    now = time.monotonic()
    return any(
        link.down_since is not None or now - link.up_since < RECOVERY_SECONDS for link in links
    )


def when_reconnected(nc: Client, callback: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Run ``callback`` (in a task of its own) after every reconnection of ``nc``, until the
    returned function is called: a follower takes its consumer up again at once from where it
    was, instead of waiting for nats-py to notice missed heartbeats (which, over a long
    outage, leaves consumers created for deliveries nobody waits for any more)."""
    link = _links.get(nc)
    if link is None:
        return lambda: None
    link.callbacks.append(callback)

    def forget() -> None:
        if callback in link.callbacks:
            link.callbacks.remove(callback)

    return forget


async def resubscribe(subscribe: Callable[[], Awaitable[None]], *, what: str) -> None:
    """Call ``subscribe`` until it succeeds (the server may still be recovering its streams
    right after a reconnection): what a follower's reconnection callback does."""
    while True:
        try:
            await subscribe()
            return
        except OUTAGE_ERRORS as exc:
            log.debug("nats.resubscribe_retry", what=what, error=repr(exc))
        except Exception as exc:  # e.g. the stream is not there yet (404)
            log.debug("nats.resubscribe_retry", what=what, error=repr(exc))
        await asyncio.sleep(RESUBSCRIBE_RETRY_SECONDS)


async def _quietly(callback: Callable[[], Awaitable[None]]) -> None:
    try:
        await callback()
    except Exception as exc:
        log.warning(
            "nats.resume_failed", callback=getattr(callback, "__qualname__", ""), error=repr(exc)
        )


class Unreachable(ConnectionError):
    """No NATS server answers at the given URL."""

    def __init__(self, url: str) -> None:
        super().__init__(f"cannot reach the server at {url}: is `fleetlog up` running?")
        self.url = url


AUTHORIZATION_VIOLATION = "authorization violation"
PERMISSIONS_VIOLATION = "permissions violation"

_violations: collections.deque[str] = collections.deque(maxlen=16)
"""The last permissions violations the server reported to this process's connections."""


def refusal_for(subject: str) -> str | None:
    """The server's permissions violation for publishing on ``subject`` (None: none seen).
    A refused request is never answered: the caller sees a timeout, and this says why."""
    wanted = f'"{subject.lower()}"'
    return next((v for v in reversed(_violations) if wanted in v.lower()), None)


def refusals() -> list[str]:
    """Every permissions violation recently reported (newest last)."""
    return list(_violations)


def _is_refusal(exc: BaseException) -> bool:
    """The server refused the connection's identity (it says so as an -ERR)."""
    return isinstance(exc, AuthorizationError) or AUTHORIZATION_VIOLATION in str(exc).lower()


class Refused(ConnectionError):
    """The server refused this connection's identity (none, unknown, revoked or rotated)."""

    def __init__(self, url: str, credentials: Credentials | None) -> None:
        if credentials is None:
            message = (
                f"the server at {url} refused a connection without credentials: use a "
                "fleetlog config with a user (FLEETLOG_CONFIG or --config; `fleetlog up` writes "
                "one for its admin) or --credentials FILE"
            )
        else:
            source = f" ({credentials.source})" if credentials.source else ""
            message = (
                f"the server at {url} refused the credentials of {credentials.public_key[:12]}…"
                f"{source}: the user is unknown there, revoked or rotated. Check the context "
                "(`fleetlog config current-context`, `fleetlog config view`); an admin can "
                "`fleetlog user rotate NAME` to issue new credentials"
            )
        super().__init__(message)
        self.url = url


class Untrusted(ConnectionError):
    """The server's TLS does not prove it is the server this client trusts (a certificate its
    CA did not sign, or no TLS behind a ``tls://`` URL)."""

    def __init__(self, url: str, trusted: str, cause: str) -> None:
        super().__init__(
            f"the server at {url} is not trusted: {cause} (checked against {trusted}). Use the "
            "context `fleetlog up --tls` wrote (its cluster's certificate-authority) or "
            "--tls-ca FILE naming the CA that signed the server's certificate"
        )
        self.url = url


def tls_context(ca: Path | None) -> ssl.SSLContext:
    """A client context verifying the server's certificate and name against ``ca`` (None:
    the system's trust store)."""
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


_trust: tuple[Path, ssl.SSLContext] | None = None
"""The CA every connection of this process verifies servers with, unless told otherwise."""


def trust(ca: Path | None) -> None:
    """Verify every later connection's server with ``ca`` (the CLI's root sets it from the
    context's ``certificate-authority`` or ``--tls-ca``; None: the system's trust store)."""
    global _trust
    _trust = (ca, tls_context(ca)) if ca is not None else None


def _is_untrusted(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLError)


class _QuietSSLEOF(logging.Filter):
    """nats-py starts TLS on a connection made in plain text (the server's INFO comes first),
    so asyncio's stream protocol keeps answering "keep open" to the end of the stream and
    asyncio warns at every close of a TLS connection; the warning means nothing here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


def wants_tls(url: str) -> bool:
    """A ``tls://`` URL: the client insists on TLS whatever the server offers."""
    return any(server.lower().startswith("tls://") for server in servers_of(url))


async def connect(
    url: str,
    *,
    name: str,
    credentials: Credentials | None = None,
    connect_timeout: float = 2.0,
    reconnect: bool = True,
    initial_timeout: float = 10.0,
    domain: str | None = None,
    tls: ssl.SSLContext | None = None,
    wait: bool = False,
) -> Client:
    """Connect, check the server version, and keep reconnecting if the link drops.

    ``wait``: a long-running role started while the server is away waits for it (for ever,
    see :func:`_wait_for_server`); otherwise no server answering within ``initial_timeout``
    is :class:`Unreachable`.

    ``domain`` is the JetStream domain every JetStream call of this client addresses (None:
    ``FLEETLOG_JS_DOMAIN``, else the server's own; ``""``: the server's own). ``tls`` is the
    context for a server that wants TLS (default: the system's trust store). ``credentials``:
    the nkey the connection signs the server's nonce with (None: none); without ``tls``, the
    CA of :func:`trust` verifies a server that speaks TLS."""

    if not any(isinstance(f, _QuietSSLEOF) for f in logging.getLogger("asyncio").filters):
        logging.getLogger("asyncio").addFilter(_QuietSSLEOF())
    trusted = "the TLS context given" if tls is not None else "the system's trusted CAs"
    if tls is None and _trust is not None:
        trusted, tls = f"the CA in {_trust[0]}", _trust[1]
    domain = jsapi.configured_domain() if domain is None else jsapi.check_domain(domain or None)
    natsfix.install()
    link = _Link()
    refused: list[str] = []
    untrusted: list[BaseException] = []

    async def on_disconnect() -> None:
        if link.expected or link.down_since is not None:
            return
        link.down_since = time.monotonic()
        log.warning("nats.disconnected", url=url, client=name)

    async def on_reconnect() -> None:
        down_for = time.monotonic() - (link.down_since or time.monotonic())
        link.down_since = None
        link.up_since = time.monotonic()
        log.warning("nats.reconnected", url=url, client=name, after=f"{down_for:.1f}s")
        link.reconnected()

    async def on_error(exc: Exception) -> None:
        # Failures of the first connection are reported by the exception below; while the
        # link is down every failed attempt (and every call timed out) would say the same.
        # A dropped link (EOF, reset) is the disconnection itself, reported just after.
        if PERMISSIONS_VIOLATION in str(exc).lower():
            _violations.append(str(exc))
        if _is_untrusted(exc):
            untrusted.append(exc)
            if link.client is None:
                return
        if _is_refusal(exc):
            refused.append(str(exc))
            if link.client is not None and not link.expected and len(refused) == 1:
                # Revoked or rotated while connected: every reconnection is refused too.
                log.error(
                    "nats.refused", url=url, client=name, error=str(Refused(url, credentials))
                )
            return
        if (
            link.client is None
            or link.down_since is not None
            or link.expected
            or isinstance(exc, LINK_ERRORS)
        ):
            log.debug("nats.error", url=url, client=name, error=str(exc))
            return
        log.warning("nats.error", url=url, client=name, error=str(exc))

    options = dict(
        name=name,
        connect_timeout=connect_timeout,
        allow_reconnect=reconnect,
        max_reconnect_attempts=-1 if reconnect else 1,
        reconnect_time_wait=0.5,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        tls=tls,
    )
    if credentials is not None:
        options.update(nkeys_seed_str=credentials.seed, inbox_prefix=credentials.inbox_prefix)
    # nats-py retries the first connection as long as it may reconnect, and forever when
    # attempts are unlimited: bound each wait so a wrong URL is an error, not a hang.
    bound = initial_timeout if reconnect else connect_timeout * 3
    if not wait:
        try:
            nc = await _first_connection(servers_of(url), bound, options)
        except (TimeoutError, NoServersError, OSError, NatsError) as exc:
            if untrusted or _is_untrusted(exc):
                raise Untrusted(url, trusted, _reason(untrusted or [exc])) from None
            if refused or _is_refusal(exc):
                raise Refused(url, credentials) from None
            if not isinstance(exc, (TimeoutError, NoServersError, OSError)):
                raise
            raise Unreachable(url) from exc
    else:
        # Short tries, so the pauses between them (which grow) set the pace of the waiting.
        attempt_s = min(bound, connect_timeout * 2)
        nc = await _wait_for_server(
            url, name=name, attempt_s=attempt_s, options=options, refused=refused,
            credentials=credentials, untrusted=untrusted, trusted=trusted,
        )  # fmt: skip
    if wants_tls(url) and not nc._server_info.get("tls_required"):
        # Whoever answers there would read every event and Secret in clear.
        await nc.close()
        raise Untrusted(url, trusted, "it does not speak TLS")
    link.client = nc
    if credentials is not None:
        identity.remember(nc, credentials)
    link.up_since = time.monotonic() - RECOVERY_SECONDS
    _links[nc] = link
    jsapi.bind(nc, domain)
    try:
        require_version(parse_version(nc._server_info.get("version", "")), f"the server at {url}")
    except Exception:
        await nc.close()
        raise
    return nc


CLOSE_FAILED_S = 2.0
"""How long closing a client whose first connection failed may take."""


async def _first_connection(servers: list[str], timeout: float, options: dict[str, Any]) -> Client:
    """One bounded try at the first connection. The client is made here (not by
    ``nats.connect``) so a try that runs out of time is closed, not left reconnecting."""
    nc = Client()
    try:
        await asyncio.wait_for(nc.connect(servers, **options), timeout)
    except BaseException:
        # Bounded: after a failed TLS handshake nats-py's close can wait for ever on a
        # transport that never finished opening.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), CLOSE_FAILED_S)
        raise
    return nc


WAIT_PAUSES_S = (0.5, 10.0)
"""A role waiting for the server at its start tries again after the first pause, doubling it
up to the second."""


async def _wait_for_server(
    url: str,
    *,
    name: str,
    attempt_s: float,
    options: dict[str, Any],
    refused: list[str],
    credentials: Credentials | None,
    untrusted: list[BaseException],
    trusted: str,
) -> Client:
    """Connect, however long the server is away: a role started before its server (a machine
    booting, a server being restarted) rides through that outage as through one later on. The
    outage is said once (``nats.unreachable``), and once when it is over (``nats.reachable``,
    with how long it lasted); in between, tries come at growing intervals."""
    servers = servers_of(url)
    pause = WAIT_PAUSES_S[0]
    started = time.monotonic()
    said = False
    while True:
        try:
            nc = await _first_connection(servers, attempt_s, options)
        except (TimeoutError, NoServersError, OSError, NatsError) as exc:
            # Waiting mends neither a wrong CA nor a refused identity.
            if untrusted or _is_untrusted(exc):
                raise Untrusted(url, trusted, _reason(untrusted or [exc])) from None
            if refused or _is_refusal(exc):
                raise Refused(url, credentials) from None
            if not isinstance(exc, (TimeoutError, NoServersError, OSError)):
                raise
            if not said:
                said = True
                log.warning(
                    "nats.unreachable", url=url, client=name, error=str(Unreachable(url)),
                    cause=repr(exc), action="waiting for the server, retrying with back-off",
                )  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(WAIT_PAUSES_S[1], pause * 2)
            continue
        if said:
            log.warning(
                "nats.reachable", url=url, client=name, after=f"{time.monotonic() - started:.1f}s"
            )
        return nc


def _reason(errors: list[BaseException]) -> str:
    """What the TLS handshake said, in words (the last attempt's)."""
    exc = errors[-1]
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate does not verify ({exc.verify_message})"
    return f"the TLS handshake failed ({exc})"
