"""A Gateway's spec: its servers (port, hosts, TLS settings), validated as Istio
validates them.

Why this exists: which hosts and TLS a gateway proxy serves is its own family of rules; the
builder's gateway listeners (``core.mesh.envoy.gateway``) read these models.
"""

from __future__ import annotations

from typing import Literal

from core.mesh import checks
from core.mesh.kinds.common import Port, _add_all
from core.meta.model import K8sModel, Problems

ServerTLSMode = Literal[
    "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
]


class ServerTLSSettings(K8sModel):
    https_redirect: bool = False
    mode: ServerTLSMode = "PASSTHROUGH"
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = []
    verify_certificate_spki: list[str] = []
    verify_certificate_hash: list[str] = []
    min_protocol_version: str | None = None
    max_protocol_version: str | None = None
    cipher_suites: list[str] = []

    def problems(self) -> Problems:
        """``validateTLSOptions``: ISTIO_MUTUAL brings its own certificates; SIMPLE, MUTUAL and
        OPTIONAL_MUTUAL need a ``credentialName`` or the certificate files (the two mutual
        modes a client CA too, and Istio names both "MUTUAL TLS" in its messages)."""
        found = Problems()
        if self.mode == "ISTIO_MUTUAL":
            for value, what, name in (
                (self.server_certificate, "server certificate", "serverCertificate"),
                (self.private_key, "private key", "privateKey"),
                (self.ca_certificates, "CA bundle", "caCertificates"),
                (self.credential_name, "credentialName", "credentialName"),
            ):
                if value:
                    found.add(f"ISTIO_MUTUAL TLS cannot have associated {what}", name)
            return found
        if self.mode not in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") or self.credential_name:
            return found
        prefix = "SIMPLE" if self.mode == "SIMPLE" else "MUTUAL"
        if prefix == "MUTUAL" and not self.ca_certificates:
            found.add("MUTUAL TLS requires a client CA bundle", "caCertificates")
        if not self.server_certificate:
            found.add(f"{prefix} TLS requires a server certificate", "serverCertificate")
        if not self.private_key:
            found.add(f"{prefix} TLS requires a private key", "privateKey")
        return found


class Server(K8sModel):
    port: Port | None = None
    bind: str | None = None
    hosts: list[str] = []
    tls: ServerTLSSettings | None = None
    name: str | None = None

    def problems(self) -> Problems:
        """``validateServer``."""
        found = Problems()
        if not self.hosts:
            found.add("server config must contain at least one host", "hosts")
        for index, host in enumerate(self.hosts):
            _add_all(found, _gateway_host_errors(host), "hosts", index)
        if self.port is None:
            found.add("port is required", "port")
            return found
        port_ok = True
        protocol = checks.protocol_of(self.port.protocol)
        if protocol is None:
            port_ok = False
            found.add(
                f'invalid protocol "{self.port.protocol}", supported protocols are HTTP, HTTP2, '
                "GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                "port",
                "protocol",
            )
        if messages := checks.port_errors(self.port.number):
            port_ok = False
            _add_all(found, messages, "port", "number")
        if self.port.target_port > 0:
            port_ok = False
            found.add("targetPort has no impact on Gateways", "port", "targetPort")
        if not self.port.name:
            port_ok = False
            found.add("port name must be set", "port", "name")
        if self.bind and not checks.is_ip(self.bind):
            found.add(f"{self.bind} is not a valid IP", "bind")
        if port_ok and protocol is not None:
            if protocol in checks.TLS_PROTOCOLS and self.tls is None:
                found.add("server must have TLS settings for HTTPS/TLS protocols", "tls")
            elif protocol not in checks.TLS_PROTOCOLS and self.tls is not None:
                if protocol not in checks.HTTP_PROTOCOLS:
                    found.add("server cannot have TLS settings for non HTTPS/TLS ports", "tls")
                elif not self.tls.https_redirect or (
                    self.tls.ca_certificates or self.tls.private_key or self.tls.server_certificate
                ):
                    found.add("server cannot have TLS settings for plain text HTTP ports", "tls")
        if self.tls is not None:
            found.extend(self.tls.problems().items, "tls")
        return found


def _gateway_host_errors(host: str) -> list[str]:
    """``ValidateNamespaceSlashWildcardHostname`` for a gateway: ``[ns/]host``, ``*`` allowed."""
    namespace, slash, name = host.partition("/")
    if not slash:
        namespace, name = "", host
    found = []
    if slash and (not namespace or not name):
        found.append("config namespace and dnsName in host entry cannot be empty")
    if slash and namespace not in ("*", ".") and not checks.is_dns1123_label(namespace):
        found.append(f'invalid namespace value "{namespace}" in gateway')
    if name and name != "*":
        found += checks.wildcard_domain_errors(name)
    return found


class GatewaySpec(K8sModel):
    selector: dict[str, str] = {}
    servers: list[Server] = []

    def problems(self) -> Problems:
        found = Problems()
        if not self.servers:
            found.add("gateway must have at least one server", "servers")
        names: set[str] = set()
        for index, server in enumerate(self.servers):
            found.extend(server.problems().items, "servers", index)
            if server.port is not None:
                if server.port.name in names:
                    found.add(
                        f"port names in servers must be unique: duplicate name {server.port.name}",
                        "servers",
                        index,
                        "port",
                        "name",
                    )
                names.add(server.port.name)
        return found
