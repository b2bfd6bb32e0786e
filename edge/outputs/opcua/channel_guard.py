"""What a client may do on the OPC UA wire, enforced on the server (not left to well-behaved clients).

This is the one adapter module that reaches into asyncua's internals (asyncua 2.1, pinned in
setup.py); everything else uses the library's public API. :func:`install` wraps, once per
process, and :func:`uninstall` restores the library's plain path:

* ``UaProcessor._process_message`` (every service request):

  - unless the server lists the None policy (``allow_security_none``), a SecurityPolicy None
    channel serves discovery only (GetEndpoints, FindServers); CreateSession, ActivateSession
    and every session service on it are refused with BadSecurityPolicyRejected. asyncua serves
    them on any channel, whatever endpoints the server advertises, so a raw client ignoring the
    endpoint list could log in with the operator's password in clear.
  - CreateSession on a secure channel: the ClientCertificate, if sent, must be the channel's
    certificate, and the ApplicationUri the client announces must be the URI in that
    certificate (BadCertificateUriInvalid). asyncua checks this only when the client sends a
    certificate in CreateSession, and only with the validator the application installs.
  - CreateSession, ActivateSession, Write and Call run with :func:`current_channel` set (peer
    address, security mode), which the user manager, the token decryption below and the audit
    log of writes read: asyncua passes none of them the client's address.

* ``UaProcessor.process`` (every message): a client certificate is checked when the client
  opens a SecureChannel (trust list, validity, key usage, chains and revocation lists:
  :mod:`edge.security.trust`), not only later at CreateSession as asyncua does. A refused
  certificate gets an Error message with the StatusCode, and the connection is closed.

  Before a session is activated, a message in several chunks closes the connection: every
  request of that phase fits one chunk, and asyncua would otherwise assemble up to the maximum
  request size (100 MB by default; ``max_request_bytes`` here) for anybody.

* ``OPCUAProtocol.connection_made``: one client address may hold at most
  ``max_pending_per_address`` connections without an activated session (asyncua only caps all
  connections together, so one machine could use them all up for 30 s at a time).

* ``OPCUAProtocol.data_received`` (bytes off the socket): asyncua buffers a message until the
  size its header claims has arrived, without a limit, so a header claiming 4 GB makes the
  server keep everything the client sends. A connection whose pending chunk is larger than the
  negotiated receive buffer, or whose next message type is not one of OPC UA's, is closed.

Per server, :func:`attach` also replaces the internal server's ``decrypt_user_token`` (an
instance attribute, not a patch of the class): a UserName token is accepted only when its
password is encrypted (RSA-OAEP with the server's key, with the server nonce of this session
appended, which is checked, so a captured token cannot be replayed), or when the channel itself
is SignAndEncrypt. asyncua accepts clear-text passwords on any channel and never checks the
nonce. :func:`restrict_user_token_policies` makes the endpoints advertise the same rule.

Servers without a :class:`ChannelPolicy` (plain asyncua, other tests) behave as the library does.
"""
from __future__ import annotations

import contextvars
import logging
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.common.utils import Buffer, ServiceError
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256, SecurityPolicyNone
from asyncua.server.binary_server_asyncio import OPCUAProtocol
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary, uatcp_to_binary

if TYPE_CHECKING:
    from edge.security.trust import TrustListValidator

log = logging.getLogger(__name__)

def _nid(identifier: int) -> ua.NodeId:
    return ua.NodeId(ua.Int32(identifier))


