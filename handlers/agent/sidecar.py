"""A meshed pod's sidecar on this node: Envoy started in the pod's network namespace, its
traffic captured for it, and the way it reaches the mesh-push handler.

Why this exists: Istio injects ``istio-proxy`` into a pod's spec and its ``istio-init`` step
redirects the pod's connections to it; fleetlog's node agent does both when the pod starts
(whether a pod is meshed, and the capture rules, are ``core.mesh.injection``'s):

* **Ordering** (Kubernetes' native sidecars): the pod worker starts the sidecar after the
  pod's network and before its containers, waits (up to :data:`READY_TIMEOUT_S`) until Envoy
  has its ``virtualOutbound`` listener — its configuration came over ADS — so the application's
  first connection is already routed (Istio's ``holdApplicationUntilProxyStarts``), restarts
  it with the containers' back-off if it exits (``handlers.agent.pods``: its status is
  ``istio-proxy``'s in the pod's ``containerStatuses``), and stops it after every container
  has stopped.
* **The process** is a container instance of the runtime named ``istio-proxy`` (its output
  shipped as a container's, so ``fleetlog logs -c istio-proxy`` reads it; adopted by a
  restarted agent like any other), bootstrapped with ``core.mesh.push.ads_bootstrap``: node id
  ``sidecar~<podIP>~<pod>.<ns>~<ns>.svc.cluster.local``, the pod's labels, Istio's
  ``INTERCEPTION_MODE: REDIRECT``, every upstream socket marked so the capture lets it pass.
  Its admin listener is a Unix socket (not the pod's loopback, where the agent cannot reach).
* **ADS from inside a pod**: the handler listens on the node's loopback, which a pod's
  namespace does not share; the agent relays a Unix socket (files are shared with pods) to the
  address ``fleetlog up`` writes to ``<data dir>/mesh/ads-address``, read at each connection so
  a restarted ``up`` on another port is found.
* **Capture**: the nftables table is made in the pod's namespace before the sidecar starts and
  goes with the namespace when the pod's network is removed.
* **Who the proxy is**: its bootstrap carries a proxy token (``core.mesh.proxytoken``) the
  agent signs with its node key for this pod (namespace, name, uid, node), without which the
  mesh-push handler serves it nothing. The bootstrap is written 0600 in a 0700 directory of
  its own and Envoy's admin socket (whose ``/config_dump`` shows the bootstrap) is 0600: only
  the agent's user reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from core.mesh.envoy.sidecar import OUTBOUND_LISTENER
from core.mesh.injection import (
    CAPTURE_TABLE,
    PROXY_MARK,
    SIDECAR_CONTAINER,
    capture_rules,
    wants_sidecar,
)
from core.mesh.proxytoken import ProxyClaims, sign_token
from core.mesh.push import ads_bootstrap, node_id
from handlers.agent.seams import Container, ContainerRuntime
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.eventstore import EventStore
from streams.identity import Credentials, private_directory, write_private
from streams.subjects import event_filter

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 30.0
"""How long a pod's containers wait for its sidecar's configuration (then start anyway, said
in the agent's log: the mesh-push handler may be down)."""
SOCKET_PATH_MAX = 100
"""``sun_path`` holds 108 bytes: a longer socket path moves under ``/tmp``."""


class SidecarUnavailable(Exception):
    """The sidecar cannot be started (no mesh-push handler address, no ``nft``)."""


@dataclass(frozen=True, kw_only=True)
class MeshOptions:
    """How the node agent reaches the mesh: the mesh-push handler's ADS address, given as is
    (``host:port``: an agent apart from ``up``) or as the file ``fleetlog up`` writes it to
    (read at each connection), and the Envoy binary (``ops.envoybin``)."""

    envoy: Path
    ads_address_file: Path | None = None
    ads_address: str | None = None
    token_signer: Credentials | None = None
    """The key proxy tokens are signed with (``fleetlog up`` gives its agent the node agents'
    key); None: the key the agent connects to NATS with."""


def socket_path(root: Path, name: str) -> Path:
    """``<root>/mesh/<name>``, or under ``/tmp`` (named after ``root``) when too long for a
    Unix socket."""
    path = root / "mesh" / name
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path("/tmp") / f"fleetlog-mesh-{digest}" / name


ADMIN_MODE = 0o600
"""Envoy's admin socket: its ``/config_dump`` shows the bootstrap (the proxy token)."""


def admin_pipe(path: Path) -> dict[str, Any]:
    """An Envoy admin listener on the Unix socket ``path``, for the agent's user only."""
    return {"path": str(path), "mode": ADMIN_MODE}


class MeshSidecars:
    """The node's sidecars: which pods get one, the ADS relay, starting and stopping them."""

    def __init__(
        self,
        store: EventStore,
        *,
        root: Path,
        options: MeshOptions,
        node: str = "",
        signer: Credentials | None = None,
    ) -> None:
        """``node``: this node's name and ``signer`` its key, which the proxy tokens name and
        are signed with (no signer: bootstraps carry no token, and a mesh-push handler that
        is not insecure refuses these proxies; said once)."""
        self.root = root
        self.options = options
        self.node = node
        self.signer = signer
        if signer is None:
            log.warning("mesh.no_proxy_token_key", node=node,
                        reason="the agent has no key to sign its proxies' tokens with: the "
                        "mesh-push handler refuses them unless it runs insecure")  # fmt: skip
        self.namespaces = Projection(
            ClusterModel(), store, filter_subject=event_filter("Namespace")
        )
        self.ads_socket = socket_path(root, "ads.sock")
        self._server: asyncio.Server | None = None

    # -- the agent's side -----------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the namespaces (their injection labels) and serve the ADS relay."""
        await self.namespaces.catch_up()
        await self.namespaces.follow()
        self.ads_socket.parent.mkdir(parents=True, exist_ok=True)
        self.ads_socket.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._relay, path=str(self.ads_socket))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.ads_socket.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the directory under /tmp, once nothing is left
            if self.ads_socket.parent != self.root / "mesh":
                self.ads_socket.parent.rmdir()
        await self.namespaces.stop()

    def wanted(self, pod: dict[str, Any]) -> bool:
        namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        record = self.namespaces.model.get("Namespace", "", namespace)
        labels = ((record.manifest.get("metadata") or {}).get("labels") or {}) if record else {}
        return wants_sidecar(pod, labels)

    def _ads_address(self) -> tuple[str, int]:
        text, source = self.options.ads_address, self.options.ads_address_file
        if text is None:
            if source is None:
                raise SidecarUnavailable("no mesh-push handler address was given")
            try:
                text = source.read_text().strip()
            except OSError as exc:
                raise SidecarUnavailable(
                    f"no mesh-push handler: {source} cannot be read ({exc})"
                ) from exc
        host, _, port = text.rpartition(":")
        return host, int(port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One sidecar's ADS connection, relayed to the handler's address as it is now."""
        try:
            host, port = self._ads_address()
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except (SidecarUnavailable, OSError, ValueError) as exc:
            log.warning("mesh.ads_unreachable", error=str(exc))
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            with contextlib.suppress(OSError, RuntimeError):
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    # -- one pod ----------------------------------------------------------------------------

    def token(self, claims: ProxyClaims) -> str | None:
        """A proxy token for ``claims`` signed with this node's key (None without one)."""
        return sign_token(self.signer.seed, claims) if self.signer is not None else None

    def bootstrap(self, *, uid: str, namespace: str, name: str, pod_ip: str,
                  labels: dict[str, str]) -> dict[str, Any]:  # fmt: skip
        """The pod's Envoy bootstrap: ADS through the relay with the pod's proxy token, its
        admin on a socket of its own."""
        claims = ProxyClaims(kind="sidecar", namespace=namespace, pod=name, uid=uid,
                             node=self.node)  # fmt: skip
        config = ads_bootstrap(
            node=node_id(kind="sidecar", ip=pod_ip, pod=name, namespace=namespace),
            ads_host="", ads_port=0, admin_port=0,
            metadata={"LABELS": labels, "INTERCEPTION_MODE": "REDIRECT", "NAMESPACE": namespace},
            ads_pipe=str(self.ads_socket), upstream_mark=PROXY_MARK, token=self.token(claims),
        )  # fmt: skip
        config["admin"] = {"address": {"pipe": admin_pipe(self.admin_socket(uid))}}
        return config

    def write_bootstrap(self, *, uid: str, namespace: str, name: str, pod_ip: str,
                        labels: dict[str, str]) -> Path:  # fmt: skip
        """The pod's bootstrap written to ``<root>/mesh/<uid>/envoy.json``: it holds the pod's
        proxy token, so the file is 0600 in a 0700 directory (the agent's user alone reads it;
        a process pod running as another user cannot)."""
        path = private_directory(self.root / "mesh" / uid) / "envoy.json"
        config = self.bootstrap(uid=uid, namespace=namespace, name=name, pod_ip=pod_ip,
                                labels=labels)  # fmt: skip
        write_private(path, json.dumps(config))
        return path

    def admin_socket(self, uid: str) -> Path:
        return socket_path(self.root, f"{uid[:13]}.admin")

    async def capture(self, netns: str) -> None:
        """The pod's outbound TCP redirected to its sidecar (in the pod's namespace)."""
        error = await self._nft(netns, capture_rules())
        if error is not None:
            raise SidecarUnavailable(f"cannot capture the pod's traffic: {error}")

    async def _nft(self, netns: str, script: str) -> str | None:
        """Run an nftables script in ``netns``; its error, or None."""
        process = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, "nft", "-f", "-",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate(script.encode())
        return None if process.returncode == 0 else err.decode().strip()

    async def start_sidecar(
        self,
        runtime: ContainerRuntime,
        *,
        uid: str,
        namespace: str,
        name: str,
        pod_ip: str,
        netns: str,
        labels: dict[str, str],
        restart_count: int = 0,
        keep_capture: bool = False,
    ) -> Container:
        """Capture the pod's traffic and start its Envoy (``ContainerStartError`` as for any
        container; ``SidecarUnavailable`` when the mesh is not there). An Envoy that cannot
        start takes the capture away, unless ``keep_capture`` (a restart: the pod was meshed,
        and its connections fail rather than bypass the mesh until Envoy is back)."""
        from handlers.agent.runtime import ContainerSpec

        self._ads_address()  # fails early, and says why, with no handler
        path = self.write_bootstrap(uid=uid, namespace=namespace, name=name, pod_ip=pod_ip,
                                    labels=labels)  # fmt: skip
        admin = self.admin_socket(uid)
        admin.parent.mkdir(parents=True, exist_ok=True)
        admin.unlink(missing_ok=True)
        await self.capture(netns)
        try:
            return await runtime.start(
                ContainerSpec(
                    pod_uid=uid, pod_namespace=namespace, pod_name=name, name=SIDECAR_CONTAINER,
                    restart_count=restart_count,
                    argv=[str(self.options.envoy), "-c", str(path), "--disable-hot-restart",
                      "--log-level", "info"],
                    netns=netns,
                )
            )  # fmt: skip
        except BaseException:
            if not keep_capture:
                with contextlib.suppress(OSError):
                    await self.uncapture(netns)
            raise

    async def uncapture(self, netns: str) -> None:
        """No Envoy to take the pod's connections: they go where they were sent."""
        await self._nft(netns, f"delete table ip {CAPTURE_TABLE}\n")

    async def until_ready(self, uid: str, *, timeout: float = READY_TIMEOUT_S) -> bool:
        """Until the sidecar has its outbound listener (its configuration arrived), or the
        timeout: False then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                if OUTBOUND_LISTENER in await self._admin(uid, "/listeners"):
                    return True
            await asyncio.sleep(0.1)
        return False

    async def _admin(self, uid: str, path: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.admin_socket(uid)))
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: envoy\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            return (await asyncio.wait_for(reader.read(), 5)).decode(errors="replace")
        finally:
            writer.close()

    def remove(self, uid: str) -> None:
        """The pod's bootstrap and admin socket, once its sidecar has stopped."""
        self.admin_socket(uid).unlink(missing_ok=True)
        directory = self.root / "mesh" / uid
        with contextlib.suppress(OSError):
            for item in directory.iterdir():
                item.unlink()
            directory.rmdir()
