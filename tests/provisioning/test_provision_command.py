"""`edge provision`: directories, PKI, certificate and users file with the documented modes; idempotent;
a configuration with errors is refused before anything is written."""
from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from harness import edge_in_process

from edge.cli.commands.provision import MODES
from edge.cli.main import main
from edge.security.pki import PkiPaths
from edge.security.users import load_users

REPO = Path(__file__).resolve().parents[2]

SITE = """
site: {name: prov}
runtime: {data_dir: data}
buses:
  - {name: net, type: modbus_tcp, host: 127.0.0.1, port: 1502, timeout_ms: 200}
devices:
  - name: plc
    bus: net
    points:
      - {name: level, address: 0}
outputs:
  spool: {path: spool/spool.db}
"""
OPCUA_SECURE = """
  opcua:
    endpoint: opc.tcp://127.0.0.1:4840/edge
    security_policies: [Basic256Sha256_SignAndEncrypt]
    pki_dir: pki
    users_file: secrets/opcua-users
"""
OPCUA_NONE = """
  opcua:
    endpoint: opc.tcp://127.0.0.1:4840/edge
    security_policies: ["None"]
    allow_security_none: true
    anonymous: true
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_site(tmp_path: Path, outputs_extra: str = OPCUA_SECURE) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(SITE + outputs_extra)
    return path


def test_provision_creates_every_path_with_the_documented_modes(tmp_path, capsys):
    config = write_site(tmp_path)
    old = os.umask(0o022)  # a umask that would leave 0755 directories if provision relied on it
    try:
        assert main(["provision", str(config), "--hostname", "edge-test.local"]) == 0
    finally:
        os.umask(old)
    out = capsys.readouterr().out
    pki = PkiPaths(tmp_path / "pki")
    assert mode(tmp_path / "data") == MODES["data_dir"] == 0o750
    assert mode(tmp_path / "data" / "spool") == MODES["spool_dir"] == 0o750
    for d in (pki.root, pki.root / "own", pki.trusted, pki.trusted_crl, pki.issuers, pki.issuers_crl, pki.rejected):
        assert mode(d) == 0o750, d
    assert mode(pki.key.parent) == 0o700
    assert mode(pki.key) == 0o600
    assert mode(pki.cert) == 0o644
    assert mode(tmp_path / "secrets" / "opcua-users") == 0o600
    assert "created" in out and str(pki.cert) in out
    # the certificate is a server certificate for the configured application URI, and the key is its key
    cert = x509.load_der_x509_certificate(pki.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # the ApplicationUri the server will announce: per site and host (issue 14), the same in the certificate
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:{socket.gethostname()}:edge:prov"]
    assert "edge-test.local" in san.get_values_for_type(x509.DNSName)
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert load_users(tmp_path / "secrets" / "opcua-users") == {}


def test_provision_is_idempotent_keeps_the_certificate_and_tightens_loose_modes(tmp_path, capsys):
    config = write_site(tmp_path)
    assert main(["provision", str(config)]) == 0
    pki = PkiPaths(tmp_path / "pki")
    cert_before = pki.cert.read_bytes()
    os.chmod(tmp_path / "data", 0o777)
    os.chmod(pki.key, 0o644)
    capsys.readouterr()
    assert main(["provision", str(config)]) == 0
    out = capsys.readouterr().out
    assert pki.cert.read_bytes() == cert_before  # clients trust it: never replaced by a re-run
    assert mode(tmp_path / "data") == 0o750 and mode(pki.key) == 0o600
    assert f"tightened {tmp_path / 'data'} (0750)" in out
    assert "created" not in out
    # a third run changes nothing at all
    capsys.readouterr()
    assert main(["provision", str(config)]) == 0
    assert all(line.startswith("kept") for line in capsys.readouterr().out.splitlines())


def test_provision_without_security_makes_no_certificate(tmp_path):
    config = write_site(tmp_path, OPCUA_NONE)
    assert main(["provision", str(config)]) == 0
    assert mode(tmp_path / "data") == 0o750
    assert not (tmp_path / "pki").exists()


def test_provision_refuses_a_config_with_errors_and_writes_nothing(tmp_path, capsys):
    config = tmp_path / "edge.yaml"
    config.write_text((SITE + OPCUA_SECURE).replace("port: 1502", "port: 99999"))
    assert main(["provision", str(config)]) == 1
    err = capsys.readouterr().err
    assert "edge.yaml:5" in err and "port" in err and "configuration rejected" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge.yaml"]


def test_owner_gets_everything_created(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")  # CI here runs as root
    nobody = pwd.getpwnam("nobody")
    config = write_site(tmp_path)
    assert main(["provision", str(config), "--owner", "nobody"]) == 0
    pki = PkiPaths(tmp_path / "pki")
    for p in (tmp_path / "data", tmp_path / "data" / "spool", pki.key, pki.cert, pki.key.parent,
              tmp_path / "secrets" / "opcua-users"):
        assert (p.stat().st_uid, p.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), p


def test_unknown_owner_is_a_clear_error(tmp_path, capsys):
    config = write_site(tmp_path)
    assert main(["provision", str(config), "--owner", "no_such_user_x"]) == 1
    assert "no user named 'no_such_user_x'" in capsys.readouterr().err


def edge(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli.main", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def test_provision_user_from_stdin_and_from_a_password_file(tmp_path):
    config = write_site(tmp_path)
    users_file = tmp_path / "secrets" / "opcua-users"
    r = edge("provision", "user", str(config), "alice", "--role", "operator", stdin="correct horse\n")
    assert r.returncode == 0, r.stderr
    pw_file = tmp_path / "pw"
    pw_file.write_text("viewer-secret\nignored second line\n")
    code, _, err = edge_in_process("provision", "user", str(config), "bob", "--role", "viewer",
                                   "--password-file", str(pw_file))
    assert code == 0, err
    users = load_users(users_file)
    assert users["alice"].role == "operator" and users["alice"].check("correct horse")
    assert users["bob"].role == "viewer" and users["bob"].check("viewer-secret")
    assert not users["bob"].check("ignored second line")
    assert mode(users_file) == 0o600
    assert "correct horse" not in users_file.read_text()
    # replacing a user's password is the same command (idempotent on the name)
    code, _, err = edge_in_process("provision", "user", str(config), "alice", "--role", "viewer",
                                   stdin="new password 1\n")
    assert code == 0, err
    users = load_users(users_file)
    assert users["alice"].role == "viewer" and users["alice"].check("new password 1") and len(users) == 2


def test_provision_user_errors_are_one_line(tmp_path):
    config = write_site(tmp_path)
    short = edge("provision", "user", str(config), "carol", "--role", "operator", stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr and "Traceback" not in short.stderr
    # the same command in this process for the other cases (a child each cost seconds)
    code, _, err = edge_in_process("provision", "user", str(config), "carol", stdin="long enough\n")
    assert code == 2 and "--role viewer or --role operator" in err
    code, _, err = edge_in_process("provision", "user", str(config), "bad name", "--role", "viewer",
                                   stdin="long enough\n")
    assert code == 1 and "user name 'bad name'" in err
    code, _, err = edge_in_process("provision", "user", str(config), "carol", "--role", "viewer", stdin="")
    assert code == 1 and "no password given" in err
    (tmp_path / "anon").mkdir()
    no_users = write_site(tmp_path / "anon", OPCUA_NONE)
    code, _, err = edge_in_process("provision", "user", str(no_users), "carol", "--role", "viewer",
                                   stdin="long enough\n")
    assert code == 1 and "no outputs.opcua.users_file" in err
    code, _, err = edge_in_process("provision", "user", str(config))
    assert code == 2 and "takes CONFIG NAME" in err


def test_certs_overwrite_replaces_the_certificate_only_when_asked(tmp_path):
    config = write_site(tmp_path)
    assert main(["provision", "certs", str(config)]) == 0
    pki = PkiPaths(tmp_path / "pki")
    first = pki.cert.read_bytes()
    assert main(["provision", "certs", str(config)]) == 0
    assert pki.cert.read_bytes() == first
    assert main(["provision", "certs", str(config), "--overwrite"]) == 0
    assert pki.cert.read_bytes() != first and mode(pki.key) == 0o600


def test_trust_a_client_certificate(tmp_path, capsys):
    from edge.security.pki import create_certificate, thumbprint

    config = write_site(tmp_path)
    assert main(["provision", str(config)]) == 0
    client_cert, client_key = tmp_path / "client.der", tmp_path / "client.pem"
    create_certificate(client_cert, client_key, "urn:test:client", "localhost", server=False)
    assert main(["provision", "trust", str(config), str(client_cert)]) == 0
    trusted = PkiPaths(tmp_path / "pki").trusted / f"{thumbprint(client_cert.read_bytes())}.der"
    assert trusted.read_bytes() == client_cert.read_bytes()
    capsys.readouterr()
    assert main(["provision", "trust", str(config), "0" * 64]) == 1
    assert "no certificate file or rejected thumbprint" in capsys.readouterr().err


def test_a_none_only_site_with_users_gets_a_certificate_for_encrypted_passwords(tmp_path: Path, capsys) -> None:
    """Issue 15: passwords never cross a None channel in clear, so a None-only site that logs users
    in needs a server certificate (clients encrypt the password with it); without pki_dir it is refused."""
    none_users = OPCUA_NONE.replace("    anonymous: true\n", "    users_file: users\n")
    config = write_site(tmp_path, none_users + "    pki_dir: pki\n")
    assert main(["provision", str(config)]) == 0
    assert PkiPaths(tmp_path / "pki").cert.exists()
    config = write_site(tmp_path, none_users)
    assert main(["provision", str(config)]) != 0
    assert "passwords would cross the network in clear" in capsys.readouterr().err


API_TOKENS = """
api:
  port: 0
  tokens_file: secrets/api-tokens
  tls_cert_file: tls/api-cert.pem
  tls_key_file: tls/private/api-key.pem
