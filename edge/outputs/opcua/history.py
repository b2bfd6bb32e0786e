"""OPC UA HistoryRead (Part 11) and processed reads (Part 13) over the appliance's raw history.

asyncua 2.1's history manager answers only raw reads, ignores ReturnBounds, TimestampsToReturn
and ReleaseContinuationPoints, and makes continuation points from a timestamp only when the
server's own cap is hit: a client that asks for 100 values per node gets 100 values and no
continuation point, so a historian that pages silently loses data. This module answers the
whole HistoryRead service instead:

* **Raw** (``ReadRawModifiedDetails``, IsReadModified false): values with StartTime <= ts <
  EndTime, oldest first; newest first when StartTime > EndTime (then EndTime < ts <= StartTime)
  or when only EndTime is given. ``NumValuesPerNode`` (and the server's ``history_max_values``)
  cap one response; the rest is behind a ContinuationPoint, until every value is read. With
  ``ReturnBounds`` the bounding values come first and last (the value at or before the start,
  at or after the end; ``BadBoundNotFound`` with the bound's time when there is none) and count
  towards NumValuesPerNode.
* **Processed** (``ReadProcessedDetails``): Average, Minimum, Maximum, Count and Interpolative
  per ProcessingInterval from StartTime (0: one interval over the whole range). Average,
  Minimum, Maximum and Count come from the compiled aggregator's window kernel
  (:class:`edge.aggregate.RingStore`, the same code as the live windows), Interpolative from the
  bounding raw values (linear; stepped for discrete tags). StatusCodes carry the historian bits
  (Calculated, Interpolated); an interval with bad samples is Uncertain_DataSubNormal, one
  without good data BadNoData (Count: 0, Good).
* ``TimestampsToReturn``: Source, Server or Both (the appliance stamps a sample once, when the
  response arrives: both timestamps are that time); Neither is BadTimestampsToReturnInvalid.
* Continuation points are random 16-byte tokens into a bounded table (oldest evicted, released
  when the last page is read or the client releases them); an unknown one is
  BadContinuationPointInvalid.

The raw data come from the injected ``source(tag_id, t0_ns, t1_ns, max_values, newest_first)``
(:meth:`edge.outputs.manager.Outputs.history`: the ring buffer, else the spool).

asyncua fence: :func:`install` replaces one method, ``iserver.history_manager.read_history``, on
this server's instance only (pinned to asyncua 2.1, setup.py); :func:`uninstall` restores it.
``tests/outputs/opcua/test_opcua_history.py`` exercises it with asyncua's and node-opcua's clients.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from asyncua import ua

from edge.core.model import STATUS_CODES, Quality, TagInfo
from edge.storage.history import HistoryArrays

if TYPE_CHECKING:
    from edge.outputs.opcua.server import OpcUaServer

log = logging.getLogger(__name__)

Source = Callable[[int, int, int, int, bool], HistoryArrays | Awaitable[HistoryArrays]]

SC = ua.StatusCodes
MAX_NS = 2**62
MAX_CONTINUATION_POINTS = 500
MAX_PROCESSED_INPUT = 2_000_000  # raw samples one processed read may aggregate
MAX_INTERVALS = 1_000_000
#: Part 11 historian bits of a StatusCode (InfoType DataValue + HistorianCalculated/Interpolated).
CALCULATED = 0x0400 | 0x1
INTERPOLATED = 0x0400 | 0x2
UNCERTAIN_SUBNORMAL = 0x40A40000  # Uncertain_DataSubNormal: some samples of the interval were bad
AGGREGATES = {
    ua.NodeId(ua.ObjectIds.AggregateFunction_Average): "average",
    ua.NodeId(ua.ObjectIds.AggregateFunction_Minimum): "minimum",
    ua.NodeId(ua.ObjectIds.AggregateFunction_Maximum): "maximum",
    ua.NodeId(ua.ObjectIds.AggregateFunction_Count): "count",
    ua.NodeId(ua.ObjectIds.AggregateFunction_Interpolative): "interpolative",
}
_VARIANT = {
    "bool": ua.VariantType.Boolean, "int16": ua.VariantType.Int16, "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32, "uint32": ua.VariantType.UInt32, "int64": ua.VariantType.Int64,
    "uint64": ua.VariantType.UInt64, "float32": ua.VariantType.Float, "float64": ua.VariantType.Double,
    "string": ua.VariantType.String,
}
_NULL = ua.Variant(None, ua.VariantType.Null)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# ----------------------------------------------------------------------------- values


def to_ns(t: datetime | None) -> int | None:
    """A request time as ns since the epoch; None when unspecified (null or the OPC UA minimum)."""
    if t is None or t <= ua.get_win_epoch():
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _MICROSECOND * 1000


def to_dt(ns: int) -> datetime:
    """ns since the epoch as an OPC UA DateTime (microseconds: what a datetime holds)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def variant(tag: TagInfo, value: float, text: str | None = None) -> ua.Variant:
    """A stored value (float64, or the text of a string tag) as a Variant of the tag's type."""
    vt = _VARIANT[tag.dtype]
    if tag.dtype == "string":
        return ua.Variant(text, vt) if text is not None else _NULL
    if math.isnan(value):
        return _NULL
    if tag.dtype == "bool":
        return ua.Variant(value != 0.0, vt)
    if vt in (ua.VariantType.Float, ua.VariantType.Double):
        return ua.Variant(value, vt)
    return ua.Variant(int(value), vt)


