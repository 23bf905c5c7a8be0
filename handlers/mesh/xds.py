"""The builder's plain dicts as xDS protobufs: each resource an ``Any`` (``xds-protos``' Envoy
v3 messages, through protobuf's own JSON mapping), each type's resources with their version.

Why this exists: ``core.mesh.envoy`` speaks Envoy's JSON shape so it needs no protobuf; the ADS
server speaks protobuf. Converting is the costly part of a push, so a resource whose JSON is
unchanged since the last push keeps its ``Any`` (:class:`Encoder`), and the version of a type is
the hash of its resources' versions, each the hash of its canonical JSON
(``core.mesh.push.version_of``'s rule).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from typing import Any

# The messages ``@type`` names must be in protobuf's default pool to be parsed into an Any:
# importing their modules registers them.
import envoy.config.cluster.v3.cluster_pb2
import envoy.config.endpoint.v3.endpoint_pb2
import envoy.config.listener.v3.listener_pb2
import envoy.config.route.v3.route_pb2
import envoy.extensions.filters.http.cors.v3.cors_pb2
import envoy.extensions.filters.http.fault.v3.fault_pb2
import envoy.extensions.filters.http.on_demand.v3.on_demand_pb2
import envoy.extensions.filters.http.router.v3.router_pb2
import envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2
import envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2
import envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2
import envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2
import envoy.extensions.filters.network.sni_cluster.v3.sni_cluster_pb2
import envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2
import envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2
import envoy.extensions.transport_sockets.raw_buffer.v3.raw_buffer_pb2
import envoy.extensions.transport_sockets.tls.v3.secret_pb2
import envoy.extensions.transport_sockets.tls.v3.tls_pb2
import envoy.extensions.upstreams.http.v3.http_protocol_options_pb2  # noqa: F401
from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import any_pb2, json_format

from core.mesh.envoy.names import ROUTE_TYPE
from core.mesh.push import canonical, resource_name, resource_version, type_version
from core.mesh.vhds import HostIndex


@dataclass(frozen=True)
class Encoded:
    """One type's resources for one proxy: their version and each resource by name (with the
    canonical JSON it was made from, so a later round can replace a few and keep the rest, and
    each resource's own version, which delta xDS compares with what the proxy holds)."""

    version: str
    resources: tuple[tuple[str, any_pb2.Any], ...]
    texts: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    replaced: tuple[str, frozenset[str]] | None = None
    """When made by :meth:`Encoder.replace`: the version it was made from and the names
    replaced (delta xDS compares only those with what a proxy holds)."""
    index: HostIndex | None = field(default=None, compare=False)
    """VHDS resources' index by the domains they answer (``core.mesh.vhds``), made with them."""

    def named(self, names: Sequence[str]) -> list[any_pb2.Any]:
        """The resources a request names (all of them for a wildcard request)."""
        if not names:
            return [r for _, r in self.resources]
        wanted = set(names)
        return [r for name, r in self.resources if name in wanted]

    @cached_property
    def by_name(self) -> dict[str, tuple[str, any_pb2.Any]]:
        """Each resource's ``(version, Any)`` by name (delta xDS's view)."""
        return {
            name: (version, packed)
            for (name, packed), version in zip(self.resources, self.versions, strict=True)
        }

    @cached_property
    def spans(self) -> dict[str, tuple[int, int]]:
        """Each name's positions (start, end) among the resources (sorted by name, so a name's
        are together): made once per build and shared by every proxy choosing from it
        (:func:`chosen`), a position each, not an entry tuple per resource."""
        found: dict[str, tuple[int, int]] = {}
        for position, (name, _) in enumerate(self.resources):
            found[name] = (found.get(name, (position,))[0], position + 1)
        return found

    def entry(self, position: int) -> _Entry:
        name, packed = self.resources[position]
        return (name, self.texts[position], self.versions[position], packed)


_Entry = tuple[str, str, str, any_pb2.Any]
"""A resource as an :class:`Encoded` keeps it: name, canonical JSON, version, ``Any``."""


