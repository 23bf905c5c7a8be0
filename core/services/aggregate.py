"""The service aggregate: what may change about a service once it exists."""

from __future__ import annotations

from typing import Any

from core.errors import (
    InvalidTransition,
)
from core.meta.aggregate import Resource


class Service(Resource):
    KIND = "Service"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        old_ip = self.manifest.get("spec", {}).get("clusterIP")
        if old_ip and "spec.clusterIP" in changed:
            raise InvalidTransition(
                f"spec.clusterIP is immutable (it is {old_ip})", field="spec.clusterIP"
            )
