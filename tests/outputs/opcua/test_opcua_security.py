"""Security: Basic256Sha256 endpoints, the client trust list with its rejected folder, users, config rules."""
from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import Client, ua
from opcua_helpers import (
    PASSWORDS,
    config,
    encrypted_password_token,
    make_plant,
    raw_activate,
    raw_create_session,
)
from pydantic import ValidationError

from edge.config.opcua import OpcUaConfig
from edge.outputs.opcua.server import OpcUaServer
from edge.security.pki import (
    PkiPaths,
    create_certificate,
    list_rejected,
    thumbprint,
    trust_client_certificate,
)
from edge.security.users import add_user, load_users, verify_password

CLIENT_URI = "urn:edge:test-client"


def client_cert(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.der", tmp_path / f"{name}.pem"
    create_certificate(cert, key, CLIENT_URI, "localhost", server=False, common_name=name)
    return cert, key


async def secure_client(srv: OpcUaServer, cert: Path, key: Path, mode: str = "SignAndEncrypt",
                        user: str = "olga") -> Client:
    c = Client(srv.endpoint_url, timeout=10)
    c.application_uri = CLIENT_URI
    await c.set_security_string(f"Basic256Sha256,{mode},{cert},{key}")
    c.set_user(user)
    c.set_password(PASSWORDS[user])
    return c


@pytest.fixture
async def secure_server(users_file, pki_dir):
    cfg = config(users_file, security_policies=["Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"],
                 allow_security_none=False, pki_dir=pki_dir)
    srv = OpcUaServer(make_plant(), cfg)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_sign_and_encrypt_with_trusted_certificate(secure_server: OpcUaServer, pki_dir: Path, tmp_path: Path) -> None:
    cert, key = client_cert(tmp_path, "trusted-client")
    trust_client_certificate(pki_dir, cert)
    for mode in ("SignAndEncrypt", "Sign"):
        c = await secure_client(secure_server, cert, key, mode)
        async with c:
            node = c.get_node(f"ns={secure_server.ns};s=meter1.voltage")
            assert (await node.read_browse_name()).Name == "voltage"
            assert c.security_policy.Mode == getattr(ua.MessageSecurityMode, mode)


async def test_untrusted_certificate_refused_and_kept_for_review(secure_server: OpcUaServer, pki_dir: Path,
                                                                 tmp_path: Path) -> None:
    cert, key = client_cert(tmp_path, "stranger")
    c = await secure_client(secure_server, cert, key)
    with pytest.raises(ua.UaStatusCodeError) as err:
        await c.connect()
    await c.disconnect()
    assert err.value.code == ua.StatusCodes.BadCertificateUntrusted
    thumb = thumbprint(cert.read_bytes())
    assert (PkiPaths(pki_dir).rejected / f"{thumb}.der").read_bytes() == cert.read_bytes()
    assert [t for t, _ in list_rejected(pki_dir)] == [thumb]
    assert secure_server.validator is not None and secure_server.validator.rejected == 1

    # The operator trusts it from the rejected folder: the next connection works without a restart.
    trust_client_certificate(pki_dir, thumb)
    assert list_rejected(pki_dir) == []
    c = await secure_client(secure_server, cert, key)
    async with c:
        assert await c.get_namespace_index(f"urn:edge:{secure_server.plant.site}") == secure_server.ns


async def test_no_insecure_endpoint_unless_configured(secure_server: OpcUaServer) -> None:
    c = Client(secure_server.endpoint_url, timeout=5)
    endpoints = await c.connect_and_get_server_endpoints()
    policies = {e.SecurityPolicyUri for e in endpoints}
    assert policies == {"http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"}
    modes = {e.SecurityMode for e in endpoints}
    assert modes == {ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt}
    c.set_user("olga")
    c.set_password(PASSWORDS["olga"])
    with pytest.raises(Exception):  # noqa: B017 - asyncua raises different errors for a missing endpoint
        await c.connect()
    await c.disconnect()


async def test_wrong_password_refused_on_secure_channel(secure_server: OpcUaServer, pki_dir: Path,
                                                        tmp_path: Path) -> None:
    cert, key = client_cert(tmp_path, "client")
    trust_client_certificate(pki_dir, cert)
    c = await secure_client(secure_server, cert, key)
    c.set_password("wrong-password")
    with pytest.raises(ua.UaStatusCodeError) as err:
        await c.connect()
    await c.disconnect()
    assert err.value.code == ua.StatusCodes.BadUserAccessDenied


async def test_anonymous_viewer_when_configured(users_file) -> None:
    srv = OpcUaServer(make_plant(), config(users_file, anonymous=True))
    await srv.start()
    try:
        async with Client(srv.endpoint_url, timeout=5) as c:
            node = c.get_node(f"ns={srv.ns};s=meter1.setpoint")
            assert (await node.read_browse_name()).Name == "setpoint"
            with pytest.raises(ua.UaStatusCodeError) as err:
                await node.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Float)))
            assert err.value.code == ua.StatusCodes.BadUserAccessDenied
    finally:
        await srv.stop()