def status_of(q: int) -> int:
    return STATUS_CODES.get(Quality(q), STATUS_CODES[Quality.BAD_CONFIG_ERROR]) if q < len(Quality) \
        else STATUS_CODES[Quality.BAD_CONFIG_ERROR]


def datavalue(v: ua.Variant, status: int, ts_ns: int, stamps: ua.TimestampsToReturn) -> ua.DataValue:
    """A DataValue with the timestamps the client asked for (both are the sample's time)."""
    t = to_dt(ts_ns)
    src = t if stamps in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Both) else None
    srv = t if stamps in (ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Both) else None
    return ua.DataValue(v, ua.StatusCode(status), src, srv)


def raw_datavalues(tag: TagInfo, h: HistoryArrays, stamps: ua.TimestampsToReturn) -> list[ua.DataValue]:
    """DataValues for raw history arrays, typed like the tag's live values (never truncated)."""
    out = []
    texts = h.texts
    for i, (t, v, q) in enumerate(zip(np.asarray(h.ts).tolist(), np.asarray(h.values, dtype=np.float64).tolist(),
                                      np.asarray(h.quality).tolist(), strict=True)):
        var = _NULL if q >= Quality.BAD_NO_COMMUNICATION else variant(tag, v, texts[i] if texts else None)
        status = status_of(q)
        if var is _NULL and status == 0:
            status = STATUS_CODES[Quality.BAD_CONFIG_ERROR]  # a Good sample without a representable value
        out.append(datavalue(var, status, t, stamps))
    return out


# ----------------------------------------------------------------------------- raw reads


@dataclass
class RawCursor:
    """Where a paged raw read goes on (kept behind a continuation point)."""

    tag: TagInfo
    lo: int  # the data range [lo, hi), in ns
    hi: int
    newest_first: bool
    per_call: int  # values per response (NumValuesPerNode capped by the server)
    bounds: bool
    start_ns: int | None  # the request's times, for the bounds
    end_ns: int | None
    stamps: ua.TimestampsToReturn
    cursor: int = 0  # next timestamp to return (oldest-first: >= it; newest-first: <= it)
    skip: int = 0  # values at exactly ``cursor`` already returned
    first: bool = True
    data_done: bool = False
    end_bound_done: bool = False


@dataclass
class ProcessedCursor:
    """The remaining intervals of a processed read."""

    values: list[ua.DataValue]
    pos: int = 0


