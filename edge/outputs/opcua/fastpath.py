"""The hot path from sample batches to OPC UA subscribers (no asyncua fork, no per-node calls).

:meth:`FastPublisher.consume` takes one :class:`edge.core.model.SampleBatch` and

1. decides with numpy which samples are *reportable*: the quality changed, or the value moved
   by more than the tag's deadband from the value **last reported** (not the previous sample,
   so slow drift is reported once it adds up), or the value appeared/disappeared (NaN);
2. builds one ``DataValue`` per reportable sample (value of the tag's OPC UA type, StatusCode
   from the quality, the poll's SourceTimestamp, one ServerTimestamp per batch) and stores it
   as the node's Value (what Read returns);
3. hands it to every monitored item on that node directly: asyncua's own data-change path
   deep-copies each value, runs three service layers and builds throw-away objects per change
   (measured ~110 ms of CPU per 1,000 changes here); this path keeps the item's last value by
   reference (DataValues are never mutated after creation), applies the client's own
   DataChangeFilter (trigger, absolute deadband against the last value sent to that item) and
   appends the notification to the subscription's queue, capped at the item's queue size so a
   slow client costs bounded memory.

It relies on asyncua 2.1 internals (``MonitoredItemService._monitored_datachange``,
``_monitored_items``, ``InternalSubscription._triggered_datachanges``); ``tests/outputs/opcua`` checks
the delivered notifications end to end with two client stacks, so an asyncua upgrade that
changes them fails there. Any other kind of data-change callback (e.g. asyncua's history
subscription) is called the library's way.
"""
from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.server.address_space import AttributeValue
from asyncua.server.monitored_item_service import MonitoredItemService
from asyncua.ua import ua_binary

from edge.core.model import STATUS_CODES, Quality, SampleBatch, TagInfo

log = logging.getLogger(__name__)

KIND_FLOAT, KIND_INT, KIND_BOOL, KIND_STRING = 0, 1, 2, 3
NEVER = 255  # last_quality of a tag never reported
_KIND = {"bool": KIND_BOOL, "string": KIND_STRING, "float32": KIND_FLOAT, "float64": KIND_FLOAT}
_VTYPE = {
    "bool": ua.VariantType.Boolean, "int16": ua.VariantType.Int16, "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32, "uint32": ua.VariantType.UInt32, "int64": ua.VariantType.Int64,
    "uint64": ua.VariantType.UInt64, "float32": ua.VariantType.Float, "float64": ua.VariantType.Double,
    "string": ua.VariantType.String,
}
_STATUS = [ua.StatusCode(STATUS_CODES[q]) for q in Quality]
_BAD_CONFIG = ua.StatusCode(STATUS_CODES[Quality.BAD_CONFIG_ERROR])
_NULL = ua.Variant(None, ua.VariantType.Null)
_WAITING = ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
_DISABLED = ua.MonitoringMode.Disabled
_TRIGGER_STATUS = int(ua.DataChangeTrigger.Status)
_ABSOLUTE = int(ua.DeadbandType.Absolute)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ua_time(ns: int) -> datetime:
    """A sample's time as the server sends it: the whole microseconds of ``ns`` (exact integer
    arithmetic; the same as HistoryRead, so a client finds a live value's sample in history)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


class PublisherStats:
    """Counters of the hot path, shown by the server's diagnostics."""

    __slots__ = ("batches", "samples", "reported", "notifications", "dropped_unknown_tag", "bad_values")

    def __init__(self) -> None:
        self.batches = self.samples = self.reported = self.notifications = 0
        self.dropped_unknown_tag = 0  # tag ids outside the plant (counted, never raised)
        self.bad_values = 0  # Good samples that cannot be represented (NaN for an integer tag)


