"""The hot path from sample batches to OPC UA subscribers (no asyncua fork, no per-node calls).

:meth:`FastPublisher.consume` takes one :class:`edge.core.model.SampleBatch` and

1. decides with numpy which samples are *reportable*: the quality changed, or the value moved
   by more than the tag's deadband from the value **last reported** (not the previous sample,
   so slow drift is reported once it adds up), or the value appeared/disappeared (NaN);
2. builds one ``DataValue`` per reportable sample (value of the tag's OPC UA type, StatusCode
   from the quality, the poll's SourceTimestamp, one ServerTimestamp per batch) and stores it
   as the node's Value (what Read returns);
3. hands it to every monitored item on that node: on the fast path directly
   (:func:`edge.outputs.opcua.asyncua_adapter.deliver_fast`: asyncua's own data-change path
   deep-copies each value, runs three service layers and builds throw-away objects per change,
   measured ~110 ms of CPU per 1,000 changes here; the direct path keeps the item's last value
   by reference, applies the client's own DataChangeFilter against the last value sent to that
   item and caps the queue), or on the library's plain path through asyncua's own callbacks
   (``fast=False``, the setting ``outputs.opcua.fast_path: false``).

Plain monitored items (reporting, no deadband filter, sampling as fast as the node changes, on a
numeric tag) are taken up by the packed path on the fast path (:mod:`edge.outputs.opcua.packed`:
pending flags per subscription, notifications encoded from this module's value arrays at
publish time; the items themselves are rows there, not asyncua records). A tag's Value record
exists only while its node is built (nodes are built on demand, :mod:`edge.outputs.opcua.virtual`)
or while it has monitored items the library's way (:class:`_Watchers` registers it here), so tags
nobody reads or watches only through packed items cost no Python objects.

Every asyncua internal this relies on is in :mod:`edge.outputs.opcua.asyncua_adapter` and its
extension :mod:`edge.outputs.opcua.packed`;
``tests/outputs/opcua`` checks the delivered notifications end to end with two client stacks,
on both paths. The numpy deadband at the source (step 1) is this module's own and runs on both.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.server.address_space import AttributeValue

from edge.core.model import STATUS_CODES, Quality, SampleBatch, TagInfo
from edge.outputs.opcua import asyncua_adapter
from edge.outputs.opcua.packed import PackedRegistry, PackedSubscription, enqueue_row, is_plain

try:  # one compiled pass per batch (edge/outputs/opcua/_changes.pyx); the numpy version otherwise
    from edge.outputs.opcua import _changes
except ImportError as exc:  # pragma: no cover - the extension is built by setup.py
    _changes = None  # type: ignore[assignment]
    warnings.warn(f"edge.outputs.opcua: compiled change detection not available ({exc}); using numpy calls per "
                  "batch, which costs ~10 % more CPU at 50,000 tags/s. Build with `pip install .`.",
                  RuntimeWarning, stacklevel=2)

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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX = np.maximum.reduce  # ndarray.max() without the method's dispatch (~1 us less on a 100-sample batch)


def ua_time(ns: int) -> datetime:
    """A sample's time as the server sends it: the whole microseconds of ``ns`` (exact integer
    arithmetic; the same as HistoryRead, so a client finds a live value's sample in history)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


class PublisherStats:
    """Counters of the hot path, shown by the server's diagnostics."""

    __slots__ = ("batches", "samples", "reported", "notifications", "dropped_unknown_tag", "bad_values",
                 "packed_items")

    def __init__(self) -> None:
        self.batches = self.samples = self.reported = self.notifications = 0
        self.packed_items = 0  # monitored items taken up by the packed path (edge.outputs.opcua.packed)
        self.dropped_unknown_tag = 0  # tag ids outside the plant (counted, never raised)
        self.bad_values = 0  # Good samples that cannot be represented (NaN for an integer tag)


