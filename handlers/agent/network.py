"""The pod network on this node: the CNI bridge plugin's model, built over rtnetlink (pyroute2).

Why this exists: Kubernetes' network model gives every pod its own network namespace and
address, shared by the pod's containers (and their ``localhost``), reachable from the node and
from the node's other pods. Two replicas of one server then both bind port 8080, each in its
own namespace. The agent builds it as the CNI ``bridge`` plugin with ``host-local`` IPAM does:

* one Linux bridge per node (``fleet0``; :class:`NetworkOptions`), holding the **gateway**
  address, the first of the node's range (``spec.podCIDR``, given by the node IPAM controller);
* per pod a **network namespace** (``<prefix>-<pod uid>``, bound in ``/run/netns`` as
  ``ip netns add`` binds it, so ``ip`` lists, enters and deletes it and it outlives the agent)
  and a **veth pair**: ``eth0`` inside with the pod's address and a default route via the
  gateway, the other end (``<prefix><8 hex>``) on the bridge; ``lo`` up, so ``localhost``
  works inside. The agent makes, checks and removes these with rtnetlink requests (pyroute2)
  from its own event loop, never by starting ``ip``: a process per pod (5-10 ms of cpu each)
  was most of a burst's start. The namespace is made by the loop's thread entering a new one
  for a moment (``unshare``), binding it in ``/run/netns`` and opening its rtnetlink socket
  there, then going back: no fork, and the socket configures the pod's side from outside.
  This runs on the loop's thread, a millisecond or two a pod, rather than in a worker thread
  whose every system call would wait for the busy loop to hand back the interpreter lock.
  The bridge (once per range) is still made with ``ip``;
* the pod's address is the next free one of the node's range, round robin
  (``core.network.ipam``), written to the agent's **ledger** (``<root>/network/ledger.json``)
  *before* anything is created, so whatever exists can always be found and removed (the
  changes of one turn of the loop share one write);
* a **warm pool** (:attr:`NetworkOptions.pool` sandboxes, ``--pod-network-pool``): pod networks
  made ahead, each named ``<prefix>-pool-<hex>`` and in the ledger's ``pool`` before it is
  made, refilled once no pod has been attached for a moment, and grown by one for each pod
  that found it empty (up to :attr:`NetworkOptions.pool_limit`). A pod takes one rather than
  waiting for its own: its namespace is bound under the pod's name (one mount; the sandbox's
  name is unbound once no pod is waiting), its veth and address become the pod's. The pool goes
  when the agent stops, when the node's range changes, and when the next agent starts after
  one was killed;
* a container is born in its pod's namespace, as ``ip netns exec`` would start it but without
  an ``ip`` process (``handlers.agent.netnsexec``): the runtime's cgroup prologue, process
  group and isolation stay as they are, and ``/etc/netns/<name>/`` files (a pod's
  ``resolv.conf``) are bound over ``/etc``; a command run in it later (an exec probe) goes
  through ``ip netns exec`` (:meth:`PodAddresses.launch_prefix`).

No forwarding, no NAT: traffic between pods of the node crosses the bridge, traffic between
the node and its pods is local; nothing is routed beyond the machine unless the operator does
it. ``hostNetwork: true`` pods keep the node's network (their address is the node's, the
gateway).

Reconciled, never leaked: a restarted agent reads its ledger and checks each entry against
what exists as the pod's worker asks for its network (a namespace that still has the pod's
address is kept, its veth put back on the bridge if needed; a missing or broken one is made
again, at the same address when it is free); an entry whose pod is gone is removed with its
namespace and veth; and a pod's namespace goes when its pod does (after its containers have
stopped).
The agent removes only what its ledger names: two agents on one machine (each with its own
bridge and prefix) never touch each other's pods.

Where the machine cannot make namespaces (no privilege, no ``ip``: tried once at start by
creating and removing one), or the operator turns it off, :class:`HostNetwork` runs every pod
in the node's network and the node says so in its ``PodNetworkReady`` condition: never a
silent mix of the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import structlog
from pyroute2 import AsyncIPRoute, netns
from pyroute2.netlink import NETLINK_ROUTE, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTM_SETLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from core.network.ipam import next_pod_address
from core.network.ranges import gateway

log = structlog.get_logger(__name__)

LEDGER_VERSION = 1
NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")
POD_INTERFACE = "eth0"
LOOPBACK = "127.0.0.1"
IFNAME_MAX = 15
DEFAULT_POOL = 8
DEFAULT_POOL_LIMIT = 110
"""Kubernetes' default max pods per node: a pool never needs more than a node can run."""
POOL_QUIET_S = 1.0
"""How long no pod must have been attached before the pool is filled again: a burst's pods,
and their containers' starts, first."""
POOL_START_WAIT_S = 10.0
"""How long at most the pool waits for an attached pod's first container start (a pod whose
containers wait for something else must not hold the pool empty)."""
NETWORK_RETRY_S = 2.0
MAX_POOL = 1024
POOL_KEY = "pool-"
"""Pool sandboxes are named as pods whose uid is ``pool-<16 hex>``: ``<prefix>-pool-…``."""
_PREFIX = re.compile(r"[a-z][a-z0-9]{0,5}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class NetworkError(RuntimeError):
    """An ``ip`` command failed; the message has its stderr."""


class NetworkNotReady(RuntimeError):
    """The node has no pod network yet (no range, or its bridge could not be made)."""


class ThreadNamespaceLost(RuntimeError):
    """The event loop's thread could not go back to the node's network namespace: whatever it
    opened next would be in a pod's. Not a :class:`NetworkError`: the agent must stop (its
    pods run on, and the next agent adopts them)."""


# -- rtnetlink, in the node's namespace and in the pods' ----------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_OWN_NETNS = "/proc/thread-self/ns/net"


@contextlib.contextmanager
def _entered(netns_fd: int | None) -> Iterator[None]:
    """The calling thread in the network namespace ``netns_fd`` (a new one when None) for the
    block, then back in its own. Only this thread moves; nothing may await inside."""
    home = os.open(_OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if netns_fd is None:
            if _libc.unshare(_CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
        else:
            netns.setns(netns_fd)
        try:
            yield
        finally:
            try:
                netns.setns(home)
            except OSError as exc:
                log.critical("network.thread_namespace_lost", error=str(exc))
                raise ThreadNamespaceLost(str(exc)) from exc
    finally:
        os.close(home)


def _rtnetlink_socket() -> socket.socket:
    """An rtnetlink socket in the calling thread's namespace (it stays there)."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)


def _new_namespace(path: Path) -> socket.socket:
    """A new network namespace bound at ``path`` (as ``ip netns add`` binds it) and an
    rtnetlink socket inside it."""
    with _entered(None):
        netns.attach(str(path), "thread-self")
        return _rtnetlink_socket()


def _socket_in(path: Path) -> socket.socket:
    """An rtnetlink socket in the namespace bound at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _entered(fd):
            return _rtnetlink_socket()
    finally:
        os.close(fd)


def _remove_namespace(path: Path) -> None:
    """Unbind the namespace at ``path`` (as ``ip netns del`` does): the kernel removes it, and
    the veth inside with it, once nothing holds it any more."""
    netns.remove(str(path))


def _ifindex(name: str) -> int | None:
    try:
        return int((SYS_NET / name / "ifindex").read_text())
    except (OSError, ValueError):
        return None


def _failed(what: str, exc: BaseException) -> NetworkError:
    """A refused request as a :class:`NetworkError` saying what was asked and why not."""
    if isinstance(exc, NetlinkError):
        return NetworkError(f"{what}: {os.strerror(exc.code)}")
    return NetworkError(f"{what}: {exc}")


@dataclass(frozen=True, kw_only=True)
class NetworkOptions:
    """How this agent names what it creates, and whether it makes pod networks at all."""

    bridge: str = "fleet0"
    prefix: str = "fleet"
    """Namespaces are ``<prefix>-<pod uid>``, host-side veths ``<prefix><8 hex>``: 1 to 6
    lowercase letters and digits, so names stay within Linux's 15 characters."""
    enabled: bool = True
    """False: every pod runs in the node's network (``--no-pod-network``)."""
    pool: int = DEFAULT_POOL
    """How many pod sandboxes (namespace, veth pair on the bridge, address) are kept made
    ahead, so a pod bound here takes one instead of waiting for its own
    (``--pod-network-pool``; 0: none). The pool starts at this size and grows by one for each
    pod that found it empty, up to :attr:`pool_limit`."""
    pool_limit: int = DEFAULT_POOL_LIMIT
    """The most sandboxes the pool grows to after bursts that emptied it (the node's max pods
    is the natural bound: the agent lowers it to that)."""

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise ValueError(
                f"pod network prefix {self.prefix!r}: 1 to 6 lowercase letters and digits, "
                "starting with a letter"
            )
        if not _IFNAME.fullmatch(self.bridge):
            raise ValueError(f"bridge name {self.bridge!r}: 1 to 15 letters, digits, '_.-'")
        if not 0 <= self.pool <= MAX_POOL:
            raise ValueError(f"pod network pool {self.pool}: 0 to {MAX_POOL}")
        if not 0 <= self.pool_limit <= MAX_POOL:
            raise ValueError(f"pod network pool limit {self.pool_limit}: 0 to {MAX_POOL}")

    def netns(self, pod_uid: str) -> str:
        return f"{self.prefix}-{pod_uid}"

    def veth(self, pod_uid: str) -> str:
        return self.prefix + hashlib.sha256(pod_uid.encode()).hexdigest()[:8]


@dataclass(frozen=True, kw_only=True)
class PodAddresses:
    """What a pod's network is: its address, the node's, and the namespace to run in."""

    pod_ip: str
    host_ip: str
    netns: str | None = None
    """The pod's namespace (``ip netns`` name); None when it runs in the node's network."""
    message: str = ""
    """What the pod should know (it runs in the host network because the node cannot do
    otherwise)."""

    @property
    def host_network(self) -> bool:
        return self.netns is None

    def launch_prefix(self, ip: str = "ip") -> list[str]:
        """What to put in front of a command to run it in the pod's namespace."""
        return [] if self.netns is None else [ip, "netns", "exec", self.netns]


@dataclass
class _Entry:
    """One pod in the ledger."""

    namespace: str
    name: str
    netns: str
    veth: str
    ip: str


@dataclass
class _Ledger:
    pods: dict[str, _Entry] = field(default_factory=dict)
    pool: dict[str, _Entry] = field(default_factory=dict)
    """Sandboxes made ahead (by their ``pool-…`` key), each with its address, and those
    being handed to a pod (until renamed: both names are then in the ledger)."""
    last: str | None = None

    def as_json(self, *, bridge: str, pod_cidr: str | None) -> dict[str, Any]:
        # vars(), not asdict(): the fields are strings, and a burst writes this often.
        return {
            "version": LEDGER_VERSION,
            "bridge": bridge,
            "pod_cidr": pod_cidr,
            "last": self.last,
            "pods": {uid: vars(entry) for uid, entry in self.pods.items()},
            "pool": {key: vars(entry) for key, entry in self.pool.items()},
        }

    def addresses(self, *, but: str | None = None) -> set[IPv4Address]:
        """Every address held, by pods (but ``but``) and sandboxes."""
        held = {_address(e.ip) for uid, e in self.pods.items() if uid != but}
        return held | {_address(e.ip) for e in self.pool.values()}


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> IPv4Address:
    """An address of the ledger, parsed once: each new address looks at every held one."""
    return IPv4Address(text)


class IP:
    """Runs ``ip``; a failure raises :class:`NetworkError` with what ``ip`` said."""

    def __init__(self, executable: str) -> None:
        self.executable = executable

    async def __call__(self, *args: str, batch: Sequence[str] = (), check: bool = True) -> str:
        argv = [self.executable, *args, *(("-batch", "-") if batch else ())]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if batch else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        data = "".join(f"{line}\n" for line in batch).encode() if batch else None
        out, err = await process.communicate(data)
        if check and process.returncode != 0:
            shown = " ".join(args) + (f" -batch [{'; '.join(batch)}]" if batch else "")
            raise NetworkError(f"ip {shown}: {err.decode(errors='replace').strip()}")
        return out.decode(errors="replace")

    async def json(self, *args: str) -> list[dict[str, Any]]:
        out = await self("-j", *args, check=False)
        try:
            found = json.loads(out or "[]")
        except ValueError:
            return []
        return found if isinstance(found, list) else []


# A pod's network is made with a request or two per side, built here rather than through
# pyroute2's keyword API: that one looks up each link by name (a dump, decoded) and sends one
# request per change, three times the cpu of the kernel's own work for a pod.
_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_CHANGE = NLM_F_REQUEST | NLM_F_ACK
_LOOPBACK_INDEX = 1
"""``lo``'s index in every network namespace."""
_POD_INTERFACE_INDEX = 2
"""``eth0``'s, given when the veth pair is made in a new namespace (where only ``lo`` is), so
the requests inside need no look-up."""
_RT_TABLE_MAIN = 254
_RTPROT_BOOT = 3
_RTN_UNICAST = 1


def _veth_request(*, veth: str, bridge: int, netns_fd: int) -> ifinfmsg:
    """The veth pair: ``veth`` up on the bridge here, ``eth0`` (down: a veth cannot come up
    before its pair exists) in the namespace of ``netns_fd``, at index 2."""
    peer = {
        "index": _POD_INTERFACE_INDEX,
        "attrs": [["IFLA_IFNAME", POD_INTERFACE], ["IFLA_NET_NS_FD", netns_fd]],
    }
    info = {"attrs": [["VETH_INFO_PEER", peer]]}
    request = ifinfmsg()
    request["family"] = socket.AF_UNSPEC
    request["flags"] = request["change"] = IFF_UP
    request["attrs"] = [
        ["IFLA_IFNAME", veth],
        ["IFLA_MASTER", bridge],
        ["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", "veth"], ["IFLA_INFO_DATA", info]]}],
    ]
    request["header"] = {"type": RTM_NEWLINK, "flags": _CREATE}
    return request