class FastPublisher:
    """Deadband at the source and direct delivery of value changes to monitored items."""

    def __init__(self) -> None:
        self.stats = PublisherStats()
        self._attvals: list[AttributeValue | None] = []
        self._kinds: list[int] = []
        self._vtypes: list[ua.VariantType] = []
        self._deadband = np.zeros(0)
        self._last_v = np.zeros(0)
        self._last_q = np.zeros(0, dtype=np.uint8)
        self._is_string = np.zeros(0, dtype=bool)
        self._is_float = np.zeros(0, dtype=bool)
        self._last_src = np.zeros(0, dtype=np.int64)
        self._last_srv = np.zeros(0, dtype=np.int64)
        self._last_text: dict[int, str | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._as_text: dict[int, AttributeValue] = {}  # enumerations' and bit fields' ValueAsText records
        self._text_of: dict[int, Callable[[float], str | None]] = {}

    # ------------------------------------------------------------------ binding to a plant

    def bind(self, tags: Sequence[TagInfo], attvals: Sequence[AttributeValue | None],
             carry: dict[str, tuple[float, int, str | None, int, int]] | None = None,
             as_text: dict[int, AttributeValue] | None = None) -> None:
        """Bind to a plant's tags (by id) and their Value records; ``carry`` maps tag keys to the
        (value, quality, text, source ns, server ns) last reported before a reload (from
        :meth:`snapshot`), so a reload loses no value and sends no duplicates. ``as_text`` maps the
        ids of enumerations and bit fields to the Value record of their ValueAsText property, which
        then follows the value (the state's name, the set bits' names; the number for an unknown state).

        Each Value record gets a read callback: the latest value lives in numpy arrays and a
        DataValue is built only when a client reads the node or a monitored item needs it, so
        tags nobody subscribes to cost no Python objects per change."""
        n = len(tags)
        self._attvals = list(attvals)
        self._kinds = [_KIND.get(t.dtype, KIND_INT) for t in tags]
        self._vtypes = [_VTYPE[t.dtype] for t in tags]
        self._deadband = np.array([max(float(t.deadband), 0.0) for t in tags], dtype=np.float64)
        self._is_string = np.array([t.dtype == "string" for t in tags], dtype=bool)
        self._is_float = np.array([_KIND.get(t.dtype, KIND_INT) == KIND_FLOAT for t in tags], dtype=bool)
        self._last_v = np.full(n, np.nan)
        self._last_q = np.full(n, NEVER, dtype=np.uint8)
        self._last_src = np.zeros(n, dtype=np.int64)
        self._last_srv = np.zeros(n, dtype=np.int64)
        self._last_text = {}
        for t in tags:
            if carry and t.key in carry:
                v, q, text, src_ns, srv_ns = carry[t.key]
                self._last_v[t.id], self._last_q[t.id] = v, q
                self._last_src[t.id], self._last_srv[t.id] = src_ns, srv_ns
                if text is not None:
                    self._last_text[t.id] = text
        for tid, attval in enumerate(self._attvals):
            if attval is not None:
                attval.value = None
                attval.value_callback = self._reader(tid)
        by_id = {t.id: t for t in tags}
        self._as_text = dict(as_text or {})
        self._text_of = {tid: by_id[tid].text_of for tid in self._as_text}
        for tid, attval in self._as_text.items():
            attval.value = None
            attval.value_callback = self._text_reader(tid)

    def _reader(self, tid: int) -> Callable[[Any, Any], ua.DataValue]:
        return lambda nodeid, attr: self.read_value(tid)

    def _text_reader(self, tid: int) -> Callable[[Any, Any], ua.DataValue]:
        return lambda nodeid, attr: self.read_text(tid)

    def read_text(self, tid: int) -> ua.DataValue:
        """The ValueAsText of an enumeration or bit field now: its value's text, with the value's
        StatusCode and timestamps."""
        q = int(self._last_q[tid])
        if q == NEVER:
            return ua.DataValue(_NULL, _WAITING)
        src = ua_time(int(self._last_src[tid])) if self._last_src[tid] else None
        srv = ua_time(int(self._last_srv[tid])) if self._last_srv[tid] else None
        return self._text_datavalue(tid, float(self._last_v[tid]), q, src, srv)

    def _text_datavalue(self, tid: int, val: float, q: int, src: datetime | None,
                        srv: datetime | None) -> ua.DataValue:
        sc = _STATUS[q] if q < len(_STATUS) else _BAD_CONFIG
        if q >= Quality.BAD_NO_COMMUNICATION or math.isnan(val):
            return ua.DataValue(_NULL, sc, src, srv)
        text = self._text_of[tid](val)
        if text is None:  # a state the configuration does not name: its number, never a blank
            text = str(int(val)) if val.is_integer() else repr(val)
        return ua.DataValue(ua.Variant(ua.LocalizedText(text), ua.VariantType.LocalizedText), sc, src, srv)

    def read_value(self, tid: int) -> ua.DataValue:
        """The tag's current value as a DataValue (what Read and new monitored items get)."""
        q = int(self._last_q[tid])
        if q == NEVER:
            return ua.DataValue(_NULL, _WAITING)
        src = ua_time(int(self._last_src[tid])) if self._last_src[tid] else None
        srv = ua_time(int(self._last_srv[tid])) if self._last_srv[tid] else None
        return self._datavalue(tid, float(self._last_v[tid]), q, src, srv, self._last_text.get(tid))

    def _datavalue(self, tid: int, val: float, q: int, src: datetime | None, srv: datetime | None,
                   text: str | None) -> ua.DataValue:
        sc = _STATUS[q] if q < len(_STATUS) else _BAD_CONFIG
        if q >= Quality.BAD_NO_COMMUNICATION:
            return ua.DataValue(_NULL, sc, src, srv)
        kind = self._kinds[tid]
        if kind == KIND_FLOAT:
            variant = ua.Variant(val, self._vtypes[tid]) if not math.isnan(val) else _NULL
        elif kind == KIND_STRING:
            variant = ua.Variant(text, self._vtypes[tid])
        elif math.isnan(val):
            variant = _NULL
        elif kind == KIND_BOOL:
            variant = ua.Variant(val != 0.0, self._vtypes[tid])
        else:
            variant = ua.Variant(int(val), self._vtypes[tid])
        if variant is _NULL:
            sc = _BAD_CONFIG  # a Good sample without a representable value
        return ua.DataValue(variant, sc, src, srv)

    @property
    def last_quality(self) -> np.ndarray:
        """Every tag's last reported quality by tag id (``NEVER``: nothing reported yet); read only."""
        return self._last_q

    def snapshot(self, tags: Sequence[TagInfo]) -> dict[str, tuple[float, int, str | None, int, int]]:
        """Last reported state by tag key: what :meth:`bind` takes as ``carry``."""
        return {t.key: (float(self._last_v[t.id]), int(self._last_q[t.id]), self._last_text.get(t.id),
                        int(self._last_src[t.id]), int(self._last_srv[t.id]))
                for t in tags if t.id < len(self._last_q)}

    # ------------------------------------------------------------------ hot path

    def consume(self, batch: SampleBatch) -> int:
        """Report the batch's changes; returns how many node values changed."""
        st = self.stats
        st.batches += 1
        n_batch = len(batch.tag_ids)
        st.samples += n_batch
        if n_batch == 0:
            return 0
        ids = np.asarray(batch.tag_ids, dtype=np.int64)
        values = np.asarray(batch.values, dtype=np.float64)
        quality = np.asarray(batch.quality, dtype=np.uint8)
        n_tags = len(self._last_q)
        known = (ids >= 0) & (ids < n_tags)
        if not known.all():
            st.dropped_unknown_tag += int((~known).sum())
            log.warning("OPC UA: %d samples of device %r carry unknown tag ids (plant has %d tags); dropped",
                        int((~known).sum()), batch.device, n_tags)
            ids, values, quality = ids[known], values[known], quality[known]
        last_v = self._last_v[ids]
        with np.errstate(invalid="ignore"):
            changed = (quality != self._last_q[ids]) | (np.abs(values - last_v) > self._deadband[ids])
        changed |= np.isnan(values) != np.isnan(last_v)
        texts = batch.texts
        if texts:
            changed |= self._text_changes(ids, texts)
        sel = np.flatnonzero(changed)
        if sel.size == 0:
            return 0
        cids = ids[sel]
        cvals = values[sel]
        cq = quality[sel]
        srv_ns = time.time_ns()
        self._last_v[cids] = cvals
        self._last_q[cids] = cq
        self._last_src[cids] = batch.ts_ns
        self._last_srv[cids] = srv_ns
        st.reported += len(cids)
        st.bad_values += int(np.count_nonzero((cq == 0) & np.isnan(cvals) & ~self._is_string[cids]
                                              & ~self._is_float[cids]))
        self._report(cids.tolist(), cvals.tolist(), cq.tolist(), batch.ts_ns, srv_ns, texts)
        return len(cids)

    def _text_changes(self, ids: np.ndarray, texts: dict[int, str]) -> np.ndarray:
        out = np.zeros(len(ids), dtype=bool)
        is_string = self._is_string[ids]
        for i in np.flatnonzero(is_string).tolist():
            tid = int(ids[i])
            text = texts.get(tid)
            if text != self._last_text.get(tid):
                out[i] = True
                self._last_text[tid] = text
        return out

    def _report(self, ids: list[int], vals: list[float], qs: list[int], ts_ns: int, srv_ns: int,
                texts: dict[int, str] | None) -> None:
        """DataValues for the changed tags that have monitored items, delivered to them."""
        attvals = self._attvals
        as_text = self._as_text.get if self._as_text else None
        src = srv = None
        for tid, val, q in zip(ids, vals, qs, strict=True):
            attval = attvals[tid]
            text_attval = as_text(tid) if as_text is not None else None
            value_wanted = attval is not None and attval.datachange_callbacks
            text_wanted = text_attval is not None and text_attval.datachange_callbacks
            if not (value_wanted or text_wanted):
                continue
            if src is None:
                src = ua_time(ts_ns)
                srv = ua_time(srv_ns)
            if value_wanted:
                text = texts.get(tid) if texts else self._last_text.get(tid)
                self.deliver(attval, self._datavalue(tid, val, q, src, srv, text))  # type: ignore[arg-type]
            if text_wanted:
                self.deliver(text_attval, self._text_datavalue(tid, val, q, src, srv))  # type: ignore[arg-type]

    def set_value(self, attval: AttributeValue, dv: ua.DataValue) -> None:
        """Store a node's value and deliver it (status variables and other non-tag nodes)."""
        attval.value = dv
        if attval.datachange_callbacks:
            self.deliver(attval, dv)

    def deliver(self, attval: AttributeValue, dv: ua.DataValue) -> None:
        """Queue ``dv`` on every monitored item of one node (see the module docstring)."""
        for handle, callback in attval.datachange_callbacks.items():
            mis = getattr(callback, "__self__", None)
            if not isinstance(mis, MonitoredItemService):
                self._call_library(callback, handle, dv)
                continue
            mid = mis._monitored_datachange.get(handle)
            mdata = mis._monitored_items.get(mid) if mid is not None else None
            if mdata is None or mdata.mode == _DISABLED:
                continue
            interval = getattr(mdata, "edge_sampling_ns", 0)
            if interval and not self._sampled(mis, mid, mdata, interval, dv):
                continue
            self._enqueue(mis, mid, mdata, dv)

    def _enqueue(self, mis: MonitoredItemService, mid: int, mdata: Any, dv: ua.DataValue) -> None:
        """The item's DataChangeFilter, then onto the subscription's queue (capped at the item's size)."""
        mv = mdata.mvalue
        flt = mdata.filter
        if flt is not None and not _filter_passes(flt, mv.current_dvalue, dv):
            return
        mv.old_dvalue = mv.current_dvalue
        mv.current_dvalue = dv
        notif = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=dv)
        isub = mis.isub
        queue = isub._triggered_datachanges
        items = queue.get(mid)
        if items is None:
            queue[mid] = [notif]
            if isub.data.RevisedPublishingInterval <= 0.0:
                self._spawn(isub._trigger_publish())
        else:
            size = mdata.queue_size
            if size and len(items) >= size:
                del items[: len(items) - size + 1]
            items.append(notif)
        self.stats.notifications += 1

    def _sampled(self, mis: MonitoredItemService, mid: int, mdata: Any, interval: int, dv: ua.DataValue) -> bool:
        """A monitored item sampling slower than its node changes (a client asked 2 s of a 250 ms tag):
        True when the item may report now; otherwise ``dv`` waits as the item's latest value and is
        reported when the interval since the last report is over (at most one report per interval,
        always the newest value)."""
        now = time.monotonic_ns()
        due = getattr(mdata, "edge_sampled_ns", 0) + interval
        if now >= due and getattr(mdata, "edge_pending", None) is None:
            mdata.edge_sampled_ns = now
            return True
        if getattr(mdata, "edge_pending", None) is None:
            asyncio.get_running_loop().call_later(max(due - now, 0) / 1e9, self._report_sample, mis, mid)
        mdata.edge_pending = dv
        return False

    def _report_sample(self, mis: MonitoredItemService, mid: int) -> None:
        """End of a sampling interval: the newest value that waited, if the item still exists."""
        mdata = mis._monitored_items.get(mid)
        if mdata is None:
            return
        dv, mdata.edge_pending = getattr(mdata, "edge_pending", None), None
        if dv is None or mdata.mode == _DISABLED:
            return
        mdata.edge_sampled_ns = time.monotonic_ns()
        self._enqueue(mis, mid, mdata, dv)

    def _call_library(self, callback: Callable[..., Any], handle: int, dv: ua.DataValue) -> None:
        result = callback(handle, dv)
        if asyncio.iscoroutine(result):
            self._spawn(result)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# ----------------------------------------------------------------------------- sampling intervals
