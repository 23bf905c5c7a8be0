"""The subresources of the Kubernetes door (``pods/log``, ``deployments/scale``, ``…/status``).

Why this exists: each subresource is its own small protocol (a Scale object, a log stream, an
exec WebSocket), so each lives in its own module here and registers its handler in ``HANDLERS``
under (plural, subresource). ``handlers.apiserver.resources`` routes a request naming a
subresource to this table; discovery lists what ``core.kubeapi.resources.SUBRESOURCES``
declares, and a unit test holds the two tables together so nothing is discovered that is not
served, and nothing served stays hidden.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from aiohttp import web

from core.kubeapi.paths import ResourcePath

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources

SubresourceHandler = Callable[
    ["Resources", web.Request, ResourcePath, "Caller"], Awaitable[web.StreamResponse]
]
"""Answers one request for ``<plural>/<name>/<subresource>`` (the path's name is set)."""

from handlers.apiserver.subresources import binding, eviction, resize, scale, status  # noqa: E402
from handlers.apiserver.subresources.exec import serve_exec  # noqa: E402
from handlers.apiserver.subresources.log import serve_log  # noqa: E402
from handlers.apiserver.subresources.portforward import serve_portforward  # noqa: E402

STATUS_PLURALS = (
    "pods", "nodes", "deployments", "replicasets", "services", "namespaces", "resourcequotas",
    "horizontalpodautoscalers", "verticalpodautoscalers",
)  # fmt: skip

HANDLERS: Mapping[tuple[str, str], SubresourceHandler] = MappingProxyType(
    {
        ("pods", "log"): serve_log,
        ("pods", "exec"): serve_exec,
        ("pods", "portforward"): serve_portforward,
        ("pods", "binding"): binding.serve,
        ("pods", "eviction"): eviction.serve,
        ("pods", "resize"): resize.serve,
        ("deployments", "scale"): scale.serve,
        ("replicasets", "scale"): scale.serve,
        **{(plural, "status"): status.serve for plural in STATUS_PLURALS},
    }
)
"""(plural, subresource) -> its handler."""
