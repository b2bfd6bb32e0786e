"""Devices' ``Status`` objects kept current at little cost per status tick.

:class:`edge.outputs.manager.Outputs` hands every device's diagnostics to the OPC UA server at
each of its periodic ticks (``outputs.aggregator.collect_interval_ms``, 1 s by default). Several
of the 17 fields change at every tick of a polling device (LastOkTime, PollsOk, Requests, the
latencies). Building a DataValue for each of them cost ~25 us per device per tick (issue 21);
most Status variables are never read or watched.

Here a tick costs one C-level attribute fetch of the raw fields and one comparison with the
last tick's; for a device whose fields moved, each changed field gets its change time and loses
its cached DataValue. A DataValue is built only

* when a client reads the variable (its Value record's read callback: asyncua's Read service and
  the initial value of a new monitored item both go through ``AddressSpace.read_attribute_value``,
  which asks the callback), or
* at the tick where a watched field (one with monitored items) changed: its items get it then,
  as before.

What a client sees is unchanged: the value of the last tick, with SourceTimestamp and
ServerTimestamp the time of the tick at which that field last changed (the first tick counts
as a change of every field, as before), the same DataTypes and browse names.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from itertools import compress
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AttributeValue

from edge.core.model import DeviceDiagnostics
from edge.outputs.opcua.fastpath import FastPublisher, ua_time
from edge.outputs.opcua.model import STATUS_FIELDS

_NEVER = datetime(1601, 1, 1, tzinfo=UTC)  # OPC UA's "no time" (a DateTime of 0)


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC) if ns else _NEVER


def _text(v: str | None) -> str:
    return v or ""


def _state(v: Any) -> str:
    return str(v.name)


def _same(v: Any) -> Any:
    return v


#: Per Status field, in STATUS_FIELDS order: the diagnostics attribute and its OPC UA value
#: (as :func:`edge.outputs.opcua.model.status_values` builds it; tests hold the two equal).
_SOURCES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "State": ("state", _state), "LastError": ("last_error", _same), "LastErrorTime": ("last_error_ns", _time),
    "LastOkTime": ("last_ok_ns", _time), "PollsOk": ("polls_ok", _same), "PollsFailed": ("polls_failed", _same),
    "Requests": ("requests", _same), "Timeouts": ("timeouts", _same), "Exceptions": ("exceptions", _same),
    "CrcErrors": ("crc_errors", _same), "Overruns": ("overruns", _same), "LatencyP50Ms": ("latency_p50_ms", float),
    "LatencyP99Ms": ("latency_p99_ms", float), "Holes": ("holes", _same),
    "UnreadablePoints": ("unreadable_points", _same), "Plugin": ("plugin", _text),
    "PluginVersion": ("plugin_version", _text),
}
assert list(_SOURCES) == list(STATUS_FIELDS), "every Status field needs its source, in order"
FIELDS: tuple[str, ...] = tuple(STATUS_FIELDS)
_RAW = operator.attrgetter(*(attr for attr, _ in _SOURCES.values()))  # one C call for all 17
_EXCEPTIONS = FIELDS.index("Exceptions")  # a dict of counts: its sum is the field
_CONVERT = tuple(conv for _, conv in _SOURCES.values())
_VTYPE = tuple(vtype for _, vtype in STATUS_FIELDS.values())
_GOOD = ua.StatusCode()
_INDEX = range(len(FIELDS))
_ALL = list(_INDEX)


def raw_fields(diag: DeviceDiagnostics) -> list[Any]:
    """The Status fields of one diagnostics record before conversion (what a tick compares)."""
    raw = list(_RAW(diag))
    exc = raw[_EXCEPTIONS]
    raw[_EXCEPTIONS] = sum(exc.values()) if exc else 0
    return raw


class DeviceStatus:
    """One device's Status variables: the last tick's raw fields, each field's change time and
    its DataValue, built on demand (see the module docstring)."""

    __slots__ = ("records", "raw", "changed_ns", "cache")

    def __init__(self, records: Sequence[AttributeValue]) -> None:
        self.records = list(records)
        self.raw: list[Any] | None = None  # none before the first tick: then every field counts as changed
        self.changed_ns = [0] * len(FIELDS)
        self.cache: list[ua.DataValue | None] = [r.value for r in self.records]  # the defaults until the first tick
        for i, record in enumerate(self.records):
            record.value_callback = partial(self.read, i)

    def read(self, i: int, _nodeid: Any = None, _attr: Any = None) -> ua.DataValue:
        """Field ``i``'s current DataValue (the Value record's read callback)."""
        dv = self.cache[i]
        if dv is None:
            assert self.raw is not None
            when = ua_time(self.changed_ns[i])
            dv = ua.DataValue(ua.Variant(_CONVERT[i](self.raw[i]), _VTYPE[i]), _GOOD, when, when)
            self.cache[i] = dv
        return dv

    def detach(self) -> None:
        """The device left the plant: its records let go of this object (the two refer to each
        other, and a frozen collector would never free the pair)."""
        for record in self.records:
            record.value_callback = None
        self.records, self.cache = [], []

    def update(self, diag: DeviceDiagnostics, now_ns: int, publisher: FastPublisher) -> int:
        """One tick: note what changed; changed fields with monitored items get their new value.
        Returns the number of changed fields."""
        raw = raw_fields(diag)
        last = self.raw
        if raw == last:
            return 0
        self.raw = raw
        # the changed fields' indices, compared in C (a Python comprehension was a fifth of a tick)
        changed = _ALL if last is None else list(compress(_INDEX, map(operator.ne, raw, last)))
        cache, changed_ns, records = self.cache, self.changed_ns, self.records
        when = None
        for i in changed:
            changed_ns[i] = now_ns
            record = records[i]
            if not record.datachange_callbacks:  # no monitored items: built when read
                cache[i] = None
                continue
            if when is None:
                when = ua_time(now_ns)
            cache[i] = dv = ua.DataValue(ua.Variant(_CONVERT[i](raw[i]), _VTYPE[i]), _GOOD, when, when)
            publisher.deliver(record, dv)
        return len(changed)
