"""Issue 15: security that holds against a hostile client, tested with raw clients that ignore
what the server advertises (asyncua's UaClient layer) and from a second loopback address.

Passwords travel only encrypted; a captured password token cannot be replayed; client
certificates are checked when the channel opens (trust list, CA chains with revocation lists);
the ApplicationUri must be the certificate's; ``rejected/`` is capped; a flood of wrong
passwords from one address does not lock the operator out at another.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from asyncua import Client, ua
from opcua_helpers import (
    PASSWORDS,
    client_from,
    config,
    encrypted_password_token,
    make_plant,
    raw_activate,
    raw_channel,
    raw_create_session,
)

from edge.config.loader import load_config
from edge.outputs.opcua.server import OpcUaServer
from edge.security.pki import (
    PkiPaths,
    create_ca,
    create_certificate,
    create_crl,
    issue_certificate,
    thumbprint,
    trust_client_certificate,
)

ROOT = Path(__file__).resolve().parents[3]
CLIENT_URI = "urn:edge:test-client"


@pytest.fixture
async def secure_only(users_file: Path, pki_dir: Path):
    """A site as issue 15 describes it: Basic256Sha256 only, no None, no anonymous."""
    cfg = config(users_file, pki_dir=pki_dir, allow_security_none=False, max_rejected_certificates=3,
                 security_policies=["Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"])
    srv = OpcUaServer(make_plant(), cfg)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def plain_token(user: str, password: str) -> ua.UserNameIdentityToken:
    return ua.UserNameIdentityToken(PolicyId="username", UserName=user, Password=password.encode())


def user_name_policies(endpoints: list[ua.EndpointDescription]) -> dict[int, list[str]]:
    """Security mode -> SecurityPolicyUri of each UserName token policy of that endpoint."""
    return {e.SecurityMode: [t.SecurityPolicyUri for t in e.UserIdentityTokens
                             if t.TokenType == ua.UserTokenType.UserName] for e in endpoints}


# ---------------------------------------------------------------------- passwords


async def test_password_in_clear_is_refused_even_where_none_channels_are_allowed(running: OpcUaServer) -> None:
    """Before: asyncua took a clear-text password on a None channel (sniffable on the plant
    network). Now the token is refused before the password is even looked at."""
    url = running.endpoint_url
    uac = await raw_channel(url)
    try:
        await raw_create_session(uac, url)
        with pytest.raises(ua.UaStatusCodeError) as err:
            await raw_activate(uac, plain_token("olga", PASSWORDS["olga"]))
        assert err.value.code == ua.StatusCodes.BadIdentityTokenRejected
    finally:
        uac.disconnect_socket()
    assert running.users is not None
    stats = running.users.guard.stats
    assert stats.accepted == stats.refused == stats.remembered == 0  # no password was checked
    assert running.channel_policy is not None
    assert running.channel_policy.tokens_refused == {"password not encrypted on a channel without encryption": 1}


async def test_a_captured_password_token_cannot_be_replayed(running: OpcUaServer) -> None:
    """The encrypted token carries the server nonce of its session. asyncua never checked it, so
    a token sniffed from one session logged the attacker in on another."""
    url = running.endpoint_url
    uac = await raw_channel(url)
    try:
        created = await raw_create_session(uac, url)
        captured = encrypted_password_token(created.ServerCertificate, PASSWORDS["olga"], created.ServerNonce, "olga")
        await raw_activate(uac, captured)  # the legitimate session
    finally:
        uac.disconnect_socket()
    attacker = await raw_channel(url, source="127.0.0.2")
    try:
        await raw_create_session(attacker, url)
        with pytest.raises(ua.UaStatusCodeError) as err:
            await raw_activate(attacker, captured)
        assert err.value.code == ua.StatusCodes.BadIdentityTokenInvalid
    finally:
        attacker.disconnect_socket()
    assert running.channel_policy is not None
    assert sum(running.channel_policy.tokens_refused.values()) == 1
    assert running.users is not None and running.users.guard.stats.accepted == 1


async def test_endpoints_offer_user_name_tokens_only_where_the_password_is_encrypted(
        running: OpcUaServer, secure_only: OpcUaServer) -> None:
    none_uri = "http://opcfoundation.org/UA/SecurityPolicy#None"
    b256 = "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
    c = Client(running.endpoint_url, timeout=5)
    assert user_name_policies(await c.connect_and_get_server_endpoints()) == {ua.MessageSecurityMode.None_: [b256]}
    c = Client(secure_only.endpoint_url, timeout=5)
    assert user_name_policies(await c.connect_and_get_server_endpoints()) == {
        ua.MessageSecurityMode.Sign: [b256], ua.MessageSecurityMode.SignAndEncrypt: [none_uri]}


async def test_the_demo_none_endpoint_offers_no_user_name_token() -> None:
    """The demo (None only, anonymous, no certificate) advertised a clear-text UserName token."""
    demo = load_config(ROOT / "provisioning" / "sites" / "demo" / "edge.yaml",
                       env={"EDGE_DEMO_OPCUA_PORT": "0"}).config.outputs.opcua
    assert demo is not None
    srv = OpcUaServer(make_plant(), demo)
    await srv.start()
    try:
        c = Client(srv.endpoint_url, timeout=5)
        endpoints = await c.connect_and_get_server_endpoints()
        assert [e.SecurityMode for e in endpoints] == [ua.MessageSecurityMode.None_]
        assert [t.TokenType for t in endpoints[0].UserIdentityTokens] == [ua.UserTokenType.Anonymous]
    finally:
        await srv.stop()


# ---------------------------------------------------------------------- lockout


async def test_a_flood_from_one_address_does_not_lock_the_operator_out_at_another(running: OpcUaServer) -> None:
    """Before: five wrong passwords locked the user name for everybody: anyone on the plant
    network could lock the operator out. Now the lockout is per user name and address."""
    url = running.endpoint_url
    assert running.users is not None
    guard = running.users.guard
    outcomes = []
    deadline = asyncio.get_running_loop().time() + 20
    for i in range(2000):  # the attacker on 127.0.0.2, as fast as the server answers, until it is locked out
        if guard.stats.lockouts or asyncio.get_running_loop().time() > deadline:
            break
        c = client_from(url, "127.0.0.2", "olga", f"guess-{i:04d}")
        try:
            await c.connect()
            outcomes.append("in")
        except ua.UaStatusCodeError as e:
            outcomes.append(e.code)
        finally:
            await c.disconnect()
    assert set(outcomes) == {ua.StatusCodes.BadUserAccessDenied}
    assert guard.stats.lockouts == 1 and guard.stats.refused == guard.max_failures
    assert guard.stats.source_throttled > 0  # beyond 1 hash/s from one address: refused without hashing
    assert [(e["user"], e["source"]) for e in guard.snapshot()["locked"]] == [("olga", "127.0.0.2")]

    operator = client_from(url, "127.0.0.1", "olga", PASSWORDS["olga"])
    async with operator:  # her console, while the attacker is locked out
        node = operator.get_node(ua.NodeId("meter1.setpoint", running.ns))
        assert (await node.read_browse_name()).Name == "setpoint"
    attacker = client_from(url, "127.0.0.2", "olga", PASSWORDS["olga"])
    with pytest.raises(ua.UaStatusCodeError) as err:
        await attacker.connect()  # even the right password, from the locked address
    await attacker.disconnect()
    assert err.value.code == ua.StatusCodes.BadUserAccessDenied
    assert guard.stats.locked_out >= 1


# ---------------------------------------------------------------------- certificates


def client_cert(folder: Path, name: str, uri: str = CLIENT_URI) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.der", folder / f"{name}.pem"
    create_certificate(cert, key, uri, "localhost", server=False, common_name=name)
    return cert, key


async def open_channel(srv: OpcUaServer, pki: Path, cert: Path, key: Path, source: str = "127.0.0.1"):
    return await raw_channel(srv.endpoint_url, cert=cert, key=key, server_cert=PkiPaths(pki).cert, source=source)


async def test_an_untrusted_certificate_is_refused_when_the_channel_opens(secure_only: OpcUaServer, pki_dir: Path,
                                                                         tmp_path: Path) -> None:
    """Before: an untrusted certificate got a SecureChannel and was refused only at CreateSession."""
    cert, key = client_cert(tmp_path, "stranger")
    with pytest.raises(ua.UaStatusCodeError) as err:
        await open_channel(secure_only, pki_dir, cert, key)
    assert err.value.code == ua.StatusCodes.BadCertificateUntrusted
    assert secure_only.channel_policy is not None and secure_only.channel_policy.certificates_refused_at_open == 1
    assert secure_only.validator is not None
    assert secure_only.validator.reasons == {"BadCertificateUntrusted": 1}
    assert (PkiPaths(pki_dir).rejected / f"{thumbprint(cert.read_bytes())}.der").exists()


async def test_a_trusted_certificate_with_another_application_uri_is_refused(secure_only: OpcUaServer, pki_dir: Path,
                                                                            tmp_path: Path) -> None:
    """Before: a trusted certificate was accepted whatever ApplicationUri the client announced,
    and when the client left ClientCertificate out of CreateSession nothing was compared."""
    cert, key = client_cert(tmp_path, "hmi")
    trust_client_certificate(pki_dir, cert)
    uac = await open_channel(secure_only, pki_dir, cert, key)
    try:
        for sent in (None, cert.read_bytes()):
            with pytest.raises(ua.UaStatusCodeError) as err:
                await raw_create_session(uac, secure_only.endpoint_url, "urn:someone-else", client_cert=sent)
            assert err.value.code == ua.StatusCodes.BadCertificateUriInvalid
        created = await raw_create_session(uac, secure_only.endpoint_url, CLIENT_URI)
        assert created.SessionId is not None
    finally:
        uac.disconnect_socket()
    assert secure_only.validator is not None and secure_only.validator.reasons == {"BadCertificateUriInvalid": 2}
    assert secure_only.writes == {"ok": 0, "refused": 0, "failed": 0}


async def test_ca_chain_with_revocation_lists(secure_only: OpcUaServer, pki_dir: Path, tmp_path: Path) -> None:
    """A client certificate issued by a CA in the trust list works while the CA's CRL is current
    and does not list it; revoked, or with no CRL (revocation unknown), it is refused at open."""
    paths = PkiPaths(pki_dir)
    ca, ca_key = tmp_path / "ca.der", tmp_path / "ca.pem"
    create_ca(ca, ca_key, "Plant CA")
    trust_client_certificate(pki_dir, ca)
    leaf_cert, leaf_key = tmp_path / "leaf.der", tmp_path / "leaf.pem"
    leaf = issue_certificate(ca, ca_key, leaf_cert, leaf_key, CLIENT_URI, "localhost")
    crl = paths.trusted_crl / "plant-ca.crl"

    async def connect() -> int:
        c = Client(secure_only.endpoint_url, timeout=5)
        c.application_uri = CLIENT_URI
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{leaf_cert},{leaf_key}")
        c.set_user("olga")
        c.set_password(PASSWORDS["olga"])
        try:
            await c.connect()
        except ua.UaStatusCodeError as e:
            return e.code
        finally:
            await c.disconnect()
        return ua.StatusCodes.Good

    assert await connect() == ua.StatusCodes.BadCertificateRevocationUnknown  # no CRL of the CA
    create_crl(ca, ca_key, crl, [])
    assert await connect() == ua.StatusCodes.Good
    create_crl(ca, ca_key, crl, [leaf.serial_number])
    assert await connect() == ua.StatusCodes.BadCertificateRevoked
    other, other_key = tmp_path / "other-ca.der", tmp_path / "other-ca.pem"
    create_ca(other, other_key, "Plant CA")  # same name, another key: a forged CRL is ignored
    create_crl(other, other_key, crl, [])
    assert await connect() == ua.StatusCodes.BadCertificateRevocationUnknown
    assert secure_only.validator is not None
    assert secure_only.validator.snapshot()["trust_list_problems"]  # the forged CRL is reported


async def test_a_trusted_client_certificate_cannot_issue_others(secure_only: OpcUaServer, pki_dir: Path,
                                                               tmp_path: Path) -> None:
    """asyncua's self-signed application certificates are marked CA: trusting one must not make
    every certificate it signs trusted."""
    hmi_cert, hmi_key = client_cert(tmp_path, "hmi")
    trust_client_certificate(pki_dir, hmi_cert)
    minted, minted_key = tmp_path / "minted.der", tmp_path / "minted.pem"
    issue_certificate(hmi_cert, hmi_key, minted, minted_key, "urn:minted", "localhost")
    with pytest.raises(ua.UaStatusCodeError) as err:
        await open_channel(secure_only, pki_dir, minted, minted_key)
    assert err.value.code == ua.StatusCodes.BadCertificateUntrusted


async def test_rejected_folder_keeps_the_newest_n_and_counts_every_refusal(secure_only: OpcUaServer, pki_dir: Path,
                                                                          tmp_path: Path) -> None:
    """Before: every refused certificate was written to rejected/ without a cap (a disk filler)."""
    thumbs = []
    for i in range(5):
        cert, key = client_cert(tmp_path, f"stranger{i}")
        thumbs.append(thumbprint(cert.read_bytes()))
        with pytest.raises(ua.UaStatusCodeError):
            await open_channel(secure_only, pki_dir, cert, key)
        await asyncio.sleep(0.01)  # distinct modification times
    kept = sorted(p.stem for p in PkiPaths(pki_dir).rejected.glob("*.der"))
    assert kept == sorted(thumbs[-3:])  # max_rejected_certificates: 3, the oldest pruned
    assert secure_only.validator is not None
    snap = secure_only.validator.snapshot()
    assert snap["rejected"] == 5 and snap["rejected_pruned"] == 2


# ---------------------------------------------------------------------- the wire


def _fuzz_module():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import fuzz  # bench/fuzz.py: asyncua-encoded messages for raw sockets
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return fuzz


async def _send_and_wait_close(url: str, parts: list[bytes], timeout_s: float = 5.0) -> tuple[bytes, float, int]:
    """Send ``parts`` (stopping if the server hangs up); what came back, when it closed, bytes sent."""
    from urllib.parse import urlparse

    u = urlparse(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    t0 = asyncio.get_running_loop().time()
    sent = 0
    got = b""
    try:
        for part in parts:
            writer.write(part)
            sent += len(part)
            try:
                await asyncio.wait_for(writer.drain(), 1)
            except (OSError, TimeoutError):
                break
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout_s)
            if not chunk:
                break
            got += chunk
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
    return got, asyncio.get_running_loop().time() - t0, sent


async def test_a_header_claiming_50_mb_closes_the_connection(running: OpcUaServer) -> None:
    """Before: asyncua buffered whatever size a header claimed, without a limit."""
    import struct

    fuzz = _fuzz_module()
    header = b"MSG" + b"F" + struct.pack("<I", 50 * 1024 * 1024) + struct.pack("<I", 1)
    parts = [fuzz._hello(running.endpoint_url), header] + [bytes(65536)] * 64  # 4 MB offered
    _, took, sent = await _send_and_wait_close(running.endpoint_url, parts)
    assert took < 3 and sent < 4 * 1024 * 1024
    assert running.channel_policy is not None and running.channel_policy.transport_closed == {"oversized chunk": 1}


async def test_a_multi_chunk_request_before_login_closes_the_connection(running: OpcUaServer) -> None:
    """Before: a client that had not logged in could make the server assemble a 100 MB request."""
    from asyncua import ua as _ua

    fuzz = _fuzz_module()
    channel = fuzz.Channel()
    url = running.endpoint_url
    from urllib.parse import urlparse

    u = urlparse(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        writer.write(fuzz._hello(url))
        await reader.read(65536)
        writer.write(channel.open_request())
        assert channel.accept(await asyncio.wait_for(reader.read(65536), 5))
        big = _ua.GetEndpointsRequest()
        big.Parameters.EndpointUrl = "x" * 60_000
        chunk = bytearray(channel.request(big))
        chunk[3:4] = b"C"  # an intermediate chunk: more would follow
        writer.write(bytes(chunk))
        answer = await asyncio.wait_for(reader.read(65536), 5)
        assert answer[:3] == b"ERR" and await asyncio.wait_for(reader.read(65536), 5) == b""
    finally:
        writer.close()
    assert running.channel_policy is not None
    assert running.channel_policy.transport_closed == {"chunked request before a session": 1}


async def test_idle_connections_from_one_address_do_not_use_up_the_server(users_file: Path) -> None:
    """asyncua caps all connections together (max_sessions): one machine holding idle connections
    locked every other client out for 30 s at a time. Now one address may hold at most
    max_pending_per_address connections without a session."""
    from urllib.parse import urlparse

    srv = OpcUaServer(make_plant(), config(users_file, max_sessions=10, max_pending_per_address=4))
    await srv.start()
    u = urlparse(srv.endpoint_url)
    idle = []
    try:
        for _ in range(20):
            idle.append(await asyncio.open_connection(u.hostname, u.port, local_addr=("127.0.0.1", 0)))
        await asyncio.sleep(0.2)
        other = client_from(srv.endpoint_url, "127.0.0.2")
        assert await other.connect_and_get_server_endpoints()  # another machine still gets in
        operator = client_from(srv.endpoint_url, "127.0.0.2", "olga", PASSWORDS["olga"])
        async with operator:
            assert (await operator.get_node(ua.NodeId("meter1.setpoint", srv.ns)).read_browse_name()).Name == "setpoint"
    finally:
        for _, w in idle:
            w.close()
        await srv.stop()
    assert srv.channel_policy is not None
    assert srv.channel_policy.transport_closed == {"too many connections without a session from one address": 16}
