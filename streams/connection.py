"""Connecting to NATS: reconnect forever, log what happens, refuse servers that are too old.

Every process role (gateway, projections, CLI) connects through :func:`connect`, so reconnect
behaviour, the version check and the JetStream domain (:mod:`streams.jsapi`) are the same
everywhere. Credentials ride in the URL (``nats://user:password@host``, ``nats://token@host``)
and a TLS context can be given; the bulk log reader reuses both (:mod:`streams.logreader`).
"""

from __future__ import annotations

import asyncio
import ssl

import nats
import structlog
from nats.aio.client import Client
from nats.errors import NoServersError

from streams import jsapi, natsfix
from streams.server import parse_version, require_version

log = structlog.get_logger(__name__)


class Unreachable(ConnectionError):
    """No NATS server answers at the given URL."""

    def __init__(self, url: str) -> None:
        super().__init__(f"cannot reach the server at {url}: is `fleetlog up` running?")
        self.url = url


async def connect(
    url: str,
    *,
    name: str,
    connect_timeout: float = 2.0,
    reconnect: bool = True,
    initial_timeout: float = 10.0,
    domain: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Client:
    """Connect, check the server version, and keep reconnecting if the link drops.

    ``domain`` is the JetStream domain every JetStream call of this client addresses (None:
    ``FLEETLOG_JS_DOMAIN``, else the server's own; ``""``: the server's own). ``tls`` is the
    context for a server that wants TLS (default: the system's trust store)."""

    domain = jsapi.configured_domain() if domain is None else jsapi.check_domain(domain or None)
    natsfix.install()
    holder: list[Client] = []

    async def on_disconnect() -> None:
        # A deliberate close or drain also reports a disconnect; only an unexpected one is news.
        if holder and not (holder[0].is_closed or holder[0].is_draining):
            log.warning("nats.disconnected", url=url, client=name)

    async def on_reconnect() -> None:
        log.info("nats.reconnected", url=url, client=name)

    async def on_error(exc: Exception) -> None:
        if holder:  # failures of the first connection are reported by the exception below
            log.warning("nats.error", url=url, client=name, error=str(exc))

    try:
        # nats-py retries the first connection as long as it may reconnect, and forever when
        # attempts are unlimited: bound the wait so a wrong URL is an error, not a hang.
        nc = await asyncio.wait_for(
            _connect(
                url,
                name=name,
                connect_timeout=connect_timeout,
                allow_reconnect=reconnect,
                max_reconnect_attempts=-1 if reconnect else 1,
                reconnect_time_wait=0.5,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
                tls=tls,
            ),
            initial_timeout if reconnect else connect_timeout * 3,
        )
    except (TimeoutError, NoServersError, OSError) as exc:
        raise Unreachable(url) from exc
    holder.append(nc)
    jsapi.bind(nc, domain)
    try:
        require_version(parse_version(nc._server_info.get("version", "")), f"the server at {url}")
    except Exception:
        await nc.close()
        raise
    return nc


_connect = nats.connect
