"""Closed aggregation windows as OPC UA variables (tags configured with ``aggregate: {opcua: ...}``).

Address space, under each device that has such tags (NodeIds in the site's namespace)::

    <Device>
      Aggregates            FolderType   s=<device>#aggregates          (HasComponent from the device)
        <Tag>               BaseObject   s=<device>.<tag>#aggregates    (Organizes)
          <Window>          BaseObject   s=<device>.<tag>#aggregates.<window>     e.g. 1s, 10s, 1min
            <Stat>          variable     s=<device>.<tag>#aggregates.<window>.<Stat>

``<Stat>`` is the statistic's name in PascalCase (Count, Min, Max, Mean, First, Last, Sum, Std,
Twa, GoodRatio, BadCount), one read-only variable per statistic the tag publishes. The tag
variable cannot hold these itself: OPC UA allows a Variable only Variables as components (Part
3, HasComponent) and only Objects may organise, so the objects live in a sibling folder of the
device (like ``Status``), with the tag's name.

Values: Min/Max/Mean/First/Last/Sum/Std/Twa are Double (BaseAnalogType, with the tag's
EngineeringUnits when it has a unit; the optional EURange is left out), Count and BadCount
UInt32, GoodRatio Double (0..1). Before the first window: null, BadWaitingForInitialData.
SourceTimestamp is the window's end (the moment the statistics became complete; the start is
the end minus the window), ServerTimestamp when the server took the window. StatusCode of the
value statistics: Good when every sample of the window was good; UncertainDataSubNormal when
some were not; without any good sample the value is null and the StatusCode says why (the
quality of the window's last sample, e.g. BadNoCommunication, else BadNoData). Count, BadCount
and GoodRatio are exact facts about the window and stay Good (GoodRatio of a window without any
sample is null, BadNoData).

The aggregator emits only windows that hold samples. While a tag's live quality is Bad and its
windows stay empty (a device offline is published once as BadNoCommunication, then not polled),
each window that closes empty is published as Count 0 / BadCount 0 with the live quality's
StatusCode, so no aggregate stays Good while its source is down. A tag that is simply polled less
often than its window keeps its last window (it is not Bad).

Cost: nodes exist only for tags that publish; values live in numpy arrays (one table per window
length) and DataValues are built only when a client reads a variable or a monitored item needs
the change, like the tags' values (:mod:`edge.outputs.opcua.fastpath`).
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
from asyncua import ua
from asyncua.server.address_space import AttributeValue, NodeData

from edge.config.aggregate import STATISTICS, parse_window
from edge.core.model import STATUS_CODES, Plant, Quality, TagInfo, WindowBatch
from edge.outputs.opcua.fastpath import NEVER, FastPublisher
from edge.outputs.opcua.model import NodeFactory, unece_unit

A = ua.AttributeIds
VT = ua.VariantType

GOOD = ua.StatusCodes.Good
UNCERTAIN = ua.StatusCodes.UncertainDataSubNormal  # derived from fewer good values than required (all)
NO_DATA = ua.StatusCodes.BadNoData


class AggregateSpec(NamedTuple):
    """What one tag publishes: window labels as in ``WindowBatch.window`` ("1s", "1min"), the
    statistics (aggregator names) and the tag's grace period in ns (when its windows close)."""

    windows: tuple[str, ...]
    stats: tuple[str, ...]
    grace_ns: int = 0


@dataclass(frozen=True, slots=True)
class StatNode:
    name: str  # BrowseName
    datatype: int
    vtype: ua.VariantType
    unit: bool  # carries the tag's EngineeringUnits
    counter: bool  # describes the window (always Good) rather than its values
    text: str  # description; {w} is the window label


