"""Configuration models of the edge intelligence: the top-level ``alarms:``, ``rules:`` and ``api:`` sections.

Everything here is checked for its own shape only; references to tags, devices and the
types inside rule expressions are checked against the plant in
:mod:`edge.config.intelligence_checks`. Units are in the key names, unknown keys are errors.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.config.paths import ConfigPath

AlarmName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$",
          description="letters, digits, '_', '.' and '-', starting with a letter or '_', at most 128 characters"),
]
TagKey = Annotated[
    str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_-]*$", description="'device.tag'"),
]
DelayMs = Annotated[int, Field(ge=0, le=86_400_000)]
Priority = Literal["low", "medium", "high", "critical"]

#: OPC UA severity (1-1000) of each priority.
SEVERITY: dict[str, int] = {"low": 250, "medium": 500, "high": 750, "critical": 1000}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class AlarmConfig(_Model):
    """One alarm: limits of an analog tag, a bit, enumerated states, a device offline, or bad quality.

    ``limit``: HH/H/L/LL limits (any subset, ordered LL < L < H < HH); a level clears once the
    value is back inside it by ``deadband``. ``bit``: a bool tag equal to ``active_when``.
    ``state``: an enumerated tag in one of ``states`` (values or enum names). ``offline``:
    ``device`` is offline. ``quality``: ``tag`` has a Bad quality. ``backlog``: the oldest point
    not yet delivered to the time-series server is older than ``max_age_s`` (an outage that lasts).
    The condition must hold for ``on_delay_ms`` before the alarm activates and be gone for
    ``off_delay_ms`` before it clears.
    """

    kind: Literal["limit", "bit", "state", "offline", "quality", "backlog"]
    name: AlarmName | None = Field(None, description="unique alarm name; default '<tag or device>.<kind>'")
    tag: TagKey | None = None
    device: str | None = None
    hh: float | None = None
    h: float | None = None
    l: float | None = None  # noqa: E741 - the ISA name of the low limit
    ll: float | None = None
    deadband: Annotated[float, Field(ge=0)] = 0.0
    active_when: bool = True
    states: list[int | str] | None = None
    max_age_s: Annotated[float, Field(gt=0)] | None = Field(
        None, description="backlog: the age of the oldest unsent point that raises the alarm")
    on_delay_ms: DelayMs = 0
    off_delay_ms: DelayMs = 0
    priority: Priority = "medium"
    message: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> AlarmConfig:
        problems = alarm_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def key(self) -> str:
        return self.name or f"{self.tag or self.device or 'spool'}.{self.kind}"

    def limits(self) -> dict[str, float]:
        """The configured limits by level name, highest first (HH, H, L, LL)."""
        return {lvl: v for lvl, v in (("HH", self.hh), ("H", self.h), ("L", self.l), ("LL", self.ll))
                if v is not None}


def alarm_problems(a: AlarmConfig) -> list[str]:
    """Rules between the fields of one alarm (each problem says what is allowed)."""
    out: list[str] = []
    limits = (a.hh, a.h, a.l, a.ll)
    if a.kind != "backlog" and a.max_age_s is not None:
        out.append(f"'max_age_s' is only for backlog alarms, not {a.kind}")
    if a.kind == "backlog":
        if a.max_age_s is None:
            out.append("a backlog alarm needs 'max_age_s': the age of the oldest unsent point that raises it")
        if a.tag is not None or a.device is not None:
            out.append("a backlog alarm watches the spool: no 'tag' or 'device'")
    elif a.kind == "offline":
        if a.device is None:
            out.append("an offline alarm needs 'device'")
        if a.tag is not None:
            out.append("an offline alarm watches a device: use 'device', not 'tag'")
    else:
        if a.tag is None:
            out.append(f"a {a.kind} alarm needs 'tag' ('device.tag')")
        if a.device is not None:
            out.append(f"'device' is only for offline alarms; a {a.kind} alarm names its 'tag'")
    if a.kind == "limit":
        given = [v for v in (a.ll, a.l, a.h, a.hh) if v is not None]
        if not given:
            out.append("a limit alarm needs at least one of hh, h, l, ll")
        elif given != sorted(given) or len(set(given)) != len(given):
            out.append("limits must be ordered ll < l < h < hh")
    elif any(v is not None for v in limits) or a.deadband:
        out.append(f"hh, h, l, ll and deadband are only for limit alarms, not {a.kind}")
    if a.kind == "state" and not a.states:
        out.append("a state alarm needs 'states': the enum values or names that are alarms")
    if a.kind != "state" and a.states is not None:
        out.append("'states' is only for state alarms")
    return out


class Interlock(_Model):
    """A condition that blocks a rule's writes while it holds."""

    when: str = Field(min_length=1, description="expression over tags; while true the rule may not write")
    reason: str = ""


WriteValue = bool | int | float | str


class RuleConfig(_Model):
    """``when`` a condition holds (``for_ms`` long), write ``then``; when ``release_when`` holds, write ``otherwise``.

    Without ``release_when`` the rule releases when ``when`` is false: set both for hysteresis
    (e.g. on above 26 °C, off below 24 °C). ``min_interval_ms`` is the least time between two
    actions of the rule; ``interlocks`` block its writes while any of them holds.
    """

    name: AlarmName
    when: str = Field(min_length=1, description="expression over tags, e.g. 'room1.temperature > 26'")
    for_ms: DelayMs = 0
    release_when: str | None = Field(None, min_length=1)
    then: dict[TagKey, WriteValue] = Field(min_length=1, description="tag -> value written when the rule fires")
    otherwise: dict[TagKey, WriteValue] = Field(default_factory=dict,
                                                description="tag -> value written when the rule releases")
    min_interval_ms: DelayMs = 0
    interlocks: list[Interlock] = Field(default_factory=list)
    enabled: bool = True
    description: str = ""


class ApiConfig(_Model):
    """The HTTP API and status page, served on the appliance's event loop."""

    enabled: bool = True
    host: str = Field("127.0.0.1", description="listen address")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(8080, description="TCP port; 0 picks a free one")
    tokens_file: ConfigPath | None = Field(
        None, description="file of 'name:role:sha256$hex' token hashes (edge.api.tokens); relative to the config")
    anonymous_role: Literal["none", "viewer"] = Field(
        "none", description="role of a request without a token: none (401) or viewer")
    metrics_public: bool = Field(True, description="serve /metrics without a token (Prometheus scrapes)")
    write_rate_per_min: Annotated[int, Field(ge=1, le=100_000)] = Field(
        60, description="writes per minute per token (refill rate of the token bucket)")
    write_burst: Annotated[int, Field(ge=1, le=10_000)] = Field(10, description="writes allowed back to back")
    history_max_values: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    history_downsample_max_samples: Annotated[int, Field(ge=1000, le=50_000_000)] = Field(
        2_000_000, description="raw samples a history with max_points reads at most (a week at 3 Hz; ~34 MB)")
    status_refresh_ms: Annotated[int, Field(ge=200, le=60_000)] = 1000
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = Field(
        65_536, description="largest request body; larger ones get 413 before they are read")
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = Field(
        64, description="connections served at once; more get 503 (uvicorn's limit_concurrency)")
    tls_cert_file: ConfigPath | None = Field(
        None, description="PEM certificate for HTTPS (edge provision certs makes one); relative to the config")
    tls_key_file: ConfigPath | None = Field(None, description="its PEM private key; relative to the config")

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both for HTTPS, or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None