def test_users_file_keeps_only_salted_hashes(tmp_path: Path) -> None:
    path = tmp_path / "users"
    add_user(path, "ann", "operator", "correct horse")
    add_user(path, "bob", "operator", "correct horse")
    text = path.read_text()
    assert "correct horse" not in text
    users = load_users(path)
    assert users["ann"].hashed != users["bob"].hashed  # salted
    assert users["ann"].check("correct horse") and not users["ann"].check("correct horsE")
    assert not verify_password("x", "plain-text")
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="viewer, operator"):
        add_user(path, "carl", "admin", "long enough")
    with pytest.raises(ValueError, match="at least 8"):
        add_user(path, "carl", "viewer", "short")


def test_config_refuses_unsafe_or_incomplete_security(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="allow_security_none"):
        OpcUaConfig(security_policies=["None"], users_file=tmp_path / "u")
    with pytest.raises(ValidationError, match="pki_dir is required"):
        OpcUaConfig(security_policies=["Basic256Sha256_SignAndEncrypt"], users_file=tmp_path / "u")
    with pytest.raises(ValidationError, match="no way to log in"):
        OpcUaConfig(pki_dir=tmp_path)
    with pytest.raises(ValidationError, match="opc.tcp://HOST:PORT"):
        OpcUaConfig(endpoint="http://127.0.0.1:4840", pki_dir=tmp_path, users_file=tmp_path / "u")
    with pytest.raises(ValidationError, match="max_queue_size"):
        OpcUaConfig(max_queue_size=0, pki_dir=tmp_path, users_file=tmp_path / "u")
    cfg = OpcUaConfig(pki_dir=tmp_path, users_file=tmp_path / "u")
    assert cfg.security_policies == ["Basic256Sha256_SignAndEncrypt"] and not cfg.anonymous


async def test_missing_server_certificate_is_a_clear_error(users_file, tmp_path: Path) -> None:
    cfg = config(users_file, security_policies=["Basic256Sha256_SignAndEncrypt"], pki_dir=tmp_path / "nothing")
    srv = OpcUaServer(make_plant(), cfg)
    with pytest.raises(FileNotFoundError, match="edge provision certs"):
        await srv.start()
    await srv.stop()


async def _raw_none_session(url: str, user: str, password: str):
    """A raw client on a SecurityPolicy None channel that ignores the advertised endpoints: it
    goes straight to CreateSession and ActivateSession with the password in clear (asyncua's
    UaClient layer, below the Client class that would refuse on its side)."""
    from urllib.parse import urlparse

    from asyncua.client.ua_client import UaClient

    parsed = urlparse(url)
    uac = UaClient(timeout=5)
    await uac.connect_socket(parsed.hostname, parsed.port)
    await uac.send_hello(url)
    await uac.open_secure_channel(ua.OpenSecureChannelParameters(
        ClientProtocolVersion=0, RequestType=ua.SecurityTokenRequestType.Issue,
        SecurityMode=ua.MessageSecurityMode.None_, RequestedLifetime=600_000, ClientNonce=b""))
    return uac


