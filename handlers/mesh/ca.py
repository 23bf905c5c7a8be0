"""The mesh's own CA: short-lived SPIFFE certificates for the proxies' mutual TLS, issued by
the mesh-push handler and served to Envoy over SDS.

Why this exists: Istio's istiod is a CA; each proxy gets a certificate naming its workload
identity ``spiffe://cluster.local/ns/<ns>/sa/<sa>`` (a URI SAN, an empty subject, server and
client authentication) valid for a day by default, renewed at half its life. fleetlog's
handler does the same with ``streams.certificates`` (the X.509 code the HTTP door and NATS TLS
use). The CA lives **outside the log**, like fleetlog's other keys: ``<data dir>/pki/mesh/``
(``ca.pem``, ``ca.key``; the directory and key owner-only), made on the first start and kept,
so proxies keep trusting each other across restarts of ``up``. With no directory (tests) it
lives in memory.

The proxy's key is made here, in the handler, and sent to its Envoy inline over the ADS
stream (Istio's agent makes the key in the pod and sends a CSR; that path, where the key never
leaves the node, is not built: the stream is a Unix socket relayed by the node agent to the
handler's loopback port).

**Rotating the root** (Istio's root transition, ``fleetlog mesh rotate-ca``): a new root is
made and becomes ``ca.pem``/``ca.key``; the old one (certificate and key) moves to
``previous.json`` (0600, like the key) with the time of the rotation and the overlap asked for.
While it is there the trust bundle (SDS ``ROOTCA``) carries every root, new first. The
handler first pushes that bundle with the proxies' current certificates (``staged``: it still
issues from the old root), then — once every connected proxy acked it, or after
:data:`TRUST_WAIT` — issues every identity's certificate again from the new root
(:meth:`MeshCA.promote`), and drops the old root when the overlap is over: the longest
workload certificate lifetime (``ttl``) after the rotation unless the command said otherwise
(:meth:`MeshCA.drop_due`). A root with less than a fifth of its validity left, or less than
two workload lifetimes, is rotated by the handler itself (:func:`root_needs_rotation`, the
grace Istio's self-signed CA uses).

A rotation is crash-safe: the new pair is written to ``next/`` first, ``previous.json`` is the
commit point, then the pair is renamed into place; a process starting with ``next/`` present
finishes a committed rotation or discards an uncommitted one (:meth:`MeshCA._recover`). A
handler that restarts during the overlap trusts both roots again and starts ``staged``.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from core.mesh.envoy.names import spiffe_id
from streams import certificates
from streams.identity import private_directory, write_private

DEFAULT_TTL: Final = datetime.timedelta(hours=24)
"""Istio's ``DEFAULT_WORKLOAD_CERT_TTL``."""
CA_NAME: Final = "fleetlog mesh CA"
PREVIOUS_FILE: Final = "previous.json"
NEXT_DIR: Final = "next"
ROOT_GRACE: Final = 0.2
"""A root with less than this share of its validity left is rotated (Istio's
``CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE``, 20 %)."""
TRUST_WAIT: Final = datetime.timedelta(seconds=30)
"""How long the handler waits for every connected proxy to ack the bundle with the new root
before it issues from that root anyway (a proxy that never answers must not stall it)."""


def root_needs_rotation(
    cert: x509.Certificate, *, now: datetime.datetime, ttl: datetime.timedelta
) -> bool:
    """Whether a root is near enough its end to be rotated: less than :data:`ROOT_GRACE` of
    its validity left, or less than two workload lifetimes (a certificate it signs must not
    outlive it, and the transition needs a lifetime of overlap)."""
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    left = cert.not_valid_after_utc - now
    return left < max(life * ROOT_GRACE, 2 * ttl)


@dataclass(frozen=True, kw_only=True)
class Previous:
    """The roots still trusted after a rotation, newest first, and until when."""

    roots: tuple[certificates.CertifiedKey, ...]
    rotated_at: datetime.datetime
    overlap: datetime.timedelta | None
    """Asked for by the command; None: the workload certificates' lifetime."""


