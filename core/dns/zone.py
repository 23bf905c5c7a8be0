"""The cluster's DNS zone: which records a name has, after Kubernetes' DNS specification
(schema 1.1.0) as CoreDNS' ``kubernetes`` plugin serves it in a kubeadm cluster.

Why this exists: a pod finds a service by name (``web``, ``web.shop``,
``web.shop.svc.cluster.local``); the node agent answers those names from the services and
endpoint slices it follows. What a name answers is domain logic, decided here without I/O
(the agent's ``handlers/agent/dns.py`` reads the wire format and the log):

* ``<svc>.<ns>.svc.<zone>``: ``A`` the ClusterIP; for a headless service (``clusterIP:
  None``) one ``A`` per ready endpoint (``NXDOMAIN`` when none is ready, as the specification
  says); for an ExternalName service a ``CNAME`` to the external name (whose own address the
  caller resolves upstream: :attr:`Answer.chase`);
* ``_<port>._<proto>.<svc>.<ns>.svc.<zone>``: ``SRV`` per named port (``0 <weight> <port>
  <svc>.<ns>.svc.<zone>``, weights splitting 100 as CoreDNS splits them), the targets' ``A``
  records in the additional section; for a headless service one per ready endpoint and port,
  targeting ``<hostname>.<svc>.<ns>.svc.<zone>`` (the endpoint's ``hostname``, else its
  address with dashes, CoreDNS' ``endpointHostname``), which has its own ``A`` record;
* ``<a-b-c-d>.<ns>.pod.<zone>``: ``A`` ``a.b.c.d`` for any well-formed address in an existing
  namespace (CoreDNS' ``pods insecure``, kubeadm's setting);
* ``dns-version.<zone>`` ``TXT "1.1.0"``, the zone's ``SOA`` and ``NS`` (``ns.dns.<zone>``,
  the cluster DNS address);
* ``PTR`` for a ClusterIP or a ready endpoint's address (``<d>.<c>.<b>.<a>.in-addr.arpa``);
  other reverse names fall through to the upstream resolvers (kubeadm's ``fallthrough
  in-addr.arpa ip6.arpa``).

A name of the zone that does not exist is ``NXDOMAIN``; a name that exists without records of
the asked type (``AAAA`` of an IPv4 service, ``<ns>.svc.<zone>``) is ``NOERROR`` with no
answer; both carry the zone's ``SOA`` in the authority section (minimum = the TTL, the SOA's
own TTL at most 300 s), as CoreDNS answers them. Names are matched case-insensitively.
Every record has the zone's TTL, 30 s by default: the plugin's own default is 5 s, kubeadm's
Corefile sets ``ttl 30``, which is what clusters run. Names outside the zone are for the
upstream resolvers (:data:`FORWARD`).

Only ready endpoints are answered (an unset ``ready`` reads as ready, as the API says); the
endpoint-slice controller already marks every endpoint of a ``publishNotReadyAddresses``
service ready, which is how that setting reaches DNS in Kubernetes too. IPv4 only, as the
cluster is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

CLUSTER_DOMAIN: Final = "cluster.local"
DEFAULT_TTL: Final = 30
"""kubeadm's Corefile (``kubernetes cluster.local … { ttl 30 }``)."""
MAX_TTL: Final = 3600
"""CoreDNS caps the plugin's TTL at an hour."""
SCHEMA_VERSION: Final = "1.1.0"
SCHEMA_TTL: Final = 28800
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
SOA_MAX_TTL: Final = 300
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
CNAME_DEPTH: Final = 8
"""How many in-zone CNAMEs are followed (an ExternalName naming another service)."""


@dataclass(frozen=True)
class SRVData:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class SOAData:
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


@dataclass(frozen=True)
class Record:
    """One resource record; names are absolute (a trailing dot)."""

    name: str
    rtype: str
    """``A``, ``CNAME``, ``PTR``, ``SRV``, ``TXT``, ``SOA`` or ``NS``."""
    ttl: int
    data: str | SRVData | SOAData


