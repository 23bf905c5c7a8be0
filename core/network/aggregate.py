"""The PodCIDR aggregate: a node range that exists once, whose holder and range never change.

What may happen to it is little: it is created (with the node's ``NodePodCIDRAssigned``, by
``core.network.decisions``) and deleted when its node goes. Its range and holder are fixed for
its life; a node that needs another range gets another object.
"""

from __future__ import annotations

from typing import Any

from core.errors import InvalidTransition
from core.meta.aggregate import Resource


class PodCIDR(Resource):
    KIND = "PodCIDR"

    @property
    def cidr(self) -> str:
        return str(self.manifest.get("spec", {}).get("cidr", ""))

    @property
    def node_name(self) -> str | None:
        node = self.manifest.get("spec", {}).get("nodeName")
        return str(node) if node else None

    @property
    def node_uid(self) -> str | None:
        uid = self.manifest.get("spec", {}).get("nodeUID")
        return str(uid) if uid else None

    def held_by(self, node: str, uid: str) -> bool:
        return self.exists and self.node_name == node and self.node_uid in (None, uid)

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        if any(path.startswith("spec") for path in changed):
            raise InvalidTransition(
                f"spec is immutable: {self.name} holds {self.cidr} for "
                f"{self.node_name or 'no node (reserved)'}; delete it and create another",
                field="spec",
            )
