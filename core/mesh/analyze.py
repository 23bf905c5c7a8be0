"""Problems across Istio objects, reported as ``istioctl analyze`` reports them.

Why this exists: each Istio object is validated alone when it is stored (``core.mesh.kinds``),
but many mistakes only show between objects — a VirtualService routing to a host no Service
has, to a subset no DestinationRule defines, bound to a Gateway that does not exist; two
VirtualServices claiming one host for the sidecars; a Gateway whose selector matches no
workload. Envoy is still configured (the route goes to a cluster with no endpoints, the
Gateway listens nowhere), so nothing fails loudly: these messages are the only sign. They use
Istio's codes, levels and wording (``<Level> [<code>] (<Kind> <name>.<namespace>) <text>``),
so what users know from istioctl reads the same here, in ``fleetlog describe`` of the object,
below ``fleetlog mesh status`` and in ``fleetlog mesh analyze`` (exit 79 on an error, as
istioctl).

Pure: it reads manifests (plain dicts as the read model holds them) and returns messages.

Messages (Istio's ``pkg/config/analysis/msg``):

* ``IST0101`` ReferencedResourceNotFound (Error): ``Referenced host not found: "<host>"`` (a
  route, mirror, TCP or TLS destination whose host is no Service and no ServiceEntry host),
  ``Referenced host+subset in destinationrule not found: "<host>+<subset>"``,
  ``Referenced gateway not found: "<gateway>"``, and for a Gateway
  ``Referenced selector not found: "<selector>"`` (no pod in the cluster has its labels; the
  ingress selectors fleetlog's node agent serves itself — ``istio=ingressgateway``,
  ``app=istio-ingressgateway`` — always have a workload), and
  ``Referenced credentialName not found: "<name>"`` (a server's ``credentialName`` that no
  Secret of the Gateway's namespace has: the server is left out of the gateway's listeners).
* ``IST0109`` ConflictingMeshGatewayVirtualServiceHosts (Error): VirtualServices bound to the
  sidecars (``mesh``) that define the same host.
* ``IST0132`` VirtualServiceHostNotFoundInGateway (Warning): a host of a VirtualService that
  none of the hosts of a Gateway it is bound to admits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

DOMAIN: Final = "svc.cluster.local"
EXIT_ISSUES: Final = 79
"""istioctl analyze's exit code when an analyzer found an issue at the failure threshold
(Error by default)."""
SERVED_INGRESS: Final = ({"istio": "ingressgateway"}, {"app": "istio-ingressgateway"})
"""Gateway selectors the node agent's own ingress Envoy answers to (no pod needed)."""

Level = Literal["Error", "Warning", "Info"]
Manifest = Mapping[str, Any]


@dataclass(frozen=True, kw_only=True, order=True)
class Message:
    """One finding, about one object."""

    kind: str
    namespace: str
    name: str
    code: str
    level: Level
    text: str

    def __str__(self) -> str:
        return f"{self.level} [{self.code}] ({self.kind} {self.name}.{self.namespace}) {self.text}"

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "code": self.code, "kind": self.kind,
                "namespace": self.namespace, "name": self.name, "message": self.text}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Objects:
    """The manifests the analyzers read (every namespace)."""

    virtual_services: Sequence[Manifest] = ()
    destination_rules: Sequence[Manifest] = ()
    gateways: Sequence[Manifest] = ()
    service_entries: Sequence[Manifest] = ()
    services: Sequence[Manifest] = ()
    pods: Sequence[Manifest] = ()
    secrets: Sequence[Manifest] | None = None
    """Only their names are read; None when the reader may not list them (the credential
    check is then skipped)."""


def _meta(manifest: Manifest) -> tuple[str, str]:
    meta = manifest.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def fqdn(host: str, namespace: str) -> str:
    """A short name completed as Istio does, in the namespace of the object naming it."""
    if "." not in host and host != "*":
        return f"{host}.{namespace}.{DOMAIN}"
    return host


def _matches(pattern: str, host: str) -> bool:
    """Istio's host matching: exact, or a ``*.``-wildcard covering the host."""
    if pattern == "*" or pattern == host:
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


def _destinations(spec: Manifest) -> Iterable[Manifest]:
    for route in spec.get("http") or ():
        for target in route.get("route") or ():
            if target.get("destination"):
                yield target["destination"]
        if route.get("mirror"):
            yield route["mirror"]
        for mirror in route.get("mirrors") or ():
            if mirror.get("destination"):
                yield mirror["destination"]
    for route in [*(spec.get("tcp") or ()), *(spec.get("tls") or ())]:
        for target in route.get("route") or ():
            if target.get("destination"):
                yield target["destination"]