STAT_NODES: dict[str, StatNode] = {
    "count": StatNode("Count", ua.ObjectIds.UInt32, VT.UInt32, False, True,
                      "good samples in the last closed {w} window"),
    "min": StatNode("Min", ua.ObjectIds.Double, VT.Double, True, False,
                    "smallest good value of the last closed {w} window"),
    "max": StatNode("Max", ua.ObjectIds.Double, VT.Double, True, False,
                    "largest good value of the last closed {w} window"),
    "mean": StatNode("Mean", ua.ObjectIds.Double, VT.Double, True, False,
                     "arithmetic mean of the good values of the last closed {w} window"),
    "first": StatNode("First", ua.ObjectIds.Double, VT.Double, True, False,
                      "earliest good value of the last closed {w} window"),
    "last": StatNode("Last", ua.ObjectIds.Double, VT.Double, True, False,
                     "latest good value of the last closed {w} window"),
    "sum": StatNode("Sum", ua.ObjectIds.Double, VT.Double, True, False,
                    "sum of the good values of the last closed {w} window"),
    "std": StatNode("Std", ua.ObjectIds.Double, VT.Double, True, False,
                    "population standard deviation of the good values of the last closed {w} window"),
    "twa": StatNode("Twa", ua.ObjectIds.Double, VT.Double, True, False,
                    "time-weighted mean (step interpolation) of the last closed {w} window"),
    "good_ratio": StatNode("GoodRatio", ua.ObjectIds.Double, VT.Double, False, True,
                           "Count / (Count + BadCount) of the last closed {w} window, 0..1"),
    "bad_count": StatNode("BadCount", ua.ObjectIds.UInt32, VT.UInt32, False, True,
                          "samples of the last closed {w} window that were not Good"),
}
assert tuple(STAT_NODES) == STATISTICS
_COL = {name: i for i, name in enumerate(STATISTICS)}
_COUNT, _BAD_COUNT, _GOOD_RATIO = _COL["count"], _COL["bad_count"], _COL["good_ratio"]
_NULL = ua.Variant(None, VT.Null)
_WAITING = ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
_STATUS: dict[int, ua.StatusCode] = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_QUALITY_STATUS = np.full(256, NO_DATA, dtype=np.uint32)  # quality code -> StatusCode of an empty window
for _q in Quality:
    if _q >= Quality.BAD_NO_COMMUNICATION:
        _QUALITY_STATUS[int(_q)] = STATUS_CODES[_q]


def _status(code: int) -> ua.StatusCode:
    sc = _STATUS.get(code)
    if sc is None:
        sc = _STATUS[code] = ua.StatusCode(code)
    return sc


def _dt(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def folder_nodeid(ns: int, device: str) -> ua.NodeId:
    return ua.NodeId(f"{device}#aggregates", ns, ua.NodeIdType.String)


def aggregate_nodeid(ns: int, tag_key: str, window: str | None = None, stat: str | None = None) -> ua.NodeId:
    """``<device>.<tag>#aggregates[.<window>[.<Stat>]]``; ``stat`` is an aggregator name (``mean``)."""
    s = f"{tag_key}#aggregates"
    if window is not None:
        s += f".{window}"
        if stat is not None:
            s += f".{STAT_NODES[stat].name}"
    return ua.NodeId(s, ns, ua.NodeIdType.String)


class _Callbacks(dict):
    """A statistic variable's ``datachange_callbacks``: tells its table when a monitored item is
    added, so delivery visits only watched variables instead of checking every one."""

    __slots__ = ("entry", "watched")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.entry: tuple[AttributeValue, int, int] | None = None
        self.watched: set[tuple[AttributeValue, int, int]] | None = None

    def __setitem__(self, handle: Any, callback: Any) -> None:
        super().__setitem__(handle, callback)
        if self.watched is not None and self.entry is not None:
            self.watched.add(self.entry)


@dataclass(slots=True)
class _Slot:
    """The latest window of every published tag for one window length: a row per tag."""

    label: str
    window_ns: int
    keys: list[str] = field(default_factory=list)
    tag_ids: list[int] = field(default_factory=list)
    grace: list[int] = field(default_factory=list)
    row_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # tag id -> row, -1
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    grace_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vals: np.ndarray = field(default_factory=lambda: np.zeros((0, len(STATISTICS))))
    end_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # 0: nothing yet
    srv_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))  # of the value statistics
    watched: set[tuple[AttributeValue, int, int]] = field(default_factory=set)  # (Value record, row, column)


