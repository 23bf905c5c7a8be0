"""The Gateway's ingress proxy on this node: an Envoy listening on the node's own addresses on
the ports of the Gateways that select it, routing by the VirtualServices bound to them.

Why this exists: Istio installs ``istio-ingressgateway``, a Deployment of Envoy labelled
``istio: ingressgateway`` whose pods the Gateways' ``selector`` picks; users then reach it on a
node port or a load balancer. fleetlog's node agent runs that Envoy itself, **on demand**: while
some Gateway selects :data:`INGRESS_LABELS`, one Envoy runs in the node's network (no pod, so
``curl http://127.0.0.1:<port>/`` on the machine works, as a ``hostPort`` would: listeners bind
``0.0.0.0``); when the last such Gateway goes, it is stopped. Its configuration comes over ADS
like a sidecar's (node id ``router~<ip>~istio-ingressgateway-<node>.istio-system~…``, its
labels in ``LABELS``, a proxy token for the node's ingress identity signed by the agent),
through the agent's ADS relay (bootstrap 0600). It is the agent's process, not a pod: it
stops with the agent (and dies with it, by ``PR_SET_PDEATHSIG``, if the agent is killed), and
its output is ``<root>/mesh/ingress.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from core.mesh.proxytoken import ProxyClaims, ingress_pod
from core.mesh.push import ads_bootstrap, node_id
from handlers.agent.sidecar import MeshSidecars, admin_pipe, socket_path
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.eventstore import EventStore
from streams.identity import write_private
from streams.subjects import event_filter

log = structlog.get_logger(__name__)

INGRESS_LABELS: Final = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
"""The labels of Istio's ingress gateway pods, which Gateways select."""
INGRESS_NAMESPACE: Final = "istio-system"
STOP_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1


def selects_ingress(gateways: list[Mapping[str, Any]]) -> bool:
    """Whether some Gateway (a manifest) selects this node's ingress proxy."""
    for gateway in gateways:
        selector = (gateway.get("spec") or {}).get("selector") or {}
        if selector and all(INGRESS_LABELS.get(k) == v for k, v in selector.items()):
            return True
    return False


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the agent's thread that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class IngressGateway:
    """Runs the node's ingress Envoy while a Gateway selects it."""

    def __init__(self, store: EventStore, *, node: str, root: Path, sidecars: MeshSidecars) -> None:
        self.node = node
        self.root = root
        self.sidecars = sidecars
        self.gateways = Projection(ClusterModel(), store, filter_subject=event_filter("Gateway"))
        self._changed = asyncio.Event()
        self.gateways.listeners.append(lambda event: self._changed.set())
        self.process: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "mesh" / "ingress.log"

    def bootstrap(self) -> dict[str, Any]:
        pod = ingress_pod(self.node)
        claims = ProxyClaims(kind="gateway", namespace=INGRESS_NAMESPACE, pod=pod, uid="",
                             node=self.node)  # fmt: skip
        config = ads_bootstrap(
            node=node_id(kind="gateway", ip="127.0.0.1", pod=pod, namespace=INGRESS_NAMESPACE),
            ads_host="", ads_port=0, admin_port=0,
            metadata={"LABELS": INGRESS_LABELS, "BIND_ADDRESS": "0.0.0.0"},
            ads_pipe=str(self.sidecars.ads_socket), token=self.sidecars.token(claims),
        )  # fmt: skip
        config["admin"] = {"address": {"pipe": admin_pipe(socket_path(self.root, "ingress"))}}
        return config

    async def run(self) -> None:
        """Until cancelled: the Envoy runs while it is wanted (started again if it ends)."""
        await self.gateways.catch_up()
        await self.gateways.follow()
        try:
            while True:
                self._changed.clear()
                wanted = selects_ingress([r.manifest for r in self.gateways.model.list("Gateway")])
                running = self.process is not None and self.process.returncode is None
                if wanted and not running:
                    await self._start()
                elif not wanted and running:
                    await self._stop()
                with contextlib.suppress(TimeoutError):
                    # Woken by a Gateway's change; a second's look at whether Envoy ended.
                    await asyncio.wait_for(self._changed.wait(), 1.0)
        finally:
            await self._stop()
            await self.gateways.stop()

    async def _start(self) -> None:
        directory = self.root / "mesh"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "ingress.json"
        write_private(path, json.dumps(self.bootstrap()))  # its proxy token: the agent's alone
        admin = socket_path(self.root, "ingress")
        admin.parent.mkdir(parents=True, exist_ok=True)
        admin.unlink(missing_ok=True)
        with self.log_path.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                str(self.sidecars.options.envoy), "-c", str(path), "--disable-hot-restart",
                "--log-level", "info",
                stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        log.info("mesh.ingress_started", pid=self.process.pid)

    async def _stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except TimeoutError:
            process.kill()
            await process.wait()
        log.info("mesh.ingress_stopped", pid=process.pid)
