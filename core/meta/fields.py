"""Typed field values shared by the resource models: timestamps, quantities, ports and
int-or-percent counts.

Why this exists: Kubernetes reads these strictly (``"80"`` is not a port number, ``0.5`` cpu is
stored as ``500m``); one annotated type per value keeps every kind reading them the same way.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Final

from pydantic import (
    BeforeValidator,
    PlainValidator,
)

from core.errors import InvalidQuantity
from core.meta.model import QUANTITY_ERROR, field_error, invalid
from core.meta.names import port_name_errors
from core.meta.quantity import canonical_quantity


def _timestamp(value: object) -> object:
    # YAML turns an unquoted 2024-01-01T00:00:00Z into a datetime; keep the RFC 3339 text.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    return value


Timestamp = Annotated[str, BeforeValidator(_timestamp)]
"""An RFC 3339 timestamp, kept as text (server-managed; fleetlog never parses it here)."""


# --------------------------------------------------------------------------------------------
# Quantities and int-or-string values
# --------------------------------------------------------------------------------------------


def _quantity(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise field_error(
            invalid(value, "must be a quantity like 100m, 0.5, 128Mi, 1G"), kind=QUANTITY_ERROR
        )
    if isinstance(value, str):
        value = value.strip()  # Quantity.UnmarshalJSON trims whitespace before parsing
    try:
        return canonical_quantity(value)
    except InvalidQuantity as err:
        raise field_error(err.message, kind=QUANTITY_ERROR) from None


QuantityString = Annotated[str, PlainValidator(_quantity)]
"""A quantity, stored as its canonical string (``"0.5"`` is kept as ``"500m"``)."""


def _reject_bool(value: object) -> None:
    if isinstance(value, bool):
        raise field_error(invalid(value, "must be an integer or a string"))


def _port_number(value: object) -> int:
    _reject_bool(value)
    if not isinstance(value, int):
        raise field_error(invalid(value, "must be an integer"))
    if not 1 <= value <= 65535:
        raise field_error(invalid(value, "must be between 1 and 65535, inclusive"))
    return value


PortNumber = Annotated[int, PlainValidator(_port_number)]


def _port_number_or_name(value: object) -> int | str:
    _reject_bool(value)
    if isinstance(value, int):
        return _port_number(value)
    if isinstance(value, str):
        errs = port_name_errors(value)
        if errs:
            raise field_error(invalid(value, "; ".join(errs)))
        return value
    raise field_error(invalid(value, "must be a port number or a port name"))


PortNumberOrName = Annotated[int | str, PlainValidator(_port_number_or_name)]
"""An IntOrString port: a number 1-65535 or an IANA service name such as ``http``."""

_PERCENT_RE: Final = re.compile(r"[0-9]+%")


def _int_or_percent(value: object) -> int | str:
    _reject_bool(value)
    if isinstance(value, int):
        if value < 0:
            raise field_error(invalid(value, "must be greater than or equal to 0"))
        return value
    if isinstance(value, str):
        if not _PERCENT_RE.fullmatch(value):
            raise field_error(
                invalid(
                    value,
                    "a valid percent string must be a numeric string followed by an ending '%' "
                    "(e.g. '1%', or '93%')",
                )
            )
        return value
    raise field_error(invalid(value, "must be an integer or a percentage such as '25%'"))


IntOrPercent = Annotated[int | str, PlainValidator(_int_or_percent)]
"""An IntOrString count: a non-negative integer or a percentage such as ``"25%"``."""