async def _raw_create_and_activate(uac, url: str, user: str, password: str) -> None:
    import os

    params = ua.CreateSessionParameters()
    params.ClientDescription = ua.ApplicationDescription(ApplicationUri="urn:attacker",
                                                         ApplicationType=ua.ApplicationType.Client)
    params.EndpointUrl = url
    params.SessionName = "raw"
    params.ClientNonce = os.urandom(32)
    params.RequestedSessionTimeout = 60_000
    params.MaxResponseMessageSize = 0
    await uac.create_session(params)
    act = ua.ActivateSessionParameters()
    act.UserIdentityToken = ua.UserNameIdentityToken(PolicyId="username", UserName=user,
                                                     Password=password.encode())
    act.ClientSignature = ua.SignatureData()
    await uac.activate_session(act)


async def test_raw_client_gets_no_session_on_a_none_channel_of_a_secure_site(secure_server: OpcUaServer) -> None:
    """Issue 15: on a site with only Basic256Sha256 endpoints, a raw client opened a None channel,
    created and activated a session with the operator's password in clear and wrote a tag. The
    server now serves discovery only on a None channel: GetEndpoints works, sessions do not."""
    url = secure_server.endpoint_url
    uac = await _raw_none_session(url, "olga", PASSWORDS["olga"])
    try:
        endpoints = await uac.get_endpoints(ua.GetEndpointsParameters(EndpointUrl=url))
        assert endpoints and all(e.SecurityMode != ua.MessageSecurityMode.None_ for e in endpoints)
        with pytest.raises(ua.UaStatusCodeError) as err:
            await _raw_create_and_activate(uac, url, "olga", PASSWORDS["olga"])
        assert err.value.code == ua.StatusCodes.BadSecurityPolicyRejected
        # Any session service on that channel (here a Write with no session) is refused the same way.
        write = ua.WriteParameters(NodesToWrite=[ua.WriteValue(
            NodeId=ua.NodeId("meter1.setpoint", secure_server.ns), AttributeId=ua.AttributeIds.Value,
            Value=ua.DataValue(ua.Variant(1.0, ua.VariantType.Float)))])
        with pytest.raises(ua.UaStatusCodeError) as err:
            await uac.write(write)
        assert err.value.code == ua.StatusCodes.BadSecurityPolicyRejected
    finally:
        uac.disconnect_socket()
    assert secure_server.writes == {"ok": 0, "refused": 0, "failed": 0}
    assert secure_server.channel_policy is not None
    assert secure_server.channel_policy.refused == {"CreateSessionRequest": 1, "WriteRequest": 1}
    stats = secure_server.users.guard.stats if secure_server.users else None
    assert stats is not None and stats.accepted == stats.refused == stats.remembered == 0  # no password checked


async def test_none_channel_sessions_still_work_where_the_site_allows_them(running: OpcUaServer) -> None:
    """A site that lists None (allow_security_none: true) keeps its None-channel sessions, with the
    password encrypted for the server (issue 15: never in clear)."""
    url = running.endpoint_url
    uac = await _raw_none_session(url, "victor", PASSWORDS["victor"])
    try:
        created = await raw_create_session(uac, url)
        assert created.ServerCertificate  # the client needs it to encrypt the password
        token = encrypted_password_token(created.ServerCertificate, PASSWORDS["victor"], created.ServerNonce,
                                         "victor")
        await raw_activate(uac, token)
    finally:
        uac.disconnect_socket()
    assert running.users is not None and running.users.guard.stats.accepted == 1
