"""The mesh CA: Istio's workload certificates (a SPIFFE URI SAN, critical with an empty
subject, server and client authentication, the lifetime asked for), signed by a CA kept
owner-only in its directory and reused across starts; and the root's rotation (both roots
trusted, issuing moved to the new one, the old one dropped), across restarts and crashes."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from handlers.mesh.ca import MeshCA, root_needs_rotation
from streams import certificates

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


def _roots(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def _issuer_of(ca: MeshCA) -> x509.Certificate:
    issued = x509.load_pem_x509_certificate(ca.issue("shop", "web").cert_pem.encode())
    return next(r for r in _roots(ca.root_pem) if r.subject == issued.issuer)


def test_a_rotation_trusts_both_roots_then_issues_from_the_new_one_then_drops_the_old(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "mesh"
    ca = MeshCA(directory, ttl=datetime.timedelta(hours=1))
    old = ca.root
    now = datetime.datetime.now(datetime.UTC)
    ca.rotate(now=now)
    new = ca.root
    assert new.serial_number != old.serial_number and new.subject != old.subject
    # The bundle: new root first, then the old one.
    assert [r.serial_number for r in _roots(ca.root_pem)] == [new.serial_number, old.serial_number]
    # Staged: still issuing from the old root until the proxies trust the new one.
    assert ca.staged and _issuer_of(ca).serial_number == old.serial_number
    ca.promote()
    assert _issuer_of(ca).serial_number == new.serial_number
    # The old root goes one workload lifetime after the rotation.
    assert not ca.drop_due(now + datetime.timedelta(minutes=59))
    assert ca.drop_due(now + datetime.timedelta(hours=1))
    assert ((directory / "previous.json").stat().st_mode & 0o777) == 0o600
    assert ((directory / "ca.key").stat().st_mode & 0o777) == 0o600
    ca.drop_previous()
    assert [r.serial_number for r in _roots(ca.root_pem)] == [new.serial_number]
    assert not (directory / "previous.json").exists()


def test_a_restart_during_the_overlap_trusts_both_roots_and_starts_staged(tmp_path: Path) -> None:
    directory = tmp_path / "mesh"
    first = MeshCA(directory)
    old = first.root
    first.rotate(now=datetime.datetime.now(datetime.UTC), overlap=datetime.timedelta(seconds=5))
    again = MeshCA(directory)
    assert again.root_pem == first.root_pem and again.staged
    assert _issuer_of(again).serial_number == old.serial_number
    assert again.previous is not None and again.previous.overlap == datetime.timedelta(seconds=5)


def test_another_process_rotating_is_read_by_reload(tmp_path: Path) -> None:
    directory = tmp_path / "mesh"
    running = MeshCA(directory)
    assert not running.reload()
    MeshCA(directory).rotate(now=datetime.datetime.now(datetime.UTC))  # fleetlog mesh rotate-ca
    assert running.reload() and running.staged
    assert len(_roots(running.root_pem)) == 2
    assert not running.reload()  # read once


def test_a_crash_before_the_commit_discards_the_new_root_and_after_it_finishes(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "mesh"
    ca = MeshCA(directory)
    old_pem = (directory / "ca.pem").read_bytes()
    # Crashed after writing next/ but before previous.json: the rotation never happened.
    (directory / "next").mkdir(mode=0o700)
    (directory / "next" / "ca.pem").write_bytes(b"half")
    (directory / "next" / "ca.key").write_bytes(b"half")
    restarted = MeshCA(directory)
    assert (directory / "ca.pem").read_bytes() == old_pem and restarted.previous is None
    assert not (directory / "next").exists()
    # Crashed after the key was moved (previous.json written): the certificate follows.
    ca.rotate(now=datetime.datetime.now(datetime.UTC))
    new_pem = (directory / "ca.pem").read_bytes()
    (directory / "next").mkdir(mode=0o700)
    (directory / "next" / "ca.pem").write_bytes(new_pem)
    (directory / "ca.pem").write_bytes(old_pem)
    restarted = MeshCA(directory)
    assert (directory / "ca.pem").read_bytes() == new_pem
    assert restarted.root_pem == ca.root_pem and not (directory / "next").exists()


def test_a_root_near_its_end_needs_rotation() -> None:
    ttl = datetime.timedelta(hours=1)
    cert, _ = certificates.make_ca("r", lifetime=datetime.timedelta(days=10))
    start = cert.not_valid_before_utc
    assert not root_needs_rotation(cert, now=start + datetime.timedelta(days=7), ttl=ttl)
    # Less than a fifth of its validity left (Istio's grace).
    assert root_needs_rotation(cert, now=start + datetime.timedelta(days=8, hours=1), ttl=ttl)
    # Less than two workload lifetimes left, whatever the share.
    short, _ = certificates.make_ca("s", lifetime=datetime.timedelta(hours=3))
    assert root_needs_rotation(
        short, now=short.not_valid_after_utc - datetime.timedelta(hours=1, minutes=59), ttl=ttl
    )
