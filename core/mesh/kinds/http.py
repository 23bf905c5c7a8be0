"""A VirtualService's HTTP route (``HTTPRoute``) and its parts: matches, weighted destinations,
redirects and rewrites, retries, fault injection, mirroring, CORS, direct responses and
delegates, each validated as Istio validates it.

Why this exists: the HTTP route is most of a VirtualService and most of Istio's validation;
the builder's routes (``core.mesh.envoy.routes``) read these models field by field.
"""

from __future__ import annotations

import base64
import re
from typing import Literal

from pydantic import Field

from core.mesh import checks
from core.mesh.kinds.common import (
    Destination,
    Percent,
    StringMatch,
    _add_all,
    _destinations_problems,
    _duration,
    _oneof,
)
from core.meta.model import K8sModel, Problems
from core.meta.names import label_problems


class HeaderOperations(K8sModel):
    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: list[str] = []


class Headers(K8sModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPMatchRequest(K8sModel):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = {}
    query_params: dict[str, StringMatch] = {}
    without_headers: dict[str, StringMatch] = {}
    port: int = 0
    source_labels: dict[str, str] = {}
    source_namespace: str | None = None
    gateways: list[str] = []
    ignore_uri_case: bool = False

    def problems(self) -> Problems:
        found = Problems()
        if self.uri is not None:
            found.extend(self.uri.problems("uri", uri=True).items, "uri")
        for field in ("scheme", "method", "authority"):
            match = getattr(self, field)
            if match is not None:
                found.extend(match.problems(field).items, field)
        for field, wire in (("headers", "headers"), ("query_params", "queryParams")):
            for key, match in getattr(self, field).items():
                found.extend(match.problems(wire).items, wire, key)
        for key, match in self.without_headers.items():
            if match.regex != "*":
                found.extend(match.problems("withoutHeaders").items, "withoutHeaders", key)
        if self.port:
            _add_all(found, checks.port_errors(self.port), "port")
        found.extend(label_problems(self.source_labels), "sourceLabels")
        if self.source_namespace and not checks.is_dns1123_label(self.source_namespace):
            found.add(
                f"sourceNamespace match {self.source_namespace} is invalid", "sourceNamespace"
            )
        return found


class HTTPRouteDestination(K8sModel):
    destination: Destination | None = None
    weight: int = 0
    headers: Headers | None = None


class HTTPRedirect(K8sModel):
    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: int = 0

    def problems(self, matches: list[HTTPMatchRequest]) -> Problems:
        """``validateHTTPRedirect`` (its first problem, as Istio stops there)."""
        found = Problems()
        if not (self.uri or self.authority or self.port is not None or self.scheme):
            found.add("redirect must specify URI, authority, scheme, or port")
        elif self.redirect_code and not 300 <= self.redirect_code <= 399:
            found.add(
                f"{self.redirect_code} is not a valid redirect code, must be 3xx", "redirectCode"
            )
        elif self.scheme and self.scheme not in ("http", "https"):
            found.add('invalid redirect scheme, must be "http" or "https"', "scheme")
        elif self.port is not None and self.port > 0:
            _add_all(found, checks.port_errors(self.port), "port")
        _add_all(found, _oneof({"port": self.port, "derivePort": self.derive_port}, "redirectPort"))
        return found


class RegexRewrite(K8sModel):
    match: str = ""
    rewrite: str = ""


class HTTPRewrite(K8sModel):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    def problems(self) -> Problems:
        """``validateHTTPRewrite``."""
        found = Problems()
        regex = self.uri_regex_rewrite
        if self.uri and regex is not None:
            found.add("rewrite may only contain one of URI or UriRegexRewrite")
        elif not self.uri and regex is None and not self.authority:
            found.add(
                "rewrite must specify at least one of URI, UriRegexRewrite, or authority. "
                "Only one of URI or UriRegexRewrite may be specified"
            )
        elif regex is not None:
            if not regex.match or not regex.rewrite:
                found.add(
                    "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                    "uriRegexRewrite",
                )
            else:
                for message in checks.regex_errors(
                    regex.match, "HTTPRewrite.UriRegexRewrite.Match"
                ):
                    found.add(f"UriRegexRewrite has errors: {message}", "uriRegexRewrite", "match")
        return found


class HTTPRetry(K8sModel):
    attempts: int = 0
    per_try_timeout: str | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    backoff: str | None = None

    def problems(self) -> Problems:
        """``agent.ValidateHTTPRetry``."""
        found = Problems()
        if self.attempts < 0:
            found.add("attempts cannot be negative", "attempts")
        if self.attempts == 0 and (
            self.per_try_timeout is not None
            or self.retry_on
            or self.retry_remote_localities is not None
        ):
            found.add("http retry policy configured when attempts are set to 0 (disabled)")
        _duration(found, self.per_try_timeout, "perTryTimeout")
        if self.retry_on:
            _add_all(found, checks.retry_on_errors(self.retry_on), "retryOn")
        _duration(found, self.backoff, "backoff")
        return found


class FaultDelay(K8sModel):
    fixed_delay: str | None = None
    exponential_delay: str | None = None
    percentage: Percent | None = None
    percent: int | None = None

    def problems(self) -> Problems:
        found = Problems()
        kinds = {"fixedDelay": self.fixed_delay, "exponentialDelay": self.exponential_delay}
        _add_all(found, _oneof(kinds, "httpDelayType"))
        if self.percentage is not None:
            _add_all(found, checks.percent_errors(self.percentage.value), "percentage", "value")
        if self.percent is not None:
            _add_all(found, checks.int_percent_errors(self.percent), "percent")
        _duration(found, self.fixed_delay, "fixedDelay")
        if self.exponential_delay is not None:
            found.add("exponentialDelay not supported yet", "exponentialDelay")
        return found


class FaultAbort(K8sModel):
    http_status: int | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None

    def problems(self) -> Problems:
        found = Problems()
        kinds = {
            "httpStatus": self.http_status,
            "grpcStatus": self.grpc_status,
            "http2Error": self.http2_error,
        }
        _add_all(found, _oneof(kinds, "errorType"))
        if self.percentage is not None:
            _add_all(found, checks.percent_errors(self.percentage.value), "percentage", "value")
        if self.http_status is not None and not 200 <= self.http_status <= 600:
            found.add(f"HTTP status {self.http_status} is not in range 200-599", "httpStatus")
        if self.grpc_status is not None and self.grpc_status not in checks.GRPC_STATUSES:
            found.add(
                f'gRPC status "{self.grpc_status}" is not supported. See '
                "https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of "
                "supported codes, for example 'NOT_FOUND'",
                "grpcStatus",
            )
        if self.http2_error is not None:
            found.add("HTTP/2 abort fault injection not supported yet", "http2Error")
        return found


class HTTPFaultInjection(K8sModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    def problems(self) -> Problems:
        found = Problems()
        if self.delay is None and self.abort is None:
            found.add("HTTP fault injection must have an abort and/or a delay")
        if self.delay is not None:
            found.extend(self.delay.problems().items, "delay")
        if self.abort is not None:
            found.extend(self.abort.problems().items, "abort")
        return found


class HTTPMirrorPolicy(K8sModel):
    destination: Destination | None = None
    percentage: Percent | None = None


def _mirror_percentage(found: Problems, value: float, name: str, *subpath: str | int) -> None:
    if value > 100:
        found.add(f"{name} must have a max value of 100 (it has {value:f})", *subpath)
    if value < 0:
        found.add(f"{name} must have a min value of 0 (it has {value:f})", *subpath)


CORS_METHODS: frozenset[str] = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"}
)
"""The methods Istio takes in ``corsPolicy.allowMethods`` (Go's ``net/http`` ones and ``*``)."""
_HEADER_NAME = re.compile(r"[-_A-Za-z0-9]+")
DIRECT_RESPONSE_BODY_LIMIT = 1024 * 1024
"""Istio refuses a direct response body of 1 MB or more (it travels in every route push)."""


def _cors_header_errors(name: str) -> list[str]:
    """``ValidateCORSHTTPHeaderName``: ``*`` or a token."""
    if name == "":
        return ["header name cannot be empty"]
    if name != "*" and not _HEADER_NAME.fullmatch(name):
        return [f"header name {name} is not a valid header name"]
    return []


class CorsPolicy(K8sModel):
    allow_origins: list[StringMatch] = []
    allow_methods: list[str] = []
    allow_headers: list[str] = []
    expose_headers: list[str] = []
    max_age: str | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None

    def problems(self) -> Problems:
        """``validateCORSPolicy``."""
        found = Problems()
        for index, origin in enumerate(self.allow_origins):
            match = origin.exact if origin.exact is not None else origin.prefix
            if match is None:
                match = origin.regex
            if not match:
                found.add(
                    f"'{match or ''}' is not a valid match type for CORS allow origins",
                    "allowOrigins",
                    index,
                )
                continue
            found.extend(
                origin.problems("corsPolicy.allowOrigins", uri=True).items, "allowOrigins", index
            )
        for index, method in enumerate(self.allow_methods):
            if method not in CORS_METHODS:
                found.add(f'"{method}" is not a supported HTTP method', "allowMethods", index)
        for field, wire in (("allow_headers", "allowHeaders"), ("expose_headers", "exposeHeaders")):
            for index, name in enumerate(getattr(self, field)):
                _add_all(found, _cors_header_errors(name), wire, index)
        if self.max_age is not None:
            _duration(found, self.max_age, "maxAge")
            if (checks.parse_go_duration(self.max_age) or 0) % 1_000_000_000:
                found.add("max_age duration is accurate only to seconds precision", "maxAge")
        return found


class HTTPBody(K8sModel):
    string: str | None = None
    data: str | None = Field(default=None, alias="bytes")
    """``bytes``: base64, as protobuf's JSON mapping writes them."""

    def payload(self) -> bytes:
        if self.data is not None:
            return base64.b64decode(self.data)
        return (self.string or "").encode()


class HTTPDirectResponse(K8sModel):
    status: int = 0
    body: HTTPBody | None = None

    def problems(self) -> Problems:
        """``validateHTTPDirectResponse``."""
        found = Problems()
        if self.body is not None:
            body = {"string": self.body.string, "bytes": self.body.data}
            _add_all(found, _oneof(body, "specifier"), "body")
            if self.body.data is not None:
                try:
                    base64.b64decode(self.body.data, validate=True)
                except ValueError:
                    found.add("bytes must be base64", "body", "bytes")
                    return found
            if len(self.body.payload()) > DIRECT_RESPONSE_BODY_LIMIT:
                found.add(
                    "large direct_responses may impact control plane performance, must be less "
                    "than 1MB",
                    "body",
                )
        if not 0 <= self.status <= 600:
            found.add(f"HTTP status {self.status} is not in range 0-600", "status")
        return found


class Delegate(K8sModel):
    name: str = ""
    namespace: str | None = None


class HTTPRoute(K8sModel):
    name: str | None = None
    match: list[HTTPMatchRequest] = []
    route: list[HTTPRouteDestination] = []
    redirect: HTTPRedirect | None = None
    rewrite: HTTPRewrite | None = None
    timeout: str | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    mirrors: list[HTTPMirrorPolicy] = []
    headers: Headers | None = None
    cors_policy: CorsPolicy | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None

    def problems(self, *, in_delegate: bool = False) -> Problems:
        """``validateHTTPRoute`` (``in_delegate``: a route of a delegate VirtualService)."""
        found = Problems()
        if self.delegate is not None and not in_delegate:
            # A root route only delegates: Istio checks nothing else on it.
            label = self.name or ""
            if self.redirect is not None:
                found.add(f"root HTTP route {label} must not specify redirect")
            if self.route:
                found.add(f"root HTTP route {label} must not specify route")
            if not self.delegate.name:
                found.add("delegate name is required", "delegate", "name")
            for index, match in enumerate(self.match):
                found.extend(match.problems().items, "match", index)
            return found
        if self.delegate is not None:
            found.add("delegate HTTP route cannot contain delegate", "delegate")
        if self.redirect is not None:
            for present, name in (
                (self.route, "route"),
                (self.fault, "fault"),
                (self.rewrite, "rewrite"),
                (self.direct_response, "direct_response"),
            ):
                if present:
                    verb = "route" if name in ("route", "fault") else "route rule"
                    found.add(f"HTTP {verb} cannot contain both {name} and redirect")
        elif self.direct_response is not None:
            for present, name in (
                (self.route, "route"),
                (self.fault, "fault"),
                (self.rewrite, "rewrite"),
            ):
                if present:
                    verb = "route rule" if name == "rewrite" else "route"
                    found.add(f"HTTP {verb} cannot contain both {name} and direct_response")
        elif not self.route:
            found.add("HTTP route, redirect or direct_response is required", "route")
        if self.mirror is not None and self.mirrors:
            found.add("HTTP route cannot contain both mirror and mirrors")
        for index, match in enumerate(self.match):
            found.extend(match.problems().items, "match", index)
        if self.fault is not None:
            found.extend(self.fault.problems().items, "fault")
        if self.mirror_percentage is not None:
            value = self.mirror_percentage.value
            _mirror_percentage(found, value, "mirror_percentage", "mirrorPercentage", "value")
        if self.mirror is not None:
            found.extend(self.mirror.problems().items, "mirror")
        for index, mirror in enumerate(self.mirrors):
            if mirror.destination is None:
                found.add("destination is required for mirrors", "mirrors", index, "destination")
                continue
            found.extend(mirror.destination.problems().items, "mirrors", index, "destination")
            if mirror.percentage is not None:
                value = mirror.percentage.value
                _mirror_percentage(
                    found, value, "mirror percentage", "mirrors", index, "percentage", "value"
                )
        if self.redirect is not None:
            found.extend(self.redirect.problems(self.match).items, "redirect")
        if self.retries is not None:
            found.extend(self.retries.problems().items, "retries")
        if self.rewrite is not None:
            found.extend(self.rewrite.problems().items, "rewrite")
        if self.cors_policy is not None:
            found.extend(self.cors_policy.problems().items, "corsPolicy")
        if self.direct_response is not None:
            found.extend(self.direct_response.problems().items, "directResponse")
        found.extend(_destinations_problems(self.route, http=True).items, "route")
        _duration(found, self.timeout, "timeout")
        return found