#: Services a None channel always serves: discovery (OPC UA Part 4, 5.4).
DISCOVERY = frozenset({
    _nid(ua.ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary),
    _nid(ua.ObjectIds.FindServersRequest_Encoding_DefaultBinary),
    _nid(ua.ObjectIds.FindServersOnNetworkRequest_Encoding_DefaultBinary),
})
CREATE_SESSION = _nid(ua.ObjectIds.CreateSessionRequest_Encoding_DefaultBinary)
ACTIVATE_SESSION = _nid(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
#: Requests processed with :func:`current_channel` set: logins, and what is audited (writes, method calls).
WITH_CHANNEL = frozenset({CREATE_SESSION, ACTIVATE_SESSION, _nid(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary),
                          _nid(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)})
MESSAGE_TYPES = frozenset({b"HEL", b"OPN", b"MSG", b"CLO", b"ERR", b"RHE"})
#: Password encryptions accepted in UserName tokens (RSA 1.5 is not: Basic128Rsa15 is deprecated).
PASSWORD_DECRYPT = {
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep": uacrypto.decrypt_rsa_oaep,
    "http://opcfoundation.org/UA/security/rsa-oaep-sha2-256": uacrypto.decrypt_rsa_oaep_sha256,
}
_ATTR = "_edge_channel_policy"
_ORIGINALS: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """The SecureChannel a CreateSession/ActivateSession request came on."""

    peer: str  # the client's address (host only)
    mode: int  # ua.MessageSecurityMode
    peer_certificate: bytes | None


_channel: contextvars.ContextVar[ChannelInfo | None] = contextvars.ContextVar("edge_opcua_channel", default=None)


def current_channel() -> ChannelInfo | None:
    """The channel of the CreateSession/ActivateSession/Write/Call being processed (None elsewhere)."""
    return _channel.get()


@dataclass
class ChannelPolicy:
    """One server's rules on the wire, and what they refused (visible in the server's stats)."""

    allow_none_sessions: bool
    validator: TrustListValidator | None = None
    max_pending_per_address: int = 8
    refused: dict[str, int] = field(default_factory=dict)  # service name -> refusals on None channels
    tokens_refused: dict[str, int] = field(default_factory=dict)  # why -> UserName tokens refused
    transport_closed: dict[str, int] = field(default_factory=dict)  # why -> connections closed
    certificates_refused_at_open: int = 0

    def count(self, service: str) -> None:
        self.refused[service] = self.refused.get(service, 0) + 1

    def count_token(self, why: str) -> None:
        self.tokens_refused[why] = self.tokens_refused.get(why, 0) + 1
        n = sum(self.tokens_refused.values())
        if n <= 20 or n % 100 == 0:
            log.warning("OPC UA UserName token refused: %s (%d refused so far)", why, n)

    def count_transport(self, why: str, peer: object) -> None:
        self.transport_closed[why] = self.transport_closed.get(why, 0) + 1
        n = sum(self.transport_closed.values())
        if n <= 20 or n % 100 == 0:
            log.warning("OPC UA connection from %s closed: %s (%d so far)", peer, why, n)

    def snapshot(self) -> dict[str, object]:
        return {"allow_none_sessions": self.allow_none_sessions, "none_channel_refused": dict(self.refused),
                "user_tokens_refused": dict(self.tokens_refused), "connections_closed": dict(self.transport_closed),
                "certificates_refused_at_open": self.certificates_refused_at_open}


def attach(iserver: Any, policy: ChannelPolicy) -> None:
    """Give one asyncua internal server its channel policy and token decryption (and make sure
    the process-wide wrappers are installed)."""
    install()
    setattr(iserver, _ATTR, policy)
    iserver.decrypt_user_token = lambda isession, token: decrypt_user_token(policy, iserver, isession, token)


def install() -> None:
    """Wrap asyncua's processor and protocol once per process (idempotent)."""
    if _ORIGINALS:
        return
    _ORIGINALS["_process_message"] = UaProcessor._process_message
    _ORIGINALS["process"] = UaProcessor.process
    _ORIGINALS["data_received"] = OPCUAProtocol.data_received
    _ORIGINALS["connection_made"] = OPCUAProtocol.connection_made
    UaProcessor._process_message = _guarded_process_message
    UaProcessor.process = _guarded_process
    OPCUAProtocol.data_received = _guarded_data_received
    OPCUAProtocol.connection_made = _guarded_connection_made


def uninstall() -> None:
    """Back to asyncua's plain path (servers keep their policies, which are then ignored)."""
    if not _ORIGINALS:
        return
    UaProcessor._process_message = _ORIGINALS.pop("_process_message")
    UaProcessor.process = _ORIGINALS.pop("process")
    OPCUAProtocol.data_received = _ORIGINALS.pop("data_received")
    OPCUAProtocol.connection_made = _ORIGINALS.pop("connection_made")


# ---------------------------------------------------------------------- service requests


async def _guarded_process_message(self: UaProcessor, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any,
                                   body: Any) -> Any:
    original = _ORIGINALS["_process_message"]
    policy: ChannelPolicy | None = getattr(self.iserver, _ATTR, None)
    if policy is None:
        return await original(self, typeid, requesthdr, seqhdr, body)
    security = self._connection.security_policy
    if typeid not in DISCOVERY and not policy.allow_none_sessions and isinstance(security, SecurityPolicyNone):
        name = _service_name(typeid)
        policy.count(name)
        total = sum(policy.refused.values())
        if total <= 20 or total % 100 == 0:  # a scanner must not flood the log
            log.warning("OPC UA: %s from %s refused on a SecurityPolicy None channel (discovery only; "
                        "%d refused so far)", name, self.name, total)
        raise ua.UaStatusCodeError(ua.StatusCodes.BadSecurityPolicyRejected)
    if typeid not in WITH_CHANNEL:
        return await original(self, typeid, requesthdr, seqhdr, body)
    info = ChannelInfo(_host(self.name), int(security.Mode), security.peer_certificate)
    if typeid == CREATE_SESSION and info.peer_certificate and policy.validator is not None:
        await _check_session_certificate(policy.validator, info.peer_certificate, body)
    token = _channel.set(info)
    try:
        return await original(self, typeid, requesthdr, seqhdr, body)
    finally:
        _channel.reset(token)


async def _check_session_certificate(validator: TrustListValidator, channel_cert: bytes, body: Buffer) -> None:
    """CreateSession on a secure channel: the certificate it names is the channel's, and the
    ApplicationUri it announces is the certificate's."""
    try:
        params = struct_from_binary(ua.CreateSessionParameters, body.copy())
    except Exception:  # noqa: BLE001 - whatever the decoder raises on garbage
        raise ServiceError(ua.StatusCodes.BadDecodingError) from None
    if params.ClientCertificate and params.ClientCertificate != channel_cert:
        raise ServiceError(ua.StatusCodes.BadCertificateInvalid)
    uri = params.ClientDescription.ApplicationUri if params.ClientDescription is not None else None
    await validator.check_uri(channel_cert, uri or "")


# ---------------------------------------------------------------------- opening a channel


async def _guarded_process(self: UaProcessor, header: Any, body: Buffer) -> bool:
    policy: ChannelPolicy | None = getattr(self.iserver, _ATTR, None)
    if policy is not None and header.ChunkType == ua.ChunkType.Intermediate and not _activated(self):
        # before a session is activated every request fits one chunk (Hello, OpenSecureChannel,
        # discovery, CreateSession, ActivateSession): a multi-chunk message there only makes the
        # server buffer up to max_request_bytes for somebody who has not logged in
        policy.count_transport("chunked request before a session", self.name)
        self._transport.write(_error(ua.StatusCodes.BadRequestTooLarge, "log in first"))
        return False
    if (policy is not None and policy.validator is not None and header.MessageType == ua.MessageType.SecureOpen
            and not self._connection.is_open()):
        code = await _check_open(policy.validator, body, header.body_size)
        if code is not None:
            policy.certificates_refused_at_open += 1
            self._transport.write(_error(code, ua.StatusCode(ua.UInt32(code)).name))
            return False  # asyncua closes the connection
    return await _ORIGINALS["process"](self, header, body)


async def _check_open(validator: TrustListValidator, body: Buffer, size: int) -> int | None:
    """The StatusCode refusing the certificate of an OpenSecureChannel request, or None."""
    try:
        security = struct_from_binary(ua.AsymmetricAlgorithmHeader, body.copy(size))
    except Exception:  # noqa: BLE001 - a malformed header is asyncua's to refuse, as before
        return None
    if security.SecurityPolicyURI == SecurityPolicyNone.URI:
        return None  # no certificate on a None channel; what it may carry is checked per request
    if not security.SenderCertificate:
        return ua.StatusCodes.BadCertificateInvalid
    try:
        await validator.check_async(security.SenderCertificate)
    except ServiceError as refused:
        return refused.code
    return None


# ---------------------------------------------------------------------- bytes off the socket


def _guarded_connection_made(self: OPCUAProtocol, transport: Any) -> None:
    """At most ``max_pending_per_address`` connections without an activated session per client
    address: one machine holding connections open cannot use up ``max_sessions`` for everybody."""
    policy: ChannelPolicy | None = getattr(self.iserver, _ATTR, None)
    if policy is not None:
        host = _host(transport.get_extra_info("peername"))
        pending = sum(1 for c in self.clients if _host(c.peer_name) == host
                      and (c.processor is None or not _activated(c.processor)))
        if pending >= policy.max_pending_per_address:
            self.peer_name = transport.get_extra_info("peername")
            policy.count_transport("too many connections without a session from one address", host)
            transport.close()
            return
    _ORIGINALS["connection_made"](self, transport)


def _activated(processor: UaProcessor) -> bool:
    session = processor.session
    return session is not None and session.is_activated()


def _guarded_data_received(self: OPCUAProtocol, data: bytes) -> None:
    _ORIGINALS["data_received"](self, data)
    policy: ChannelPolicy | None = getattr(self.iserver, _ATTR, None)
    pending = self._buffer
    if policy is None or not pending or self.transport is None:
        return
    why = None
    if pending[:3] not in MESSAGE_TYPES and len(pending) >= 3:
        why = f"unknown message type {pending[:3]!r}"
    elif len(pending) >= 8 and struct.unpack_from("<I", pending, 4)[0] > self.limits.max_recv_buffer:
        why = f"a chunk of {struct.unpack_from('<I', pending, 4)[0]} bytes (limit {self.limits.max_recv_buffer})"
    elif len(pending) > self.limits.max_recv_buffer:
        why = f"more than {self.limits.max_recv_buffer} bytes pending"
    if why is not None:
        policy.count_transport("oversized chunk" if "bytes" in why else "malformed message", self.peer_name)
        self._buffer = b""
        self.transport.close()


# ---------------------------------------------------------------------- UserName tokens


def decrypt_user_token(policy: ChannelPolicy, iserver: Any, isession: Any,
                       token: ua.UserNameIdentityToken) -> tuple[str, str]:
    """User name and password of a UserName token, if the password travelled encrypted."""
    channel = current_channel()
    if not token.EncryptionAlgorithm:
        if channel is None or channel.mode != ua.MessageSecurityMode.SignAndEncrypt:
            policy.count_token("password not encrypted on a channel without encryption")
            raise ServiceError(ua.StatusCodes.BadIdentityTokenRejected)
        return token.UserName, _utf8(token.Password or b"", policy)
    decrypt = PASSWORD_DECRYPT.get(token.EncryptionAlgorithm)
    if decrypt is None or iserver.private_key is None:
        policy.count_token(f"password encryption {token.EncryptionAlgorithm!r} not accepted")
        raise ServiceError(ua.StatusCodes.BadIdentityTokenRejected)
    try:
        raw = decrypt(iserver.private_key, token.Password or b"")
    except Exception:  # noqa: BLE001 - any failure of the RSA layer is a bad token
        policy.count_token("password cannot be decrypted")
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid) from None
    nonce = isession.nonce or b""
    length = struct.unpack_from("<I", raw)[0] if len(raw) >= 4 else -1
    if length < len(nonce) or 4 + length > len(raw) or raw[4 + length - len(nonce):4 + length] != nonce:
        policy.count_token("password token not made for this session (server nonce differs: a replay?)")
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid)
    return token.UserName, _utf8(raw[4:4 + length - len(nonce)], policy)