class FastPublisher:
    """Deadband at the source and delivery of value changes to monitored items.

    ``fast``: deliver directly (the adapter's fast path) or through asyncua's own callbacks; the
    server sets it at start from what :func:`asyncua_adapter.acquire` granted."""

    def __init__(self, fast: bool = True) -> None:
        self.fast = fast
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
        self._any_deadband = False  # per plant: does any tag have a deadband (else a plain comparison)
        self._any_int = False  # per plant: any integer or bool tag (a NaN there is a bad value)
        self._int_kind = np.zeros(0, dtype=np.uint8)  # per tag: 1 for integer and bool tags
        self._positions = np.zeros(128, dtype=np.int64)  # the compiled pass's changed positions (grows)
        self.compiled = _changes is not None  # the compiled pass (tests switch it off to compare)
        self._lib_any = False  # some changed tag may have items the library's way (refreshed when items change)
        self._lib_dirty = True
        self._n_watch = np.zeros(0, dtype=np.int32)  # monitored items per tag's Value (all subscriptions)
        self._vcodes = np.zeros(0, dtype=np.uint8)  # variant type code per tag (0: string, never packed)
        self._text_ids = np.zeros(0, dtype=np.int64)  # tags with a ValueAsText property
        self._tags: Sequence[TagInfo] = ()
        self.packed = PackedRegistry(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._as_text: dict[int, AttributeValue] = {}  # enumerations' and bit fields' ValueAsText records
        self._text_of: dict[int, Callable[[float], str | None]] = {}

    # ------------------------------------------------------------------ binding to a plant

    def bind(self, tags: Sequence[TagInfo], carry: dict[str, tuple[float, int, str | None, int, int]] | None = None,
             records: dict[str, AttributeValue] | None = None,
             text_records: dict[str, AttributeValue] | None = None) -> None:
        """Bind to a plant's tags (by id). ``carry`` maps tag keys to the (value, quality, text,
        source ns, server ns) last reported before a reload (from :meth:`snapshot`), so a reload
        loses no value and sends no duplicates; ``records`` the Value records with monitored items
        and ``text_records`` the ValueAsText records (from :meth:`records_by_key`), which keep
        their items.

        The latest values live in numpy arrays; a tag's Value record (:meth:`value_record`) is
        built with its node, on demand, and reads from them, so tags nobody reads or subscribes
        to cost no Python objects. Enumerations and bit fields have a ValueAsText record each
        (:meth:`text_record`, kept: they are few) that follows the value (the state's name, the
        set bits' names; the number for an unknown state)."""
        n = len(tags)
        tid_map = None
        old_keys = [t.key for t in self._tags]
        if self.packed.subs:  # packed monitored items move with their tags
            new_ids = {t.key: t.id for t in tags}
            tid_map = {t.id: new_ids[t.key] for t in self._tags if t.key in new_ids}
        self._tags = tags
        self._attvals = [None] * n
        self._n_watch = np.zeros(n, dtype=np.int32)
        self._vcodes = np.array([0 if t.dtype == "string" else _VTYPE[t.dtype].value for t in tags], dtype=np.uint8)
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
        self._any_deadband = bool((self._deadband > 0.0).any())
        self._int_kind = (~self._is_string & ~self._is_float).astype(np.uint8)
        self._any_int = bool(self._int_kind.any())
        self._as_text = {}
        self._text_of = {}
        for t in tags:
            if carry and t.key in carry:
                v, q, text, src_ns, srv_ns = carry[t.key]
                self._last_v[t.id], self._last_q[t.id] = v, q
                self._last_src[t.id], self._last_srv[t.id] = src_ns, srv_ns
                if text is not None:
                    self._last_text[t.id] = text
            record = records.get(t.key) if records else None
            if record is not None and record.datachange_callbacks:
                watchers = record.datachange_callbacks
                assert isinstance(watchers, _Watchers)
                watchers.tid = t.id
                record.value, record.value_callback = None, watchers.read  # an in-process write_value cleared it
                self._attvals[t.id] = record
                self._n_watch[t.id] = len(watchers)
            if t.enum is not None or t.bits is not None:
                text_record = text_records.get(t.key) if text_records else None
                if text_record is None:
                    text_record = AttributeValue(None)
                text_record.value = None
                text_record.value_callback = self._text_reader(t.id)
                self._as_text[t.id] = text_record
                self._text_of[t.id] = t.text_of
        self._text_ids = np.array(sorted(self._as_text), dtype=np.int64)
        self.packed.rebind(n, tid_map, old_keys)
        self._lib_dirty = True

    def value_record(self, tid: int) -> AttributeValue:
        """The Value record of tag ``tid``'s node: the kept one while it has monitored items, else a
        new one (read callback into the arrays; it registers itself when an item is added)."""
        record = self._attvals[tid]
        if record is not None:
            return record
        record = AttributeValue(None)
        watchers = _Watchers(self, tid, record)
        record.datachange_callbacks = watchers
        record.value_callback = watchers.read
        return record

    def text_record(self, tid: int) -> AttributeValue | None:
        """The ValueAsText record of an enumeration or bit field (None for other tags)."""
        return self._as_text.get(tid)

    def records_by_key(self, tags: Sequence[TagInfo]) -> tuple[dict[str, AttributeValue], dict[str, AttributeValue]]:
        """The Value records that have monitored items and the ValueAsText records, by tag key
        (what :meth:`bind` takes as ``records`` and ``text_records``)."""
        values = {t.key: rec for t in tags if t.id < len(self._attvals) and (rec := self._attvals[t.id]) is not None}
        texts = {t.key: rec for t in tags if (rec := self._as_text.get(t.id)) is not None}
        return values, texts

    def _watch(self, tid: int, record: AttributeValue, count: int) -> None:
        if tid < len(self._attvals):
            self._attvals[tid] = record
            self._n_watch[tid] = count
            self._lib_dirty = True

    def _unwatch(self, tid: int, record: AttributeValue, count: int) -> None:
        if tid < len(self._attvals) and self._attvals[tid] is record:
            self._n_watch[tid] = count
            self._lib_dirty = True
            if not count:
                self._attvals[tid] = None

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
        """Report the batch's changes; returns how many node values changed.

        Few calls per batch (issue 21: ~25 numpy calls before, each several microseconds in the
        running appliance, ~22 % of its CPU at 50,000 tags/s): one compiled pass detects and stores
        the changes and one per packed subscription marks its items (:mod:`._changes`); batches
        with strings or for items that queue several values, and a build without the extension,
        take the numpy version. In both, what depends only on the plant (deadbands, integer tags)
        is decided in :meth:`bind`, and whether any tag has items the library's way only after
        items change."""
        st = self.stats
        st.batches += 1
        ids = batch.tag_ids
        n_batch = len(ids)
        st.samples += n_batch
        if n_batch == 0:
            return 0
        ids = np.ascontiguousarray(ids)
        if ids.dtype != np.int32:  # SampleBatch's type; ids beyond int32 are no tag's anyway
            ids = ids.astype(np.int32) if ((ids >= 0) & (ids < 2**31)).all() else ids.astype(np.intp)
        values = np.ascontiguousarray(batch.values, dtype=np.float64)
        quality = np.ascontiguousarray(batch.quality, dtype=np.uint8)
        if (self.compiled and ids.dtype == np.int32 and not batch.texts
                and not any(ps.n_queueing for ps in self.packed.subs.values())):
            n = self._consume_compiled(batch, ids, values, quality)
            if n >= 0:
                return n
        return self._consume_numpy(batch, ids, values, quality)

    def _consume_compiled(self, batch: SampleBatch, ids: np.ndarray, values: np.ndarray, quality: np.ndarray) -> int:
        """One compiled pass detects and stores the changes, one per packed subscription marks its items
        (no item queues more than one value here, so nothing is spilled first). -1: unknown tag ids."""
        assert _changes is not None
        if len(self._positions) < len(ids):
            self._positions = np.zeros(2 * len(ids), dtype=np.int64)
        pos = self._positions
        srv_ns = time.time_ns()
        n, bad = _changes.detect_and_store(ids, values, quality, self._last_v, self._last_q, self._last_src,
                                           self._last_srv, self._deadband, self._any_deadband, self._int_kind,
                                           batch.ts_ns, srv_ns, pos)
        if n <= 0:
            return n
        st = self.stats
        st.reported += n
        st.bad_values += bad
        for ps in self.packed.subs.values():
            if _changes.mark_pending(ps.item_of, ids, pos, n, ps.pending_u8):
                ps.queued()
        if self._lib_dirty:
            self._refresh_lib()
        if self._lib_any:
            sel = pos[:n]
            self._watched(ids[sel], values[sel], quality[sel], batch.ts_ns, srv_ns, None)
        return n

    def _consume_numpy(self, batch: SampleBatch, ids: np.ndarray, values: np.ndarray, quality: np.ndarray) -> int:
        """The same with numpy calls (strings, items that queue several values, or no compiled pass)."""
        st = self.stats
        if ids.dtype != np.intp:
            ids = ids.astype(np.intp)
        n_tags = len(self._last_q)
        if _MAX(ids.view(np.uintp)) >= n_tags:  # a negative id is a huge unsigned one: one test for both ends
            ids, values, quality = self._known(batch, ids, values, quality, n_tags)
            if ids.size == 0:
                return 0
        changed = self._changes(ids, values, quality)
        texts = batch.texts
        if texts:
            changed |= self._text_changes(ids, texts)
        n_changed = np.count_nonzero(changed)
        if n_changed == 0:
            return 0
        if n_changed == len(ids):
            cids, cvals, cq = ids, values, quality
        else:
            cids, cvals, cq = ids[changed], values[changed], quality[changed]
        for ps in list(self.packed.subs.values()):  # before the arrays change: a spill sends the old values
            ps.mark(cids, self.spill_rows)
        srv_ns = time.time_ns()
        self._last_v[cids] = cvals
        self._last_q[cids] = cq
        self._last_src[cids] = batch.ts_ns
        self._last_srv[cids] = srv_ns
        st.reported += len(cids)
        if self._any_int:
            st.bad_values += int(np.count_nonzero((cq == 0) & np.isnan(cvals) & ~self._is_string[cids]
                                                  & ~self._is_float[cids]))
        if self._lib_dirty:
            self._refresh_lib()
        if self._lib_any:
            self._watched(cids, cvals, cq, batch.ts_ns, srv_ns, texts)
        return len(cids)

    def _refresh_lib(self) -> None:
        """May a changed tag have items the library's way (not packed)? Recomputed after items change.
        (Packed items are not in the Value records' callbacks: ``_n_watch`` counts the library's only.)"""
        self._lib_any = bool(self._text_ids.size) or bool(self._n_watch.any())
        self._lib_dirty = False

    def _watched(self, cids: np.ndarray, cvals: np.ndarray, cq: np.ndarray, ts_ns: int, srv_ns: int,
                 texts: dict[int, str] | None) -> None:
        """Deliver the changes of tags with items the library's way (and ValueAsText records)."""
        watched = self._n_watch[cids] > 0
        if self._text_ids.size:
            watched |= np.isin(cids, self._text_ids)
        if watched.any():
            self._report(cids[watched].tolist(), cvals[watched].tolist(), cq[watched].tolist(), ts_ns, srv_ns, texts)

    def _known(self, batch: SampleBatch, ids: np.ndarray, values: np.ndarray, quality: np.ndarray,
               n_tags: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The samples of tags this plant has; the others are counted and logged, never raised."""
        known = (ids >= 0) & (ids < n_tags)
        n_unknown = int((~known).sum())
        self.stats.dropped_unknown_tag += n_unknown
        log.warning("OPC UA: %d samples of device %r carry unknown tag ids (plant has %d tags); dropped",
                    n_unknown, batch.device, n_tags)
        return ids[known], values[known], quality[known]

    def _changes(self, ids: np.ndarray, values: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """Which samples to report: the quality changed, the value appeared or disappeared (NaN), or it
        moved by more than the tag's deadband from the value last reported (any move without one)."""
        last_v = self._last_v[ids]
        changed = quality != self._last_q[ids]
        if self._any_deadband:
            with np.errstate(invalid="ignore"):
                changed |= np.abs(values - last_v) > self._deadband[ids]
            changed |= np.isnan(values) != np.isnan(last_v)
        else:  # v != last is the move; NaN != NaN is not one (no value then, no value now)
            changed |= (values != last_v) & ((values == values) | (last_v == last_v))
        return changed

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
                self.deliver(attval, self._datavalue(tid, val, q, src, srv, text), tid)
            if text_wanted:
                self.deliver(text_attval, self._text_datavalue(tid, val, q, src, srv))

    def set_value(self, attval: AttributeValue, dv: ua.DataValue) -> None:
        """Store a node's value and deliver it (status variables and other non-tag nodes)."""
        attval.value = dv
        if attval.datachange_callbacks:
            self.deliver(attval, dv)

    def deliver(self, attval: AttributeValue, dv: ua.DataValue, tid: int | None = None) -> None:
        """Hand ``dv`` to every monitored item of one node (fast or the library's plain path). On the
        fast path, items of tag ``tid`` that are plain again (after SetMonitoringMode or
        ModifyMonitoredItems) are packed after this delivery (new plain items are packed when created)."""
        if not self.fast:
            self.stats.notifications += asyncua_adapter.deliver_plain(attval, dv, self._spawn)
            return
        if tid is None or not self._vcodes[tid]:
            self.stats.notifications += asyncua_adapter.deliver_fast(attval, dv, self._spawn)
            return
        taken: list[tuple[Any, int, int, Any]] = []
        self.stats.notifications += asyncua_adapter.deliver_fast(attval, dv, self._spawn, None, taken)
        for mis, mid, handle, mdata in taken:
            self.take_up(mis, mid, handle, mdata, tid, attval)

    def take_up(self, mis: Any, mid: int, handle: int, mdata: Any, tid: int, record: AttributeValue) -> bool:
        """Pack monitored item ``mid`` of tag ``tid`` (``record``: the tag's Value record) when it is
        plain (:mod:`edge.outputs.opcua.packed`): asyncua's records of it give way to one row of arrays."""
        if not self.fast or not 0 <= tid < len(self._vcodes) or not self._vcodes[tid] \
                or not is_plain(mis.isub, mdata):
            return False
        if not self.packed.take_up(mis, tid, mid, handle, mdata, record):
            return False
        self.stats.packed_items += 1
        return True

    def spill_rows(self, ps: PackedSubscription, rows: np.ndarray, reserve: int = 1) -> None:
        """Packed items' pending values into their subscription's queue (a second value before the
        publish on an item that queues several: ``reserve`` 1 keeps room for the newer value that
        stays packed)."""
        for row in rows.tolist():
            tid = int(ps.tids[row])
            if tid < 0 or ps.mids[row] < 0:
                continue
            src = ua_time(int(self._last_src[tid]))
            srv = ua_time(int(self._last_srv[tid]) or time.time_ns())
            dv = self._datavalue(tid, float(self._last_v[tid]), int(self._last_q[tid]), src, srv,
                                 self._last_text.get(tid))
            self.stats.notifications += enqueue_row(ps, row, dv, reserve)
            ps.pending[row] = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        """A library callback's task ended: a failure is logged (as asyncua's own write path does), never lost."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("OPC UA: a data-change callback failed: %s: %s", type(exc).__name__, exc)


class _Watchers(dict):
    """The monitored-item callbacks of one tag's Value record (asyncua adds and pops them by handle).

    While it holds any, the publisher keeps the record (so the tag's node, built on demand, finds
    the same record again) and reports the tag's changes to it. It holds the record weakly: a
    record nobody watches is freed with its node."""

    __slots__ = ("owner", "tid", "_record")

    def __init__(self, owner: FastPublisher, tid: int, record: AttributeValue) -> None:
        super().__init__()
        self.owner = owner
        self.tid = tid
        self._record = weakref.ref(record)

    def __setitem__(self, handle: int, callback: Callable[..., Any]) -> None:
        dict.__setitem__(self, handle, callback)
        record = self._record()
        if record is not None:
            self.owner._watch(self.tid, record, len(self))

    def pop(self, handle: int, *default: Any) -> Any:
        out = dict.pop(self, handle, *default)
        self._removed(handle)
        return out

    def __delitem__(self, handle: int) -> None:
        dict.__delitem__(self, handle)
        self._removed(handle)

    def _removed(self, handle: int) -> None:
        record = self._record()
        if record is not None:
            self.owner._unwatch(self.tid, record, len(self))

    def read(self, nodeid: Any, attr: Any) -> ua.DataValue:
        """The record's read callback: the tag's current value from the publisher's arrays."""
        return self.owner.read_value(self.tid)
