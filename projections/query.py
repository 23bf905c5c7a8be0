"""Serving the cluster read model to clients (``fleetlog get`` / ``describe``) over NATS.

Requests are msgpack maps on ``fleet.qry.cluster`` (queue group, so several projection
processes can serve). Before answering, the server waits until its projection has applied
everything in the log at the moment of the request, so a ``get`` right after an accepted
``apply`` sees it (read-your-writes) without the client passing sequences around.

Every query is answered for its reader (``projections.readaccess``): a signed query's signer
must be allowed by RBAC to ``get`` the object it names or to ``list`` the kind in the
namespace it names (at the cluster scope for every namespace), else it is refused with kube's
Forbidden; Secrets are shown only to whom may read ``secrets``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client

from streams.serving import serve
from streams.subjects import QUERY_PREFIX

if TYPE_CHECKING:  # the CLI takes the query subject from here, without the read model
    from projections.cluster import ClusterModel
    from projections.readaccess import ReadAccess, Reader
    from projections.runtime import Projection
    from streams.secretkeys import SecretKeys


CLUSTER_QUERY_SUBJECT = f"{QUERY_PREFIX}.cluster"
QUERY_QUEUE = "fleet-query"
PAGE_SIZE = 200


class QueryService:
    def __init__(
        self,
        nc: Client,
        projection: Projection[ClusterModel],
        *,
        secret_keys: SecretKeys | None = None,
        read_access: ReadAccess | None = None,
    ) -> None:
        """``secret_keys``: how a Secret's values are opened for its reader (as kube answers
        a get with ``data``); without them, a Secret is shown with its values sealed.
        ``read_access``: who may read what (None: unsigned queries see everything, signed
        ones are refused, as nobody's signature can be verified)."""
        # Here, not at the top: the CLI imports this module for its subject alone.
        from projections.readaccess import ReadAccess

        self._nc = nc
        self._projection = projection
        self._secret_keys = secret_keys
        self._read = read_access or ReadAccess()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        from projections.readaccess import read_answers

        await serve(
            self._nc,
            CLUSTER_QUERY_SUBJECT,
            queue=QUERY_QUEUE,
            handler=read_answers(self._nc, self._read, self.answer, failure_event="query.failed"),
            ready=ready,
        )

    async def answer(self, request: dict[str, Any], reader: Reader = None) -> dict[str, Any]:
        """The objects ``request`` asks for, if ``reader`` may see them (None: an unsigned
        query on an open server, which sees everything)."""
        from core.access.readauth import query_request

        kind = request["kind"]
        name = request.get("name")
        namespace = request.get("namespace")
        await self._read.check(reader, query_request(kind=kind, namespace=namespace, name=name))
        caught_up = await self._projection.wait_for_log_end(timeout=3.0)
        model = self._projection.model
        answer: dict[str, Any] = {
            "ok": True,
            "position": self._projection.position,
            "caught_up": caught_up,
        }
        if name:
            record = model.get(kind, namespace or "", name)
            answer["items"] = [await self._shown(record.as_dict())] if record is not None else []
            return answer
        # Lists come in pages (a NATS message is at most 1 MiB): ``continue`` is the
        # (namespace, name) of the last item of the previous page.
        limit = max(1, min(int(request.get("limit") or PAGE_SIZE), PAGE_SIZE))
        after = tuple(request["continue"]) if request.get("continue") else None
        page = []
        for record in model.list(kind, namespace):
            if after is not None and (record.namespace, record.name) <= after:
                continue
            if len(page) == limit:
                last = page[-1]
                answer["continue"] = [last["namespace"], last["name"]]
                break
            page.append(record.as_dict())
        answer["items"] = [await self._shown(item) for item in page]
        return answer

    async def _shown(self, item: dict[str, Any]) -> dict[str, Any]:
        """An object as its reader is shown it: a Secret's values opened (or, with no keys
        here, each ``<sealed, N bytes>``)."""
        if item.get("kind") != "Secret":
            return item
        # Here, not at the top: the CLI imports this module for its subject alone.
        from core.access.secretdata import redacted_manifest

        manifest = item["manifest"]
        if self._secret_keys is None:
            shown = redacted_manifest(manifest)
        else:
            shown = await self._secret_keys.opened(
                manifest, namespace=item["namespace"], name=item["name"], uid=item["uid"]
            )
        return {**item, "manifest": shown}
