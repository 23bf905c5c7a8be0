"""The mesh CA: Istio's workload certificates (a SPIFFE URI SAN, critical with an empty
subject, server and client authentication, the lifetime asked for), signed by a CA kept
owner-only in its directory and reused across starts."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from handlers.mesh.ca import MeshCA

pytestmark = pytest.mark.integration


def test_a_workload_certificate_is_istios(tmp_path: Path) -> None:
    ca = MeshCA(tmp_path / "mesh", ttl=datetime.timedelta(seconds=90))
    issued = ca.issue("shop", "web-sa")
    assert issued.identity == "spiffe://cluster.local/ns/shop/sa/web-sa"
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert len(cert.subject) == 0
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.critical
    assert sans.value.get_values_for_type(x509.UniformResourceIdentifier) == [issued.identity]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    life = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(seconds=60) < life <= datetime.timedelta(seconds=90)
    assert issued.expires == cert.not_valid_after_utc
    # Signed by the root the proxies trust (ROOTCA).
    root = x509.load_pem_x509_certificate(ca.root_pem.encode())
    public = root.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(root)
    # Each issue is a new key.
    assert ca.issue("shop", "web-sa").key_pem != issued.key_pem


def test_the_ca_is_kept_owner_only_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / "mesh"
    first = MeshCA(directory)
    assert (directory.stat().st_mode & 0o777) == 0o700
    assert ((directory / "ca.key").stat().st_mode & 0o777) == 0o600
    assert MeshCA(directory).root_pem == first.root_pem
    # Without a directory it lives in memory: a new one each time.
    assert MeshCA().root_pem != MeshCA().root_pem
