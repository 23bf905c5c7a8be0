"""The client side of the query path: a question on ``fleet.qry.*``, signed as a command is.

Why this exists: the query services answer each reader only what RBAC lets it see (issue 17),
so a query must prove who asks. Every query sent through a connection with credentials is
signed with that connection's nkey (``core.access.signing``, the commands' scheme: subject,
payload digest, time, a fresh nonce), and asks to act as someone else only with
``Fleet-Impersonate`` (``--as``), whose target is the query's signed ``actor``. A connection
without credentials sends unsigned: an open server's services answer it as before, a walled
one's refuse it. The answer comes to the connection's own inbox (``_INBOX_<public key>``, the
only one the server lets it read), and the services answer a signed query nowhere else.
"""

from __future__ import annotations

import time

from nats.aio.client import Client
from nats.aio.msg import Msg

from streams.commandbus import IMPERSONATE_HEADER, signature_headers
from streams.identity import credentials_of


async def request(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    timeout: float,
    impersonate: str | None = None,
) -> Msg:
    """Send one query (signed when ``nc`` has credentials) and wait for its answer;
    ``impersonate``: the name the query acts as (``--as``), which must be the ``actor`` its
    payload names."""
    credentials = credentials_of(nc)
    seed = credentials.seed.encode() if credentials is not None else None
    headers = signature_headers(seed, subject=subject, payload=payload, now_ns=time.time_ns())
    if impersonate is not None:
        headers[IMPERSONATE_HEADER] = impersonate
    return await nc.request(subject, payload, timeout=timeout, headers=headers or None)