@dataclass(frozen=True)
class Answer:
    """What the zone says about a question."""

    rcode: str = "NOERROR"
    """``NOERROR`` or ``NXDOMAIN``."""
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    forward: bool = False
    """The name is not the cluster's: ask the upstream resolvers."""
    chase: str | None = None
    """The answer ends in a CNAME to a name outside the zone (an ExternalName service): the
    caller resolves it upstream and appends what it finds, as CoreDNS does."""


FORWARD: Final = Answer(forward=True)


@dataclass(frozen=True)
class Port:
    name: str
    port: int
    """-1: an endpoint slice without ports (CoreDNS' sentinel: ``A`` records, no ``SRV``)."""
    protocol: str


@dataclass(frozen=True)
class ServiceEntry:
    """What DNS needs of a Service."""

    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    headless: bool
    external_name: str | None
    ports: tuple[Port, ...]


@dataclass(frozen=True)
class Endpoint:
    """A ready endpoint address with its slice's ports."""

    address: str
    hostname: str
    """The endpoint's ``hostname``, else its address with dashes."""
    ports: tuple[Port, ...]


def service_entry(namespace: str, name: str, manifest: Mapping[str, Any]) -> ServiceEntry:
    spec = manifest.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    cluster_ip = spec.get("clusterIP")
    ips = [ip for ip in spec.get("clusterIPs") or ([cluster_ip] if cluster_ip else [])]
    ports = tuple(
        Port(
            name=str(p.get("name") or ""),
            port=int(p.get("port", -1)),
            protocol=str(p.get("protocol") or "TCP"),
        )
        for p in spec.get("ports") or ()
        if isinstance(p, Mapping)
    )
    return ServiceEntry(
        namespace=namespace,
        name=name,
        cluster_ips=tuple(ip for ip in ips if _ipv4(ip)),
        headless=kind != "ExternalName" and cluster_ip == "None",
        external_name=str(spec.get("externalName") or "") if kind == "ExternalName" else None,
        ports=ports,
    )


def dashed(address: str) -> str:
    """``100.96.0.5`` -> ``100-96-0-5`` (an endpoint's name when it has no hostname, a pod's
    name under ``pod.<zone>``)."""
    return address.replace(".", "-")


