"""Durations as people write them (``30s``, ``1h30m``, ``2d``) and as Go prints them.

Why this exists: the command line's ``--timeout``, ``--since`` and ``--at -2h``, and the
kubelet-style messages (``back-off 40s restarting failed container``) all read or write
durations; one reader and one writer keep them alike. The reader takes Go's ``time.Duration``
units from ``ms`` to ``h`` (``ParseDuration``), plus ``d`` for days, which the command line
has always accepted; a bare number is seconds.
"""

from __future__ import annotations

import re
from typing import Final

from core.errors import ValidationFailed

_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_TERM: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_DURATION: Final = re.compile(rf"(?:{_TERM.pattern})+")
_SECONDS: Final = re.compile(r"\d+(?:\.\d+)?")


def is_duration(text: str) -> bool:
    """Whether ``text`` is a duration with units (``10m``, ``1h30m``), not a bare number."""
    return _DURATION.fullmatch(text) is not None


def parse_duration(text: str) -> float:
    """``30s``, ``2m``, ``1h30m``, ``1.5h``, ``500ms``, ``1d`` (or plain seconds, ``45``) in
    seconds; anything else is refused with a message saying what is expected."""
    text = text.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    if not is_duration(text):
        raise ValidationFailed(f"{text!r} is not a duration: use e.g. 30s, 2m, 1h30m or 1d")
    return sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in _TERM.findall(text))


def format_duration(seconds: float) -> str:
    """``seconds`` written as Go's ``time.Duration.String()`` does ("10s", "1m20s", "5m0s",
    "50ms"), so messages read exactly like the kubelet's."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns / size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _trim(rest / 1e9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")
