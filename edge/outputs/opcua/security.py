"""Security of the OPC UA server: endpoints, certificates, users, and what each refused.

:func:`configure` sets up an asyncua ``Server`` from the site's :class:`OpcUaConfig` before it
starts; :func:`after_start` fixes what the library advertises once the endpoints exist. The
wire-level rules live in :mod:`edge.outputs.opcua.channel_guard` (the adapter over asyncua's
internals), the certificate checks in :mod:`edge.security.trust`, the password throttling
in :mod:`edge.security.login_guard`. docs/security.md says who can reach what.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.connection import TransportLimits
from asyncua.crypto.permission_rules import User, UserRole

from edge.config.opcua import OpcUaConfig
from edge.outputs.opcua.channel_guard import ChannelPolicy, current_channel, restrict_user_token_policies
from edge.outputs.opcua.channel_guard import attach as attach_channel_policy
from edge.security.login_guard import LoginGuard
from edge.security.pki import PkiPaths
from edge.security.trust import TrustListValidator
from edge.security.users import Role, UserEntry, load_users

log = logging.getLogger("edge.outputs.opcua.server")

#: A connection that has not activated a session this long after it was made is closed (asyncua: 30 s).
PENDING_ACTIVATION_S = 10.0
POLICIES = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


class EdgeUserManager:
    """asyncua user manager over the users file: scrypt-checked passwords; never the admin role.

    Every session gets asyncua's plain ``User`` role (read, browse, subscribe, write requests);
    whether a write is allowed is decided per write from the edge role (viewer/operator).
    The client's address (for the per-address lockout) comes from the channel the
    ActivateSession request arrived on (:func:`~edge.outputs.opcua.channel_guard.current_channel`).
    """

    def __init__(self, users: dict[str, UserEntry], anonymous: bool, guard: LoginGuard | None = None) -> None:
        self.users = users
        self.anonymous = anonymous
        self.refused = 0
        self.guard = guard or LoginGuard()  # asyncua asks synchronously, on the polling loop

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None:
            return User(role=UserRole.User, name=None) if self.anonymous else None
        channel = current_channel()
        source = channel.peer if channel is not None else ""
        if password is None or not self.guard.check(username, password, self.users.get(username), source=source):
            self.refused += 1
            if self.refused <= 20 or self.refused % 100 == 0:  # a password guesser must not flood the log
                log.warning("OPC UA login refused for user %r from %s (%d refused so far)", username,
                            source or "?", self.refused)
            return None
        return User(role=UserRole.User, name=username)

    def role(self, user: User | None) -> Role:
        if user is None or user.name is None:
            return Role.VIEWER
        entry = self.users.get(user.name)
        return entry.role if entry is not None else Role.VIEWER


@dataclass
class SecuritySetup:
    """What :func:`configure` built: the server keeps these for its counters."""

    users: EdgeUserManager
    channel_policy: ChannelPolicy
    validator: TrustListValidator | None


def make_user_manager(cfg: OpcUaConfig) -> EdgeUserManager:
    users = load_users(cfg.users_file) if cfg.users_file is not None else {}
    return EdgeUserManager(users, cfg.anonymous)


async def configure(server: Server, cfg: OpcUaConfig, users: EdgeUserManager) -> SecuritySetup:
    """Policies, identity tokens, the server certificate and the client trust list (before start)."""
    server.set_security_policy([POLICIES[p] for p in cfg.security_policies])
    tokens: list[type] = []
    if cfg.users_file is not None:
        tokens.append(ua.UserNameIdentityToken)
    if cfg.anonymous:
        tokens.append(ua.AnonymousIdentityToken)
    server.set_identity_tokens(tokens)
    validator = None
    if cfg.needs_certificate:
        assert cfg.pki_dir is not None
        paths = PkiPaths(Path(cfg.pki_dir))
        if not paths.cert.exists() or not paths.key.exists():
            raise FileNotFoundError(
                f"OPC UA server certificate missing in {cfg.pki_dir} (expected {paths.cert} and {paths.key});"
                " create it with 'edge provision certs'"
            )
        await server.load_certificate(str(paths.cert))
        await server.load_private_key(str(paths.key))
        validator = TrustListValidator(paths.root, max_rejected=cfg.max_rejected_certificates)
    chunk = server.limits.max_recv_buffer
    server.limits = TransportLimits(max_recv_buffer=chunk, max_send_buffer=server.limits.max_send_buffer,
                                    max_chunk_count=math.ceil(cfg.max_request_bytes / chunk),
                                    max_message_size=cfg.max_request_bytes)
    server.iserver.max_pending_activation_seconds = PENDING_ACTIVATION_S
    policy = ChannelPolicy(allow_none_sessions="None" in cfg.security_policies, validator=validator,
                           max_pending_per_address=cfg.max_pending_per_address)
    attach_channel_policy(server.iserver, policy)
    return SecuritySetup(users, policy, validator)


def after_start(server: Server) -> None:
    """Once the endpoints exist: UserName tokens only where passwords cannot travel in clear."""
    restrict_user_token_policies(server.iserver)


def snapshot(setup: SecuritySetup | None) -> dict[str, object]:
    """Policy and counters of the OPC UA server's security, for status, API and metrics."""
    if setup is None:
        return {}
    out: dict[str, object] = {"logins": setup.users.guard.snapshot(), "channels": setup.channel_policy.snapshot()}
    if setup.validator is not None:
        out["certificates"] = setup.validator.snapshot()
    return out