def _link_up(index: int) -> ifinfmsg:
    request = ifinfmsg()
    request["family"] = socket.AF_UNSPEC
    request["index"] = index
    request["flags"] = request["change"] = IFF_UP
    request["header"] = {"type": RTM_SETLINK, "flags": _CHANGE}
    return request


def _inside_requests(*, address: str, cidr: IPv4Network) -> list[Any]:
    """A pod's side, sent at once from its namespace's socket: ``address`` on ``eth0``,
    ``lo`` and ``eth0`` up, the default route via the gateway (``ip``'s ``proto boot``)."""
    added = ifaddrmsg()
    added["family"] = socket.AF_INET
    added["prefixlen"] = cidr.prefixlen
    added["index"] = _POD_INTERFACE_INDEX
    added["attrs"] = [["IFA_LOCAL", address], ["IFA_ADDRESS", address]]
    added["header"] = {"type": RTM_NEWADDR, "flags": _CREATE}
    route = rtmsg()
    route["family"] = socket.AF_INET
    route["table"] = _RT_TABLE_MAIN
    route["proto"] = _RTPROT_BOOT
    route["type"] = _RTN_UNICAST
    route["attrs"] = [["RTA_GATEWAY", str(gateway(cidr))], ["RTA_OIF", _POD_INTERFACE_INDEX]]
    route["header"] = {"type": RTM_NEWROUTE, "flags": _CREATE}
    return [added, _link_up(_LOOPBACK_INDEX), _link_up(_POD_INTERFACE_INDEX), route]