#
# asyncua 2.1 revises every monitored item's sampling interval to the subscription's publishing
# interval and delivers every change. This server honours what a client asks (Part 4, 5.12.1.2):
# -1 is the publishing interval, 0 the fastest the node changes (its MinimumSamplingInterval: the
# tag's poll interval), anything else at least that; an item whose revised interval is slower than
# its node changes gets at most one notification per interval, the newest value (``_sampled``).
# A modified item's queue size is capped like a new one's (the library took any size, 0 unbounded).
# The two creation/modification methods are wrapped here, installed at import (``install_sampling``;
# ``uninstall_sampling`` restores the library's), pinned with asyncua's tested minor version.

_library_create = MonitoredItemService._create_data_change_monitored_item
_library_modify = MonitoredItemService._modify_monitored_item


def revised_sampling_ms(aspace: Any, item: ua.ReadValueId, requested: float, publishing_ms: float) -> float:
    """The sampling interval an item gets: -1 (or any negative) the publishing interval, 0 the
    node's MinimumSamplingInterval, otherwise at least that."""
    fastest = 0.0
    try:
        dv = aspace.read_attribute_value(item.NodeId, ua.AttributeIds.MinimumSamplingInterval)
        if dv.Value is not None and isinstance(dv.Value.Value, int | float) and dv.Value.Value > 0:
            fastest = float(dv.Value.Value)
    except Exception:  # noqa: BLE001 - a node without the attribute samples as fast as it changes
        fastest = 0.0
    wanted = publishing_ms if requested is None or requested < 0 else float(requested)
    return max(wanted, fastest)


