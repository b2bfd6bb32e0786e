"""Client certificate checks of the OPC UA server: trust list, CA chains with revocation lists.

The server runs :meth:`TrustListValidator.check` when a client opens a SecureChannel (before
any session exists), and :meth:`TrustListValidator.check_uri` at CreateSession, where the
client first names its ApplicationUri. A certificate is accepted when all of these hold:

* it parses, it is inside its validity period, its RSA key has at least 2048 bits;
* its KeyUsage allows digitalSignature, keyEncipherment and dataEncipherment (what a
  Basic256Sha256 channel does with it); an ExtendedKeyUsage, when present, includes clientAuth;
* it is trusted: either its exact DER is in ``trusted/certs`` (direct trust, the usual way
  for self-signed application certificates), or it chains through ``issuers/certs`` to a CA
  certificate in ``trusted/certs``. A chain is only accepted when, for every CA on it, a
  revocation list signed by that CA and not past its NextUpdate is in ``trusted/crl`` or
  ``issuers/crl``, and none lists the certificate below it (OPC UA Part 4, 6.1.3: no CRL
  means the revocation status is unknown, which is a refusal). A directly trusted certificate
  whose issuer's CRL is present and lists it is refused as revoked too.
* at CreateSession, the ApplicationUri the client announces is the URI in its certificate's
  SubjectAltName (asyncua's :class:`~asyncua.crypto.validator.CertificateValidator` with its
  URI option does that comparison).

Only CA certificates (BasicConstraints CA, keyCertSign) **without** an application URI are
trust anchors: asyncua's self-signed application certificates are marked CA as well, and a
client whose certificate is trusted must not be able to issue certificates for other
applications with its key.

asyncua's own :class:`~asyncua.crypto.truststore.TrustStore` was not used for the trust
decision: it makes every trusted file an anchor (so any trusted client could issue others),
matches CRL entries by serial number alone without checking who signed the CRL or whether
it is current, has no "revocation unknown", and logs a full traceback for every untrusted
certificate (a scanner would flood the log). The chain itself is built and verified by
``cryptography.x509.verification``, the same machinery that TrustStore uses.

The folders are read into memory and re-read only when a file in them changes (one
``scandir`` per folder per check), so an operator's ``edge provision trust`` works for the
next connection without a restart. Checks run in a worker thread (file reads, RSA
signatures); the validator's state is guarded by a lock.

Every refusal is counted by reason (``reasons``) and the certificate is kept in
``rejected/certs/<thumbprint>.der`` for review; at most ``max_rejected`` files are kept there,
the oldest are deleted first, so somebody sending made-up certificates cannot fill the disk.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge.security.pki import PkiPaths, thumbprint

log = logging.getLogger("edge.security.trust")

MIN_RSA_BITS = 2048
DEFAULT_MAX_REJECTED = 100


class CertificateRefused(ServiceError):
    """A client certificate was refused: ``code`` is the OPC UA StatusCode, ``reason`` says why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{ua.StatusCode(ua.UInt32(self.code)).name}: {self.reason}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _TrustState:
    """One reading of the trust list folders."""

    direct: set[str] = field(default_factory=set)  # thumbprints in trusted/certs
    anchors: list[x509.Certificate] = field(default_factory=list)  # CA certificates in trusted/certs
    intermediates: list[x509.Certificate] = field(default_factory=list)  # CA certificates in issuers/certs
    crls: dict[bytes, list[x509.CertificateRevocationList]] = field(default_factory=dict)  # issuer name DER -> CRLs
    problems: list[str] = field(default_factory=list)


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``crl`` (a key type that cannot sign, X25519 or X448, never did)."""
    key = ca.public_key()
    if not isinstance(key, dsa.DSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
                      | ed448.Ed448PublicKey | rsa.RSAPublicKey):
        return False
    return crl.is_signature_valid(key)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca and ku.key_cert_sign)


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _basic_ca(_policy: object, _cert: x509.Certificate, ext: x509.BasicConstraints | None) -> None:
    if ext is None or not ext.ca:
        raise ValueError("a CA certificate needs basicConstraints with ca=true")


class TrustListValidator:
    """Checks client certificates against ``pki_dir``'s trust list (see the module docstring)."""

    def __init__(self, pki_dir: Path, *, max_rejected: int = DEFAULT_MAX_REJECTED,
                 clock: Callable[[], datetime] = _now) -> None:
        self.paths = PkiPaths(Path(pki_dir))
        self.max_rejected = max_rejected
        self.clock = clock
        self.checked = 0
        self.accepted = 0
        self.rejected = 0  # refusals of every kind
        self.reasons: dict[str, int] = {}  # StatusCode name -> refusals
        self.kept_pruned = 0  # rejected files deleted to keep at most max_rejected
        self._lock = threading.Lock()
        self._signature: tuple = ()
        self._state = _TrustState()

    # ------------------------------------------------------------------ the checks

    async def check_async(self, der: bytes) -> x509.Certificate:
        """:meth:`check` in a worker thread (file reads and signatures stay off the loop)."""
        return await asyncio.to_thread(self.check, der)

    def check(self, der: bytes) -> x509.Certificate:
        """The parsed certificate if it may open a SecureChannel, else :class:`CertificateRefused`
        (counted, and the certificate kept in ``rejected/``)."""
        with self._lock:
            self.checked += 1
            try:
                cert = self._check(der)
            except CertificateRefused as refused:
                self._refuse(der, refused)
                raise
            self.accepted += 1
            return cert

    async def check_uri(self, der: bytes, application_uri: str) -> None:
        """At CreateSession: the client's ApplicationUri must be the URI in its certificate."""
        try:
            cert = x509.load_der_x509_certificate(der)
            await CertificateValidator(CertificateValidatorOptions.URI).validate(
                cert, ua.ApplicationDescription(ApplicationUri=application_uri))
        except (ValueError, ServiceError) as exc:
            code = getattr(exc, "code", ua.StatusCodes.BadCertificateInvalid)
            refused = CertificateRefused(
                code, f"the client calls itself {application_uri!r}, its certificate says "
                      f"{', '.join(_uris_or_none(der)) or 'no URI'}")
            with self._lock:
                self._count(refused)
            log.warning("OPC UA client certificate %s refused at CreateSession: %s", thumbprint(der)[:16], refused)
            raise refused from None

    def _check(self, der: bytes) -> x509.Certificate:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise CertificateRefused(ua.StatusCodes.BadCertificateInvalid, "not a DER X.509 certificate") from None
        now = self.clock()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CertificateRefused(ua.StatusCodes.BadCertificateTimeInvalid,
                                     f"valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}")
        self._check_usage(cert)
        state = self._current()
        thumb = thumbprint(der)
        if thumb in state.direct:
            self._check_revoked(cert, state, leaf=True)
            return cert
        chain = self._chain(cert, state, now)
        for child, issuer in zip(chain, chain[1:], strict=False):
            self._check_revoked(child, state, leaf=child is cert, issuer=issuer)
        return cert

    @staticmethod
    def _check_usage(cert: x509.Certificate) -> None:
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
            raise CertificateRefused(ua.StatusCodes.BadCertificatePolicyCheckFailed,
                                     f"an RSA key of at least {MIN_RSA_BITS} bits is required")
        try:
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            raise CertificateRefused(ua.StatusCodes.BadCertificateUseNotAllowed, "no KeyUsage extension") from None
        if not (ku.digital_signature and ku.key_encipherment and ku.data_encipherment):
            raise CertificateRefused(ua.StatusCodes.BadCertificateUseNotAllowed,
                                     "KeyUsage must allow digitalSignature, keyEncipherment and dataEncipherment")
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            raise CertificateRefused(ua.StatusCodes.BadCertificateUseNotAllowed,
                                     "ExtendedKeyUsage does not include clientAuth")

    def _chain(self, cert: x509.Certificate, state: _TrustState, now: datetime) -> list[x509.Certificate]:
        if not state.anchors:
            raise CertificateRefused(ua.StatusCodes.BadCertificateUntrusted, "not in the trust list")
        builder = verification.PolicyBuilder().time(now).extension_policies(
            ca_policy=verification.ExtensionPolicy.permit_all().require_present(
                x509.BasicConstraints, verification.Criticality.AGNOSTIC, _basic_ca),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        verifier = builder.store(verification.Store(state.anchors)).build_client_verifier()
        try:
            verified = verifier.verify(cert, state.intermediates)
        except verification.VerificationError as exc:
            raise CertificateRefused(ua.StatusCodes.BadCertificateUntrusted,
                                     f"not in the trust list and no chain to a trusted CA ({exc})") from None
        return list(verified.chain)

    def _check_revoked(self, cert: x509.Certificate, state: _TrustState, *, leaf: bool,
                       issuer: x509.Certificate | None = None) -> None:
        crls = state.crls.get(cert.issuer.public_bytes(), [])
        now = self.clock()
        current = [c for c in crls if c.next_update_utc is None or c.next_update_utc >= now]
        if issuer is not None and not current:
            code = ua.StatusCodes.BadCertificateRevocationUnknown if leaf \
                else ua.StatusCodes.BadCertificateIssuerRevocationUnknown
            why = "no current revocation list" if not crls else "its revocation list is past NextUpdate"
            raise CertificateRefused(code, f"{why} of {cert.issuer.rfc4514_string()} in trusted/crl or issuers/crl")
        for crl in current:
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                code = ua.StatusCodes.BadCertificateRevoked if leaf else ua.StatusCodes.BadCertificateIssuerRevoked
                raise CertificateRefused(code, f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) "
                                               f"is revoked by {cert.issuer.rfc4514_string()}")

    # ------------------------------------------------------------------ refusals

    def _count(self, refused: CertificateRefused) -> None:
        self.rejected += 1
        name = ua.StatusCode(ua.UInt32(refused.code)).name
        self.reasons[name] = self.reasons.get(name, 0) + 1

    def _refuse(self, der: bytes, refused: CertificateRefused) -> None:
        self._count(refused)
        thumb = thumbprint(der)
        if self.rejected <= 20 or self.rejected % 100 == 0:  # a scanner must not flood the log
            log.warning("OPC UA client certificate %s refused: %s (kept in %s; %d refused so far)",
                        thumb[:16], refused, self.paths.rejected, self.rejected)
        try:
            self._keep(der, thumb)
        except OSError as exc:
            log.warning("cannot keep the refused certificate in %s: %s", self.paths.rejected, exc)

    def _keep(self, der: bytes, thumb: str) -> None:
        """Write the refused certificate, then delete the oldest beyond ``max_rejected``."""
        if self.max_rejected <= 0:
            return
        folder = self.paths.rejected
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{thumb}.der").write_bytes(der)
        kept = sorted((e.stat().st_mtime_ns, e.path) for e in os.scandir(folder)
                       if e.name.endswith(".der") and e.is_file())
        for _, path in kept[:max(0, len(kept) - self.max_rejected)]:
            Path(path).unlink(missing_ok=True)
            self.kept_pruned += 1

    def snapshot(self) -> dict[str, object]:
        """Counters for status, API and metrics."""
        with self._lock:
            return {"checked": self.checked, "accepted": self.accepted, "rejected": self.rejected,
                    "reasons": dict(self.reasons), "rejected_pruned": self.kept_pruned,
                    "max_rejected": self.max_rejected, "trust_list_problems": list(self._state.problems)}

    # ------------------------------------------------------------------ the folders

    def _current(self) -> _TrustState:
        signature = tuple(_folder_signature(d) for d in
                          (self.paths.trusted, self.paths.trusted_crl, self.paths.issuers, self.paths.issuers_crl))
        if signature != self._signature:
            self._state = self._load()
            self._signature = signature
            for problem in self._state.problems:
                log.warning("OPC UA trust list: %s", problem)
        return self._state

    def _load(self) -> _TrustState:
        state = _TrustState()
        for cert, _path in _read_certs(self.paths.trusted, state.problems):
            state.direct.add(thumbprint(cert.public_bytes(Encoding.DER)))
            if _is_ca(cert) and not _uris(cert):
                state.anchors.append(cert)
        for cert, path in _read_certs(self.paths.issuers, state.problems):
            if _is_ca(cert):
                state.intermediates.append(cert)
            else:
                state.problems.append(f"{path} is not a CA certificate: ignored")
        cas = state.anchors + state.intermediates
        for folder in (self.paths.trusted_crl, self.paths.issuers_crl):
            for crl, path in _read_crls(folder, state.problems):
                signer = next((ca for ca in cas if ca.subject == crl.issuer and _signed_by(crl, ca)), None)
                if signer is None:
                    state.problems.append(f"{path}: not signed by a CA of the trust list or issuers: ignored")
                    continue
                state.crls.setdefault(crl.issuer.public_bytes(), []).append(crl)
        return state


def _uris_or_none(der: bytes) -> list[str]:
    try:
        return _uris(x509.load_der_x509_certificate(der))
    except ValueError:
        return []


def _folder_signature(folder: Path) -> tuple:
    try:
        return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(folder)))
    except FileNotFoundError:
        return ()


def _read_certs(folder: Path, problems: list[str]) -> list[tuple[x509.Certificate, Path]]:
    out = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----BEGIN") \
                else x509.load_der_x509_certificate(data)
        except ValueError:
            problems.append(f"{path} is not a DER or PEM certificate: ignored")
            continue
        out.append((cert, path))
    return out


def _read_crls(folder: Path, problems: list[str]) -> list[tuple[x509.CertificateRevocationList, Path]]:
    out = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN") \
                else x509.load_der_x509_crl(data)
        except ValueError:
            problems.append(f"{path} is not a DER or PEM revocation list: ignored")
            continue
        out.append((crl, path))
    return out