@dataclass
class HistoryService:
    """The HistoryRead service of one :class:`~edge.outputs.opcua.server.OpcUaServer`."""

    owner: OpcUaServer
    source: Source
    max_values: int
    max_points: int = MAX_CONTINUATION_POINTS
    points: OrderedDict[bytes, RawCursor | ProcessedCursor] = field(default_factory=OrderedDict)
    counters: dict[str, int] = field(default_factory=lambda: {"raw": 0, "processed": 0, "pages": 0,
                                                              "released": 0, "evicted": 0, "invalid": 0})

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        """The service: one result per node to read."""
        details = params.HistoryReadDetails
        out = []
        for index, rv in enumerate(params.NodesToRead):
            try:
                out.append(await self._one(details, params.TimestampsToReturn, params.ReleaseContinuationPoints,
                                           rv, index))
            except Exception:  # noqa: BLE001 - one node's failure must not fail the others
                log.exception("OPC UA HistoryRead of %s failed", rv.NodeId)
                out.append(_result(SC.BadInternalError))
        return out

    async def _one(self, details: Any, stamps: ua.TimestampsToReturn, release: bool,
                   rv: ua.HistoryReadValueId, index: int) -> ua.HistoryReadResult:
        if rv.ContinuationPoint:
            state = self.points.pop(bytes(rv.ContinuationPoint), None)
            if state is None:
                self.counters["invalid"] += 1
                return _result(SC.BadContinuationPointInvalid)
            if release:
                self.counters["released"] += 1
                return _result(SC.Good)
            return await self._page(state) if isinstance(state, RawCursor) else self._processed_page(state)
        if release:
            return _result(SC.Good)
        tag = self.owner.tag_for_nodeid(rv.NodeId)
        if tag is None:
            return _result(SC.BadHistoryOperationUnsupported if self.owner.has_node(rv.NodeId)
                           else SC.BadNodeIdUnknown)
        if stamps not in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Both):
            return _result(SC.BadTimestampsToReturnInvalid)
        if rv.IndexRange:
            return _result(SC.BadIndexRangeInvalid)
        if isinstance(details, ua.ReadRawModifiedDetails) and not details.IsReadModified:
            return await self._raw(tag, details, stamps)
        if isinstance(details, ua.ReadProcessedDetails):
            return await self._processed(tag, details, stamps, index)
        return _result(SC.BadHistoryOperationUnsupported)

    # -------------------------------------------------------------- raw

    async def _raw(self, tag: TagInfo, d: ua.ReadRawModifiedDetails, stamps: ua.TimestampsToReturn
                   ) -> ua.HistoryReadResult:
        start, end = to_ns(d.StartTime), to_ns(d.EndTime)
        n = int(d.NumValuesPerNode or 0)
        if start is None and end is None or (start is None or end is None) and n == 0:
            return _result(SC.BadInvalidTimestampArgument)
        self.counters["raw"] += 1
        if end is None:
            assert start is not None  # not both (refused above)
            lo, hi, newest_first = start, MAX_NS, False
        elif start is None:
            lo, hi, newest_first = 0, end + 1, True
        elif start <= end:
            lo, hi, newest_first = start, end, False
        else:
            lo, hi, newest_first = end + 1, start + 1, True
        per_call = min(n, self.max_values) if n else self.max_values
        cur = RawCursor(tag, lo, hi, newest_first, per_call, bool(d.ReturnBounds), start, end, stamps,
                        cursor=hi - 1 if newest_first else lo)
        return await self._page(cur)

    async def _page(self, cur: RawCursor) -> ua.HistoryReadResult:
        """One response of a raw read: bounds, then values from the cursor, then a continuation point."""
        self.counters["pages"] += 1
        out: list[ua.DataValue] = []
        room = cur.per_call
        if cur.first and cur.bounds:
            bound = await self._start_bound(cur)
            if bound is not None:
                out.append(bound)
                room -= 1
        cur.first = False
        if not cur.data_done and room > 0:
            values = await self._fetch_from_cursor(cur, room + 1)
            page = _slice(values, slice(0, room))
            if len(values.ts) <= room:
                cur.data_done = True
            out.extend(raw_datavalues(cur.tag, page, cur.stamps))
            room -= len(page.ts)
            self._advance(cur, page)
        if cur.data_done and cur.bounds and not cur.end_bound_done and room > 0:
            out.append(await self._end_bound(cur))
            cur.end_bound_done = True
        more = not cur.data_done or (cur.bounds and not cur.end_bound_done)
        return self._with_point(_history(out), cur if more else None)

    async def _fetch_from_cursor(self, cur: RawCursor, want: int) -> HistoryArrays:
        """Up to ``want`` values from the cursor on, those at the cursor already returned left out."""
        if cur.newest_first:
            h = await self._read(cur.tag.id, cur.lo, cur.cursor + 1, want + cur.skip, True)
        else:
            h = await self._read(cur.tag.id, cur.cursor, cur.hi, want + cur.skip, False)
        return _slice(h, slice(cur.skip, None)) if cur.skip else h

    @staticmethod
    def _advance(cur: RawCursor, page: HistoryArrays) -> None:
        """Move the cursor to the last returned timestamp, counting the values returned there."""
        if not len(page.ts):
            return
        last = int(page.ts[-1])
        same = int(np.count_nonzero(np.asarray(page.ts) == last))
        cur.skip = same + (cur.skip if last == cur.cursor and same == len(page.ts) else 0)
        cur.cursor = last

    async def _start_bound(self, cur: RawCursor) -> ua.DataValue | None:
        """The bounding value at the start: None when a value lies exactly at the start (it comes first anyway)."""
        t = cur.start_ns if cur.start_ns is not None else None
        if t is None:
            return None
        if cur.newest_first:  # at or after the start
            h = await self._read(cur.tag.id, t, MAX_NS, 1, False)
        else:  # at or before the start
            h = await self._read(cur.tag.id, 0, t + 1, 1, True)
        if len(h.ts) and int(h.ts[0]) == t and cur.lo <= t < cur.hi:
            return None
        return self._bound_value(cur, h, t)

    async def _end_bound(self, cur: RawCursor) -> ua.DataValue:
        t = cur.end_ns
        if t is None:
            return datavalue(_NULL, SC.BadBoundNotFound, cur.hi if not cur.newest_first else cur.lo, cur.stamps)
        if cur.newest_first:  # at or before the end
            h = await self._read(cur.tag.id, 0, t + 1, 1, True)
        else:  # at or after the end
            h = await self._read(cur.tag.id, t, MAX_NS, 1, False)
        return self._bound_value(cur, h, t)

    @staticmethod
    def _bound_value(cur: RawCursor, h: HistoryArrays, t: int) -> ua.DataValue:
        if not len(h.ts):
            return datavalue(_NULL, SC.BadBoundNotFound, t, cur.stamps)
        return raw_datavalues(cur.tag, h, cur.stamps)[0]

    async def _read(self, tag_id: int, t0: int, t1: int, n: int, newest_first: bool) -> HistoryArrays:
        if t1 <= t0 or n <= 0:
            return HistoryArrays(np.empty(0, np.int64), np.empty(0), np.empty(0, np.uint8), None)
        result = self.source(tag_id, max(t0, 0), min(t1, MAX_NS), n, newest_first)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, HistoryArrays):
            result = HistoryArrays(*result)
        return result

    def _with_point(self, result: ua.HistoryReadResult, state: RawCursor | ProcessedCursor | None
                    ) -> ua.HistoryReadResult:
        if state is None:
            return result
        if len(self.points) >= self.max_points:
            self.points.popitem(last=False)
            self.counters["evicted"] += 1
        token = os.urandom(16)
        self.points[token] = state
        result.ContinuationPoint = token
        return result

    # -------------------------------------------------------------- processed

    async def _processed(self, tag: TagInfo, d: ua.ReadProcessedDetails, stamps: ua.TimestampsToReturn,
                         index: int) -> ua.HistoryReadResult:
        """One aggregate per node (the request lists them in node order) over its intervals."""
        start, end = to_ns(d.StartTime), to_ns(d.EndTime)
        if start is None or end is None or start == end:
            return _result(SC.BadInvalidTimestampArgument)
        if index >= len(d.AggregateType or []):
            return _result(SC.BadAggregateListMismatch)
        name = AGGREGATES.get(d.AggregateType[index])
        if name is None:
            return _result(SC.BadAggregateNotSupported)
        if tag.dtype == "string" and name != "count":
            return _result(SC.BadAggregateNotSupported)
        self.counters["processed"] += 1
        span = abs(end - start)
        width = int(round(float(d.ProcessingInterval or 0.0) * 1e6)) or span
        if width <= 0 or -(-span // width) > MAX_INTERVALS:
            return _result(SC.BadAggregateInvalidInputs)
        n_int = -(-span // width)
        reverse = start > end
        lo, hi = (end, start) if reverse else (start, end)
        raw = await self._read(tag.id, lo, hi, MAX_PROCESSED_INPUT + 1, False)
        if len(raw.ts) > MAX_PROCESSED_INPUT:
            return _result(SC.BadAggregateInvalidInputs)
        # the grid: interval j covers [origin + j*width, origin + (j+1)*width); reverse reads list it
        # from StartTime backwards, each stamped with its later edge (where it starts, going back)
        origin = start - n_int * width if reverse else start
        grid = list(range(n_int - 1, -1, -1)) if reverse else list(range(n_int))
        stamps_at = [origin + (j + 1) * width if reverse else origin + j * width for j in grid]
        if name == "interpolative":
            values = await self._interpolative(tag, raw, stamps_at, stamps, lo, hi)
        else:
            stats = interval_stats(raw, origin, width, n_int)
            values = self._windows(tag, name, stats, grid, stamps_at, stamps)
        return self._processed_page(ProcessedCursor(values))

    def _processed_page(self, cur: ProcessedCursor) -> ua.HistoryReadResult:
        self.counters["pages"] += 1
        page = cur.values[cur.pos: cur.pos + self.max_values]
        cur.pos += len(page)
        return self._with_point(_history(page), cur if cur.pos < len(cur.values) else None)

    @staticmethod
    def _windows(tag: TagInfo, name: str, stats: dict[str, np.ndarray], grid: list[int], stamps_at: list[int],
                 stamps: ua.TimestampsToReturn) -> list[ua.DataValue]:
        """Average, Minimum, Maximum or Count of each interval (grid index), as DataValues."""
        out = []
        for j, at in zip(grid, stamps_at, strict=True):
            count, bad = int(stats["count"][j]), int(stats["bad_count"][j])
            if name == "count":
                out.append(datavalue(ua.Variant(count, ua.VariantType.Int32), SC.Good | CALCULATED, at, stamps))
                continue
            if count == 0:
                out.append(datavalue(_NULL, SC.BadNoData, at, stamps))
                continue
            status = (UNCERTAIN_SUBNORMAL if bad else SC.Good) | CALCULATED
            if name == "average":
                var = ua.Variant(float(stats["mean"][j]), ua.VariantType.Double)
            else:
                var = variant(tag, float(stats["min" if name == "minimum" else "max"][j]))
            out.append(datavalue(var, status, at, stamps))
        return out

    async def _interpolative(self, tag: TagInfo, raw: HistoryArrays, times: list[int],
                             stamps: ua.TimestampsToReturn, lo: int, hi: int) -> list[ua.DataValue]:
        """The value at each interval start from its bounding good raw values (stepped for discrete tags)."""
        good = (np.asarray(raw.quality) == 0) & ~np.isnan(np.asarray(raw.values, dtype=np.float64))
        ts = np.asarray(raw.ts, dtype=np.int64)[good]
        vs = np.asarray(raw.values, dtype=np.float64)[good]
        before = await self._read(tag.id, 0, lo, 8, True)
        after = await self._read(tag.id, hi, MAX_NS, 8, False)
        for h, at_end in ((before, False), (after, True)):
            ok = (np.asarray(h.quality) == 0) & ~np.isnan(np.asarray(h.values, dtype=np.float64))
            if ok.any():
                j = int(np.flatnonzero(ok)[0])
                bound_t, v = np.int64(h.ts[j]), float(h.values[j])
                ts = np.append(ts, bound_t) if at_end else np.insert(ts, 0, bound_t)
                vs = np.append(vs, v) if at_end else np.insert(vs, 0, v)
        out = []
        stepped = tag.is_discrete
        for t in times:
            i = int(np.searchsorted(ts, t, side="left"))
            if i < len(ts) and ts[i] == t:
                out.append(datavalue(variant(tag, float(vs[i])) if stepped else ua.Variant(float(vs[i]), ua.VariantType.Double),
                                     SC.Good | 0x0400, t, stamps))
                continue
            if i == 0 or i == len(ts):
                out.append(datavalue(_NULL, SC.BadNoData, t, stamps))
                continue
            t0, t1, v0, v1 = int(ts[i - 1]), int(ts[i]), float(vs[i - 1]), float(vs[i])
            if stepped:
                var = variant(tag, v0)
            else:
                var = ua.Variant(v0 + (v1 - v0) * (t - t0) / (t1 - t0), ua.VariantType.Double)
            out.append(datavalue(var, SC.Good | INTERPOLATED, t, stamps))
        return out


def _slice(h: HistoryArrays, s: slice) -> HistoryArrays:
    return HistoryArrays(np.asarray(h.ts)[s], np.asarray(h.values)[s], np.asarray(h.quality)[s],
                         h.texts[s] if h.texts is not None else None)


def interval_stats(raw: HistoryArrays, origin: int, width: int, n: int) -> dict[str, np.ndarray]:
    """count (good samples), bad_count, min, max, mean of the intervals [origin + j*width, origin +
    (j+1)*width), j < n, by the compiled aggregator: the samples go through a RingStore window of
    that width, with time shifted so that its epoch-aligned windows fall on the intervals."""
    from edge.aggregate import RingStore

    out = {"count": np.zeros(n, np.int64), "bad_count": np.zeros(n, np.int64),
           "min": np.full(n, np.nan), "max": np.full(n, np.nan), "mean": np.full(n, np.nan)}
    ts = np.asarray(raw.ts, dtype=np.int64)
    keep = (ts >= origin) & (ts < origin + n * width)
    if not n or not keep.any():
        return out
    base = width * (1 + abs(origin) // width)  # a sample at origin + j*width + r lands at base + j*width + r
    order = np.argsort(ts[keep], kind="stable")
    store = RingStore()
    store.add_tag(0, int(keep.sum()), (width,), 0)
    store.push_many(0, np.ascontiguousarray((ts[keep] - origin + base)[order]),
                    np.ascontiguousarray(np.asarray(raw.values, dtype=np.float64)[keep][order]),
                    np.ascontiguousarray(np.asarray(raw.quality, dtype=np.uint8)[keep][order]))
    for _w, _tags, wstarts, stats in store.collect(2**62):
        for i, j in enumerate(((np.asarray(wstarts, dtype=np.int64) - base) // width).tolist()):
            if 0 <= j < n:
                out["count"][j] = int(stats["count"][i])
                out["bad_count"][j] = int(stats["bad_count"][i]) if "bad_count" in stats else 0
                for name in ("min", "max", "mean"):
                    out[name][j] = float(stats[name][i])
    return out


def _history(values: list[ua.DataValue]) -> ua.HistoryReadResult:
    result = ua.HistoryReadResult()
    result.StatusCode = ua.StatusCode(SC.Good)
    result.HistoryData = ua.HistoryData()
    result.HistoryData.DataValues = values
    return result


def _result(code: int) -> ua.HistoryReadResult:
    result = ua.HistoryReadResult()
    result.StatusCode = ua.StatusCode(code)
    return result


# ----------------------------------------------------------------------------- capabilities

_CAP = "HistoryServerCapabilities_"
#: What this historian does (Part 11, 5.4.2): raw and processed reads of data; nothing it writes.
_HISTORY_FLAGS = {
    "AccessHistoryDataCapability": True, "AccessHistoryEventsCapability": False,
    "InsertDataCapability": False, "ReplaceDataCapability": False, "UpdateDataCapability": False,
    "DeleteRawCapability": False, "DeleteAtTimeCapability": False, "InsertEventCapability": False,
    "ReplaceEventCapability": False, "UpdateEventCapability": False, "DeleteEventCapability": False,
    "InsertAnnotationCapability": False,
    "ServerTimestampSupported": False,  # a sample has one time: its ServerTimestamp is its SourceTimestamp
}


async def advertise(server: Any, max_values: int | None) -> None:
    """Fill the Server object's HistoryServerCapabilities (asyncua leaves them null): access to data
    history (when a history source is wired: ``max_values`` not None), MaxReturnDataValues, the
    continuation points kept, and the aggregates of processed reads under both AggregateFunctions
    folders (HistoryServerCapabilities' and ServerCapabilities')."""
    def node(name: str) -> Any:
        return server.get_node(ua.NodeId(getattr(ua.ObjectIds, name)))

    enabled = max_values is not None
    for name, flag in _HISTORY_FLAGS.items():
        await node(_CAP + name).write_value(ua.Variant(flag and enabled, ua.VariantType.Boolean))
    await node(_CAP + "MaxReturnDataValues").write_value(ua.Variant(max_values or 0, ua.VariantType.UInt32))
    await node(_CAP + "MaxReturnEventValues").write_value(ua.Variant(0, ua.VariantType.UInt32))
    await node("Server_ServerCapabilities_MaxHistoryContinuationPoints").write_value(
        ua.Variant(MAX_CONTINUATION_POINTS if enabled else 0, ua.VariantType.UInt16))
    if not enabled:
        return
    for folder in (_CAP + "AggregateFunctions", "Server_ServerCapabilities_AggregateFunctions"):
        present = {ref.NodeId for ref in await node(folder).get_references(ua.ObjectIds.Organizes)}
        for function in AGGREGATES:
            if function not in present:
                await node(folder).add_reference(function, ua.ObjectIds.Organizes, forward=True, bidirectional=False)


# ----------------------------------------------------------------------------- the asyncua fence


def install(iserver: Any, service: HistoryService) -> None:
    """Answer HistoryRead on this asyncua 2.1 server with ``service`` (instance attribute only)."""
    manager = iserver.history_manager
    if not hasattr(manager, "_edge_library_read_history"):
        manager._edge_library_read_history = manager.read_history

    manager.read_history = service.read_history


def uninstall(iserver: Any) -> None:
    """Back to asyncua's own history manager."""
    manager = iserver.history_manager
    library = getattr(manager, "_edge_library_read_history", None)
    if library is not None:
        manager.read_history = library
        del manager._edge_library_read_history