def slice_endpoints(manifest: Mapping[str, Any]) -> tuple[str | None, tuple[Endpoint, ...]]:
    """The service an EndpointSlice belongs to and its ready IPv4 endpoints."""
    labels = (manifest.get("metadata") or {}).get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL) or None
    if manifest.get("addressType", "IPv4") != "IPv4":
        return service, ()
    ports = tuple(
        Port(
            name=str(p.get("name") or ""),
            port=int(p["port"]) if p.get("port") is not None else -1,
            protocol=str(p.get("protocol") or "TCP"),
        )
        for p in manifest.get("ports") or ()
        if isinstance(p, Mapping)
    ) or (Port(name="", port=-1, protocol=""),)
    out = []
    for endpoint in manifest.get("endpoints") or ():
        if (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        for address in endpoint.get("addresses") or ():
            if not _ipv4(address):
                continue
            hostname = str(endpoint.get("hostname") or "") or dashed(address)
            out.append(Endpoint(address=address, hostname=hostname.lower(), ports=ports))
    return service, tuple(out)


def _ipv4(text: Any) -> bool:
    try:
        ipaddress.IPv4Address(str(text))
    except ValueError:
        return False
    return True


def _undashed(label: str) -> str | None:
    """``100-96-0-5`` -> ``100.96.0.5``; None if it is no IPv4 address."""
    if label.count("-") != 3 or "--" in label:
        return None
    address = label.replace("-", ".")
    return address if _ipv4(address) else None


def _strip_underscore(label: str) -> str:
    return label[1:] if label.startswith("_") else label


@dataclass(frozen=True)
class _Hit:
    """One match of a name: an address (and port) behind an owner name, or a CNAME."""

    address: str | None
    port: int
    target: str
    cname: str | None = None


_SliceKey = tuple[str, str]
"""(namespace, slice name)."""


class ClusterZone:
    """The zone's data (namespaces, services, ready endpoints), kept current by the caller
    from the log with :meth:`set_namespace`, :meth:`set_service` and :meth:`set_slice`, and
    the answer to a question (:meth:`resolve`)."""

    def __init__(
        self, *, domain: str = CLUSTER_DOMAIN, ttl: int = DEFAULT_TTL, dns_ip: str | None = None
    ) -> None:
        if not 0 <= ttl <= MAX_TTL:
            raise ValueError(f"DNS TTL {ttl}: between 0 and {MAX_TTL} seconds")
        labels = tuple(label for label in domain.lower().strip(".").split(".") if label)
        if not labels:
            raise ValueError(f"cluster domain {domain!r} is empty")
        self.domain = ".".join(labels)
        self._zone = labels
        self.ttl = ttl
        self.dns_ip = dns_ip
        self.serial = 0
        """The SOA's serial: the caller sets it to the log position its data reflects."""
        self.version = 0
        """Counts the changes of the data (a cache of answers is good while it stays)."""
        self.namespaces: set[str] = set()
        self._services: dict[tuple[str, str], ServiceEntry] = {}
        self._service_ips: dict[str, set[tuple[str, str]]] = {}
        self._slices: dict[_SliceKey, tuple[str | None, tuple[Endpoint, ...]]] = {}
        self._slices_of: dict[tuple[str, str], set[str]] = {}
        self._endpoint_ips: dict[str, dict[_SliceKey, tuple[str, str]]] = {}
        """address -> {(namespace, slice): (service, hostname)}, for PTR questions."""

    # -- the data -------------------------------------------------------------------------

    def set_namespace(self, name: str, *, exists: bool) -> None:
        self.version += 1
        if exists:
            self.namespaces.add(name)
        else:
            self.namespaces.discard(name)

    def set_service(self, namespace: str, name: str, manifest: Mapping[str, Any] | None) -> None:
        """The service as it is now (None: deleted)."""
        self.version += 1
        key = (namespace, name)
        old = self._services.pop(key, None)
        if old is not None:
            for ip in old.cluster_ips:
                holders = self._service_ips.get(ip)
                if holders is not None:
                    holders.discard(key)
                    if not holders:
                        del self._service_ips[ip]
        if manifest is None:
            return
        entry = service_entry(namespace, name, manifest)
        self._services[key] = entry
        for ip in entry.cluster_ips:
            self._service_ips.setdefault(ip, set()).add(key)

    def set_slice(self, namespace: str, name: str, manifest: Mapping[str, Any] | None) -> None:
        """The EndpointSlice as it is now (None: deleted)."""
        self.version += 1
        key = (namespace, name)
        old = self._slices.pop(key, None)
        if old is not None:
            service, endpoints = old
            if service is not None:
                names = self._slices_of.get((namespace, service))
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self._slices_of[(namespace, service)]
            for endpoint in endpoints:
                held = self._endpoint_ips.get(endpoint.address)
                if held is not None:
                    held.pop(key, None)
                    if not held:
                        del self._endpoint_ips[endpoint.address]
        if manifest is None:
            return
        service, endpoints = slice_endpoints(manifest)
        self._slices[key] = (service, endpoints)
        if service is not None:
            self._slices_of.setdefault((namespace, service), set()).add(name)
            for endpoint in endpoints:
                self._endpoint_ips.setdefault(endpoint.address, {})[key] = (
                    service,
                    endpoint.hostname,
                )

    def endpoints(self, namespace: str, service: str) -> Iterable[Endpoint]:
        """The service's ready endpoints, slice by slice in name order."""
        for name in sorted(self._slices_of.get((namespace, service), ())):
            yield from self._slices[(namespace, name)][1]

    def service_name(self, namespace: str, service: str) -> str:
        return f"{service}.{namespace}.svc.{self.domain}."

    # -- questions ------------------------------------------------------------------------

    def in_zone(self, name: Sequence[str]) -> bool:
        """Whether a name (its labels, no root label) is the cluster zone's."""
        n = len(self._zone)
        return len(name) >= n and tuple(label.lower() for label in name[-n:]) == self._zone

    def resolve(self, name: Sequence[str], qtype: str) -> Answer:
        """The answer to ``name`` (its labels, as asked: no root label) of type ``qtype``
        (``A``, ``SRV``, …)."""
        return self._resolve(tuple(name), qtype, depth=0)

    def _resolve(self, name: tuple[str, ...], qtype: str, *, depth: int) -> Answer:
        labels = tuple(label.lower() for label in name)
        owner = ".".join(name) + "."
        if not self.in_zone(labels):
            if labels[-2:] == ("in-addr", "arpa"):
                return self._reverse(labels, qtype, owner)
            return FORWARD
        base = labels[: len(labels) - len(self._zone)]
        if not base:
            return self._apex(qtype, owner)
        if base == ("dns-version",):
            if qtype != "TXT":
                return self._denial("NOERROR")
            return Answer(answer=(Record(owner, "TXT", SCHEMA_TTL, SCHEMA_VERSION),))
        if base == ("ns", "dns"):
            if qtype != "A" or self.dns_ip is None:
                return self._denial("NOERROR")
            return Answer(answer=(Record(owner, "A", self.ttl, self.dns_ip),))
        hits = self._find(base)
        if hits is None:
            return self._denial("NXDOMAIN")
        return self._records(owner, qtype, hits, depth=depth)

    def _apex(self, qtype: str, owner: str) -> Answer:
        if qtype == "SOA":
            return Answer(answer=(self.soa(),))
        if qtype == "NS" and self.dns_ip is not None:
            ns = f"ns.dns.{self.domain}."
            return Answer(
                answer=(Record(owner, "NS", self.ttl, ns),),
                additional=(Record(ns, "A", self.ttl, self.dns_ip),),
            )
        return self._denial("NOERROR")

    def soa(self) -> Record:
        return Record(
            f"{self.domain}.",
            "SOA",
            min(self.ttl, SOA_MAX_TTL),
            SOAData(
                mname=f"ns.dns.{self.domain}.",
                rname=f"hostmaster.{self.domain}.",
                serial=self.serial % (1 << 32),
                refresh=SOA_REFRESH,
                retry=SOA_RETRY,
                expire=SOA_EXPIRE,
                minimum=self.ttl,
            ),
        )

    def _denial(self, rcode: str) -> Answer:
        """NXDOMAIN, or NOERROR without an answer (NODATA): the SOA in authority."""
        return Answer(rcode=rcode, authority=(self.soa(),))

    def _find(self, base: tuple[str, ...]) -> list[_Hit] | None:
        """What a name below the zone stands for: None when it does not exist, an empty list
        when it exists with no address (a namespace, ``svc.<zone>``)."""
        kind = base[-1]
        if kind not in ("svc", "pod"):
            return None
        if len(base) == 1:
            return []
        namespace = base[-2]
        if namespace not in self.namespaces:
            return None
        if len(base) == 2:
            return []
        if kind == "pod":
            address = _undashed(base[0]) if len(base) == 3 else None
            return None if address is None else [_Hit(address, -1, "")]
        service = self._services.get((namespace, base[-3]))
        if service is None:
            return None
        rest = base[:-3]
        endpoint = port = protocol = None
        if len(rest) == 1:
            endpoint = rest[0]
        elif len(rest) == 2:
            port, protocol = _strip_underscore(rest[0]), _strip_underscore(rest[1])
        elif len(rest) > 2:
            return None
        own = self.service_name(namespace, service.name)
        if service.external_name is not None:
            return None if rest else [_Hit(None, -1, own, cname=service.external_name)]
        hits: list[_Hit] = []
        if service.headless or endpoint is not None:
            for ep in self.endpoints(namespace, service.name):
                if endpoint is not None and ep.hostname != endpoint:
                    continue
                for p in ep.ports:
                    if _port_matches(p, port, protocol):
                        hits.append(_Hit(ep.address, p.port, f"{ep.hostname}.{own}"))
            return hits or None
        matched = False
        for p in service.ports:
            if _port_matches(p, port, protocol):
                matched = True
                hits.extend(_Hit(ip, p.port, own) for ip in service.cluster_ips)
        return hits if matched else None

    def _records(self, owner: str, qtype: str, hits: list[_Hit], *, depth: int) -> Answer:
        cnames = [hit for hit in hits if hit.cname is not None]
        if cnames:
            if qtype not in ("A", "AAAA", "CNAME"):
                return self._denial("NOERROR")
            target = cnames[0].cname or ""
            record = Record(owner, "CNAME", self.ttl, target.rstrip(".") + ".")
            if qtype == "CNAME":
                return Answer(answer=(record,))
            labels = tuple(label for label in target.strip(".").split(".") if label)
            if not self.in_zone(labels):
                return Answer(answer=(record,), chase=target.rstrip(".") + ".")
            if depth >= CNAME_DEPTH:
                return Answer(answer=(record,))
            further = self._resolve(labels, qtype, depth=depth + 1)
            return Answer(
                rcode=further.rcode,
                answer=(record, *further.answer),
                authority=further.authority,
                additional=further.additional,
                chase=further.chase,
            )
        if qtype == "A":
            addresses = list(dict.fromkeys(hit.address for hit in hits if hit.address))
            if not addresses:
                return self._denial("NOERROR")
            return Answer(answer=tuple(Record(owner, "A", self.ttl, a) for a in addresses))
        if qtype == "SRV":
            served = list(
                dict.fromkeys((hit.port, hit.target, hit.address) for hit in hits if hit.port >= 0)
            )
            if not served:
                return self._denial("NOERROR")
            weight = max(1, 100 // len(served))
            answer = tuple(
                Record(owner, "SRV", self.ttl, SRVData(0, weight, port, target))
                for port, target, _ in served
            )
            extra = dict.fromkeys((target, address) for _, target, address in served if address)
            return Answer(
                answer=answer,
                additional=tuple(Record(t, "A", self.ttl, a) for t, a in extra),
            )
        return self._denial("NOERROR")

    def _reverse(self, labels: tuple[str, ...], qtype: str, owner: str) -> Answer:
        """PTR for a ClusterIP or a ready endpoint; anything else falls through upstream."""
        if qtype != "PTR" or len(labels) != 6:
            return FORWARD
        address = ".".join(reversed(labels[:4]))
        if not _ipv4(address) or str(ipaddress.IPv4Address(address)) != address:
            return FORWARD
        names: list[str] = []
        services = sorted(self._service_ips.get(address, ()))
        if services:
            namespace, name = services[0]
            names.append(self.service_name(namespace, name))
        else:
            for (namespace, _), (service, hostname) in sorted(
                self._endpoint_ips.get(address, {}).items()
            ):
                names.append(f"{hostname}.{self.service_name(namespace, service)}")
        if not names:
            return FORWARD
        unique = dict.fromkeys(names)
        return Answer(answer=tuple(Record(owner, "PTR", self.ttl, n) for n in unique))


def _port_matches(port: Port, name: str | None, protocol: str | None) -> bool:
    """An SRV question's ``_<port>._<proto>`` (either may be absent: any)."""
    if name is not None and name != port.name.lower():
        return False
    return protocol is None or protocol == port.protocol.lower()
