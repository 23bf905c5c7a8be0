"""The access aggregates: roles and bindings are plain resources (a binding's roleRef is fixed),
and so are users and API Priority and Fairness' FlowSchemas and priority levels."""

from __future__ import annotations

from typing import Any

from core.access.kinds import check_binding_update
from core.meta.aggregate import Resource


class Role(Resource):
    KIND = "Role"


class ClusterRole(Resource):
    KIND = "ClusterRole"


class RoleBinding(Resource):
    KIND = "RoleBinding"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        check_binding_update(changed)


class ClusterRoleBinding(Resource):
    KIND = "ClusterRoleBinding"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        check_binding_update(changed)


class User(Resource):
    KIND = "User"


class FlowSchema(Resource):
    KIND = "FlowSchema"


class PriorityLevelConfiguration(Resource):
    KIND = "PriorityLevelConfiguration"
