"""What a SecureChannel may carry, enforced on the server (not left to well-behaved clients).

asyncua lets any client open a SecurityPolicy None channel (it must: GetEndpoints and
FindServers are served there) and then serves every other service on it too, whatever
endpoints the server advertises. A raw client that ignores the endpoint list could therefore
create and activate a session, sending the operator's password in clear, on a site configured
with only Basic256Sha256 endpoints. This module closes that: unless the server lists the None
policy (``allow_security_none``), a None channel serves discovery only, and CreateSession,
ActivateSession and every session service on it are refused with BadSecurityPolicyRejected.

It relies on asyncua 2.1's ``UaProcessor._process_message(typeid, requesthdr, seqhdr, body)``
and ``UaProcessor._connection.security_policy`` (the pin in setup.py); the wrapper is installed
once per process by :func:`install` and consults a per-server :class:`ChannelPolicy` kept on
the internal server, so servers without one (plain asyncua) behave as the library does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.crypto.security_policies import SecurityPolicyNone
from asyncua.server.uaprocessor import UaProcessor

log = logging.getLogger(__name__)

#: Services a None channel always serves: discovery (OPC UA Part 4, 5.4).
DISCOVERY = frozenset({
    ua.NodeId(ua.ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary),
    ua.NodeId(ua.ObjectIds.FindServersRequest_Encoding_DefaultBinary),
    ua.NodeId(ua.ObjectIds.FindServersOnNetworkRequest_Encoding_DefaultBinary),
})
_ATTR = "_edge_channel_policy"


@dataclass
class ChannelPolicy:
    """One server's rule for None channels, and what it refused (visible in the server's stats)."""

    allow_none_sessions: bool
    refused: dict[str, int] = field(default_factory=dict)  # service name -> refusals

    def count(self, service: str) -> None:
        self.refused[service] = self.refused.get(service, 0) + 1


def attach(iserver: Any, policy: ChannelPolicy) -> None:
    """Give one asyncua internal server its channel policy (and make sure the guard is installed)."""
    install()
    setattr(iserver, _ATTR, policy)


def install() -> None:
    """Wrap ``UaProcessor._process_message`` once per process (idempotent)."""
    if getattr(UaProcessor._process_message, "_edge_guard", False):
        return
    original = UaProcessor._process_message

    async def guarded(self: UaProcessor, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any) -> Any:
        policy: ChannelPolicy | None = getattr(self.iserver, _ATTR, None)
        if (policy is not None and not policy.allow_none_sessions and typeid not in DISCOVERY
                and isinstance(self._connection.security_policy, SecurityPolicyNone)):
            name = _service_name(typeid)
            policy.count(name)
            total = sum(policy.refused.values())
            if total <= 20 or total % 100 == 0:  # a scanner must not flood the log
                log.warning("OPC UA: %s from %s refused on a SecurityPolicy None channel (discovery only; "
                            "%d refused so far)", name, self.name, total)
            raise ua.UaStatusCodeError(ua.StatusCodes.BadSecurityPolicyRejected)
        return await original(self, typeid, requesthdr, seqhdr, body)

    guarded._edge_guard = True  # type: ignore[attr-defined]
    UaProcessor._process_message = guarded  # type: ignore[method-assign]


def _service_name(typeid: ua.NodeId) -> str:
    name = ua.ObjectIdNames.get(typeid.Identifier, str(typeid.Identifier)) if isinstance(typeid.Identifier, int) \
        else str(typeid.Identifier)
    return name.removesuffix("_Encoding_DefaultBinary")