async def _addresses_inside(path: Path) -> set[str]:
    """The IPv4 addresses on ``eth0`` of the namespace bound at ``path`` (none if it cannot be
    entered)."""
    try:
        inside = AsyncIPRoute(fileno=_socket_in(path).detach())
    except OSError:
        return set()
    try:
        found = await inside.link_lookup(ifname=POD_INTERFACE)
        if not found:
            return set()
        dump = await inside.addr("dump", index=found[0], family=socket.AF_INET)
        return {str(a.get("address")) async for a in dump}
    except (NetlinkError, OSError):
        return set()
    finally:
        inside.close()


# -- the node's network, for pods that cannot have their own ------------------------------------


class HostNetwork:
    """Every pod in the node's network: the operator turned pod networks off, or the machine
    cannot make network namespaces (``reason`` and ``message`` say which)."""

    isolated = False

    def __init__(self, *, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message

    def condition(self) -> tuple[bool, str, str]:
        return False, self.reason, self.message

    @property
    def host_ip(self) -> str:
        return LOOPBACK

    async def start(self) -> None:
        log.warning("agent.host_network_only", reason=self.reason, message=self.message)

    async def set_pod_cidr(self, pod_cidr: str | None) -> None:
        """Nothing to build: the pods use the node's network."""

    async def wait_ready(self) -> None:
        """Always ready."""

    async def attach(
        self, *, uid: str, namespace: str, name: str, host_network: bool
    ) -> PodAddresses:
        # A pod that asked for its own network is told why it has the node's.
        note = "" if host_network else self.message
        return PodAddresses(pod_ip=LOOPBACK, host_ip=LOOPBACK, message=note)

    async def detach(self, uid: str) -> None:
        """Nothing was made for it."""

    def started(self, uid: str) -> None:
        """Nothing waits for it."""

    async def stop(self) -> None:
        """Nothing to remove."""

    def known(self) -> set[str]:
        return set()


# -- the bridge network -------------------------------------------------------------------------


def bridge_mac(bridge: str) -> str:
    """A fixed, locally administered unicast MAC for the bridge, the same for its name on
    every start."""
    digest = hashlib.sha256(bridge.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02 | (digest[0] & 0xFC), *digest[1:6]))


