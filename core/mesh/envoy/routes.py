"""Routes: one VirtualService HTTP route as Envoy routes (matches, weighted destinations,
rewrites and redirects, retries, timeouts, fault injection, mirroring, direct responses, CORS,
header operations, consistent-hash policies), and a service's default route.

Why this exists: the translation of Istio's ``HTTPRoute`` is the largest single mapping of the
mesh and is the same for sidecars and gateways; it is kept apart from which virtual hosts and
listeners the routes end up in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from core.mesh import checks
from core.mesh.envoy.model import MeshService, Rules, _rule_for
from core.mesh.envoy.names import (
    CORS_FILTER,
    CORS_POLICY_TYPE,
    FAULT_FILTER,
    FAULT_TYPE,
    TYPE_PREFIX,
    _go_duration,
    cluster_name,
    fqdn,
    fraction,
)
from core.mesh.kinds.common import Percent, StringMatch
from core.mesh.kinds.http import CorsPolicy, HTTPMatchRequest, HTTPRoute
from core.mesh.kinds.virtualservice import RouteDestination

PREVIOUS_HOSTS: Final = [
    {
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {
            "@type": TYPE_PREFIX
            + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
        },
    }
]
"""A retry goes to another host than the ones already tried (Istio sets it on every route)."""

DEFAULT_RETRY_ON: Final = (
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
)
DEFAULT_RETRIES: Final = 2
"""Istio's retry policy for a route that sets none (``meshConfig.defaultHttpRetryPolicy``)."""
REDIRECT_CODES: Final = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}


def _string_matcher(match: StringMatch) -> dict[str, Any]:
    if match.exact is not None:
        return {"exact": match.exact}
    if match.prefix is not None:
        return {"prefix": match.prefix}
    if match.regex is not None:
        return {"safe_regex": {"regex": match.regex}}
    return {"prefix": ""}


def _header_matcher(name: str, match: StringMatch, *, invert: bool = False) -> dict[str, Any]:
    matcher: dict[str, Any] = {"name": name}
    if invert:
        matcher["invert_match"] = True
    if match.exact is None and match.prefix is None and match.regex is None:
        matcher["present_match"] = True
    else:
        matcher["string_match"] = _string_matcher(match)
    return matcher


def _percent(percentage: Percent | None, percent: int | None = None) -> dict[str, Any]:
    if percentage is not None:
        return fraction(percentage.value)
    return fraction(100 if percent is None else percent)