class Encoder:
    """Converts resources to ``Any``, reusing the conversion (and the hash) of a resource seen
    unchanged in the last round (:meth:`next_round` drops the rest). One encoder serves every
    proxy: alike resources of different proxies are converted once."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, any_pb2.Any]] = {}
        self._used: dict[str, tuple[str, any_pb2.Any]] = {}
        self._hosts: dict[str, bytes] = {}
        self._hosts_used: dict[str, bytes] = {}
        self._texts: dict[int, tuple[Mapping[str, Any], str]] = {}
        self._texts_used: dict[int, tuple[Mapping[str, Any], str]] = {}
        self._large: dict[int, tuple[Mapping[str, Any], str]] = {}
        """The last round's texts longer than ``HELD_TEXT_MAX`` (kept one round only)."""
        self._objects: dict[int, tuple[Mapping[str, Any], _Entry]] = {}
        self._objects_used: dict[int, tuple[Mapping[str, Any], _Entry]] = {}
        """Each resource object encoded last round / this round, with its entry (the object
        held, so its ``id`` names no other; never changed once built, as for ``text``)."""

    def text(self, resource: Mapping[str, Any]) -> str:
        """``canonical(resource)``, remembered for the very object: a build taking over the
        last one's parts (``MeshBuild``'s ``previous``) hands the same dicts again, which are
        never changed once built, so their JSON is not made again. The object is held while
        remembered, so its ``id`` cannot name another. A large route configuration's text is
        its virtual hosts' texts joined (a VirtualService change makes one host's again)."""
        key = id(resource)
        found = self._texts_used.get(key) or self._texts.get(key) or self._large.get(key)
        if found is None or found[0] is not resource:
            hosts = resource.get("virtual_hosts") or ()
            if resource.get("@type") == ROUTE_TYPE and len(hosts) >= SPLIT_HOSTS:
                rest = canonical({**resource, "virtual_hosts": _HOSTS_MARK})
                joined = "[" + ",".join(self.text(host) for host in hosts) + "]"
                text = rest.replace(_HOSTS_MARK_JSON, joined, 1)
            else:
                text = canonical(resource)
            found = (resource, text)
        self._texts_used[key] = found
        return found[1]

    def encode(self, resources: Sequence[Mapping[str, Any]]) -> Encoded:
        entries: list[_Entry] = []
        used, objects, objects_used = self._used, self._objects, self._objects_used
        for resource in resources:
            # The very object encoded last round (a part the build took over: 999 of 1,000
            # clusters after a DestinationRule change) is its entry again, with no lookups.
            held = objects_used.get(id(resource)) or objects.get(id(resource))
            if held is None or held[0] is not resource:
                text = self.text(resource)
                known = used.get(text) or self._cache.get(text)
                if known is None:
                    known = (resource_version(text), self._pack(resource))
                held = (resource, (resource_name(resource), text, *known))
            entry = held[1]
            used[entry[1]] = (entry[2], entry[3])
            objects_used[id(resource)] = held
            entries.append(entry)
        return _encoded(entries)

    def replace(self, previous: Encoded, resources: Sequence[Mapping[str, Any]]) -> Encoded:
        """``previous`` with the resources of the same names replaced by ``resources`` (an
        incremental push: only these are converted and hashed again); the version is what
        :meth:`encode` gives the whole set."""
        fresh = self.encode(resources)
        replaced = {name for name, _ in fresh.resources}
        entries = [e for e in _entries(previous) if e[0] not in replaced]
        made = _encoded([*entries, *_entries(fresh)])
        return dataclasses.replace(made, replaced=(previous.version, frozenset(replaced)))

    def keep(self, encoded: Encoded) -> None:
        """``encoded`` is served again this round, unchanged: its conversions stay cached
        (a later round that builds its type again converts only what changed)."""
        for (_, packed), text, version in zip(
            encoded.resources, encoded.texts, encoded.versions, strict=True
        ):
            self._used[text] = (version, packed)

    def next_round(self) -> None:
        self._cache, self._used = self._used, {}
        self._objects, self._objects_used = self._objects_used, {}
        # Kept through rounds that do not encode them (an EndpointSlice push leaves the route
        # configuration's hosts alone), up to a bound: the dicts held are otherwise garbage.
        # Only small texts are kept (a virtual host's, a cluster's): a whole route
        # configuration's is made again from its hosts' anyway.
        # Only this round's texts are walked: the remembered ones (tens of thousands, most of
        # them untouched) were walked on every push, an EndpointSlice push's too.
        large = {}
        for key, found in self._texts_used.items():
            if len(found[1]) > HELD_TEXT_MAX:
                large[key] = found
            else:
                self._texts[key] = found
        if len(self._texts) + len(large) > TEXTS_HELD:
            self._texts = {k: v for k, v in self._texts_used.items() if k not in large}
        self._large, self._texts_used = large, {}
        if self._hosts_used:  # kept through rounds that convert no route configuration
            self._hosts, self._hosts_used = self._hosts_used, {}

    def _pack(self, resource: Mapping[str, Any]) -> any_pb2.Any:
        packed = any_pb2.Any()
        hosts = resource.get("virtual_hosts") or ()
        if resource.get("@type") != ROUTE_TYPE or len(hosts) < SPLIT_HOSTS:
            json_format.ParseDict(resource, packed)
            return packed
        # A sidecar's route configuration holds a virtual host per service of its port (1,000
        # in the benchmark): a VirtualService change alters one, so each host keeps its
        # conversion, the costly part, and only the changed ones are converted again.
        rest = {k: v for k, v in resource.items() if k not in ("@type", "virtual_hosts")}
        message = route_pb2.RouteConfiguration()
        json_format.ParseDict(rest, message)
        # The wire form is the other fields' then each host's as a length-delimited field:
        # a repeated message field is its entries concatenated, in any position, so each
        # host's serialised entry is kept and joined (no copy into a new message).
        entries = [message.SerializeToString()]
        for host in hosts:
            text = self.text(host)
            entry = self._hosts_used.get(text) or self._hosts.get(text)
            if entry is None:
                parsed = route_components_pb2.VirtualHost()
                json_format.ParseDict(host, parsed)
                body = parsed.SerializeToString()
                entry = _HOSTS_TAG + _varint(len(body)) + body
            self._hosts_used[text] = entry
            entries.append(entry)
        packed.type_url = f"type.googleapis.com/{route_pb2.RouteConfiguration.DESCRIPTOR.full_name}"
        packed.value = b"".join(entries)
        return packed


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_HOSTS_TAG = _varint(
    route_pb2.RouteConfiguration.DESCRIPTOR.fields_by_name["virtual_hosts"].number << 3 | 2
)
"""A ``virtual_hosts`` entry's key: its field number, wire type 2 (length-delimited)."""