class BridgeNetwork:
    """Pods in their own namespaces on this node's bridge (see the module docstring)."""

    isolated = True

    def __init__(self, root: Path, options: NetworkOptions, ip: IP) -> None:
        self.options = options
        self.ip = ip
        self.path = Path(root) / "network" / "ledger.json"
        self._ledger = _Ledger()
        self._lock = asyncio.Lock()
        self._cidr: IPv4Network | None = None
        self._ready = asyncio.Event()
        self._problem = ""
        """Why the bridge could not be made (the range is routed elsewhere …), if so."""
        self._node: AsyncIPRoute | None = None
        self._saving: asyncio.Future[None] | None = None
        """The ledger write that the changes of this turn of the loop wait for."""
        self._sandboxes: list[str] = []
        """The pool's sandboxes that are made and free (ledger ``pool`` keys), oldest first."""
        self._handed: list[str] = []
        """Sandboxes handed to pods whose own names are still to be unbound (when quiet)."""
        self._attaching = 0
        self._last_attach = 0.0
        self._starting: dict[str, float] = {}
        """Pods attached whose containers have not started yet (uid -> until when, loop
        time): the pool waits for them (refilling it took the loop from a burst's starts)."""
        self._filler: asyncio.Task[None] | None = None
        self._wanted = asyncio.Event()
        """Set when the pool is short of sandboxes."""
        self._target = options.pool
        """How many sandboxes the pool keeps: ``options.pool``, grown by each pod that found
        it empty (the next burst of that size finds one each), up to ``options.pool_limit``."""

    # -- state ----------------------------------------------------------------------------

    def condition(self) -> tuple[bool, str, str]:
        if self._problem:
            return False, "BridgeUnavailable", self._problem
        return (
            True,
            "BridgeNetwork",
            f"each pod gets its own network namespace and an address of the node's podCIDR "
            f"on bridge {self.options.bridge}",
        )

    @property
    def pod_cidr(self) -> IPv4Network | None:
        return self._cidr

    @property
    def host_ip(self) -> str:
        return str(gateway(self._cidr)) if self._cidr is not None else LOOPBACK

    def known(self) -> set[str]:
        """The pods the ledger holds a network for."""
        return set(self._ledger.pods)

    def sandboxes(self) -> dict[str, str]:
        """The pool's sandboxes made and free: namespace name -> address."""
        return {self._ledger.pool[k].netns: self._ledger.pool[k].ip for k in self._sandboxes}

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("network.ledger_unreadable", path=str(self.path), error=repr(exc))
            return
        if data.get("version") != LEDGER_VERSION:
            log.warning("network.ledger_version", path=str(self.path), found=data.get("version"))
            return
        self._ledger = _Ledger(
            pods={uid: _Entry(**entry) for uid, entry in (data.get("pods") or {}).items()},
            pool={key: _Entry(**entry) for key, entry in (data.get("pool") or {}).items()},
            last=data.get("last"),
        )

    async def _persist(self) -> None:
        """Until the ledger on disk holds every change made so far. The pods of a burst
        change it in one turn of the loop: they share one write (a file written and renamed,
        a few ms) rather than one each."""
        if self._saving is None:
            loop = asyncio.get_running_loop()
            self._saving = loop.create_future()
            loop.call_soon(self._write_pending)
        await asyncio.shield(self._saving)

    def _write_pending(self) -> None:
        saving, self._saving = self._saving, None
        if saving is None:
            return
        try:
            self._save()
        except OSError as exc:
            saving.set_exception(exc)
            saving.exception()  # retrieved: every waiter may have been cancelled meanwhile
        else:
            saving.set_result(None)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        cidr = self._cidr.with_prefixlen if self._cidr else None
        tmp.write_text(json.dumps(self._ledger.as_json(bridge=self.options.bridge, pod_cidr=cidr)))
        os.replace(tmp, self.path)

    # -- start and range ------------------------------------------------------------------

    async def start(self) -> None:
        """Read the ledger an earlier agent left. Each entry is checked against what exists
        when its pod's worker asks for its network (:meth:`attach`), once the bridge is up;
        an entry whose pod is gone is removed by the agent's sweep (:meth:`detach`)."""
        self._load()
        missing = [e.netns for e in self._ledger.pods.values() if not self._namespace_exists(e)]
        left = len(self._ledger.pool)
        await self._drain_pool()  # an earlier agent's sandboxes (it was killed): made afresh
        log.info(
            "network.started", bridge=self.options.bridge, pods=len(self._ledger.pods),
            namespaces_missing=len(missing), pool_removed=left,
        )  # fmt: skip

    async def stop(self) -> None:
        """The agent stops: its pods' networks stay (their containers run on), the pool's
        sandboxes go."""
        if self._filler is not None:
            self._filler.cancel()
            await asyncio.gather(self._filler, return_exceptions=True)
            self._filler = None
        await self._drain_pool()
        if self._node is not None:
            self._node.close()
            self._node = None

    async def _drain_pool(self) -> None:
        """Remove every sandbox of the pool. One being handed to a pod as its agent stopped
        is named by the pod too: its sandbox name is unbound (a namespace bound under the
        pod's name stays), its veth left to the pod."""
        if not self._ledger.pool:
            return
        self._sandboxes.clear()
        self._handed.clear()
        held = {e.veth for e in self._ledger.pods.values()}
        for entry in list(self._ledger.pool.values()):
            try:
                if entry.veth not in held:
                    await self._remove_links(entry)
                elif self._namespace_exists(entry):
                    _remove_namespace(NETNS_DIR / entry.netns)
            except (NetworkError, OSError) as exc:
                log.warning("network.sandbox_left", netns=entry.netns, error=str(exc))
        self._ledger.pool.clear()
        self._save()

    def _namespace_exists(self, entry: _Entry) -> bool:
        return (NETNS_DIR / entry.netns).exists()

    async def set_pod_cidr(self, pod_cidr: str | None) -> None:
        """The node's range is known (or changed): make the bridge hold its gateway."""
        if pod_cidr is None:
            return
        cidr = IPv4Network(pod_cidr)
        if cidr == self._cidr and self._ready.is_set():
            return
        try:
            await self._ensure_bridge(cidr)
        except NetworkError as exc:
            self._problem = f"bridge {self.options.bridge} for {cidr}: {exc}"
            log.error("network.bridge_failed", error=self._problem)
            return
        self._problem = ""
        if cidr != self._cidr:
            await self._drain_pool()  # addresses of the range the node had before
        self._cidr = cidr
        self._ready.set()
        log.info("network.bridge_ready", bridge=self.options.bridge, pod_cidr=str(cidr))
        if self.options.pool and (self._filler is None or self._filler.done()):
            self._filler = asyncio.ensure_future(self._fill())
            self._filler.add_done_callback(_said_if_failed)
        self._wanted.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def _ensure_bridge(self, cidr: IPv4Network) -> None:
        bridge = self.options.bridge
        for route in await self.ip.json("-4", "route", "show"):
            dst, dev = route.get("dst"), route.get("dev")
            if not dst or dst == "default" or dev == bridge:
                continue
            with contextlib.suppress(ValueError):
                routed = ipaddress.ip_network(dst, strict=False)
                if isinstance(routed, IPv4Network) and routed.subnet_of(cidr):
                    raise NetworkError(
                        f"{routed} is routed to {dev}: the podCIDR {cidr} would not reach the pods"
                    )
        links = await self.ip.json("link", "show", "dev", bridge)
        if not links:
            await self.ip("link", "add", bridge, "type", "bridge")
        # A bridge without an address of its own takes the lowest of its ports' and changes it
        # as pods come and go: every pod's neighbour entry for the gateway (and the cluster
        # DNS and service addresses held on the bridge) then points at a MAC that is gone, and
        # its packets are dropped until the entry goes stale, 20-30 s. So it gets a fixed one.
        mac = bridge_mac(bridge)
        if not links or links[0].get("address") != mac:
            await self.ip("link", "set", bridge, "address", mac)
        address = f"{gateway(cidr)}/{cidr.prefixlen}"
        for found in await self.ip.json("-4", "addr", "show", "dev", bridge):
            for info in found.get("addr_info") or []:
                held = f"{info.get('local')}/{info.get('prefixlen')}"
                if held != address:
                    await self.ip("addr", "del", held, "dev", bridge)
        await self.ip("addr", "replace", address, "dev", bridge)
        await self.ip("link", "set", bridge, "up")

    # -- pods -----------------------------------------------------------------------------

    async def attach(
        self, *, uid: str, namespace: str, name: str, host_network: bool
    ) -> PodAddresses:
        """The pod's network: made (or found, for a pod whose namespace survived) and its
        address; a ``hostNetwork`` pod gets the node's. :class:`NetworkNotReady` while the
        node has no range or bridge."""
        if host_network:
            return PodAddresses(pod_ip=self.host_ip, host_ip=self.host_ip)
        if self._cidr is None:
            raise NetworkNotReady(self._problem or "the node has no podCIDR yet")
        cidr = self._cidr
        known = self._ledger.pods.get(uid)
        if known is not None and IPv4Address(known.ip) in cidr and await self._usable(known):
            return self._addresses(known)
        self._attaching += 1
        try:
            entry, sandbox = await self._claim(uid, namespace=namespace, name=name, cidr=cidr)
            if sandbox is None:
                await self._make_or_clean(entry, cidr)
            else:
                await self._adopt(sandbox, entry, cidr)
        finally:
            self._attaching -= 1
            self._last_attach = asyncio.get_running_loop().time()
        self._starting[uid] = self._last_attach + POOL_START_WAIT_S
        log.info(
            "network.attached", pod=f"{namespace}/{name}", ip=entry.ip, netns=entry.netns,
            sandbox=sandbox is not None,
        )  # fmt: skip
        return self._addresses(entry)

    async def _claim(
        self, uid: str, *, namespace: str, name: str, cidr: IPv4Network
    ) -> tuple[_Entry, str | None]:
        """The pod's ledger entry, written before anything of it is made: a sandbox of the
        pool's (its key returned too; the ledger names it in the pool as well until the
        sandbox's own name is unbound), else a new address."""
        async with self._lock:
            entry = self._ledger.pods.get(uid)
            sandbox = None
            if entry is None or IPv4Address(entry.ip) not in cidr or self._taken_twice(entry):
                veth = self.options.veth(uid)
                if self._sandboxes:
                    sandbox = self._sandboxes.pop(0)
                    # The pod keeps the sandbox's veth and address: renaming a link means
                    # taking it down and up again, costly on a bridge with many ports.
                    chosen, veth = self._ledger.pool[sandbox].ip, self._ledger.pool[sandbox].veth
                    self._wanted.set()
                else:
                    chosen = self._next_address(cidr, but=uid)
                    if self.options.pool and self._target < self.options.pool_limit:
                        self._target += 1
                        self._wanted.set()
                entry = _Entry(
                    namespace=namespace, name=name, netns=self.options.netns(uid), veth=veth,
                    ip=chosen,
                )  # fmt: skip
            self._ledger.pods[uid] = entry
        # Written before anything exists: whatever is made below can always be found.
        await self._persist()
        return entry, sandbox

    def _next_address(self, cidr: IPv4Network, *, but: str | None = None) -> str:
        used = self._ledger.addresses(but=but)
        last = IPv4Address(self._ledger.last) if self._ledger.last else None
        chosen = next_pod_address(cidr, used, last=last)
        if chosen is None:
            raise NetworkError(f"no free address left in {cidr} ({len(used)} in use)")
        self._ledger.last = str(chosen)
        return str(chosen)

    async def _make_or_clean(self, entry: _Entry, cidr: IPv4Network) -> None:
        try:
            await self._make(entry, cidr)
        except NetworkError:
            await self._remove_links(entry)
            raise

    def started(self, uid: str) -> None:
        """The pod's containers have been started (or tried): the pool may be refilled."""
        self._starting.pop(uid, None)

    def _still_starting(self, now: float) -> bool:
        for uid, until in list(self._starting.items()):
            if until <= now:
                del self._starting[uid]
        return bool(self._starting)

    # -- the pool ------------------------------------------------------------------------

    async def _fill(self) -> None:
        """Keep ``options.pool`` sandboxes made: each is a pod network as a pod would get
        it, named ``<prefix>-pool-<hex>``, in the ledger's ``pool`` before it is made. The
        pods being attached go first: the pool is filled once they have been quiet a moment."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while self._handed or (self._cidr is not None and len(self._sandboxes) < self._target):
                quiet = loop.time() - self._last_attach
                if self._attaching or self._still_starting(loop.time()):
                    await asyncio.sleep(0.05)
                    continue
                if quiet < POOL_QUIET_S:
                    await asyncio.sleep(POOL_QUIET_S - quiet)
                    continue
                if self._handed:
                    await self._unbind_handed()
                    continue
                cidr = self._cidr
                key = POOL_KEY + secrets.token_hex(8)
                async with self._lock:
                    try:
                        ip = self._next_address(cidr)
                    except NetworkError:
                        break  # the range is full: the pods have it
                    entry = _Entry(
                        namespace="", name="", netns=self.options.netns(key),
                        veth=self.options.veth(key), ip=ip,
                    )  # fmt: skip
                    self._ledger.pool[key] = entry
                await self._persist()
                try:
                    await self._make_or_clean(entry, cidr)
                except (NetworkError, OSError) as exc:
                    log.warning("network.sandbox_failed", netns=entry.netns, error=str(exc))
                    self._ledger.pool.pop(key, None)
                    await self._persist()
                    await asyncio.sleep(NETWORK_RETRY_S)
                    continue
                if self._cidr != cidr:  # the range changed meanwhile: the drain missed it
                    await self._remove_links(entry)
                    self._ledger.pool.pop(key, None)
                    await self._persist()
                    continue
                self._sandboxes.append(key)
            if self._sandboxes:
                log.debug("network.pool_filled", sandboxes=len(self._sandboxes))

    async def _adopt(self, key: str, entry: _Entry, cidr: IPv4Network) -> None:
        """The pool's sandbox ``key`` becomes the pod's network: its namespace bound under the
        pod's name (its veth and address are the pod's already; the sandbox's name is unbound
        once no pod is waiting). Should that fail, the sandbox goes and the pod's network is
        made as without a pool."""
        sandbox = self._ledger.pool[key]
        old, new = NETNS_DIR / sandbox.netns, NETNS_DIR / entry.netns
        try:
            if new.exists():  # a leftover of an earlier attempt of this pod
                _remove_namespace(new)
            fd = os.open(old, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with _entered(fd):
                    netns.attach(str(new), "thread-self")
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("network.sandbox_unusable", netns=sandbox.netns, error=str(exc))
            await self._remove_links(sandbox)
            # A veth of its own: the sandbox's goes with its namespace, a moment later.
            entry.veth = self.options.veth(entry.netns)
            del self._ledger.pool[key]
            await self._persist()
            await self._make_or_clean(entry, cidr)
            return
        # The sandbox's own name is unbound later, when no pod is waiting (1-2 ms of the
        # kernel's each): until then the ledger names it in the pool too, and an agent that
        # restarts meanwhile unbinds it and leaves the rest to the pod.
        self._handed.append(key)
        self._wanted.set()

    async def _unbind_handed(self) -> None:
        """Unbind the sandbox names of the sandboxes pods took, and forget them."""
        handed, self._handed = self._handed, []
        for key in handed:
            entry = self._ledger.pool.pop(key, None)
            if entry is not None and self._namespace_exists(entry):
                try:
                    _remove_namespace(NETNS_DIR / entry.netns)
                except OSError as exc:
                    log.warning("network.sandbox_name_left", netns=entry.netns, error=str(exc))
        await self._persist()

    def _taken_twice(self, entry: _Entry) -> bool:
        return sum(1 for e in self._ledger.pods.values() if e.ip == entry.ip) > 1

    def _addresses(self, entry: _Entry) -> PodAddresses:
        return PodAddresses(pod_ip=entry.ip, host_ip=self.host_ip, netns=entry.netns)

    def _rtnl(self) -> AsyncIPRoute:
        """The agent's rtnetlink socket in the node's namespace, opened on first use (on the
        loop it then answers on)."""
        if self._node is None:
            self._node = AsyncIPRoute()
        return self._node

    async def _make(self, entry: _Entry, cidr: IPv4Network) -> None:
        """The namespace, the veth pair with its host end up on the bridge, and inside: the
        address, ``lo`` and ``eth0`` up, the default route."""
        await self._remove_links(entry)  # a half-made leftover of an earlier attempt
        path = NETNS_DIR / entry.netns
        bridge = _ifindex(self.options.bridge)
        if bridge is None:
            raise NetworkError(f"pod network of {entry.netns}: no bridge {self.options.bridge}")
        try:
            inside = AsyncIPRoute(fileno=_new_namespace(path).detach())
        except OSError as exc:
            raise _failed(f"namespace {entry.netns}", exc) from exc
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                request = _veth_request(veth=entry.veth, bridge=bridge, netns_fd=fd)
                async for _ in await self._rtnl().nlm_request(request, RTM_NEWLINK, _CREATE):
                    pass
            finally:
                os.close(fd)
            async for _ in inside.nlm_request_batch(_inside_requests(address=entry.ip, cidr=cidr)):
                pass
        except (NetlinkError, OSError) as exc:
            raise _failed(f"pod network of {entry.netns}", exc) from exc
        finally:
            inside.close()

    async def _usable(self, entry: _Entry) -> bool:
        """Whether the pod's namespace exists with its address on ``eth0`` (the pod keeps
        it: its containers may be running there); its veth is put back on the bridge if it
        fell off (the bridge was removed and made again)."""
        if not self._namespace_exists(entry) or not (SYS_NET / entry.veth).exists():
            return False
        if entry.ip not in await _addresses_inside(NETNS_DIR / entry.netns):
            return False
        master = SYS_NET / entry.veth / "master"
        if not master.exists() or master.resolve().name != self.options.bridge:
            bridge, veth = _ifindex(self.options.bridge), _ifindex(entry.veth)
            if bridge is None or veth is None:
                return False
            try:
                await self._rtnl().link("set", index=veth, master=bridge, state="up")
            except (NetlinkError, OSError) as exc:
                raise _failed(f"veth {entry.veth} onto {self.options.bridge}", exc) from exc
            log.info("network.reattached", netns=entry.netns, bridge=self.options.bridge)
        return True

    async def _remove_links(self, entry: _Entry) -> None:
        """Remove the pod's namespace and veth, whatever is left of them. (Removing the
        namespace removes the veth pair with it, a moment later: the veth is removed here
        only when no namespace took it along.)"""
        path = NETNS_DIR / entry.netns
        if path.exists():
            try:
                _remove_namespace(path)
            except OSError as exc:
                raise _failed(f"namespace {entry.netns}", exc) from exc
            return
        index = _ifindex(entry.veth)
        if index is not None:
            with contextlib.suppress(NetlinkError, OSError):  # gone meanwhile
                await self._rtnl().link("del", index=index)

    async def detach(self, uid: str) -> None:
        """Remove the pod's network (its containers have stopped) and forget its address."""
        self._starting.pop(uid, None)
        entry = self._ledger.pods.get(uid)
        if entry is None:
            return
        await self._remove_links(entry)
        async with self._lock:
            forgotten = self._ledger.pods.get(uid) is entry
            if forgotten:
                del self._ledger.pods[uid]
        if forgotten:
            await self._persist()
            self._wanted.set()  # its address is free again: the pool may have been short of one
        log.info("network.detached", pod=f"{entry.namespace}/{entry.name}", ip=entry.ip)


