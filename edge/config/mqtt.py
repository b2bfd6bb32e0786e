"""Configuration of the MQTT output (``outputs.mqtt``): Sparkplug B 3.0 and a plain JSON namespace.

Validated once at start-up into :class:`MqttConfig`. Units are in the key names; secrets come
from ``${ENV}`` references (substituted before validation) or from files (``password_file``,
TLS key files). Relative file paths are relative to the configuration file. Defaults: the
Sparkplug group id is the site name, the edge node id the host name (both filled in at start,
``edge fleet render`` fills in the appliance name as the edge node id).
"""
from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.config.paths import ConfigPath

if TYPE_CHECKING:
    from edge.config.errors import ConfigIssue
    from edge.config.loader import LoadedConfig

#: Characters a Sparkplug topic element must not contain (spec: '+', '/', '#').
SPARKPLUG_RESERVED = re.compile(r"[+/#]")
TopicElement = Annotated[str, Field(min_length=1, max_length=128)]
Role = Literal["viewer", "operator", "admin"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _topic_element(v: str | None, what: str) -> str | None:
    if v is not None and (SPARKPLUG_RESERVED.search(v) or not v.strip()):
        raise ValueError(f"{what} {v!r} must not be empty nor contain '+', '/' or '#' (Sparkplug topic element)")
    return v


class TlsConfig(_Model):
    """TLS towards the broker (``mqtts://`` URLs): CA, optional client certificate."""

    ca_file: ConfigPath | None = Field(None, description="PEM file of the CA(s) that signed the broker's certificate "
                                                   "(default: the system's trust store)")
    cert_file: ConfigPath | None = Field(None, description="client certificate (PEM), for brokers that require one")
    key_file: ConfigPath | None = Field(None, description="private key of cert_file (PEM)")
    insecure_skip_hostname_check: bool = Field(
        False, description="accept a certificate whose name does not match the host (test benches only)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self


class SparkplugConfig(_Model):
    """The Sparkplug B 3.0 edge node: topic ids, primary host, store-and-forward."""

    enabled: bool = True
    group_id: TopicElement | None = Field(None, description="Sparkplug group id (default: the site name)")
    edge_node_id: TopicElement | None = Field(None, description="Sparkplug edge node id (default: the host name)")
    primary_host_id: TopicElement | None = Field(
        None, description="host application id whose spBv1.0/STATE/<id> gates the births; while it is offline "
                          "data are held in the spool and replayed with is_historical when it returns")
    store_and_forward: bool = Field(
        True, description="hold data in the spool while the broker or the primary host is away, replay them "
                          "(is_historical) on return; false: what happens while away is not published")
    replay_metrics_per_s: Annotated[float, Field(ge=0)] = Field(
        50_000.0, description="rate of the backlog replay after an outage, on top of live data (0: unlimited)")
    max_metrics_per_message: Annotated[int, Field(ge=1, le=100_000)] = Field(
        1000, description="a device batch with more changed metrics is split into several DDATA messages")
    node_metrics_interval_s: Annotated[float, Field(ge=0.5, le=3600)] = Field(
        10.0, description="how often the node's own metrics (health, spool depth, forwarder) go out as NDATA")

    @field_validator("group_id", "edge_node_id", "primary_host_id")
    @classmethod
    def _element(cls, v: str | None, info) -> str | None:
        return _topic_element(v, info.field_name)


class UnsConfig(_Model):
    """Plain JSON unified namespace: retained ``<prefix>/<bus>/<device>/<tag>`` topics."""

    enabled: bool = False
    topic_prefix: str | None = Field(None, description="first topic level(s) (default: the site name)")
    qos: Literal[0, 1] = 1
    retain: bool = True

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip("/") or "+" in v or "#" in v):
            raise ValueError(f"topic_prefix {v!r} must be a topic without wildcards ('+', '#')")
        return v.strip("/") if v is not None else None


class MqttConfig(_Model):
    """The ``outputs.mqtt`` section."""

    enabled: bool = True
    url: str = Field(description="mqtt://host:1883 or mqtts://host:8883 (TLS)")
    client_id: str | None = Field(None, max_length=128,
                                  description="MQTT client id (default: <group_id>-<edge_node_id>)")
    username: str | None = Field(None, description="broker user (use ${MQTT_USER})")
    password: str | None = Field(None, description="broker password (use ${MQTT_PASSWORD}); or password_file")
    password_file: ConfigPath | None = Field(None, description="file holding the password (first line)")
    tls: TlsConfig | None = Field(None, description="TLS settings (mqtts:// uses TLS even without this section)")
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    retry_initial_ms: Annotated[int, Field(ge=10, le=600_000)] = 500
    retry_max_ms: Annotated[int, Field(ge=10, le=3_600_000)] = 30_000
    commands: bool = Field(True, description="accept NCMD/DCMD (writes go through the write service)")
    command_role: Role = Field(
        "operator", description="role of MQTT commands in the write service (viewer: every DCMD write is refused)")
    command_user: str = Field("mqtt", min_length=1, description="user name written to the audit log for DCMD writes")
    sparkplug: SparkplugConfig = Field(default_factory=SparkplugConfig)
    unified_namespace: UnsConfig = Field(default_factory=UnsConfig)

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError(f"url must look like mqtt://host:1883 or mqtts://host:8883, got {v!r}")
        if u.username or u.password:
            raise ValueError("put the user in 'username' and the password in 'password' or 'password_file', "
                             "not in the url")
        if u.path not in ("", "/"):
            raise ValueError(f"url must not have a path (websockets are not supported), got {u.path!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set either password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("a password needs a username")
        if self.retry_max_ms < self.retry_initial_ms:
            raise ValueError("retry_max_ms must be >= retry_initial_ms")
        if self.tls is not None and not self.use_tls:
            raise ValueError("a tls section needs an mqtts:// url")
        if not self.sparkplug.enabled and not self.unified_namespace.enabled:
            raise ValueError("enable sparkplug or unified_namespace (or set enabled: false)")
        return self

    # ------------------------------------------------------------------ derived values

    @property
    def use_tls(self) -> bool:
        return urlparse(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlparse(self.url).port or (8883 if self.use_tls else 1883)

    def group_id(self, site: str) -> str:
        return self.sparkplug.group_id or site

    def edge_node_id(self) -> str:
        return self.sparkplug.edge_node_id or default_edge_node_id()

    def resolved_client_id(self, site: str) -> str:
        return self.client_id or f"{self.group_id(site)}-{self.edge_node_id()}"

    def resolved_password(self, base_dir: Path | None = None) -> str | None:
        """The password from ``password``, the first line of ``password_file``, or None."""
        if self.password_file is not None:
            path = _resolve(self.password_file, base_dir)
            lines = path.read_text(encoding="utf-8").strip().splitlines()
            if not lines:
                raise ValueError(f"password_file {str(path)!r} is empty")
            return lines[0].strip()
        return self.password

    def files(self) -> dict[tuple[str, ...], Path]:
        """Every file the section names, by key path (checked by :func:`check_mqtt`)."""
        out: dict[tuple[str, ...], Path] = {}
        if self.password_file:
            out[("password_file",)] = self.password_file
        if self.tls is not None:
            for key in ("ca_file", "cert_file", "key_file"):
                value = getattr(self.tls, key)
                if value:
                    out[("tls", key)] = value
        return out


def _resolve(value: str | Path, base_dir: Path | None) -> Path:
    path = Path(value)
    return path if path.is_absolute() or base_dir is None else base_dir / path


def default_edge_node_id() -> str:
    """The host name, without the characters a Sparkplug topic element may not hold."""
    name = socket.gethostname().split(".")[0] or "edge"
    return SPARKPLUG_RESERVED.sub("_", name)


def check_mqtt(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    """Files named by ``outputs.mqtt`` exist (relative to the configuration file)."""
    cfg = loaded.config.outputs.mqtt
    if cfg is None or not cfg.enabled:
        return
    for path, value in cfg.files().items():
        resolved = _resolve(value, loaded.base_dir)
        if not resolved.is_file():
            issues.append(loaded.source.issue(("outputs", "mqtt", *path),
                                              f"file {str(resolved)!r} does not exist or is not a file", value))