@dataclass(frozen=True, kw_only=True)
class Issued:
    """One proxy identity's certificate and key (PEM), and when it stops being valid."""

    identity: str
    cert_pem: str
    key_pem: str
    expires: datetime.datetime


class MeshCA:
    """Issues the proxies' certificates; ``directory`` keeps the CA across restarts."""

    def __init__(
        self, directory: Path | None = None, *, ttl: datetime.timedelta = DEFAULT_TTL
    ) -> None:
        self.ttl = ttl
        self.directory = directory
        self.previous: Previous | None = None
        self._ca = self._load_or_make()
        self.previous = self._load_previous()
        self.staged = self.previous is not None
        """Issuing from the newest old root while proxies learn to trust the new one."""
        self._seen = self._fingerprint()

    # -- files --------------------------------------------------------------------------------

    def _load_or_make(self) -> certificates.CertifiedKey:
        if self.directory is None:
            return certificates.make_ca(CA_NAME)
        self._recover()
        cert_file, key_file = self.directory / "ca.pem", self.directory / "ca.key"
        found = certificates.load_ca(cert_file, key_file)
        if found is not None:
            return found
        private_directory(self.directory)
        made = certificates.make_ca(CA_NAME)
        write_private(key_file, certificates.key_pem(made[1]).decode())
        write_private(cert_file, certificates.cert_pem(made[0]).decode())
        return made

    def _recover(self) -> None:
        """Finish a rotation committed (``previous.json`` names the root in ``ca.pem``)
        before a crash, or discard one that was not."""
        assert self.directory is not None
        pending = self.directory / NEXT_DIR
        if not pending.is_dir():
            return
        key, cert = pending / "ca.key", pending / "ca.pem"
        if cert.exists():
            committed = not key.exists()  # the key is moved first, after the commit
            if not committed:
                current = self.directory / "ca.pem"
                previous = self._load_previous()
                committed = (
                    previous is not None
                    and current.exists()
                    and any(
                        certificates.cert_pem(root[0]) == current.read_bytes()
                        for root in previous.roots
                    )
                )
            if committed:
                if key.exists():
                    os.replace(key, self.directory / "ca.key")
                os.replace(cert, self.directory / "ca.pem")
        for leftover in pending.iterdir():
            leftover.unlink()
        pending.rmdir()

    def _load_previous(self) -> Previous | None:
        if self.directory is None:
            return self.previous
        try:
            saved = json.loads((self.directory / PREVIOUS_FILE).read_text())
        except (OSError, ValueError):
            return None
        roots = []
        for entry in saved.get("roots") or ():
            cert = x509.load_pem_x509_certificate(entry["cert"].encode())
            key = serialization.load_pem_private_key(entry["key"].encode(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            roots.append((cert, key))
        overlap = saved.get("overlap_s")
        return Previous(
            roots=tuple(roots),
            rotated_at=datetime.datetime.fromisoformat(saved["rotated_at"]),
            overlap=datetime.timedelta(seconds=overlap) if overlap is not None else None,
        )

    def _save_previous(self) -> None:
        if self.directory is None:
            return
        path = self.directory / PREVIOUS_FILE
        if self.previous is None:
            path.unlink(missing_ok=True)
            return
        write_private(path, json.dumps({
            "rotated_at": self.previous.rotated_at.isoformat(),
            "overlap_s": (
                self.previous.overlap.total_seconds() if self.previous.overlap else None
            ),
            "roots": [
                {"cert": certificates.cert_pem(c).decode(), "key": certificates.key_pem(k).decode()}
                for c, k in self.previous.roots
            ],
        }))  # fmt: skip

    def _fingerprint(self) -> tuple[int, ...]:
        if self.directory is None:
            return ()
        found = []
        for name in ("ca.pem", PREVIOUS_FILE):
            try:
                found.append((self.directory / name).stat().st_mtime_ns)
            except FileNotFoundError:
                found.append(0)
        return tuple(found)

    def reload(self) -> bool:
        """Read the directory again if another process (``fleetlog mesh rotate-ca``) changed
        it; True when the roots changed."""
        if self.directory is None or self._fingerprint() == self._seen:
            return False
        if (self.directory / NEXT_DIR).exists():
            return False  # a rotation under way in another process: read it once done
        before = self.root_pem
        self._ca = self._load_or_make()
        self.previous = self._load_previous()
        self._seen = self._fingerprint()
        if self.root_pem == before:
            return False
        self.staged = self.previous is not None
        return True

    # -- the transition -----------------------------------------------------------------------

    def rotate(self, *, now: datetime.datetime, overlap: datetime.timedelta | None = None) -> None:
        """Make a new root; the current one joins the trusted old roots until the overlap
        (``overlap``, else the workload certificates' lifetime) is over."""
        made = certificates.make_ca(f"{CA_NAME} {now.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}")
        older = self.previous.roots if self.previous is not None else ()
        previous = Previous(roots=(self._ca, *older), rotated_at=now, overlap=overlap)
        if self.directory is not None:
            private_directory(self.directory)
            pending = private_directory(self.directory / NEXT_DIR)
            write_private(pending / "ca.key", certificates.key_pem(made[1]).decode())
            write_private(pending / "ca.pem", certificates.cert_pem(made[0]).decode())
        self.previous = previous
        self._save_previous()  # the commit point
        if self.directory is not None:
            os.replace(self.directory / NEXT_DIR / "ca.key", self.directory / "ca.key")
            os.replace(self.directory / NEXT_DIR / "ca.pem", self.directory / "ca.pem")
            (self.directory / NEXT_DIR).rmdir()
        self._ca = made
        self.staged = True
        self._seen = self._fingerprint()

    def promote(self) -> None:
        """Issue from the new root from now on (every proxy trusts it)."""
        self.staged = False

    def drop_due(self, now: datetime.datetime) -> bool:
        """Whether the overlap is over: the old roots can go."""
        if self.previous is None:
            return False
        overlap = self.previous.overlap if self.previous.overlap is not None else self.ttl
        return now >= self.previous.rotated_at + overlap

    def drop_previous(self) -> None:
        """Trust the current root alone again (its certificates are the only ones issued)."""
        self.previous = None
        self.staged = False
        self._save_previous()
        self._seen = self._fingerprint()

    def needs_rotation(self, now: datetime.datetime) -> bool:
        return root_needs_rotation(self._ca[0], now=now, ttl=self.ttl)

    @property
    def root(self) -> x509.Certificate:
        """The newest root."""
        return self._ca[0]

    @property
    def issuer(self) -> x509.Certificate:
        """The root certificates are issued from now."""
        return self._signer()[0]

    def _signer(self) -> certificates.CertifiedKey:
        if self.staged and self.previous is not None and self.previous.roots:
            return self.previous.roots[0]
        return self._ca

    @property
    def root_pem(self) -> str:
        """The trust bundle (SDS ``ROOTCA``): the newest root, then the old ones still
        trusted."""
        roots = [self._ca[0], *(c for c, _ in (self.previous.roots if self.previous else ()))]
        return "".join(certificates.cert_pem(c).decode() for c in roots)

    def issue(self, namespace: str, service_account: str) -> Issued:
        """A certificate for the workload identity, valid for ``ttl``."""
        identity = spiffe_id(namespace, service_account)
        cert, key = certificates.leaf(
            self._signer(),
            subject=x509.Name([]),
            usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            uris=(identity,),
            lifetime=self.ttl,
        )
        return Issued(
            identity=identity,
            cert_pem=certificates.cert_pem(cert).decode(),
            key_pem=certificates.key_pem(key).decode(),
            expires=cert.not_valid_after_utc,
        )