SPLIT_HOSTS = 16
"""From how many virtual hosts a route configuration is converted host by host."""
TEXTS_HELD = 50_000
"""How many resources' canonical JSON the encoder remembers across rounds, at most."""
HELD_TEXT_MAX = 4096
"""The longest text remembered for a resource the round did not encode."""
_HOSTS_MARK = "\x00virtual hosts\x00"
_HOSTS_MARK_JSON = canonical({"": _HOSTS_MARK})[4:-1]
"""Where a route configuration's canonical JSON gets its hosts' (NUL cannot be in a name)."""


def since(encoded: Encoded, previous: Encoded | None) -> Encoded:
    """``encoded`` marked as made from ``previous`` by replacing the resources whose version
    differs (or that are new), when none of ``previous``'s is gone: a delta stream holding
    ``previous`` then compares those names alone. Found once per build, where each of ten
    streams walked every resource of the type (1,000 clusters after a DestinationRule
    change), on the event loop, while the others' responses waited."""
    if previous is None or encoded.replaced is not None or encoded.version == previous.version:
        return encoded
    held = previous.by_name  # the streams' own view of the last build (cached on it)
    changed = frozenset(
        name
        for (name, _), version in zip(encoded.resources, encoded.versions, strict=True)
        if held.get(name, ("",))[0] != version
    )
    new = sum(1 for name in changed if name not in held)
    if len(encoded.resources) - new < len(held):
        return encoded  # a resource removed: a full comparison says which
    return dataclasses.replace(encoded, replaced=(previous.version, changed))


def combined(*parts: Encoded) -> Encoded:
    """One type's resources from several sets (their names distinct), versioned as one: a
    proxy's SDS secrets are its identity's and its gateway's credentials."""
    return _encoded([entry for part in parts for entry in _entries(part)])


def chosen(
    encoded: Encoded,
    names: Collection[str],
    *,
    refused: Collection[tuple[str, str]] = (),
    good: Encoded | None = None,
) -> Encoded:
    """The resources of ``encoded`` named in ``names``, versioned as a set of their own (what
    an on-demand proxy asked for); a resource whose ``(name, version)`` the proxy refused is
    replaced by the one of ``good`` (what it last acked), or left out. Looked up by name, so
    a proxy's part is what it asked for, not every host of the build (1,000 in the
    benchmark, walked once per proxy and change)."""
    kept = good.spans if good is not None and refused else {}
    spans = encoded.spans
    entries = []
    for name in dict.fromkeys(names):  # each once, as a walk of the build's would
        start, end = spans.get(name, (0, 0))
        for position in range(start, end):
            entry = encoded.entry(position)
            if (entry[0], entry[2]) in refused:
                if name in kept:
                    assert good is not None
                    entries.append(good.entry(kept[name][1] - 1))  # its last, as before
                continue
            entries.append(entry)
    return _encoded(entries)


def _entries(encoded: Encoded) -> list[_Entry]:
    return [
        (name, text, version, packed)
        for (name, packed), text, version in zip(
            encoded.resources, encoded.texts, encoded.versions, strict=True
        )
    ]


def _encoded(entries: list[_Entry]) -> Encoded:
    entries.sort(key=itemgetter(0, 2))
    return Encoded(
        type_version(((n, v) for n, _, v, _ in entries), ordered=True),
        tuple((n, p) for n, _, _, p in entries),
        tuple(t for _, t, _, _ in entries),
        tuple(v for _, _, v, _ in entries),
    )
