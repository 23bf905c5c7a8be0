"""A pod's ``resolv.conf``: the kubelet's ``dnsPolicy`` and ``dnsConfig`` rules, pure.

Why this exists: a pod resolves ``web`` and ``web.shop`` because its ``/etc/resolv.conf``
names the cluster DNS and searches its namespace's domains first. The kubelet decides that
file from the pod's spec and the node's own ``resolv.conf``
(``pkg/kubelet/network/dns/dns.go``); the node agent writes what this module decides
(``handlers/agent/poddns.py``):

* ``ClusterFirst`` (the default): ``nameserver <cluster DNS>``, ``search <ns>.svc.<zone>
  svc.<zone> <zone>`` followed by the node's search domains, ``options ndots:5`` (the node's
  options are not kept). A ``hostNetwork`` pod with ``ClusterFirst`` gets ``Default``
  instead; ``ClusterFirstWithHostNet`` gives it the cluster's. A node without a cluster DNS
  address falls back to ``Default``, with a warning (the kubelet's ``MissingClusterDNS``).
* ``Default``: the node's nameservers, search domains and options.
* ``None``: nothing but what ``spec.dnsConfig`` says.
* ``spec.dnsConfig`` is merged into any of them as the kubelet merges it: nameservers and
  search domains appended without duplicates, options by name (the pod's value wins; an
  option without a value is written bare).
* Then the limits (the kubelet's ``formDNSConfigFitsLimits``, with ``ExpandedDNSConfig``, GA
  since Kubernetes 1.28): at most 3 nameservers, 32 search domains, each at most 253
  characters, 2048 characters in all; what is cut is said in a warning.

The node's file is read as the kubelet reads it: ``nameserver`` lines add up, the last
``search`` and ``options`` lines win, a trailing dot of a search domain is dropped, ``#``
and ``;`` start comments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

MAX_NAMESERVERS: Final = 3
MAX_SEARCH_PATHS: Final = 32
MAX_SEARCH_CHARS: Final = 2048
MAX_SEARCH_LENGTH: Final = 253
DEFAULT_OPTIONS: Final = ("ndots:5",)
POLICIES: Final = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
MISSING_CLUSTER_DNS: Final = "the node has no cluster DNS address"
"""How the warning of a fallback to ``Default`` begins (the kubelet's ``MissingClusterDNS``)."""


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def text(self) -> str:
        """The file, as container runtimes write it: search, nameservers, options."""
        lines = []
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        lines += [f"nameserver {server}" for server in self.nameservers]
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "".join(f"{line}\n" for line in lines)


@dataclass(frozen=True)
class PodDNS:
    """What a pod's resolver is given, and what the kubelet would warn about."""

    conf: ResolvConf
    host_file: bool
    """The pod simply uses the node's file (``Default``, or ``ClusterFirst`` on the host
    network, without ``dnsConfig``): a pod on the node's network needs nothing written."""
    warnings: tuple[str, ...] = field(default=())


def parse(text: str) -> ResolvConf:
    """A ``resolv.conf`` as the kubelet reads it (see the module docstring)."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("#", ";")):
            continue
        fields = stripped.split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            nameservers.append(fields[1])
        elif fields[0] == "search":
            searches = [s.removesuffix(".") for s in fields[1:]]
        elif fields[0] == "options":
            options = fields[1:]
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options))


def policy_of(spec: Mapping[str, Any]) -> str:
    """The pod's ``dnsPolicy`` (``ClusterFirst`` when unset)."""
    return str(spec.get("dnsPolicy") or "ClusterFirst")


def pod_dns(
    spec: Mapping[str, Any],
    *,
    namespace: str,
    host: ResolvConf,
    cluster_dns: Sequence[str],
    cluster_domain: str,
) -> PodDNS:
    """The kubelet's ``GetPodDNS`` for a pod of ``namespace`` with ``spec`` on a node whose
    ``resolv.conf`` is ``host`` and whose cluster DNS is ``cluster_dns`` (empty: none)."""
    warnings: list[str] = []
    policy = policy_of(spec)
    host_network = bool(spec.get("hostNetwork"))
    if policy not in POLICIES:
        warnings.append(f'invalid dnsPolicy "{policy}": using "ClusterFirst"')
        policy = "ClusterFirst"
    if policy == "ClusterFirst" and host_network:
        policy = "Default"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and not cluster_dns:
        warnings.append(
            f'{MISSING_CLUSTER_DNS} and cannot give the pod the "{policy}" '
            'policy: falling back to "Default"'
        )
        policy = "Default"
    config = spec.get("dnsConfig") if isinstance(spec.get("dnsConfig"), Mapping) else None
    if policy == "None":
        conf = ResolvConf()
    elif policy == "Default":
        conf = host
    else:
        domain = cluster_domain.strip(".")
        cluster_search = (f"{namespace}.svc.{domain}", f"svc.{domain}", domain)
        conf = ResolvConf(
            nameservers=tuple(cluster_dns),
            searches=_unique([*cluster_search, *host.searches]),
            options=DEFAULT_OPTIONS,
        )
    if config is not None:
        conf = ResolvConf(
            nameservers=_unique([*conf.nameservers, *_strings(config.get("nameservers"))]),
            searches=_unique([*conf.searches, *_strings(config.get("searches"))]),
            options=_merge_options(conf.options, config.get("options") or ()),
        )
    conf = _fit(conf, warnings)
    return PodDNS(
        conf=conf,
        host_file=policy == "Default" and config is None,
        warnings=tuple(warnings),
    )


def _strings(values: Any) -> list[str]:
    return [str(v) for v in values or () if v is not None]


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _merge_options(existing: Sequence[str], given: Iterable[Any]) -> tuple[str, ...]:
    """``mergeDNSOptions``: by name, the pod's value winning; written ``name`` or
    ``name:value``. (The kubelet's map has no order; here the first mention keeps its place.)"""
    merged: dict[str, str] = {}
    for option in existing:
        name, _, value = option.partition(":")
        merged[name] = value
    for option in given:
        if not isinstance(option, Mapping) or not option.get("name"):
            continue
        value = option.get("value")
        merged[str(option["name"])] = "" if value is None else str(value)
    return tuple(f"{name}:{value}" if value else name for name, value in merged.items())


def _fit(conf: ResolvConf, warnings: list[str]) -> ResolvConf:
    """``formDNSConfigFitsLimits``."""
    nameservers = conf.nameservers
    if len(nameservers) > MAX_NAMESERVERS:
        nameservers = nameservers[:MAX_NAMESERVERS]
        warnings.append(
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied "
            f"nameserver line is: {' '.join(nameservers)}"
        )
    searches = list(conf.searches)
    exceeded = False
    if len(searches) > MAX_SEARCH_PATHS:
        searches = searches[:MAX_SEARCH_PATHS]
        exceeded = True
    kept = [s for s in searches if len(s) <= MAX_SEARCH_LENGTH]
    exceeded = exceeded or len(kept) != len(searches)
    while kept and len(" ".join(kept)) > MAX_SEARCH_CHARS:
        kept.pop()
        exceeded = True
    if exceeded:
        warnings.append(
            "Search Line limits were exceeded, some search paths have been omitted, the "
            f"applied search line is: {' '.join(kept)}"
        )
    return ResolvConf(nameservers, tuple(kept), conf.options)