class AggregateStats:
    __slots__ = ("batches", "windows", "empty_windows", "ignored")

    def __init__(self) -> None:
        self.batches = self.windows = self.empty_windows = 0
        self.ignored = 0  # rows of tags (or window lengths) this server does not publish


class AggregateSpace:
    """Builds, reloads and updates the aggregate variables of an :class:`OpcUaServer`."""

    def __init__(self, publisher: FastPublisher) -> None:
        self.publisher = publisher
        self.stats = AggregateStats()
        self.factory: NodeFactory | None = None
        self.specs: dict[str, AggregateSpec] = {}  # by tag key
        self._units: dict[str, str | None] = {}
        self._folders: dict[str, NodeData] = {}
        self._tag_objs: dict[str, NodeData] = {}
        self._win_objs: dict[tuple[str, str], NodeData] = {}
        self._vars: dict[tuple[str, str, str], NodeData] = {}
        self._slots: dict[str, _Slot] = {}
        self._texts: dict[tuple[str, str], AttributeValue] = {}
        self._eu: dict[str, ua.Variant] = {}

    @staticmethod
    def specs_by_key(plant: Plant, aggregates: Mapping[int, Any] | None) -> dict[str, AggregateSpec]:
        """Tag id -> spec (or a plain ``(windows, stats, grace_ns)`` tuple) as tag key -> spec."""
        out: dict[str, AggregateSpec] = {}
        for tid, spec in (aggregates or {}).items():
            if not 0 <= tid < len(plant.tags):
                raise ValueError(f"aggregates for unknown tag id {tid} (plant has {len(plant.tags)} tags)")
            spec = AggregateSpec(*spec)
            unknown = [s for s in spec.stats if s not in STAT_NODES]
            if unknown:
                raise ValueError(f"{plant.tags[tid].key}: unknown statistics {unknown}")
            for label in spec.windows:
                parse_window(label)
            if spec.windows and spec.stats:
                out[plant.tags[tid].key] = AggregateSpec(tuple(spec.windows), tuple(spec.stats), int(spec.grace_ns))
        return out

    @property
    def node_count(self) -> int:
        return len(self._vars)

    # ------------------------------------------------------------------ nodes

    def build(self, plant: Plant, specs: dict[str, AggregateSpec], device_nodes: Mapping[str, ua.NodeId]) -> None:
        """Create the missing nodes for ``specs`` (only tags that publish are visited)."""
        f = self.factory
        assert f is not None
        self.specs = specs
        tags = plant.tag_by_key() if specs else {}
        for key, spec in specs.items():
            tag = tags[key]
            self._units[key] = tag.unit
            folder = self._folders.get(tag.device)
            if folder is None:
                folder = self._folders[tag.device] = f.add_object(
                    device_nodes[tag.device], folder_nodeid(f.ns, tag.device), "Aggregates",
                    description="statistics of closed aggregation windows, per tag", reftype="HasComponent")
            tobj = self._tag_objs.get(key)
            if tobj is None:
                tobj = self._tag_objs[key] = f.add_object(
                    folder.nodeid, aggregate_nodeid(f.ns, key), tag.name, folder=False,
                    description=f"window statistics of {key}")
            for label in spec.windows:
                wobj = self._win_objs.get((key, label))
                if wobj is None:
                    wobj = self._win_objs[(key, label)] = f.add_object(
                        tobj.nodeid, aggregate_nodeid(f.ns, key, label), label, folder=False, reftype="HasComponent",
                        description=f"last closed {label} window (wall-clock aligned); SourceTimestamp = window end")
                for stat in spec.stats:
                    if (key, label, stat) not in self._vars:
                        self._vars[(key, label, stat)] = self._add_stat(wobj, tag, label, stat)

    def _add_stat(self, wobj: NodeData, tag: TagInfo, label: str, stat: str) -> NodeData:
        f = self.factory
        assert f is not None
        meta = STAT_NODES[stat]
        # a window's statistic changes once per window: that is as fast as it can be sampled (a
        # client asking a shorter interval gets every window, not one window per requested interval)
        nd = f.add_variable(wobj, aggregate_nodeid(f.ns, tag.key, label, stat), meta.name, meta.datatype,
                            ua.Variant(None, VT.Null), typedef="BaseAnalogType" if meta.unit else "BaseDataVariableType",
                            min_interval_ms=parse_window(label) / 1e6)
        text = self._texts.get((stat, label))
        if text is None:  # shared by every tag's variable of this statistic and window, never written
            text = self._texts[(stat, label)] = AttributeValue(ua.DataValue(
                ua.Variant(ua.LocalizedText(meta.text.format(w=label)), VT.LocalizedText)))
        nd.attributes[A.Description] = text
        if meta.unit and tag.unit:
            self._add_units(nd, tag.unit)
        return nd

    def _add_units(self, nd: NodeData, unit: str | None) -> None:
        assert self.factory is not None and unit
        eu = self._eu.get(unit)
        if eu is None:
            eu = self._eu[unit] = ua.Variant(unece_unit(unit), VT.ExtensionObject)
        self.factory.add_property(nd, "EngineeringUnits", ua.ObjectIds.EUInformation, eu)

    def prune(self, plant: Plant, specs: dict[str, AggregateSpec]) -> None:
        """Before a reload's build: remove the nodes ``specs`` no longer wants, forget the ones already
        removed with their device, and refresh EngineeringUnits where a kept tag's unit changed."""
        f = self.factory
        assert f is not None
        if not specs and not self._tag_objs and not self._folders:
            return  # no aggregates before or after: nothing to visit
        tags = plant.tag_by_key()
        gone = [key for key, nd in self._tag_objs.items()
                if key not in specs or f.aspace.get(nd.nodeid) is None]
        for key in gone:
            f.remove(self._tag_objs.pop(key).nodeid)
            self._units.pop(key, None)
        for (key, label), nd in list(self._win_objs.items()):
            if key in gone or label not in specs[key].windows:
                f.remove(nd.nodeid)
                del self._win_objs[(key, label)]
        for (key, label, stat), nd in list(self._vars.items()):
            if (key, label) not in self._win_objs or stat not in specs[key].stats:
                f.remove(nd.nodeid)
                del self._vars[(key, label, stat)]
        wanted_devices = {tags[key].device for key in specs}
        for device, nd in list(self._folders.items()):
            if device not in wanted_devices or f.aspace.get(nd.nodeid) is None:
                f.remove(nd.nodeid)
                del self._folders[device]
        for key, unit in list(self._units.items()):
            if tags[key].unit != unit:
                self._units[key] = tags[key].unit
                for (k, _label, stat), nd in self._vars.items():
                    if k == key and STAT_NODES[stat].unit:
                        self._refresh_units(nd, tags[key])

    def _refresh_units(self, nd: NodeData, tag: TagInfo) -> None:
        """New unit of a kept statistic variable: its EngineeringUnits property is replaced (the node,
        a BaseAnalogType with or without the optional property, and its monitored items stay)."""
        f = self.factory
        assert f is not None
        f.remove(ua.NodeId(f"{nd.nodeid.Identifier}#EngineeringUnits", f.ns, ua.NodeIdType.String))
        if tag.unit:
            self._add_units(nd, tag.unit)

    # ------------------------------------------------------------------ values

    def snapshot(self) -> dict[tuple[str, str], tuple[np.ndarray, int, int, int]]:
        """The latest window of every (tag key, window): what :meth:`bind` takes as ``carry``."""
        out = {}
        for label, slot in self._slots.items():
            for row, key in enumerate(slot.keys):
                if slot.end_ns[row]:
                    out[(key, label)] = (slot.vals[row].copy(), int(slot.end_ns[row]), int(slot.srv_ns[row]),
                                         int(slot.status[row]))
        return out

    def bind(self, plant: Plant, carry: dict[tuple[str, str], tuple[np.ndarray, int, int, int]] | None) -> None:
        """One table per window length; every statistic variable reads from it."""
        slots: dict[str, _Slot] = {}
        tags = plant.tag_by_key() if self.specs else {}
        for key, spec in self.specs.items():
            for label in spec.windows:
                slot = slots.get(label)
                if slot is None:
                    slot = slots[label] = _Slot(label, parse_window(label))
                slot.keys.append(key)
                slot.tag_ids.append(tags[key].id)
                slot.grace.append(spec.grace_ns)
        for slot in slots.values():
            label = slot.label
            n = len(slot.keys)
            slot.ids = np.array(slot.tag_ids, dtype=np.int64)
            slot.grace_ns = np.array(slot.grace, dtype=np.int64)
            slot.row_of = np.full(len(plant.tags), -1, dtype=np.int64)
            slot.row_of[slot.ids] = np.arange(n)
            slot.vals = np.full((n, len(STATISTICS)), np.nan)
            slot.end_ns = np.zeros(n, dtype=np.int64)
            slot.srv_ns = np.zeros(n, dtype=np.int64)
            slot.status = np.zeros(n, dtype=np.uint32)
            for row, key in enumerate(slot.keys):
                for stat in self.specs[key].stats:
                    attval = self._vars[(key, label, stat)].attributes[A.Value]
                    attval.value = None
                    attval.value_callback = self._reader(slot, row, _COL[stat])
                    callbacks = attval.datachange_callbacks
                    if not isinstance(callbacks, _Callbacks):
                        callbacks = attval.datachange_callbacks = _Callbacks(callbacks)
                    callbacks.entry = (attval, row, _COL[stat])
                    callbacks.watched = slot.watched
                    if callbacks:  # a kept node with monitored items (reload)
                        slot.watched.add(callbacks.entry)
                old = carry.get((key, label)) if carry else None
                if old is not None:
                    slot.vals[row], slot.end_ns[row], slot.srv_ns[row], slot.status[row] = old
        self._slots = slots

    def _reader(self, slot: _Slot, row: int, col: int) -> Any:
        return lambda nodeid, attr: self.read_value(slot, row, col)

    def read_value(self, slot: _Slot, row: int, col: int) -> ua.DataValue:
        end = int(slot.end_ns[row])
        if not end:
            return ua.DataValue(_NULL, _WAITING)
        return self._datavalue(slot, row, col, _dt(end), _dt(int(slot.srv_ns[row])))

    @staticmethod
    def _datavalue(slot: _Slot, row: int, col: int, src: datetime, srv: datetime) -> ua.DataValue:
        v = float(slot.vals[row, col])
        meta = STAT_NODES[STATISTICS[col]]
        if meta.counter:
            if v != v:  # GoodRatio of an empty window
                return ua.DataValue(_NULL, _status(NO_DATA), src, srv)
            value = int(v) if meta.vtype == VT.UInt32 else v
            return ua.DataValue(ua.Variant(value, meta.vtype), _status(GOOD), src, srv)
        code = int(slot.status[row])
        if code & 0x80000000:
            return ua.DataValue(_NULL, _status(code), src, srv)
        return ua.DataValue(ua.Variant(v, VT.Double), _status(code), src, srv)

    def consume(self, wb: WindowBatch, quality: np.ndarray | None = None) -> int:
        """Publish closed windows (rows of tags that publish; the newest per tag); ``quality`` per row
        as from :meth:`Aggregator.window_quality` says why a window has no good sample. Returns the
        number of windows taken."""
        slot = self._slots.get(wb.window)
        self.stats.batches += 1
        if slot is None or len(wb) == 0:
            self.stats.ignored += len(wb)
            return 0
        ids = np.asarray(wb.tag_ids, dtype=np.int64)
        known = (ids >= 0) & (ids < len(slot.row_of))
        rows = np.full(len(ids), -1, dtype=np.int64)
        rows[known] = slot.row_of[ids[known]]
        end = np.asarray(wb.start_ns, dtype=np.int64) + wb.window_ns
        take = rows >= 0
        sel = np.flatnonzero(take)
        take[sel] = end[sel] > slot.end_ns[rows[sel]]  # never step back in time
        self.stats.ignored += int(np.count_nonzero(rows < 0))
        idx = np.flatnonzero(take)
        if idx.size == 0:
            return 0
        # the newest window of each tag: a batch may hold several per tag
        r = rows[idx]
        last = np.flatnonzero(np.r_[r[1:] != r[:-1], True])
        idx, r = idx[last], r[last]
        count = np.asarray(wb.stats["count"])[idx]
        bad = np.asarray(wb.stats["bad_count"])[idx]
        if quality is None:
            why = np.full(len(idx), NO_DATA, dtype=np.uint32)
        else:
            why = _QUALITY_STATUS[np.asarray(quality, dtype=np.uint8)[idx]]
        status = np.where(count == 0, why, np.where(bad > 0, UNCERTAIN, GOOD)).astype(np.uint32)
        slot.vals[r] = np.nan
        for name, col in _COL.items():
            values = wb.stats.get(name)
            if values is not None:
                slot.vals[r, col] = np.asarray(values)[idx]
        now = time.time_ns()
        slot.end_ns[r] = end[idx]
        slot.srv_ns[r] = now
        slot.status[r] = status
        self.stats.windows += len(r)
        self._deliver(slot, r, now)
        return len(r)

    def close_empty(self, now_ns: int) -> int:
        """Windows that closed by ``now_ns`` without a sample, for tags whose live quality is Bad:
        published as Count 0 with that quality's StatusCode (see the module docstring)."""
        if not self._slots:
            return 0
        live = self.publisher.last_quality  # the tags' live qualities (NEVER: nothing reported yet)
        total = 0
        for slot in self._slots.values():
            if not len(slot.ids) or int(slot.ids.max()) >= len(live):
                continue
            expected = (now_ns - slot.grace_ns) // slot.window_ns * slot.window_ns
            q = live[slot.ids]
            stale = (slot.end_ns < expected) & (q >= Quality.BAD_NO_COMMUNICATION) & (q != NEVER)
            r = np.flatnonzero(stale)
            if r.size == 0:
                continue
            slot.vals[r] = np.nan
            slot.vals[r, _COUNT] = 0.0
            slot.vals[r, _BAD_COUNT] = 0.0
            slot.end_ns[r] = expected[r]
            slot.srv_ns[r] = now_ns
            slot.status[r] = _QUALITY_STATUS[q[r]]
            self._deliver(slot, r, now_ns)
            total += len(r)
        self.stats.empty_windows += total
        return total

    def _deliver(self, slot: _Slot, rows: np.ndarray, srv_ns: int) -> None:
        """DataValues for the updated variables that have monitored items (no object for the others)."""
        if not slot.watched:
            return
        updated = np.zeros(len(slot.keys), dtype=bool)
        updated[rows] = True
        srv = _dt(srv_ns)
        ends: dict[int, datetime] = {}
        deliver = self.publisher.deliver
        for entry in list(slot.watched):
            attval, row, col = entry
            if not attval.datachange_callbacks:  # its monitored items are gone
                slot.watched.discard(entry)
                continue
            if not updated[row]:
                continue
            end = int(slot.end_ns[row])
            src = ends.get(end)
            if src is None:
                src = ends[end] = _dt(end)
            deliver(attval, self._datavalue(slot, row, col, src, srv))