def _apply_sampling(mis: MonitoredItemService, mdata: Any, item: ua.ReadValueId, requested: float) -> float:
    revised = revised_sampling_ms(mis.aspace, item, requested, mis.isub.data.RevisedPublishingInterval)
    fastest = revised_sampling_ms(mis.aspace, item, 0.0, 0.0)
    slower = revised > fastest and item.AttributeId == ua.AttributeIds.Value
    mdata.edge_sampling_ns = int(revised * 1e6) if slower else 0
    mdata.edge_sampled_ns = time.monotonic_ns()  # the initial value counts as this interval's report
    return revised


async def _create_with_sampling(self: MonitoredItemService, params: ua.MonitoredItemCreateRequest
                                ) -> ua.MonitoredItemCreateResult:
    result = await _library_create(self, params)
    mdata = self._monitored_items.get(result.MonitoredItemId) if result.StatusCode.is_good() else None
    if mdata is not None:
        result.RevisedSamplingInterval = _apply_sampling(self, mdata, params.ItemToMonitor,
                                                         params.RequestedParameters.SamplingInterval)
    return result


def _modify_with_sampling(self: MonitoredItemService, params: ua.MonitoredItemModifyRequest
                          ) -> ua.MonitoredItemModifyResult:
    result = _library_modify(self, params)
    mdata = self._monitored_items.get(params.MonitoredItemId)
    if mdata is not None and result.StatusCode.is_good() and mdata.read_value_id is not None:
        result.RevisedSamplingInterval = _apply_sampling(self, mdata, mdata.read_value_id,
                                                         params.RequestedParameters.SamplingInterval)
        # the library takes the requested queue size as is (0: unbounded); the cap holds here too
        mdata.queue_size = result.RevisedQueueSize = self._revise_queue_size(params.RequestedParameters.QueueSize)
    return result


