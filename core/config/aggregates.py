"""The ConfigMap and Secret aggregates: plain resources whose contents freeze once ``immutable``."""

from __future__ import annotations

from typing import Any

from core.config.model import update_problems
from core.errors import FieldError, InvalidTransition
from core.meta.aggregate import Resource
from core.meta.model import format_path


def _check(kind: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    problems = update_problems(old, new, kind=kind).items
    if problems:
        errors = [FieldError(format_path(path), message) for path, message in problems]
        first = errors[0]
        raise InvalidTransition(first.message, field=first.field, errors=errors)


class ConfigMap(Resource):
    KIND = "ConfigMap"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        _check(self.KIND, self.manifest, manifest)


class Secret(Resource):
    """A Secret as the log holds it: ``data`` sealed (``core.access.secretdata``), so an
    immutable secret's contents compare equal only when the gateway kept each unchanged
    value's sealed text, which it does."""

    KIND = "Secret"

    def check_update(self, changed: list[str], manifest: dict[str, Any]) -> None:
        _check(self.KIND, self.manifest, manifest)
