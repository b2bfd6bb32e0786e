"""Configuration of the OPC UA server: the ``outputs.opcua`` section of a site configuration.

Validated once at start-up into :class:`OpcUaConfig`. Security is opt-out, never opt-in:
SecurityPolicy ``None`` must be listed *and* allowed with ``allow_security_none: true``
(the demo site does both), anonymous sessions are off unless ``anonymous: true``, and a
secure policy needs a ``pki_dir`` created by ``edge provision certs``.
"""
from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.config.paths import ConfigPath

SecurityPolicyName = Literal["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"]
SECURE_POLICIES: tuple[str, ...] = ("Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt")


class OpcUaConfig(BaseModel):
    """The ``outputs.opcua`` section: endpoint, namespace, security, users, limits."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    enabled: bool = True
    endpoint: str = Field(
        "opc.tcp://0.0.0.0:4840/edge",
        description="opc.tcp://HOST:PORT/PATH the server listens on",
    )
    namespace_uri: str | None = Field(
        None, description="namespace URI of the site's nodes; default urn:edge:<site>"
    )
    application_uri: str | None = Field(
        None, description="the server's ApplicationUri (also in its certificate); default urn:<host>:edge:<site>, "
        "unique per appliance")
    server_name: str = "Edge OPC UA server"
    security_policies: Annotated[list[SecurityPolicyName], Field(min_length=1)] = [
        "Basic256Sha256_SignAndEncrypt"
    ]
    allow_security_none: bool = Field(
        False, description="must be true for 'None' to be accepted in security_policies"
    )
    anonymous: bool = Field(False, description="allow anonymous sessions (read-only, role viewer)")
    users_file: ConfigPath | None = Field(None, description="file of salted password hashes (edge provision user)")
    pki_dir: ConfigPath | None = Field(None, description="directory made by 'edge provision certs'")
    max_rejected_certificates: Annotated[int, Field(ge=0, le=100_000)] = Field(
        100, description="refused client certificates kept in pki_dir/rejected/certs for review (oldest deleted)"
    )
    max_queue_size: Annotated[int, Field(ge=1, le=10_000)] = Field(
        10, description="cap of every monitored item's queue (a slow client loses oldest values, not memory)"
    )
    max_unacked_per_subscription: Annotated[int, Field(ge=1, le=10_000)] = 100
    max_sessions: Annotated[int, Field(ge=1, le=1000)] = 50
    max_pending_per_address: Annotated[int, Field(ge=1, le=1000)] = Field(
        8, description="connections without an activated session from one client address")
    max_request_bytes: Annotated[int, Field(ge=65_536, le=256 * 1024 * 1024)] = Field(
        16 * 1024 * 1024, description="largest request a client may send (asyncua's default: 100 MB)")
    write_timeout_ms: Annotated[int, Field(ge=100, le=60_000)] = 5000
    history_max_values: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        10_000, description="most values one HistoryRead returns per node (then a continuation point)"
    )
    fast_path: bool = Field(
        True, description="deliver value changes and encode notifications with the appliance's fast path "
        "(asyncua 2.1 internals, edge/outputs/opcua/asyncua_adapter.py); false: the library's plain path"
    )

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, v: str) -> str:
        url = urlparse(v)
        if url.scheme != "opc.tcp" or not url.hostname or url.port is None:
            raise ValueError(f"endpoint must look like opc.tcp://HOST:PORT/PATH, got {v!r}")
        return v

    @field_validator("security_policies")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"security_policies lists a policy twice: {v}")
        return v

    @model_validator(mode="after")
    def _security_consistent(self) -> OpcUaConfig:
        if "None" in self.security_policies and not self.allow_security_none:
            raise ValueError(
                "security_policies contains 'None' (no signing, no encryption); "
                "set allow_security_none: true to accept it, or list only "
                + ", ".join(SECURE_POLICIES)
            )
        if self.secure and self.pki_dir is None:
            raise ValueError(
                "pki_dir is required when a Basic256Sha256 policy is enabled "
                "(create it with 'edge provision certs')"
            )
        if not self.anonymous and self.users_file is None:
            raise ValueError("no way to log in: set users_file (edge provision user) or anonymous: true")
        if self.users_file is not None and not self.secure and self.pki_dir is None:
            raise ValueError(
                "users_file with only the None policy: passwords would cross the network in clear; set pki_dir "
                "(edge provision certs) so clients encrypt them with the server's certificate, or add "
                + ", ".join(SECURE_POLICIES)
            )
        return self

    @property
    def secure(self) -> bool:
        return any(p in SECURE_POLICIES for p in self.security_policies)

    @property
    def needs_certificate(self) -> bool:
        """A server certificate is needed: for secure channels, or to receive encrypted passwords
        on a None endpoint."""
        return self.secure or (self.users_file is not None and self.pki_dir is not None)

    @property
    def host(self) -> str:
        return urlparse(self.endpoint).hostname or "127.0.0.1"

    def application_uri_for(self, site: str, hostname: str | None = None) -> str:
        """The ApplicationUri of this appliance: configured, else ``urn:<host name>:edge:<site>`` (unique per
        appliance, as OPC UA requires; ``edge provision certs`` puts the same URI in the certificate)."""
        if self.application_uri:
            return self.application_uri
        import socket

        return f"urn:{hostname or socket.gethostname()}:edge:{site}"

    def namespace_for(self, site: str) -> str:
        """The namespace URI of a site's nodes (one namespace per site)."""
        return self.namespace_uri or f"urn:edge:{site}"