def install_sampling() -> None:
    """Honour requested sampling intervals (see above)."""
    MonitoredItemService._create_data_change_monitored_item = _create_with_sampling  # type: ignore[method-assign]
    MonitoredItemService._modify_monitored_item = _modify_with_sampling  # type: ignore[method-assign]


def uninstall_sampling() -> None:
    """asyncua's own behaviour (every change, the publishing interval as sampling interval)."""
    MonitoredItemService._create_data_change_monitored_item = _library_create  # type: ignore[method-assign]
    MonitoredItemService._modify_monitored_item = _library_modify  # type: ignore[method-assign]


def _filter_passes(flt: Any, last: ua.DataValue | None, dv: ua.DataValue) -> bool:
    """A client's DataChangeFilter, compared with the last value sent to that item."""
    # asyncua has two DataChangeFilter classes (generated and hand-written): test by shape
    if last is None or not hasattr(flt, "DeadbandType") or not hasattr(flt, "Trigger"):
        return True
    if last.StatusCode != dv.StatusCode:
        return True
    if int(flt.Trigger) == _TRIGGER_STATUS:  # decoded filters may carry plain ints
        return False
    if int(flt.DeadbandType) == _ABSOLUTE:
        a = last.Value.Value if last.Value is not None else None
        b = dv.Value.Value if dv.Value is not None else None
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
            return abs(b - a) > flt.DeadbandValue
    return True


