"""A DestinationRule's traffic policy: load balancer (simple, consistent hash, locality, warmup),
connection pool, outlier detection and client TLS, per port or per subset, validated as
Istio validates them.

Why this exists: a traffic policy is the largest part of a DestinationRule and appears three
times in one (top level, per port, per subset); the builder's clusters
(``core.mesh.envoy.clusters``) read it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.mesh import checks
from core.mesh.kinds.common import PortSelector, _add_all, _duration, _oneof
from core.meta.model import K8sModel, Problems

SimpleLB = Literal[
    "UNSPECIFIED", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN"
]


class HTTPCookie(K8sModel):
    name: str = ""
    path: str | None = None
    ttl: str | None = None


class RingHash(K8sModel):
    minimum_ring_size: int = 0


class MagLev(K8sModel):
    table_size: int = 0


class ConsistentHash(K8sModel):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: int = 0

    def problems(self) -> Problems:
        found = Problems()
        keys = {
            "httpHeaderName": self.http_header_name,
            "httpCookie": self.http_cookie,
            "useSourceIp": self.use_source_ip,
            "httpQueryParameterName": self.http_query_parameter_name,
        }
        _add_all(found, _oneof(keys, "hashKey"))
        _add_all(
            found, _oneof({"ringHash": self.ring_hash, "maglev": self.maglev}, "hashAlgorithm")
        )
        if self.http_cookie is not None:
            if not self.http_cookie.name:
                found.add("name required for HttpCookie", "httpCookie", "name")
            _duration(found, self.http_cookie.ttl, "httpCookie", "ttl")
        if self.minimum_ring_size and (self.ring_hash is not None or self.maglev is not None):
            found.add("only one of MinimumRingSize or Maglev/Ringhash can be specified")
        if self.maglev is not None:
            size = self.maglev.table_size
            if size == 0:
                found.add("tableSize must be set for maglev", "maglev", "tableSize")
            elif size >= 5000011:
                found.add("tableSize must be less than 5000011 for maglev", "maglev", "tableSize")
            elif not _is_prime(size):
                found.add("tableSize must be a prime number for maglev", "maglev", "tableSize")
        return found


def _is_prime(value: int) -> bool:
    if value < 2:
        return False
    factor = 2
    while factor * factor <= value:
        if value % factor == 0:
            return False
        factor += 1
    return True


class LocalityDistribute(K8sModel):
    from_: str = Field(default="", alias="from")
    to: dict[str, int] = {}


class LocalityFailover(K8sModel):
    from_: str = Field(default="", alias="from")
    to: str = ""


class LocalityLbSetting(K8sModel):
    distribute: list[LocalityDistribute] = []
    failover: list[LocalityFailover] = []
    failover_priority: list[str] = []
    enabled: bool | None = None

    def problems(self, *, outlier: OutlierDetection | None) -> Problems:
        """``ValidateLocalityLbSetting``. Istio only warns when failover comes without outlier
        detection — and then never fails over, since no endpoint is ever ejected; fleetlog
        refuses it rather than accept a rule that cannot act."""
        found = Problems()
        if self.distribute and self.failover:
            found.add("can not simultaneously specify 'distribute' and 'failover'")
            return found
        if self.failover:
            for label in self.failover_priority:
                if label in _TOPOLOGY_LABELS:
                    found.add(
                        f"can not simultaneously set 'failover' and topology label '{label}' in "
                        "'failover_priority'",
                        "failoverPriority",
                    )
                    return found
        sources = []
        for index, rule in enumerate(self.distribute):
            sources.append(rule.from_)
            if any(not 1 <= weight <= 100 for weight in rule.to.values()):
                found.add("locality weight must be in range [1, 100]", "distribute", index, "to")
                return found
            total = sum(rule.to.values())
            if total != 100:
                found.add(f"total locality weight {total} != 100", "distribute", index, "to")
                return found
            _add_all(found, _locality_errors(list(rule.to)), "distribute", index, "to")
        _add_all(found, _locality_errors(sources), "distribute")
        if (self.failover or self.failover_priority) and outlier is None:
            found.add("outlier detection policy must be provided for failover", "failover")
        for index, rule in enumerate(self.failover):
            if rule.from_ == rule.to:
                found.add(
                    "locality lb failover settings must specify different regions",
                    "failover",
                    index,
                )
            if "/" in rule.from_ or "/" in rule.to:
                found.add("locality lb failover only specify region", "failover", index)
            if "*" in rule.from_ or "*" in rule.to:
                found.add(
                    "locality lb failover region should not contain '*' wildcard",
                    "failover",
                    index,
                )
        return found


_TOPOLOGY_LABELS = (
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
)


def _locality_errors(localities: list[str]) -> list[str]:
    """``validateLocalities``: ``region[/zone[/subzone]]``, one trailing ``*`` at most, none
    overlapping another."""
    seen: list[tuple[str, ...]] = []
    for locality in localities:
        stars = locality.count("*")
        if stars and (stars > 1 or not locality.endswith("*")):
            return [
                f"locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ]
        parts = tuple(locality.split("/", 2))
        if any(part == "" for part in parts):
            return [f"locality {locality} must not contain empty region/zone/subzone info"]
        for other in seen:
            if _locality_overlaps(parts, other):
                return [f"locality {locality} overlap with previous specified ones"]
        seen.append(parts)
    return []


def _locality_overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    for x, y in zip(a, b, strict=False):
        if "*" in (x, y):
            return True
        if x != y:
            return False
    return True


class Warmup(K8sModel):
    duration: str | None = None
    minimum_percent: float | None = None
    aggression: float | None = None


class LoadBalancerSettings(K8sModel):
    simple: SimpleLB | None = None
    consistent_hash: ConsistentHash | None = None
    locality_lb_setting: LocalityLbSetting | None = None
    warmup_duration_secs: str | None = None
    warmup: Warmup | None = None

    def problems(self, *, outlier: OutlierDetection | None = None) -> Problems:
        found = Problems()
        lb_policy = {"simple": self.simple, "consistentHash": self.consistent_hash}
        _add_all(found, _oneof(lb_policy, "lbPolicy"))
        if self.consistent_hash is not None:
            found.extend(self.consistent_hash.problems().items, "consistentHash")
        if self.locality_lb_setting is not None:
            found.extend(
                self.locality_lb_setting.problems(outlier=outlier).items, "localityLbSetting"
            )
        _duration(found, self.warmup_duration_secs, "warmupDurationSecs")
        if (warm := self.warmup) is not None:
            if warm.duration is None:
                found.add("duration is required", "warmup", "duration")
            else:
                _duration(found, warm.duration, "warmup", "duration")
            if (warm.minimum_percent or 0) > 100:
                found.add(
                    "minimumPercent value should be less than or equal to 100",
                    "warmup",
                    "minimumPercent",
                )
            if warm.aggression is not None and warm.aggression < 1:
                found.add("aggression should be greater than or equal to 1", "warmup", "aggression")
        return found


class TcpKeepalive(K8sModel):
    probes: int | None = None
    time: str | None = None
    interval: str | None = None


class TCPSettings(K8sModel):
    max_connections: int = 0
    connect_timeout: str | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: str | None = None
    idle_timeout: str | None = None


class HTTPSettings(K8sModel):
    http1_max_pending_requests: int = 0
    http2_max_requests: int = 0
    max_requests_per_connection: int = 0
    max_retries: int = 0
    idle_timeout: str | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool = False
    max_concurrent_streams: int = 0


class ConnectionPoolSettings(K8sModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None

    def problems(self) -> Problems:
        """``validateConnectionPool``."""
        found = Problems()
        if self.tcp is None and self.http is None:
            found.add("connection pool must have at least one field")
            return found
        if (http := self.http) is not None:
            for field, wire, words in (
                (
                    "http1_max_pending_requests",
                    "http1MaxPendingRequests",
                    "http1 max pending requests",
                ),
                ("http2_max_requests", "http2MaxRequests", "http2 max requests"),
                (
                    "max_requests_per_connection",
                    "maxRequestsPerConnection",
                    "max requests per connection",
                ),
                ("max_retries", "maxRetries", "max retries"),
                ("max_concurrent_streams", "maxConcurrentStreams", "max concurrent streams"),
            ):
                if getattr(http, field) < 0:
                    found.add(f"{words} must be non-negative", "http", wire)
            _duration(found, http.idle_timeout, "http", "idleTimeout")
            if http.h2_upgrade_policy == "UPGRADE" and http.use_client_protocol:
                found.add(
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                    "http",
                    "useClientProtocol",
                )
        if (tcp := self.tcp) is not None:
            if tcp.max_connections < 0:
                found.add("max connections must be non-negative", "tcp", "maxConnections")
            _duration(found, tcp.connect_timeout, "tcp", "connectTimeout")
            _duration(found, tcp.max_connection_duration, "tcp", "maxConnectionDuration")
            if tcp.idle_timeout is not None and checks.parse_go_duration(tcp.idle_timeout) != 0:
                # 0s turns the idle timeout off, as in Istio
                _duration(found, tcp.idle_timeout, "tcp", "idleTimeout")
            if tcp.tcp_keepalive is not None:
                _duration(found, tcp.tcp_keepalive.time, "tcp", "tcpKeepalive", "time")
                _duration(found, tcp.tcp_keepalive.interval, "tcp", "tcpKeepalive", "interval")
        return found


class OutlierDetection(K8sModel):
    consecutive_errors: int = 0
    consecutive_gateway_errors: int | None = None
    consecutive5xx_errors: int | None = Field(default=None, alias="consecutive5xxErrors")
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: int | None = None
    interval: str | None = None
    base_ejection_time: str | None = None
    max_ejection_percent: int = 0
    min_health_percent: int = 0

    def problems(self) -> Problems:
        """``validateOutlierDetection``."""
        found = Problems()
        _duration(found, self.base_ejection_time, "baseEjectionTime")
        if (
            not self.split_external_local_origin_errors
            and (self.consecutive_local_origin_failures or 0) > 0
        ):
            found.add(
                "outlier detection consecutive local origin failures is specified, but split "
                "external local origin errors is set to false",
                "consecutiveLocalOriginFailures",
            )
        _duration(found, self.interval, "interval")
        _add_all(found, checks.int_percent_errors(self.max_ejection_percent), "maxEjectionPercent")
        _add_all(found, checks.int_percent_errors(self.min_health_percent), "minHealthPercent")
        return found


class ClientTLSSettings(K8sModel):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] = "DISABLE"
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = []
    sni: str | None = None
    insecure_skip_verify: bool | None = None

    def problems(self) -> Problems:
        """``agent.ValidateTLS``'s file rules: MUTUAL needs a certificate and key unless a
        credential names them."""
        found = Problems()
        if self.mode == "MUTUAL" and not self.credential_name:
            if not self.client_certificate:
                found.add("client certificate required for mutual tls", "clientCertificate")
            if not self.private_key:
                found.add("private key required for mutual tls", "privateKey")
        return found


class _PolicyParts(K8sModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None

    def _part_problems(self) -> Problems:
        found = Problems()
        for field, wire in (
            ("load_balancer", "loadBalancer"),
            ("connection_pool", "connectionPool"),
            ("outlier_detection", "outlierDetection"),
            ("tls", "tls"),
        ):
            part = getattr(self, field)
            if isinstance(part, LoadBalancerSettings):
                found.extend(part.problems(outlier=self.outlier_detection).items, wire)
            elif part is not None:
                found.extend(part.problems().items, wire)
        return found


class PortTrafficPolicy(_PolicyParts):
    port: PortSelector | None = None

    def problems(self) -> Problems:
        found = Problems()
        if self.port is None:
            found.add("portTrafficPolicy must have valid port", "port")
        if all(
            part is None
            for part in (self.load_balancer, self.connection_pool, self.outlier_detection, self.tls)
        ):
            found.add("port traffic policy must have at least one field")
        found.extend(self._part_problems().items)
        return found


class TrafficPolicy(_PolicyParts):
    port_level_settings: list[PortTrafficPolicy] = []

    def problems(self) -> Problems:
        """``validateTrafficPolicy``."""
        found = Problems()
        if (
            all(
                part is None
                for part in (
                    self.load_balancer,
                    self.connection_pool,
                    self.outlier_detection,
                    self.tls,
                )
            )
            and not self.port_level_settings
        ):
            found.add("traffic policy must have at least one field")
            return found
        found.extend(self._part_problems().items)
        for index, port_policy in enumerate(self.port_level_settings):
            found.extend(port_policy.problems().items, "portLevelSettings", index)
        return found

    def for_port(self, port: int) -> TrafficPolicy:
        """This policy with the settings of ``port`` (``portLevelSettings``) in place of the
        top-level ones they name, as Istio merges them."""
        override = next(
            (p for p in self.port_level_settings if p.port is not None and p.port.number == port),
            None,
        )
        if override is None:
            return self
        update = {
            field: getattr(override, field)
            for field in ("load_balancer", "connection_pool", "outlier_detection", "tls")
            if getattr(override, field) is not None
        }
        return self.model_copy(update=update)
