"""The small rules Istio's validation applies over and over: durations, host names, regexes,
percentages, ports, subset and port names.

Why this exists: the mesh's kinds (``core.mesh.kinds``) must refuse what Istio's
``pkg/config/validation`` refuses, with Istio's reason, so that YAML written for Istio means the
same here. Those rules are Istio's own (hosts are DNS-1123 labels that may be upper case and
may start with a ``*`` wildcard label; durations are Go's ``time.Duration`` text, at least 1 ms,
to the millisecond; regexes are RE2, as Envoy runs them), not Kubernetes' — so they live here
rather than in ``core.meta.names``. Each function returns Istio's messages; an empty list is
valid.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

import re2

_LABEL: Final = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_DNS1123_LABEL: Final = re.compile(_LABEL)
_WILDCARD_LABEL: Final = re.compile(rf"\*|(?:\*|\*-)?{_LABEL}")
_GO_DURATION_TERM: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_NS_PER_MS: Final = 1_000_000

RETRY_ON_POLICIES: Final = frozenset(
    {
        # x-envoy-retry-on
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        # x-envoy-retry-grpc-on
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
"""The ``retryOn`` words Istio accepts besides HTTP status codes."""

HTTP_STATUS_CODES: Final = frozenset(
    {100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303,
     304, 305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413,
     414, 415, 416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502,
     503, 504, 505, 506, 507, 508, 510, 511}
)  # fmt: skip
"""The codes Go's ``net/http.StatusText`` knows: what Istio takes as a ``retryOn`` status."""

GRPC_STATUSES: Final = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
"""gRPC's status names, in code order (``OK`` is 0): a fault's ``grpcStatus``."""

PROTOCOLS: Final = frozenset(
    {"tcp", "udp", "grpc", "grpc-web", "http", "http_proxy", "http2", "https", "tls", "mongo",
     "redis", "mysql"}
)  # fmt: skip
"""Istio's port protocols (``protocol.Parse``, case-insensitive)."""
HTTP_PROTOCOLS: Final = frozenset({"http", "http2", "http_proxy", "grpc", "grpc-web"})
TLS_PROTOCOLS: Final = frozenset({"https", "tls"})


def parse_go_duration(text: str) -> int | None:
    """Go's ``time.ParseDuration``: ``1h30m``, ``1.5s``, ``100ms``, ``0`` in nanoseconds, or
    None when ``text`` is not a duration (``1x``, ``10``, ``1d``)."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    if not body or _GO_DURATION_TERM.sub("", body) != "":
        return None
    total = 0
    for amount, unit in _GO_DURATION_TERM.findall(body):
        whole, _, fraction = amount.partition(".")
        scale = _GO_UNIT_NS[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
    return -total if text.startswith("-") else total


def duration_ms(text: str) -> int:
    """A duration already validated by :func:`duration_errors`, in milliseconds."""
    nanos = parse_go_duration(text)
    if nanos is None:
        raise ValueError(f"not a duration: {text!r}")
    return nanos // _NS_PER_MS


def duration_errors(text: str) -> list[str]:
    """``agent.ValidateDuration``: a Go duration of at least 1 ms, to the millisecond."""
    nanos = parse_go_duration(text)
    if nanos is None:
        return [f'invalid duration "{text}": use e.g. 100ms, 5s, 1m or 1h30m']
    if nanos < _NS_PER_MS:
        return ["duration must be greater than 1ms"]
    if nanos % _NS_PER_MS:
        return ["only durations to ms precision are supported"]
    return []


def is_dns1123_label(value: str) -> bool:
    """``labels.IsDNS1123Label`` (Istio's: upper case allowed)."""
    return len(value) <= 63 and _DNS1123_LABEL.fullmatch(value) is not None


def _labels_errors(domain: str) -> list[str]:
    parts = domain.split(".")
    top = parts[-1]
    if top.isdigit():
        return [f'domain name "{domain}" invalid (top level domain "{top}" cannot be all-numeric)']
    for index, label in enumerate(parts):
        if index == len(parts) - 1 and label == "":
            return []  # a trailing dot: an absolute name, ``istio.io.``
        if not is_dns1123_label(label):
            return [f'domain name "{domain}" invalid (label "{label}" invalid)']
    return []


def _preconditions(domain: str) -> list[str]:
    if len(domain) > 255:
        return [f'domain name "{domain}" too long (max 255)']
    if not domain:
        return ["empty domain name not allowed"]
    return []


def fqdn_errors(domain: str) -> list[str]:
    """``agent.ValidateFQDN``."""
    return _preconditions(domain) or _labels_errors(domain)


def wildcard_domain_errors(domain: str) -> list[str]:
    """``agent.ValidateWildcardDomain``: a host whose first label may be ``*``, ``*foo`` or
    ``*-foo``."""
    found = _preconditions(domain)
    if found:
        return found
    first, dot, rest = domain.partition(".")
    if len(first) > 63 or not _WILDCARD_LABEL.fullmatch(first):
        return [f'domain name "{domain}" invalid (label "{first}" invalid)']
    return _labels_errors(rest) if dot else []


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def ip_subnet_errors(value: str) -> list[str]:
    """``agent.ValidateIPSubnet``: an address or a CIDR block."""
    if value.count("/") == 1:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return [f"{value} is not a valid CIDR block"]
        return []
    return [] if is_ip(value) else [f"{value} is not a valid IP"]


def port_errors(port: int) -> list[str]:
    """``agent.ValidatePort``."""
    return [] if 1 <= port <= 65535 else [f"port number {port} must be in the range 1..65535"]


def percent_errors(value: float) -> list[str]:
    """``validatePercentage``: a ``Percent``'s value."""
    if value < 0 or value > 100 or 0 < value < 0.0001:
        return [f"percentage {value:g} is neither 0.0, nor in range [0.0001, 100.0]"]
    return []


def int_percent_errors(value: int) -> list[str]:
    """``ValidatePercent``: a whole percentage."""
    return [] if 0 <= value <= 100 else [f"percentage {value} is not in range 0..100"]


def subset_name_errors(name: str) -> list[str]:
    """``validateSubsetName``."""
    if not name:
        return ["subset name cannot be empty"]
    return [] if is_dns1123_label(name) else [f"subset name is invalid: {name}"]


def regex_errors(regex: str, where: str) -> list[str]:
    """``validateStringRegexp``: RE2, at most 1024 characters (Envoy's program-size limit)."""
    if len(regex) > 1024:
        return [f'"{where}": regex is too large, max length allowed is 1024']
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(regex, options)
    except re2.error as err:
        reason = err.args[0].decode() if isinstance(err.args[0], bytes) else str(err.args[0])
        return [
            f'"{where}": error parsing regexp: {reason}; Istio uses RE2 style regex-based '
            "match (https://github.com/google/re2/wiki/Syntax)"
        ]
    return []


def retry_on_errors(retry_on: str) -> list[str]:
    """``retryOn``: comma-separated Envoy retry conditions or HTTP status codes."""
    found = []
    for policy in retry_on.split(","):
        if policy.isdigit() and int(policy) in HTTP_STATUS_CODES:
            continue
        if policy not in RETRY_ON_POLICIES:
            found.append(f'"{policy}" is not a valid retryOn policy')
    return found


def protocol_of(name: str) -> str | None:
    """``protocol.Parse``: the protocol lower-cased, or None when Istio does not know it."""
    lower = name.lower()
    return lower if lower in PROTOCOLS else None


def port_name_errors(name: str) -> list[str]:
    """``ValidatePortName``."""
    return [] if is_dns1123_label(name) else [f"invalid port name: {name}"]