# ----------------------------------------------------------------------------- notification encoding
#
# asyncua encodes every MonitoredItemNotification with its generic dataclass serializer
# (~10 us each here, the largest cost once the delivery path is lean). This encoder writes
# the same bytes for the common case (scalar built-in value, StatusCode, timestamps, no
# picoseconds) and hands anything else to the library's serializer. It is installed into
# asyncua's serializer lookup once, at import; ``tests/outputs/opcua`` compare both encoders' bytes.

_U32 = struct.Struct("<I").pack
_I32 = struct.Struct("<i").pack
_I64 = struct.Struct("<q").pack
_HEAD = struct.Struct("<IB").pack  # ClientHandle, DataValue encoding mask
_SCALAR = {
    ua.VariantType.Boolean: struct.Struct("<B?").pack, ua.VariantType.Int16: struct.Struct("<Bh").pack,
    ua.VariantType.UInt16: struct.Struct("<BH").pack, ua.VariantType.Int32: struct.Struct("<Bi").pack,
    ua.VariantType.UInt32: struct.Struct("<BI").pack, ua.VariantType.Int64: struct.Struct("<Bq").pack,
    ua.VariantType.UInt64: struct.Struct("<BQ").pack, ua.VariantType.Float: struct.Struct("<Bf").pack,
    ua.VariantType.Double: struct.Struct("<Bd").pack,
}
_SCALAR_CODE = {vt: vt.value for vt in _SCALAR}
_STRING = ua.VariantType.String
_NULL_VT = ua.VariantType.Null
_DataValue = ua.DataValue
_library_dataclass_serializer = ua_binary.create_dataclass_serializer
_library_notification_serializer = _library_dataclass_serializer(ua.MonitoredItemNotification)
_tick_cache: list[Any] = [None, b"", None, b""]  # two most recent (datetime, packed) pairs


