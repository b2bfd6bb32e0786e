"""What the simulator serves: device specs, transports and signal specs (pydantic v2 models).

The lead's site-config loader maps each configured device to one :class:`SimDeviceSpec`;
tests build them directly. Points are the driver's :class:`RegisterPoint` objects, so the
simulator serves exactly the register map that the appliance polls.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.modbus.points import DTYPES, ORDERS, RegisterPoint, Table

SIGNAL_KINDS = ("sine", "ramp", "counter", "step", "status_bits", "enum", "toggle", "constant", "model")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TcpTransport(_Frozen):
    """Modbus TCP (MBAP framing). Port 0 binds a free port that is not shared with other devices,
    unless devices name the same ``share``: then they are served together on one free port."""

    kind: Literal["tcp"] = "tcp"
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    share: str | None = None


class RtuOverTcpTransport(_Frozen):
    """RTU framing (address + PDU + CRC) on a TCP socket, like a serial-to-Ethernet gateway.

    With ``baud`` set, replies are paced as if the gateway's serial side ran at that rate. Port 0
    and ``share`` as for :class:`TcpTransport` (the devices behind one gateway share a free port).
    """

    kind: Literal["rtu_over_tcp"] = "rtu_over_tcp"
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    share: str | None = None
    baud: int | None = Field(None, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    data_bits: Literal[7, 8] = 8
    stop_bits: Literal[1, 2] = 1


class SerialTransport(_Frozen):
    """An RS-485 line made of a socat pty pair; ``path`` is the APPLIANCE-side end.

    The simulator creates the pair (``path`` and ``path + ".sim"``) and serves the second end.
    Replies are paced at the line's character time.
    """

    kind: Literal["serial"] = "serial"
    path: str = Field(min_length=1)
    baud: int = Field(9600, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    data_bits: Literal[7, 8] = 8
    stop_bits: Literal[1, 2] = 1
    turnaround_ms: float = Field(1.0, ge=0.0, le=1000.0)

    @property
    def char_time_s(self) -> float:
        """Seconds per character on the wire: start bit + data bits + parity bit + stop bits."""
        bits = 1 + self.data_bits + (0 if self.parity == "N" else 1) + self.stop_bits
        return bits / self.baud


Transport = Annotated[TcpTransport | RtuOverTcpTransport | SerialTransport, Field(discriminator="kind")]


class SignalSpec(_Frozen):
    """How one point's engineering value evolves (all values in engineering units).

    sine: ``mean + amplitude * sin(2 pi t / period_s + phase) + noise * N(0, 1)``;
    ramp: sawtooth from ``low`` to ``high`` over ``period_s``; counter: ``start + rate_per_s * t``
    (wraps at the data type's limit); step: cycles through ``levels``, one per ``period_s``;
    status_bits: bit i toggles every ``period_s * (i + 1)`` for the bits in ``bits``;
    enum: cycles through ``levels`` (raw enumeration values); toggle: a bool, true for
    ``duty`` of each ``period_s``; constant: ``value``; model: output ``output`` (default: the
    point's name) of the device's physical model ``model`` (:mod:`drivers.modbus.sim.physics`),
    whose parameters ``params`` may be given on any point of the device.
    """

    kind: Literal["sine", "ramp", "counter", "step", "status_bits", "enum", "toggle", "constant", "model"]
    mean: float = 0.0
    amplitude: float = 0.0
    noise: float = Field(0.0, ge=0.0)
    period_s: float = Field(60.0, gt=0.0)
    phase: float = 0.0
    low: float = 0.0
    high: float = 1.0
    start: float = 0.0
    rate_per_s: float = 1.0
    levels: tuple[float, ...] = ()
    bits: tuple[int, ...] = (0, 1, 2, 3)
    duty: float = Field(0.5, ge=0.0, le=1.0)
    value: float | str = 0.0
    model: str = ""
    output: str | None = None
    params: dict[str, float | str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> SignalSpec:
        from .physics import MODEL_OUTPUTS  # the models import nothing from here

        if self.kind == "model":
            if self.model not in MODEL_OUTPUTS:
                raise ValueError(f"signal kind 'model' needs 'model', one of {', '.join(sorted(MODEL_OUTPUTS))}; "
                                 f"got {self.model!r}")
            if self.output is not None and self.output not in MODEL_OUTPUTS[self.model]:
                raise ValueError(f"model {self.model!r} has no output {self.output!r}; outputs: "
                                 f"{', '.join(MODEL_OUTPUTS[self.model])}")
        elif self.model or self.output is not None or self.params:
            raise ValueError(f"'model', 'output' and 'params' are for kind 'model', not {self.kind!r}")
        if self.kind in ("step", "enum") and not self.levels:
            raise ValueError(f"signal kind {self.kind!r} needs a non-empty 'levels' list")
        if self.kind == "ramp" and not self.high > self.low:
            raise ValueError(f"ramp needs high > low, got low={self.low} high={self.high}")
        if any(not 0 <= b <= 15 for b in self.bits):
            raise ValueError(f"status_bits 'bits' must be between 0 and 15, got {self.bits}")
        return self


class SimDeviceSpec(_Frozen):
    """One simulated device: its unit id, where it is served, its register map and signals.

    Devices whose transports name the same serial path, or the same host and non-zero port,
    are served by ONE server answering all their unit ids (an RS-485 line, a gateway).
    """

    name: str = Field(min_length=1)
    unit_id: int = Field(ge=1, le=247)
    transport: Transport
    points: list[RegisterPoint] = Field(default_factory=list)
    signals: dict[str, SignalSpec] | None = None
    update_interval_ms: int = Field(1000, ge=10, le=3_600_000)

    @field_validator("points")
    @classmethod
    def _check_points(cls, points: list[RegisterPoint]) -> list[RegisterPoint]:
        seen: set[str] = set()
        for p in points:
            if p.name in seen:
                raise ValueError(f"duplicate point name {p.name!r}")
            seen.add(p.name)
            if p.dtype not in DTYPES:
                raise ValueError(f"point {p.name!r}: dtype {p.dtype!r} is not one of {', '.join(DTYPES)}")
            if p.order not in ORDERS:
                raise ValueError(f"point {p.name!r}: order {p.order!r} is not one of {', '.join(ORDERS)}")
            if p.table.is_bits and p.dtype != "bool":
                raise ValueError(f"point {p.name!r}: table {p.table.value!r} holds bits, dtype must be bool")
            if not p.table.is_bits and p.dtype == "bool" and p.bit is None:
                raise ValueError(f"point {p.name!r}: a bool in table {p.table.value!r} needs 'bit' (0-15)")
            width = 16 * p.count if p.dtype == "bool" else 16
            if p.bit is not None and not 0 <= p.bit < width:
                raise ValueError(f"point {p.name!r}: bit {p.bit} is outside 0-{width - 1}")
            if p.dtype == "string" and p.length < 1:
                raise ValueError(f"point {p.name!r}: a string needs length >= 1 (registers)")
            if not 0 <= p.address or p.end > 65536:
                raise ValueError(f"point {p.name!r}: addresses {p.address}..{p.end - 1} exceed 0..65535")
            if p.writable and not p.table.writable:
                raise ValueError(f"point {p.name!r}: table {p.table.value!r} is read-only, cannot be writable")
            if p.scale == 0:
                raise ValueError(f"point {p.name!r}: scale must not be 0")
        return points

    @model_validator(mode="after")
    def _check_signals(self) -> SimDeviceSpec:
        if self.signals:
            names = {p.name for p in self.points}
            unknown = sorted(set(self.signals) - names)
            if unknown:
                raise ValueError(f"signals name unknown points {unknown}; points are {sorted(names)}")
        return self

    def point(self, name: str) -> RegisterPoint:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"device {self.name!r} has no point {name!r}")


__all__ = [
    "SIGNAL_KINDS",
    "RtuOverTcpTransport",
    "SerialTransport",
    "SignalSpec",
    "SimDeviceSpec",
    "Table",
    "TcpTransport",
    "Transport",
]
