"""Certificates of the OPC UA server and its trust list (``edge provision certs``).

Directory layout (the usual OPC UA PKI layout; keep it outside the repository)::

    <pki_dir>/own/cert.der            server certificate (self-signed, SAN URI + DNS + IP)
    <pki_dir>/own/private/key.pem     its private key (mode 0600)
    <pki_dir>/trusted/certs/*.der     client certificates an operator has trusted, and trusted CAs
    <pki_dir>/trusted/crl/*.{der,pem} revocation lists of the trusted CAs
    <pki_dir>/issuers/certs/*.der     intermediate CAs (used to build chains, not trusted alone)
    <pki_dir>/issuers/crl/*           their revocation lists
    <pki_dir>/rejected/certs/*.der    client certificates that were refused, kept for review (capped)

A client certificate is trusted when its exact DER bytes (SHA-256 thumbprint) are in the
trusted folder, or when it chains to a CA certificate in the trusted folder (checked with
revocation lists: :mod:`edge.security.trust`); a refused one is written to the rejected folder
under its thumbprint, so an operator can trust it with :func:`trust_client_certificate`
(``edge provision trust``).
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PkiPaths:
    root: Path

    @property
    def cert(self) -> Path:
        return self.root / "own" / "cert.der"

    @property
    def key(self) -> Path:
        return self.root / "own" / "private" / "key.pem"

    @property
    def trusted(self) -> Path:
        return self.root / "trusted" / "certs"

    @property
    def trusted_crl(self) -> Path:
        return self.root / "trusted" / "crl"

    @property
    def issuers(self) -> Path:
        return self.root / "issuers" / "certs"

    @property
    def issuers_crl(self) -> Path:
        return self.root / "issuers" / "crl"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected" / "certs"

    def folders(self) -> tuple[Path, ...]:
        """Every folder of the layout below ``root`` (what ``edge provision`` creates)."""
        return (self.root / "own", self.trusted.parent, self.trusted, self.trusted_crl, self.issuers.parent,
                self.issuers, self.issuers_crl, self.rejected.parent, self.rejected)


def thumbprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER bytes, hex: the name it is stored under."""
    return hashlib.sha256(der).hexdigest()


def create_certificate(
    cert_path: Path, key_path: Path, application_uri: str, hostname: str, *, server: bool, days: int = 3650,
    common_name: str | None = None,
) -> None:
    """Write a self-signed OPC UA application certificate (DER) and its key (PEM, 0600)."""
    key = cert_gen.generate_private_key()
    usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, common_name or application_uri, {}, _sans(application_uri, hostname), usage, days=days
    )
    _write_key_and_cert(cert_path, key_path, cert, key)


def create_server_certificate(
    pki_dir: Path, application_uri: str, hostname: str, *, overwrite: bool = False, days: int = 3650
) -> PkiPaths:
    """Create the PKI layout and the server's certificate and key; returns the paths.

    Refuses to replace an existing certificate unless ``overwrite`` (clients trust it).
    """
    paths = PkiPaths(Path(pki_dir))
    if paths.cert.exists() and not overwrite:
        raise FileExistsError(f"{paths.cert} exists; pass overwrite to replace it (clients must re-trust it)")
    for d in paths.folders():
        d.mkdir(parents=True, exist_ok=True)
    create_certificate(paths.cert, paths.key, application_uri, hostname, server=True, days=days)
    return paths


def trust_client_certificate(pki_dir: Path, cert: Path | str) -> Path:
    """Trust a client certificate: a file path (DER or PEM) or a thumbprint from the rejected folder."""
    paths = PkiPaths(Path(pki_dir))
    source = Path(cert) if Path(cert).exists() else paths.rejected / f"{cert}.der"
    if not source.exists():
        raise FileNotFoundError(f"no certificate file or rejected thumbprint {cert!r} (see {paths.rejected})")
    der = _to_der(source.read_bytes())
    paths.trusted.mkdir(parents=True, exist_ok=True)
    target = paths.trusted / f"{thumbprint(der)}.der"
    target.write_bytes(der)
    (paths.rejected / target.name).unlink(missing_ok=True)
    return target