def _ticks(dt: datetime) -> bytes:
    """Packed OPC UA DateTime; a batch shares its timestamp objects, so two slots hit almost always."""
    c = _tick_cache
    if dt is c[0]:
        return c[1]
    if dt is c[2]:
        return c[3]
    packed = _I64(ua.datetime_to_win_epoch(dt))
    c[2], c[3] = c[0], c[1]
    c[0], c[1] = dt, packed
    return packed


def _variant(var: ua.Variant) -> bytes | None:
    vt = var.VariantType
    if var.is_array:
        return None
    pack = _SCALAR.get(vt)
    try:
        if pack is not None:
            return pack(_SCALAR_CODE[vt], var.Value)
        if vt is _STRING:
            if var.Value is None:
                return b"\x0c" + _I32(-1)
            raw = var.Value.encode("utf-8")
            return b"\x0c" + _I32(len(raw)) + raw
        if vt is _NULL_VT:
            return b"\x00"
    except (struct.error, AttributeError, TypeError):
        return None  # the library's serializer raises its own, clearer error
    return None


def encode_notification(item: ua.MonitoredItemNotification) -> bytes:
    """Binary encoding of one MonitoredItemNotification, identical to asyncua's."""
    dv = item.Value
    if type(dv) is not _DataValue or dv.SourcePicoseconds is not None or dv.ServerPicoseconds is not None:
        return _library_notification_serializer(item)
    mask = 0
    parts = []
    var = dv.Value
    if var is not None:
        vb = _variant(var)
        if vb is None:
            return _library_notification_serializer(item)
        mask |= 1
        parts.append(vb)
    sc = dv.StatusCode
    if sc is not None:
        mask |= 2
        parts.append(_U32(sc.value))
    if dv.SourceTimestamp is not None:
        mask |= 4
        parts.append(_ticks(dv.SourceTimestamp))
    if dv.ServerTimestamp is not None:
        mask |= 8
        parts.append(_ticks(dv.ServerTimestamp))
    return _HEAD(item.ClientHandle, mask) + b"".join(parts)


def _dataclass_serializer(dataclazz: type) -> Callable[[Any], bytes]:
    if dataclazz is ua.MonitoredItemNotification:
        return encode_notification
    return _library_dataclass_serializer(dataclazz)


def install_notification_encoder() -> None:
    """Route asyncua's MonitoredItemNotification encoding through :func:`encode_notification`."""
    if ua_binary.create_dataclass_serializer is not _dataclass_serializer:
        ua_binary.create_dataclass_serializer = _dataclass_serializer  # type: ignore[assignment]
        _library_dataclass_serializer.cache_clear()  # serializers built before hold the old lookup
        ua_binary.create_list_serializer.cache_clear()


install_notification_encoder()
install_sampling()