def _said_if_failed(task: asyncio.Task[None]) -> None:
    """The pool's filler ended by an error: said (pods then get networks made for them)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("network.pool_stopped", error=repr(task.exception()))


# -- choosing ------------------------------------------------------------------------------------


async def detect(root: Path, options: NetworkOptions) -> BridgeNetwork | HostNetwork:
    """The pod network this machine allows: tried once by making (and removing) a network
    namespace with a veth pair in it; a refusal means the node's network for every pod."""
    if not options.enabled:
        return HostNetwork(
            reason="HostNetworkOnly",
            message="pod networks are turned off for this node (--no-pod-network): "
            "pods run in the host network",
        )
    executable = shutil.which("ip")
    if executable is None:
        return HostNetwork(
            reason="NetworkNamespacesUnavailable",
            message="iproute2 (ip) is not installed: pods run in the host network",
        )
    ip = IP(executable)
    probe = f"{options.prefix}-probe-{os.getpid()}"
    try:
        await ip("netns", "add", probe)
        try:
            await ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
        finally:
            await ip("netns", "del", probe, check=False)
    except (NetworkError, OSError) as exc:
        return HostNetwork(
            reason="NetworkNamespacesUnavailable",
            message=f"cannot create network namespaces ({exc}): pods run in the host network",
        )
    return BridgeNetwork(root, options, ip)
