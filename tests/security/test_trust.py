"""The client certificate checks on their own (edge.security.trust), with certificates made by
cryptography: validity, key usage, key size, garbage, reloading the trust list, the rejected cap."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.security.pki import PkiPaths, create_server_certificate, thumbprint, trust_client_certificate
from edge.security.trust import CertificateRefused, TrustListValidator

NOW = datetime.now(UTC)
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(*, key=KEY, days: int = 30, start: datetime = NOW - timedelta(minutes=1),
              usage: dict[str, bool] | None = None, eku: list | None = None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")])
    ku = {"digital_signature": True, "content_commitment": True, "key_encipherment": True,
          "data_encipherment": True, "key_agreement": False, "key_cert_sign": False, "crl_sign": False,
          "encipher_only": False, "decipher_only": False} | (usage or {})
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + timedelta(days=days))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:c")]), False)
               .add_extension(x509.KeyUsage(**ku), False)
               .add_extension(x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.CLIENT_AUTH]), False))
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


@pytest.fixture
def validator(tmp_path: Path) -> TrustListValidator:
    create_server_certificate(tmp_path / "pki", "urn:edge:opcua-server", "127.0.0.1")
    return TrustListValidator(tmp_path / "pki", max_rejected=2)


def trusted(v: TrustListValidator, der: bytes) -> bytes:
    path = v.paths.root / "incoming.der"
    path.write_bytes(der)
    trust_client_certificate(v.paths.root, path)
    return der


def refusal(v: TrustListValidator, der: bytes) -> str:
    with pytest.raises(CertificateRefused) as err:
        v.check(der)
    return ua.StatusCode(err.value.code).name


def test_a_trusted_certificate_passes_and_the_trust_list_is_reread_when_it_changes(validator) -> None:
    der = make_cert()
    assert refusal(validator, der) == "BadCertificateUntrusted"
    trusted(validator, der)
    assert validator.check(der).serial_number == x509.load_der_x509_certificate(der).serial_number
    (PkiPaths(validator.paths.root).trusted / f"{thumbprint(der)}.der").unlink()  # the operator removes it
    assert refusal(validator, der) == "BadCertificateUntrusted"


def test_validity_usage_and_key_size_are_checked_even_for_trusted_certificates(validator) -> None:
    expired = trusted(validator, make_cert(start=NOW - timedelta(days=40), days=30))
    future = trusted(validator, make_cert(start=NOW + timedelta(days=1)))
    no_encipherment = trusted(validator, make_cert(usage={"key_encipherment": False}))
    server_only = trusted(validator, make_cert(eku=[ExtendedKeyUsageOID.SERVER_AUTH]))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = trusted(validator, make_cert(key=small))
    assert refusal(validator, expired) == "BadCertificateTimeInvalid"
    assert refusal(validator, future) == "BadCertificateTimeInvalid"
    assert refusal(validator, no_encipherment) == "BadCertificateUseNotAllowed"
    assert refusal(validator, server_only) == "BadCertificateUseNotAllowed"
    assert refusal(validator, weak) == "BadCertificatePolicyCheckFailed"
    assert refusal(validator, b"\x30\x03garbage") == "BadCertificateInvalid"
    assert validator.reasons == {"BadCertificateTimeInvalid": 2, "BadCertificateUseNotAllowed": 2,
                                 "BadCertificatePolicyCheckFailed": 1, "BadCertificateInvalid": 1}


def test_the_clock_decides_validity(tmp_path: Path) -> None:
    create_server_certificate(tmp_path / "pki", "urn:edge:opcua-server", "127.0.0.1")
    later = TrustListValidator(tmp_path / "pki", clock=lambda: NOW + timedelta(days=31))
    der = trusted(later, make_cert(days=30))
    assert refusal(later, der) == "BadCertificateTimeInvalid"


def test_rejected_keeps_at_most_n(validator) -> None:
    ders = [make_cert() for _ in range(4)]
    for der in ders:
        refusal(validator, der)
    kept = {p.stem for p in validator.paths.rejected.glob("*.der")}
    assert len(kept) == 2 and validator.rejected == 4 and validator.kept_pruned == 2
    assert kept <= {thumbprint(d) for d in ders}


async def test_uri_must_match_the_certificate(validator) -> None:
    der = make_cert()
    await validator.check_uri(der, "urn:c")
    with pytest.raises(CertificateRefused) as err:
        await validator.check_uri(der, "urn:d")
    assert err.value.code == ua.StatusCodes.BadCertificateUriInvalid
