"""Faults that a simulated device can be switched into at run time, and the decision per request.

Each device holds at most one fault of each kind; :meth:`FaultSet.decide` turns the active
ones into what the server does with one request. ``probability`` below 1 makes a fault
intermittent (drawn per request), which the soak tests use.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.modbus.points import Table


class Fault(StrEnum):
    SILENCE = "silence"  # no reply at all: the master times out
    BUSY = "busy"  # exception 6 (server device busy)
    ILLEGAL_ADDRESS = "illegal_address"  # exception 2 for requests touching [start, start + count)
    GARBAGE = "garbage"  # random bytes instead of the reply
    BAD_CRC = "bad_crc"  # the right reply with a broken CRC (RTU framing only)
    SLOW = "slow"  # the reply is delayed by delay_ms
    OFFLINE = "offline"  # the device is gone: silence; a TCP port with only gone devices closes


class FaultSpec(BaseModel):
    """One active fault and its parameters (validated, so a typo is a clear error)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fault: Fault
    probability: float = Field(1.0, ge=0.0, le=1.0)
    delay_ms: float = Field(0.0, ge=0.0, le=600_000.0)
    start: int = Field(0, ge=0, le=65535)
    count: int = Field(1, ge=1, le=65536)
    table: Table | None = None  # illegal_address: only this table (default: every table)

    @model_validator(mode="after")
    def _check(self) -> FaultSpec:
        if self.fault is Fault.SLOW and self.delay_ms <= 0:
            raise ValueError("fault 'slow' needs delay_ms > 0")
        if self.fault is not Fault.SLOW and self.delay_ms:
            raise ValueError(f"delay_ms only applies to fault 'slow', not {self.fault.value!r}")
        return self

    def hits_range(self, table: Table, address: int, count: int) -> bool:
        if self.table is not None and self.table is not table:
            return False
        return address < self.start + self.count and self.start < address + max(count, 1)


@dataclass(slots=True)
class Decision:
    """What to do with one request: drop it, answer with an exception, corrupt it, delay it."""

    drop: bool = False
    exception: int = 0
    corrupt: Fault | None = None  # GARBAGE or BAD_CRC
    delay_s: float = 0.0


class FaultSet:
    """The active faults of one device."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.active: dict[Fault, FaultSpec] = {}
        self._rng = rng or random.Random(0)

    def set(self, spec: FaultSpec) -> None:
        self.active[spec.fault] = spec

    def clear(self, fault: Fault | None = None) -> None:
        if fault is None:
            self.active.clear()
        else:
            self.active.pop(fault, None)

    @property
    def offline(self) -> bool:
        return Fault.OFFLINE in self.active

    def _fires(self, fault: Fault) -> FaultSpec | None:
        spec = self.active.get(fault)
        if spec is None or (spec.probability < 1.0 and self._rng.random() >= spec.probability):
            return None
        return spec

    def decide(self, table: Table | None, address: int, count: int) -> Decision:
        """The outcome for a request on ``table`` (None for a function without a table)."""
        decision = Decision()
        if not self.active:
            return decision
        if self._fires(Fault.OFFLINE) or self._fires(Fault.SILENCE):
            decision.drop = True
            return decision
        if (slow := self._fires(Fault.SLOW)) is not None:
            decision.delay_s = slow.delay_ms / 1000.0
        illegal = self.active.get(Fault.ILLEGAL_ADDRESS)
        if illegal and table is not None and illegal.hits_range(table, address, count) and self._fires(
            Fault.ILLEGAL_ADDRESS
        ):
            decision.exception = 2
        elif self._fires(Fault.BUSY):
            decision.exception = 6
        for corrupt in (Fault.GARBAGE, Fault.BAD_CRC):
            if self._fires(corrupt):
                decision.corrupt = corrupt
        return decision