"""


def test_api_tokens_are_made_listed_and_revoked_with_edge_provision_token(tmp_path: Path, capsys) -> None:
    """Issue 15: tokens were made with 'python -m edge.api.tokens'; now 'edge provision token' prints a
    new token once, lists names and roles (never tokens) and revokes."""
    from edge.api.tokens import TokenTable, load_tokens

    config = write_site(tmp_path, OPCUA_NONE + API_TOKENS)
    assert main(["provision", str(config)]) == 0
    tokens_file = tmp_path / "secrets" / "api-tokens"
    assert mode(tokens_file) == 0o600 and load_tokens(tokens_file) == {}
    capsys.readouterr()
    assert main(["provision", "token", str(config), "scada", "--role", "operator"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert len(token) >= 40 and "shown once" in out.err and token not in tokens_file.read_text()
    assert TokenTable(load_tokens(tokens_file)).find(token).role.value == "operator"
    assert main(["provision", "token", str(config), "grafana", "--role", "viewer"]) == 0
    capsys.readouterr()
    assert main(["provision", "token", str(config), "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == ["scada", "operator", "grafana", "viewer"] and token not in listed
    assert main(["provision", "token", str(config), "scada", "--revoke"]) == 0
    assert TokenTable(load_tokens(tokens_file)).find(token) is None
    assert main(["provision", "token", str(config), "scada", "--revoke"]) == 1
    assert "no token named 'scada'" in capsys.readouterr().err
    assert main(["provision", "token", str(config), "x"]) == 2  # no --role
    assert mode(tokens_file) == 0o600


def test_provision_makes_the_api_https_certificate(tmp_path: Path) -> None:
    config = write_site(tmp_path, OPCUA_NONE + API_TOKENS)
    assert main(["provision", str(config), "--hostname", "edge-test.local"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "api-cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "edge-test.local" in san.get_values_for_type(x509.DNSName)
    assert mode(tmp_path / "tls" / "private" / "api-key.pem") == 0o600
    first = (tmp_path / "tls" / "api-cert.pem").read_bytes()
    assert main(["provision", "certs", str(config)]) == 0
    assert (tmp_path / "tls" / "api-cert.pem").read_bytes() == first  # kept unless --overwrite
    assert main(["provision", "certs", str(config), "--overwrite"]) == 0
    assert (tmp_path / "tls" / "api-cert.pem").read_bytes() != first
