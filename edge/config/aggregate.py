"""Configuration models of the aggregator: a tag's ``aggregate:`` block and site-wide settings.

The lead's site-config model embeds :class:`TagAggregateConfig` as the optional
``aggregate`` key of a tag (absent: the tag has no ring) and :class:`AggregatorSettings`
as ``outputs.aggregator`` (or similar). Units are in the key names; unknown keys are errors.

Example::

    aggregate:
      windows: [1s, 10s, 1min]   # wall-clock aligned, at most 8 distinct lengths per site
      capacity_s: 600            # raw history kept, at the tag's poll rate (or capacity_samples)
      grace_ms: 2000             # how long a window waits for late samples after it ends
      opcua: true                # publish the last closed windows as OPC UA variables
                                 # (or a list of statistics: [mean, min, max, count])
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Nanoseconds per unit of a window label.
UNIT_NS = {"ms": 1_000_000, "s": 1_000_000_000, "min": 60_000_000_000, "h": 3_600_000_000_000}
_LABEL = re.compile(r"^\s*(\d+)\s*(ms|s|min|h)\s*$")
MAX_WINDOWS = 8  # distinct window lengths per store (fixed-size per-tag state in the extension)
MAX_CAPACITY_SAMPLES = 100_000_000  # per tag: 1.7 GB; anything larger is a typo
DEFAULT_MAX_MEMORY_BYTES = 1 << 30
#: Statistics of a window, in the order the aggregator emits them (``stats: full``), and the
#: subset of ``stats: basic``.
STATISTICS = ("count", "min", "max", "mean", "first", "last", "sum", "std", "twa", "good_ratio", "bad_count")
BASIC_STATISTICS = ("count", "min", "max", "mean", "sum", "good_ratio", "bad_count")


def parse_window(label: str | int) -> int:
    """Window length in ns from a label such as ``500ms``, ``1s``, ``10s``, ``1min``, ``1h``."""
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise ValueError(f"a window is a duration such as '1s', '10s', '1min'; got {label!r}")
    if isinstance(label, int):
        raise ValueError(f"a window needs a unit (ms, s, min, h): write '{label}s' or '{label}ms', not {label}")
    m = _LABEL.match(label)
    if not m:
        raise ValueError(f"cannot read window {label!r}: use a whole number and a unit ms, s, min or h, "
                         "e.g. '500ms', '1s', '10s', '1min'")
    ns = int(m.group(1)) * UNIT_NS[m.group(2)]
    if ns < UNIT_NS["ms"] * 10 or ns > UNIT_NS["h"] * 24:
        raise ValueError(f"window {label!r} out of range: allowed 10ms to 24h")
    return ns


def window_label(ns: int) -> str:
    """Canonical label of a window length (the ``window`` tag of exported windows)."""
    for unit in ("h", "min", "s", "ms"):
        if ns % UNIT_NS[unit] == 0:
            return f"{ns // UNIT_NS[unit]}{unit}"
    return f"{ns}ns"


class TagAggregateConfig(BaseModel):
    """A tag's ``aggregate:`` block: its windows, raw-history capacity and grace period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: list[str] = Field(
        default_factory=lambda: ["1s"],
        description="window lengths, wall-clock aligned: '500ms', '1s', '10s', '1min', '1h' (may be empty: ring only)")
    capacity_s: Annotated[float, Field(gt=0, le=7 * 86400)] | None = Field(
        None, description="raw samples kept, as seconds at the tag's poll interval (default 600 s)")
    capacity_samples: Annotated[int, Field(ge=1, le=MAX_CAPACITY_SAMPLES)] | None = Field(
        None, description="raw samples kept, as a count (instead of capacity_s)")
    grace_ms: Annotated[int, Field(ge=0, le=3_600_000)] = Field(
        2000, description="a window closes this long after its end; samples older than a closed window are "
        "late: counted, not merged")
    opcua: bool | tuple[str, ...] = Field(
        False, description="publish the last closed window of each length as OPC UA variables: true (every "
        "statistic the aggregator computes), false, or a list of statistics such as [mean, min, max, count]")

    @field_validator("windows", mode="before")
    @classmethod
    def _windows(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"windows must be a list of durations such as ['1s', '1min'], got {value!r}")
        seen: dict[int, str] = {}
        for label in value:
            ns = parse_window(label)
            if ns in seen:
                raise ValueError(f"window {label!r} repeats {seen[ns]!r}")
            seen[ns] = label
        if len(seen) > MAX_WINDOWS:
            raise ValueError(f"at most {MAX_WINDOWS} windows per tag, got {len(seen)}")
        return value

    @field_validator("opcua", mode="before")
    @classmethod
    def _opcua(cls, value: object) -> object:
        allowed = ", ".join(STATISTICS)
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError(f"opcua is true (every statistic), false, or a list of statistics ({allowed}); "
                             f"got {value!r}")
        if not value:
            raise ValueError("opcua: an empty list publishes nothing; write 'opcua: false' or name statistics "
                             f"({allowed})")
        seen: set[str] = set()
        for name in value:
            if not isinstance(name, str) or name not in STATISTICS:
                raise ValueError(f"opcua: unknown statistic {name!r}; allowed: {allowed}")
            if name in seen:
                raise ValueError(f"opcua: statistic {name!r} is listed twice")
            seen.add(name)
        return tuple(value)

    @model_validator(mode="after")
    def _one_capacity(self) -> TagAggregateConfig:
        if self.capacity_s is not None and self.capacity_samples is not None:
            raise ValueError("give capacity_s or capacity_samples, not both")
        if self.opcua and not self.windows:
            raise ValueError("opcua publishes closed windows, but windows is empty: add a window such as '1s'")
        return self

    def opcua_stats(self, available: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """The statistics published to OPC UA, in the aggregator's order: all of ``available``
        for ``opcua: true``, the listed ones for a list, none for ``false``."""
        if self.opcua is False:
            return ()
        if self.opcua is True:
            return tuple(available)
        return tuple(s for s in available if s in self.opcua)

    @property
    def windows_ns(self) -> list[int]:
        return [parse_window(w) for w in self.windows]

    def capacity(self, interval_ms: int) -> int:
        """Ring capacity in samples for a tag polled every ``interval_ms``."""
        if self.capacity_samples is not None:
            return self.capacity_samples
        seconds = 600.0 if self.capacity_s is None else self.capacity_s
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be > 0 to size a ring by seconds, got {interval_ms}")
        return max(1, min(MAX_CAPACITY_SAMPLES, math.ceil(seconds * 1000.0 / interval_ms)))


class AggregatorSettings(BaseModel):
    """Site-wide aggregator settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stats: Literal["full", "basic"] = Field(
        "full", description="full: count,min,max,mean,first,last,sum,std,twa,good_ratio,bad_count; "
        "basic: count,min,max,mean,sum,good_ratio,bad_count (faster)")
    max_memory_bytes: Annotated[int, Field(ge=1 << 20)] = Field(
        DEFAULT_MAX_MEMORY_BYTES, description="the rings of all tags together must fit in this (start-up check)")
    collect_interval_ms: Annotated[int, Field(ge=10, le=60_000)] = Field(
        1000, description="how often the app closes windows")