def untrust_client_certificate(pki_dir: Path, thumb: str) -> bool:
    """Remove a certificate from the trust list; False if it was not there."""
    target = PkiPaths(Path(pki_dir)).trusted / f"{thumb}.der"
    if not target.exists():
        return False
    target.unlink()
    return True


def list_rejected(pki_dir: Path) -> list[tuple[str, str]]:
    """(thumbprint, subject) of every rejected client certificate."""
    out = []
    for f in sorted(PkiPaths(Path(pki_dir)).rejected.glob("*.der")):
        out.append((f.stem, x509.load_der_x509_certificate(f.read_bytes()).subject.rfc4514_string()))
    return out


def _to_der(data: bytes) -> bytes:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    x509.load_der_x509_certificate(data)  # raises ValueError on garbage
    return data




def create_ca(cert_path: Path, key_path: Path, common_name: str, *, days: int = 3650) -> None:
    """A self-signed CA certificate (DER) and its key (PEM, 0600): for a plant that issues its
    clients' certificates itself. Put the certificate in ``trusted/certs`` and its CRL in ``trusted/crl``."""
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(key, common_name, {}, [], [], days=days)
    _write_key_and_cert(cert_path, key_path, cert, key)


def issue_certificate(
    ca_cert: Path, ca_key: Path, cert_path: Path, key_path: Path, application_uri: str, hostname: str, *,
    days: int = 365, common_name: str | None = None,
) -> x509.Certificate:
    """A client application certificate signed by the CA in ``ca_cert``/``ca_key``."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    issuer = x509.load_der_x509_certificate(Path(ca_cert).read_bytes())
    issuer_key = load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    key = cert_gen.generate_private_key()
    csr = cert_gen.generate_app_certificate_signing_request(
        key, common_name or application_uri, {}, _sans(application_uri, hostname), [ExtendedKeyUsageOID.CLIENT_AUTH])
    cert = cert_gen.sign_certificate_request(csr, issuer, issuer_key, days=days)
    _write_key_and_cert(cert_path, key_path, cert, key)
    return cert


def create_crl(ca_cert: Path, ca_key: Path, crl_path: Path, revoked_serials: Sequence[int] = (), *,
               days: int = 30) -> None:
    """A revocation list (DER) signed by the CA, listing ``revoked_serials``, valid ``days``."""
    from datetime import timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    issuer = x509.load_der_x509_certificate(Path(ca_cert).read_bytes())
    issuer_key = load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    now = datetime.now(UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer.subject).last_update(now) \
        .next_update(now + timedelta(days=days))
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    crl = builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    crl_path.parent.mkdir(parents=True, exist_ok=True)
    crl_path.write_bytes(crl.public_bytes(Encoding.DER))


def _sans(application_uri: str, hostname: str) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri), x509.DNSName(hostname)]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(hostname)))
    except ValueError:
        pass
    return sans


def _write_key_and_cert(cert_path: Path, key_path: Path, cert: x509.Certificate, key: object) -> None:
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))


def create_tls_certificate(cert_pem: Path, key_pem: Path, hostname: str, *, days: int = 3650) -> None:
    """A self-signed HTTPS certificate (PEM, SAN: ``hostname``, its IP if it is one, and localhost)
    and its key (PEM, 0600) for the HTTP API (``api.tls_cert_file`` / ``api.tls_key_file``)."""
    from datetime import timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = cert_gen.generate_private_key()
    sans: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    for ip in {hostname, "127.0.0.1"}:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            pass
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem.parent.mkdir(parents=True, exist_ok=True)
    cert_pem.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    cert_pem.write_bytes(cert.public_bytes(Encoding.PEM))