def _utf8(raw: bytes, policy: ChannelPolicy) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        policy.count_token("password is not UTF-8")
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid) from None


def restrict_user_token_policies(iserver: Any) -> None:
    """Advertise UserName tokens only where the password cannot travel in clear.

    On SignAndEncrypt endpoints the channel encrypts it. On Sign and None endpoints the token
    must be encrypted with the server's certificate (Basic256Sha256), so the server needs one;
    without a certificate those endpoints offer no UserName token at all (the demo's None
    endpoint). Call after ``Server.start()`` (which builds the endpoint list).
    """
    has_key = iserver.certificate is not None and iserver.private_key is not None
    for endpoint in iserver.endpoints:
        kept = []
        for token in endpoint.UserIdentityTokens:
            if token.TokenType == ua.UserTokenType.UserName and \
                    endpoint.SecurityMode != ua.MessageSecurityMode.SignAndEncrypt:
                if not has_key:
                    continue
                token.SecurityPolicyUri = SecurityPolicyBasic256Sha256.URI
            kept.append(token)
        endpoint.UserIdentityTokens = kept


def _error(code: int, reason: str) -> bytes:
    """An OPC UA TCP Error message (the connection is closed after it)."""
    err = ua.ErrorMessage(ua.StatusCode(ua.UInt32(code)), ua.String(reason))
    return uatcp_to_binary(ua.MessageType.Error, err)


def _host(peername: object) -> str:
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername or "")


def _service_name(typeid: ua.NodeId) -> str:
    name = ua.ObjectIdNames.get(typeid.Identifier, str(typeid.Identifier)) if isinstance(typeid.Identifier, int) \
        else str(typeid.Identifier)
    return name.removesuffix("_Encoding_DefaultBinary")
