"""The one way fleetlog reads YAML: PyYAML's safe loader with limits on aliases and depth.

Why this exists: a YAML file is untrusted input, and two of its features cost far more than
their size. Aliases let 500 bytes name a billion nodes (the "billion laughs": nine anchors of
nine aliases each); PyYAML composes them as shared nodes, but everything after it (msgpack,
validation, the gateway) walks the expanded tree, so the CLI once spent 40 s and 3.5 GB on
such a file before any size check saw it. Deep nesting (10,000 ``[``) makes the composer
recurse until Python raises ``RecursionError``, a 3,000-line traceback. Every YAML read site
(``apply``/``delete -f``, the scheduler's configuration file) goes through :func:`load_all`
or :func:`load_one`, so both are refused while the text is being composed, in milliseconds,
with one line saying why.

The limits follow the spirit of go-yaml, which kubectl and the API server use (it refuses a
document "containing excessive aliasing" and nesting beyond a maximum depth), with numbers
chosen for Python's stack and Kubernetes manifests:

* aliases may expand the stream to at most :data:`ALIAS_EXPANSION_FACTOR` times the nodes
  actually written, or :data:`ALIAS_EXPANSION_FLOOR` nodes, whichever is more (anchors and
  merge keys in ordinary manifests stay far below this); an alias inside the node it names is
  refused too (JSON, and so a manifest, cannot hold a cycle);
* collections may nest :data:`MAX_DEPTH` levels deep (go-yaml allows 10,000, which Python's
  default stack cannot; real manifests, CRD schemas included, stay under 40).
"""

from __future__ import annotations

from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

__all__ = [
    "ALIAS_EXPANSION_FACTOR",
    "ALIAS_EXPANSION_FLOOR",
    "MAX_DEPTH",
    "YAMLLimitExceeded",
    "load_all",
    "load_one",
]

MAX_DEPTH: Final = 100
"""Deepest nesting of collections accepted."""

ALIAS_EXPANSION_FACTOR: Final = 10
"""How many times the written nodes aliases may expand a stream to."""

ALIAS_EXPANSION_FLOOR: Final = 10_000
"""Nodes aliases may always expand a stream to, however small it is."""


class YAMLLimitExceeded(yaml.YAMLError):
    """A document refused for what it would cost to read, not for its syntax; its text is one
    line."""


class _GuardedLoader(yaml.SafeLoader):
    """``SafeLoader`` whose composer counts depth and what each alias would expand to."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._written = 0
        self._expanded = 0
        # Expanded size of every node composed so far, by identity (the nodes live as long as
        # the loader, so identities are not reused); a node still being composed has none.
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: object) -> Node:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._charge_alias(target, event)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        nests = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        self._depth += nests
        if self._depth > MAX_DEPTH:
            self._too_deep(self.peek_event().start_mark.line + 1)
        try:
            node: Node = super().compose_node(parent, index)
        finally:
            self._depth -= nests
        self._written += 1
        self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 0) for c in _children(node))
        return node

    def fetch_flow_collection_start(self, TokenClass: type) -> None:
        # The scanner reads ahead of the composer (a flow collection keeps a possible simple
        # key open per level), so ten thousand ``[`` are refused here, as they are scanned.
        super().fetch_flow_collection_start(TokenClass)  # type: ignore[misc]
        if self.flow_level > MAX_DEPTH:
            self._too_deep(self.line + 1)

    @staticmethod
    def _too_deep(line: int) -> None:
        raise YAMLLimitExceeded(f"line {line}: collections nested deeper than {MAX_DEPTH} levels")

    def _charge_alias(self, target: Node, event: yaml.Event) -> None:
        line = event.start_mark.line + 1
        size = self._sizes.get(id(target))
        if size is None:
            raise YAMLLimitExceeded(
                f"line {line}: alias *{event.anchor} is inside the node it names (a cycle)"
            )
        self._expanded += size
        budget = max(ALIAS_EXPANSION_FLOOR, ALIAS_EXPANSION_FACTOR * self._written)
        if self._expanded > budget:
            raise YAMLLimitExceeded(
                f"line {line}: document contains excessive aliasing (aliases expand to more "
                f"than {budget} nodes; at most {ALIAS_EXPANSION_FACTOR} times the nodes written "
                f"or {ALIAS_EXPANSION_FLOOR} are allowed)"
            )


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_all(text: str) -> list[Any]:
    """Every document of a YAML stream (empty ones as None), read within the limits.

    Raises :class:`YAMLLimitExceeded` for a stream over a limit and ``yaml.YAMLError`` for one
    that does not parse."""
    loader = _GuardedLoader(text)
    try:
        documents: list[Any] = []
        while loader.check_data():
            documents.append(loader.get_data())
        return documents
    finally:
        loader.dispose()


def load_one(text: str) -> Any:
    """The single document of a YAML text (None when empty), read within the limits."""
    loader = _GuardedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