def _route_match(match: HTTPMatchRequest | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    uri = match.uri if match is not None else None
    if uri is None or (uri.exact is None and uri.prefix is None and uri.regex is None):
        out["prefix"] = "/"
    elif uri.exact is not None:
        out["path"] = uri.exact
    elif uri.prefix is not None:
        out["prefix"] = uri.prefix or "/"
    else:
        out["safe_regex"] = {"regex": uri.regex}
    if match is None:
        return out
    if match.ignore_uri_case:
        out["case_sensitive"] = False
    headers = [_header_matcher(name, m) for name, m in sorted(match.headers.items())]
    for pseudo, field_value in ((":method", match.method), (":authority", match.authority),
                                (":scheme", match.scheme)):  # fmt: skip
        if field_value is not None:
            headers.append(_header_matcher(pseudo, field_value))
    headers += [
        _header_matcher(name, m, invert=True) for name, m in sorted(match.without_headers.items())
    ]
    if headers:
        out["headers"] = headers
    if match.query_params:
        out["query_parameters"] = [
            {"name": name, "string_match": _string_matcher(m)}
            if m.exact is not None or m.prefix is not None or m.regex is not None
            else {"name": name, "present_match": True}
            for name, m in sorted(match.query_params.items())
        ]
    return out


@dataclass(frozen=True, kw_only=True)
class _Context:
    namespace: str
    port: int
    """The listener port: a destination without a port on a multi-port service goes here."""
    services: Mapping[str, MeshService]
    rules: Rules


def _destination_cluster(host: str, subset: str | None, port: int | None, ctx: _Context) -> str:
    full = fqdn(host, ctx.namespace)
    service = ctx.services.get(full)
    if port is None:
        if service is not None and len(service.ports) == 1:
            port = service.ports[0].number
        else:
            port = ctx.port
    return cluster_name(full, port, subset or "")


def _hash_policy(cluster_host: str, ctx: _Context) -> list[dict[str, Any]]:
    rule = _rule_for(cluster_host, ctx.rules)
    policy = rule.spec.traffic_policy if rule is not None else None
    lb = policy.for_port(ctx.port).load_balancer if policy is not None else None
    hashing = lb.consistent_hash if lb is not None else None
    if hashing is None:
        return []
    if hashing.http_header_name is not None:
        return [{"header": {"header_name": hashing.http_header_name}}]
    if hashing.http_cookie is not None:
        cookie: dict[str, Any] = {"name": hashing.http_cookie.name}
        if hashing.http_cookie.path:
            cookie["path"] = hashing.http_cookie.path
        if hashing.http_cookie.ttl:
            cookie["ttl"] = _go_duration(hashing.http_cookie.ttl)
        return [{"cookie": cookie}]
    if hashing.use_source_ip:
        return [{"connection_properties": {"source_ip": True}}]
    if hashing.http_query_parameter_name is not None:
        return [{"query_parameter": {"name": hashing.http_query_parameter_name}}]
    return []


def _header_operations(target: dict[str, Any], headers: Any) -> None:
    for side in ("request", "response"):
        ops = getattr(headers, side, None) if headers is not None else None
        if ops is None:
            continue
        to_add = [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in sorted(ops.set.items())
        ] + [
            {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
            for k, v in sorted(ops.add.items())
        ]
        if to_add:
            target[f"{side}_headers_to_add"] = to_add
        if ops.remove:
            target[f"{side}_headers_to_remove"] = list(ops.remove)


def _retry_policy(route: HTTPRoute) -> dict[str, Any] | None:
    retries = route.retries
    if retries is None:
        return {
            "retry_on": DEFAULT_RETRY_ON,
            "num_retries": DEFAULT_RETRIES,
            "retry_host_predicate": PREVIOUS_HOSTS,
            "host_selection_retry_max_attempts": "5",
            "retriable_status_codes": [503],
        }
    if retries.attempts == 0:
        return None
    words: list[str] = []
    codes: list[int] = []
    for item in (retries.retry_on or "").split(","):
        if item.isdigit():
            codes.append(int(item))
        elif item:
            words.append(item)
    if codes and "retriable-status-codes" not in words:
        words.append("retriable-status-codes")
    policy: dict[str, Any] = {
        "retry_on": ",".join(words) if words else DEFAULT_RETRY_ON,
        "num_retries": retries.attempts,
        "retry_host_predicate": PREVIOUS_HOSTS,
        "host_selection_retry_max_attempts": "5",
    }
    if codes:
        policy["retriable_status_codes"] = codes
    if retries.per_try_timeout:
        policy["per_try_timeout"] = _go_duration(retries.per_try_timeout)
    if retries.backoff:
        policy["retry_back_off"] = {"base_interval": _go_duration(retries.backoff)}
    return policy


def _fault_config(route: HTTPRoute) -> dict[str, Any] | None:
    fault = route.fault
    if fault is None:
        return None
    config: dict[str, Any] = {"@type": FAULT_TYPE}
    if fault.delay is not None and fault.delay.fixed_delay:
        config["delay"] = {
            "fixed_delay": _go_duration(fault.delay.fixed_delay),
            "percentage": _percent(fault.delay.percentage, fault.delay.percent),
        }
    abort = fault.abort
    if abort is not None:
        spec: dict[str, Any] = {"percentage": _percent(abort.percentage)}
        if abort.http_status is not None:
            spec["http_status"] = abort.http_status
        elif abort.grpc_status is not None:
            spec["grpc_status"] = checks.GRPC_STATUSES.index(abort.grpc_status)
        config["abort"] = spec
    return config


def _route_action(route: HTTPRoute, ctx: _Context) -> tuple[str, dict[str, Any]]:
    """``("route", RouteAction)`` or ``("redirect", RedirectAction)`` for an HTTP route."""
    if route.redirect is not None:
        redirect: dict[str, Any] = {}
        r = route.redirect
        if r.uri:
            redirect["path_redirect"] = r.uri
        if r.authority:
            redirect["host_redirect"] = r.authority
        if r.port:
            redirect["port_redirect"] = r.port
        if r.scheme:
            redirect["scheme_redirect"] = r.scheme
        redirect["response_code"] = REDIRECT_CODES.get(r.redirect_code or 301, "MOVED_PERMANENTLY")
        return "redirect", redirect
    if route.direct_response is not None:
        return "direct_response", _direct_response(route)
    targets: list[tuple[str, int]] = []
    for destination in route.route:
        d = destination.destination
        assert d is not None  # validated: every destination has one
        port = d.port.number if d.port is not None else None
        targets.append((_destination_cluster(d.host, d.subset, port, ctx), destination.weight))
    action: dict[str, Any] = {}
    if len(targets) == 1:
        action["cluster"] = targets[0][0]
    else:
        # Istio's weights are relative: Envoy gives each weight / sum. Zero weights are dropped;
        # when none is set, the destinations share equally.
        if all(weight == 0 for _, weight in targets):
            targets = [(name, 1) for name, _ in targets]
        action["weighted_clusters"] = {
            "clusters": [{"name": name, "weight": w} for name, w in targets if w > 0]
        }
    first_host = route.route[0].destination.host if route.route[0].destination else ""
    hashing = _hash_policy(fqdn(first_host, ctx.namespace), ctx)
    if hashing:
        action["hash_policy"] = hashing
    action["timeout"] = _go_duration(route.timeout) if route.timeout else "0s"
    retry = _retry_policy(route)
    if retry is not None:
        action["retry_policy"] = retry
    if route.rewrite is not None:
        rewrite = route.rewrite
        if rewrite.uri:
            action["prefix_rewrite"] = rewrite.uri
        if rewrite.uri_regex_rewrite is not None:
            action["regex_rewrite"] = {
                "pattern": {"regex": rewrite.uri_regex_rewrite.match},
                "substitution": rewrite.uri_regex_rewrite.rewrite,
            }
        if rewrite.authority:
            action["host_rewrite_literal"] = rewrite.authority
    mirrors = []
    if route.mirror is not None:
        port = route.mirror.port.number if route.mirror.port else None
        mirrors.append(
            (_destination_cluster(route.mirror.host, route.mirror.subset, port, ctx),
             route.mirror_percentage)
        )  # fmt: skip
    for mirror in route.mirrors:
        d = mirror.destination
        assert d is not None
        port = d.port.number if d.port else None
        mirrors.append((_destination_cluster(d.host, d.subset, port, ctx), mirror.percentage))
    if mirrors:
        action["request_mirror_policies"] = [
            {"cluster": name, "runtime_fraction": {"default_value": _percent(percentage)}}
            for name, percentage in mirrors
        ]
    return "route", action


def _direct_response(route: HTTPRoute) -> dict[str, Any]:
    """Istio's ``directResponse``: Envoy answers the request itself."""
    spec = route.direct_response
    assert spec is not None
    action: dict[str, Any] = {"status": spec.status}
    if spec.body is not None and spec.body.data is not None:
        action["body"] = {"inline_bytes": spec.body.data}
    elif spec.body is not None and spec.body.string is not None:
        action["body"] = {"inline_string": spec.body.string}
    return action


def _cors_policy(cors: CorsPolicy) -> dict[str, Any]:
    """Istio's ``corsPolicy`` as the CORS filter's per-route policy: the filter answers a
    preflight from an allowed origin itself and adds the headers to the actual response."""
    policy: dict[str, Any] = {
        "@type": CORS_POLICY_TYPE,
        "allow_origin_string_match": [_string_matcher(o) for o in cors.allow_origins],
        # Istio turns the filter on for the route whenever a policy is set.
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
    }
    for field_name, key in (
        ("allow_methods", "allow_methods"),
        ("allow_headers", "allow_headers"),
        ("expose_headers", "expose_headers"),
    ):
        if values := getattr(cors, field_name):
            policy[key] = ",".join(values)
    if cors.max_age is not None:
        policy["max_age"] = str(checks.duration_ms(cors.max_age) // 1000)
    if cors.allow_credentials is not None:
        policy["allow_credentials"] = cors.allow_credentials
    if cors.unmatched_preflights == "IGNORE":
        policy["forward_not_matching_preflights"] = False
    return policy


def envoy_routes(route: HTTPRoute, ctx: _Context, index: int) -> list[dict[str, Any]]:
    """One Envoy route per match of an Istio HTTP route (a route without matches: one)."""
    kind, action = _route_action(route, ctx)
    out = []
    for match in route.match or [None]:
        entry: dict[str, Any] = {
            "name": route.name or f"route-{index}",
            "match": _route_match(match),
            kind: action,
        }
        per_filter: dict[str, Any] = {}
        if (fault := _fault_config(route)) is not None:
            per_filter[FAULT_FILTER] = fault
        if route.cors_policy is not None:
            per_filter[CORS_FILTER] = _cors_policy(route.cors_policy)
        if per_filter:
            entry["typed_per_filter_config"] = per_filter
        _header_operations(entry, route.headers)
        out.append(entry)
    return out


def _default_route(service: MeshService, port: int, ctx: _Context) -> dict[str, Any]:
    """The route of a service no VirtualService routes: all of it to the service's cluster,
    hashed as its DestinationRule says."""
    action: dict[str, Any] = {
        "cluster": cluster_name(service.host, port),
        "timeout": "0s",
        "retry_policy": _retry_policy(HTTPRoute()),
    }
    hashing = _hash_policy(service.host, ctx)
    if hashing:
        action["hash_policy"] = hashing
    return {"name": "default", "match": {"prefix": "/"}, "route": action}


def _route_targets(routes: Sequence[RouteDestination], ctx: _Context) -> list[tuple[str, int]]:
    """A tcp or tls route's destinations as ``(cluster, weight)`` (all weights 0: equal)."""
    targets = []
    for destination in routes:
        d = destination.destination
        assert d is not None
        number = d.port.number if d.port else None
        targets.append((_destination_cluster(d.host, d.subset, number, ctx), destination.weight))
    if len(targets) > 1 and all(w == 0 for _, w in targets):
        targets = [(n, 1) for n, _ in targets]
    return targets
