"""Each pod's ``/etc/resolv.conf``: written where ``ip netns exec`` would show it to the pod.

Why this exists: the kubelet gives every pod the resolver its ``dnsPolicy`` asks for (the
cluster DNS and the namespace's search path by default); fleetlog's containers start in their
pod's namespace as ``ip netns exec <netns> …`` would start them (``handlers.agent.netnsexec``),
with every file of ``/etc/netns/<netns>/`` bound over ``/etc`` in the container's own mount
namespace. So before a pod's first container starts, the agent
writes ``/etc/netns/<netns>/resolv.conf`` with what ``core.dns.resolvconf`` decides:

* a pod with its own network namespace (``handlers/agent/network.py``): the file of its
  namespace;
* a pod in the node's network whose resolver is not the node's (``hostNetwork`` with
  ``ClusterFirstWithHostNet`` or ``dnsPolicy: None``, or every pod on a node without pod
  networks): an *alias* of the node's own network namespace, ``ip netns attach
  <prefix>-h-<pod uid> <agent pid>``, whose file it gets; its containers run in the node's
  network through that alias. Where aliases cannot be made (no privilege) the pod keeps the
  node's file, and the agent says so once;
* a pod that simply uses the node's file (``Default``, ``ClusterFirst`` on the host network,
  no ``dnsConfig``): nothing is written, the container sees the node's.

The file is written once, before the first container, as the kubelet writes a sandbox's (a
restarted agent finds it and keeps it); it is removed, with the alias, when the pod's network
goes, and a restarted agent sweeps the files and aliases of pods that are gone. Only names of
this agent's prefix followed by a pod uid are ever touched.

A pod's file is two new inodes (its directory and the temporary renamed to ``resolv.conf``),
which on this project's hosts cost 85-320 µs of cpu each right after deletions (ext4 skipping
recently deleted inodes: ``handlers.agent.spares``), ~40 ms a burst of 100 pods. So, as the
start workers do, the agent keeps empty directories and files made ahead in
``/etc/netns/.spares-<pid>-<prefix>`` (:meth:`PodResolvers.keep_spares`: made, 64 every
0.25 s, on a node serving cluster DNS once nothing was written for a second; removed when it
stops and, for a killed agent, by the next agent on the node) and renames
them into place: the same ``mkdir``, the same ``open`` mode (``0o666`` less the umask), never
replacing what is there; without spares each write makes its own as before. The name starts
with a dot: no pod's, never bound into a container.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from core.dns.resolvconf import MISSING_CLUSTER_DNS, ResolvConf, parse, pod_dns
from core.dns.zone import CLUSTER_DOMAIN
from handlers.agent.spares import Spares

log = structlog.get_logger(__name__)

ETC_NETNS: Final = Path("/etc/netns")
RUN_NETNS: Final = Path("/run/netns")
RESOLV_CONF: Final = "resolv.conf"
SPARE_PODS = 128
"""Pods' files kept spares for: a burst of 128 pods with files of their own."""
SPARE_IDLE_S = 1.0
"""Spares are made once no file was written for this long (not during a burst)."""
SPARE_CHUNK = 64
"""Spares made per look (every ``SPARE_POLL_S``), in a worker thread: 256 in a second."""
SPARE_POLL_S = 0.25
FILE_MODE = 0o666
_SPARES = ".spares-"
"""The mode ``Path.write_text`` opens the temporary with."""
_UID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class PodResolvers:
    """Writes and removes the pods' ``resolv.conf`` files (see the module docstring)."""

    def __init__(
        self,
        *,
        prefix: str,
        resolv_conf: Path = Path("/etc/resolv.conf"),
        domain: str = CLUSTER_DOMAIN,
        ip: str | None = None,
        etc_netns: Path = ETC_NETNS,
        run_netns: Path = RUN_NETNS,
    ) -> None:
        self.prefix = prefix
        self.resolv_conf = resolv_conf
        self.domain = domain
        self.ip = ip if ip is not None else shutil.which("ip")
        self.etc_netns = etc_netns
        self.run_netns = run_netns
        self.cluster_dns: tuple[str, ...] = ()
        """The cluster DNS address(es) pods are given: set while this node serves it."""
        self.configured = False
        """Whether this node is meant to serve cluster DNS (a fallback is then worth a
        warning; a node without it simply gives pods the node's resolvers)."""
        self._pattern = re.compile(rf"{re.escape(prefix)}-(?:h-)?({_UID})")
        self._alias_failed = False
        self._spares: Spares | None = None
        self._spares_lock = threading.Lock()  # taken by writes, refilled by keep_spares
        self._last_write = 0.0
        """``time.monotonic()`` of the last write (spares wait for a quiet second)."""

    @property
    def spares_dir(self) -> Path:
        """This agent's (its pid and prefix: agents of one process, or of one prefix one
        after the other, never share one)."""
        return self.etc_netns / f"{_SPARES}{os.getpid()}-{self.prefix}"

    def alias(self, uid: str) -> str:
        return f"{self.prefix}-h-{uid}"

    def _host(self) -> ResolvConf:
        try:
            return parse(self.resolv_conf.read_text())
        except OSError as exc:
            log.warning("poddns.resolv_conf_unreadable", path=str(self.resolv_conf), error=str(exc))
            return ResolvConf()

    async def prepare(
        self, *, uid: str, namespace: str, name: str, spec: Mapping[str, Any], netns: str | None
    ) -> str | None:
        """Write the pod's file; the network namespace its containers run in (``netns``, an
        alias of the node's for a host-network pod with a resolver of its own, or None)."""
        decided = pod_dns(
            spec, namespace=namespace, host=self._host(), cluster_dns=self.cluster_dns,
            cluster_domain=self.domain,
        )  # fmt: skip
        for warning in decided.warnings:
            if self.configured or not warning.startswith(MISSING_CLUSTER_DNS):
                log.warning("poddns.dns_config_forming", pod=f"{namespace}/{name}", note=warning)
        if decided.host_file:
            return netns
        target = netns if netns is not None else await self._attach_alias(uid)
        if target is None:
            return None
        await asyncio.to_thread(self._write, target, decided.conf.text())
        return target

    def _write(self, netns: str, text: str) -> None:
        directory = self.etc_netns / netns
        path = directory / RESOLV_CONF
        if path.exists():
            return  # decided when the pod's network was first made: kept for its life
        tmp = directory / f".{RESOLV_CONF}.tmp"
        self._last_write = time.monotonic()
        with self._spares_lock:
            spares = self._spares
            if spares is None:
                directory.mkdir(parents=True, exist_ok=True)
            else:  # the same mkdir's directory and an empty file, made earlier
                spares.makedirs(directory)
                spares.place_file(tmp)
        tmp.write_text(text)
        os.replace(tmp, path)

    async def _run_ip(self, *args: str) -> tuple[int, str]:
        if self.ip is None:
            return 127, "ip (iproute2) is not installed"
        process = await asyncio.create_subprocess_exec(
            self.ip, *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate()
        return process.returncode or 0, err.decode(errors="replace").strip()

    async def _attach_alias(self, uid: str) -> str | None:
        alias = self.alias(uid)
        if (self.run_netns / alias).exists():
            return alias
        code, err = await self._run_ip("netns", "attach", alias, str(os.getpid()))
        if code == 0:
            return alias
        if not self._alias_failed:
            self._alias_failed = True
            log.warning(
                "poddns.host_network_resolver_unavailable",
                note="pods in the node's network keep the node's resolv.conf: "
                f"cannot name the node's network namespace ({err})",
            )
        return None

    async def remove(self, uid: str) -> None:
        """Remove the pod's files and alias (its containers have stopped)."""
        for name in (f"{self.prefix}-{uid}", self.alias(uid)):
            await asyncio.to_thread(shutil.rmtree, self.etc_netns / name, True)
        if (self.run_netns / self.alias(uid)).exists():
            await self._run_ip("netns", "del", self.alias(uid))

    async def keep_spares(self) -> None:
        """Keep spare directories and files for the pods' files (see the module docstring)
        until cancelled; then remove them."""
        opened = False
        try:
            while True:
                if not opened:  # once /etc/netns is there (ip or the first pod's file makes it)
                    opened = await asyncio.to_thread(self._open_spares)
                await asyncio.sleep(SPARE_POLL_S)
                spares = self._spares
                if (
                    spares is not None
                    and self.cluster_dns  # else only dnsPolicy None pods' files: no spares
                    and spares.wanted
                    and time.monotonic() - self._last_write >= SPARE_IDLE_S
                ):
                    await asyncio.to_thread(self._refill)
        finally:
            with self._spares_lock:
                spares, self._spares = self._spares, None
            if spares is not None:
                spares.remove()

    def _open_spares(self) -> bool:
        """Whether the spares were set up (or cannot be); False while there is no /etc/netns
        (not made here: a node without pods' files keeps its /etc as it was)."""
        if not self.etc_netns.is_dir():
            return False
        self._remove_dead_spares()
        directory = self.spares_dir
        shutil.rmtree(directory, ignore_errors=True)  # an earlier agent's: its names not ours
        spares = Spares(directory, starts=SPARE_PODS, file_mode=FILE_MODE,
                        dirs_per_start=1, files_per_start=1)  # fmt: skip
        with self._spares_lock:
            self._spares = spares if spares.usable else None
        return True

    def _remove_dead_spares(self) -> None:
        """Remove the spares of agents that were killed (their pid gone; a reused pid keeps
        them until it is gone too)."""
        for name in os.listdir(self.etc_netns):
            if not name.startswith(_SPARES):
                continue
            pid = name[len(_SPARES) :].partition("-")[0]
            if not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(self.etc_netns / name, ignore_errors=True)
            except OSError:
                pass  # alive (another user's): not ours to judge

    def _refill(self) -> None:
        for _ in range(SPARE_CHUNK):
            if time.monotonic() - self._last_write < SPARE_IDLE_S:
                return
            with self._spares_lock:
                if self._spares is None or not self._spares.wanted:
                    return
                self._spares.refill(1)

    def held(self) -> set[str]:
        """The pods (by uid) this agent holds a file or an alias for."""
        found: set[str] = set()
        for directory in (self.etc_netns, self.run_netns):
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                match = self._pattern.fullmatch(name)
                if match:
                    found.add(match.group(1))
        return found

    async def sweep(self, keep: set[str]) -> None:
        """Remove what pods that are gone left (a restarted agent's first look)."""
        for uid in sorted(self.held() - keep):
            log.info("poddns.removed_leftover", pod_uid=uid)
            await self.remove(uid)
