"""Certificates of the OPC UA server and its trust list (``edge provision certs``).

Directory layout (the usual OPC UA PKI layout; keep it outside the repository)::

    <pki_dir>/own/cert.der            server certificate (self-signed, SAN URI + DNS + IP)
    <pki_dir>/own/private/key.pem     its private key (mode 0600)
    <pki_dir>/trusted/certs/*.der     client certificates an operator has trusted
    <pki_dir>/rejected/certs/*.der    client certificates that were refused, kept for review

A client certificate is trusted when its exact DER bytes (SHA-256 thumbprint) are in the
trusted folder; a refused one is written to the rejected folder under its thumbprint, so an
operator can trust it with :func:`trust_client_certificate` (``edge provision trust``).
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
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
    def rejected(self) -> Path:
        return self.root / "rejected" / "certs"


def thumbprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER bytes, hex: the name it is stored under."""
    return hashlib.sha256(der).hexdigest()


def create_certificate(
    cert_path: Path, key_path: Path, application_uri: str, hostname: str, *, server: bool, days: int = 3650,
    common_name: str | None = None,
) -> None:
    """Write a self-signed OPC UA application certificate (DER) and its key (PEM, 0600)."""
    key = cert_gen.generate_private_key()
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri), x509.DNSName(hostname)]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(hostname)))
    except ValueError:
        pass
    usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, common_name or application_uri, {}, sans, usage, days=days
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))


def create_server_certificate(
    pki_dir: Path, application_uri: str, hostname: str, *, overwrite: bool = False, days: int = 3650
) -> PkiPaths:
    """Create the PKI layout and the server's certificate and key; returns the paths.

    Refuses to replace an existing certificate unless ``overwrite`` (clients trust it).
    """
    paths = PkiPaths(Path(pki_dir))
    if paths.cert.exists() and not overwrite:
        raise FileExistsError(f"{paths.cert} exists; pass overwrite to replace it (clients must re-trust it)")
    for d in (paths.trusted, paths.rejected):
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


class TrustListValidator:
    """asyncua certificate validator: validity period and trust list; keeps refused certificates.

    The trust list is read from disk on every check, so a certificate trusted by an operator
    works for the next connection without a restart. Refusals are counted in ``rejected``.
    """

    def __init__(self, pki_dir: Path) -> None:
        self.paths = PkiPaths(Path(pki_dir))
        self.rejected = 0

    async def __call__(self, cert: x509.Certificate, app_description: ua.ApplicationDescription) -> None:
        der = cert.public_bytes(Encoding.DER)
        thumb = thumbprint(der)
        if not (self.paths.trusted / f"{thumb}.der").exists():
            self._reject(der, thumb, app_description, "not in the trust list")
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
        now = datetime.now(UTC)
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            self._reject(der, thumb, app_description, "outside its validity period")
            raise ServiceError(ua.StatusCodes.BadCertificateTimeInvalid)

    def _reject(self, der: bytes, thumb: str, app: ua.ApplicationDescription, why: str) -> None:
        self.rejected += 1
        self.paths.rejected.mkdir(parents=True, exist_ok=True)
        (self.paths.rejected / f"{thumb}.der").write_bytes(der)
        log.warning("OPC UA client certificate %s of %s refused: %s (kept in %s)",
                    thumb[:16], app.ApplicationUri, why, self.paths.rejected)

