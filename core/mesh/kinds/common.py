"""What Istio's kinds share: API groups and versions, the ``oneof`` and duration checks,
string matches, destinations and their port selectors, workload selectors, ports, and host
matching (Istio's ``hosts_match``, ``host_subset_of``).

Why this exists: VirtualServices, DestinationRules, Gateways and ServiceEntries are validated
with the same pieces; they live below every kind so no kind's module imports another's.
"""

from __future__ import annotations

from typing import Any

from core.mesh import checks
from core.meta.model import K8sModel, Problems

NETWORKING_GROUP = "networking.istio.io"
SECURITY_GROUP = "security.istio.io"
NETWORKING_VERSION = f"{NETWORKING_GROUP}/v1"
SECURITY_VERSION = f"{SECURITY_GROUP}/v1"
API_VERSION_ALIASES: dict[str, str] = {
    f"{NETWORKING_GROUP}/v1beta1": NETWORKING_VERSION,
    f"{NETWORKING_GROUP}/v1alpha3": NETWORKING_VERSION,
    f"{SECURITY_GROUP}/v1beta1": SECURITY_VERSION,
}
"""The older versions Istio still serves, each the same schema as v1: stored as v1 (as the
API server converts to the storage version)."""


def _oneof(values: dict[str, object], group: str) -> list[str]:
    """A protobuf ``oneof``: at most one of ``values`` set (protojson refuses a second)."""
    chosen = [name for name, value in values.items() if value is not None]
    if len(chosen) > 1:
        names = ", ".join(f'"{n}"' for n in values)
        return [f"only one of {names} may be set (oneof {group}); found {', '.join(chosen)}"]
    return []


def _add_all(found: Problems, messages: list[str], *subpath: str | int) -> None:
    for message in messages:
        found.add(message, *subpath)


def _duration(found: Problems, value: str | None, *subpath: str | int) -> None:
    if value is not None:
        _add_all(found, checks.duration_errors(value), *subpath)


class Percent(K8sModel):
    value: float = 0.0


class PortSelector(K8sModel):
    number: int = 0


class StringMatch(K8sModel):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    def problems(self, where: str, *, uri: bool = False) -> Problems:
        """``validateStringMatch`` (``validateStringMatchRegexp`` for a URI: an empty prefix
        there matches every path, as in Istio)."""
        found = Problems()
        _add_all(found, _oneof(self.model_dump(), "matchType"))
        if self.prefix == "" and not uri:
            found.add(f'"{where}": prefix string match should not be empty', "prefix")
        if self.regex is not None:
            if self.regex == "":
                found.add(f'"{where}": regex string match should not be empty', "regex")
            else:
                _add_all(found, checks.regex_errors(self.regex, where), "regex")
        return found


class Destination(K8sModel):
    host: str = ""
    subset: str | None = None
    port: PortSelector | None = None

    def problems(self) -> Problems:
        """``validateDestination``."""
        found = Problems()
        if self.host == "*":
            found.add(f"invalid destination host {self.host}", "host")
        else:
            _add_all(found, checks.wildcard_domain_errors(self.host), "host")
        if self.subset is not None:
            _add_all(found, checks.subset_name_errors(self.subset), "subset")
        if self.port is not None:
            _add_all(found, checks.port_errors(self.port.number), "port", "number")
        return found


def _destinations_problems(routes: list[Any], *, http: bool) -> Problems:
    """``validateHTTPRouteDestinations``/``validateRouteDestinations``."""
    found = Problems()
    total = 0
    for index, route in enumerate(routes):
        if route.destination is None:
            found.add("destination is required", index, "destination")
        else:
            found.extend(route.destination.problems().items, index, "destination")
        if route.weight < 0:
            found.add(f"weight {route.weight} < 0", index, "weight")
        total += route.weight
    if len(routes) > 1 and total == 0:
        found.add("total destination weight = 0")
    return found


def _gateway_name_problems(names: list[str]) -> Problems:
    """``validateGatewayNames``: ``namespace/name``, a legacy FQDN, or ``mesh``."""
    found = Problems()
    for index, name in enumerate(names):
        namespace, slash, gateway = name.partition("/")
        if not slash:
            _add_all(found, checks.fqdn_errors(name), index)
            continue
        if not namespace or not gateway:
            found.add("config namespace and gateway name cannot be empty", index)
        if not checks.is_dns1123_label(namespace):
            found.add(f'invalid value for namespace: "{namespace}"', index)
        if not checks.is_dns1123_label(gateway):
            found.add(f'invalid value for gateway name: "{gateway}"', index)
    return found


def host_subset_of(a: str, b: str) -> bool:
    """``host.Name.SubsetOf``: every name ``a`` covers is covered by ``b``."""
    if b == "*" or a == b:
        return True
    if b.startswith("*"):
        return a.endswith(b[1:])
    return False


def hosts_match(a: str, b: str) -> bool:
    """``host.Name.Matches``: equal, or one wildcard covers the other."""
    if a == b:
        return True
    for wild, other in ((a, b), (b, a)):
        if wild == "*":
            return True
        if wild.startswith("*") and other.endswith(wild[1:]):
            return True
    return False


class WorkloadSelector(K8sModel):
    match_labels: dict[str, str] = {}


class Port(K8sModel):
    number: int = 0
    protocol: str = ""
    name: str = ""
    target_port: int = 0