def analyze(objects: Objects) -> list[Message]:
    """Every problem across ``objects``, sorted by object then code."""
    known_hosts = {
        fqdn(_meta(s)[1], _meta(s)[0]) for s in objects.services
    } | {
        fqdn(str(host), _meta(e)[0])
        for e in objects.service_entries
        for host in (e.get("spec") or {}).get("hosts") or ()
    }  # fmt: skip
    subsets: dict[str, set[str]] = {}
    for rule in objects.destination_rules:
        spec = rule.get("spec") or {}
        host = fqdn(str(spec.get("host") or ""), _meta(rule)[0])
        names = subsets.setdefault(host, set())
        names.update(str(s.get("name")) for s in spec.get("subsets") or ())
    gateways = {_meta(g): g for g in objects.gateways}
    out: list[Message] = []
    mesh_hosts: dict[str, list[tuple[str, str]]] = {}
    for vs in objects.virtual_services:
        namespace, name = _meta(vs)
        spec = vs.get("spec") or {}

        def found(code: str, text: str, level: Level = "Error", *, ns: str = namespace,
                  nm: str = name) -> None:  # fmt: skip
            out.append(Message(kind="VirtualService", namespace=ns, name=nm, code=code,
                               level=level, text=text))  # fmt: skip

        seen: set[tuple[str, str]] = set()
        for destination in _destinations(spec):
            host = fqdn(str(destination.get("host") or ""), namespace)
            subset = destination.get("subset")
            if not any(_matches(h, host) or _matches(host, h) for h in known_hosts):
                if ("host", host) not in seen:
                    seen.add(("host", host))
                    found("IST0101", f'Referenced host not found: "{destination.get("host")}"')
            elif (
                subset
                and subset not in subsets.get(host, ())
                and ("subset", f"{host}+{subset}") not in seen
            ):
                seen.add(("subset", f"{host}+{subset}"))
                found("IST0101", "Referenced host+subset in destinationrule not found: "
                                 f'"{host}+{subset}"')  # fmt: skip
        bound = [str(g) for g in spec.get("gateways") or ()]
        for gateway in bound:
            if gateway == "mesh":
                continue
            gw_ns, _, gw_name = gateway.rpartition("/")
            key = (gw_ns or namespace, gw_name)
            if key not in gateways:
                found("IST0101", f'Referenced gateway not found: "{gateway}"')
                continue
            admitted = _gateway_hosts(gateways[key])
            missing = [
                h for h in spec.get("hosts") or ()
                if not any(_admits(a, str(h), namespace) for a in admitted)
            ]  # fmt: skip
            if missing:
                found("IST0132", f"one or more host [{' '.join(map(str, missing))}] defined in "
                                 f"VirtualService {namespace}/{name} not found in Gateway "
                                 f"{key[0]}/{key[1]}.", "Warning")  # fmt: skip
        if not bound or "mesh" in bound:
            for host in spec.get("hosts") or ():
                mesh_hosts.setdefault(fqdn(str(host), namespace), []).append((namespace, name))
    for host, owners in sorted(mesh_hosts.items()):
        if len(owners) < 2:
            continue
        names = ",".join(f"{ns}/{nm}" for ns, nm in sorted(owners))
        for ns, nm in owners:
            out.append(Message(
                kind="VirtualService", namespace=ns, name=nm, code="IST0109", level="Error",
                text=f"The VirtualServices {names} associated with mesh gateway define the same "
                     f"host {host} which can lead to undefined behavior. This can be fixed by "
                     "merging the conflicting VirtualServices into a single resource.",
            ))  # fmt: skip
    pod_labels = [(p.get("metadata") or {}).get("labels") or {} for p in objects.pods]
    for (namespace, name), gateway in sorted(gateways.items()):
        selector = {str(k): str(v) for k, v in ((gateway.get("spec") or {}).get("selector")
                                                or {}).items()}  # fmt: skip
        if not selector or any(_within(s, selector) for s in SERVED_INGRESS):
            continue
        if not any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels):
            text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            out.append(Message(kind="Gateway", namespace=namespace, name=name, code="IST0101",
                               level="Error",
                               text=f'Referenced selector not found: "{text}"'))  # fmt: skip
    if objects.secrets is not None:
        out += _missing_credentials(gateways, {_meta(s) for s in objects.secrets})
    return sorted(set(out))


def _missing_credentials(
    gateways: Mapping[tuple[str, str], Manifest], secrets: set[tuple[str, str]]
) -> list[Message]:
    """Istio's gateway secret analyzer: a server's ``credentialName`` names a Secret of the
    Gateway's namespace (where fleetlog's handler reads it)."""
    out = []
    for (namespace, name), gateway in sorted(gateways.items()):
        for server in (gateway.get("spec") or {}).get("servers") or ():
            credential = (server.get("tls") or {}).get("credentialName")
            if credential and (namespace, str(credential)) not in secrets:
                text = f'Referenced credentialName not found: "{credential}"'
                out.append(Message(kind="Gateway", namespace=namespace, name=name,
                                   code="IST0101", level="Error", text=text))  # fmt: skip
    return out


def _within(served: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Whether every label ``selector`` asks for is one the served workload has."""
    return all(served.get(k) == v for k, v in selector.items())


def _gateway_hosts(gateway: Manifest) -> list[str]:
    servers = (gateway.get("spec") or {}).get("servers") or ()
    return [str(h) for server in servers for h in server.get("hosts") or ()]


def _admits(gateway_host: str, host: str, vs_namespace: str) -> bool:
    """A Gateway server's ``[namespace/]host`` admits a VirtualService host (``*`` and ``.``
    namespaces as Istio reads them)."""
    scope, _, pattern = gateway_host.rpartition("/")
    if scope not in ("", "*", ".") and scope != vs_namespace:
        return False
    return _matches(pattern, host) or _matches(host, pattern)


def of_object(messages: Iterable[Message], *, kind: str, namespace: str, name: str) -> list[str]:
    """The lines about one object (``fleetlog describe``)."""
    return [str(m) for m in messages if (m.kind, m.namespace, m.name) == (kind, namespace, name)]


def in_namespace(messages: Iterable[Message], namespace: str | None) -> list[Message]:
    """The messages about objects of ``namespace`` (all of them for None)."""
    return [m for m in messages if namespace is None or m.namespace == namespace]


def has_errors(messages: Iterable[Message]) -> bool:
    return any(m.level == "Error" for m in messages)


def no_issues_line(namespace: str | None) -> str:
    """What istioctl prints when nothing was found."""
    where = "all namespaces" if namespace is None else f"namespace: {namespace}"
    return f"\u2714 No validation issues found when analyzing {where}."
