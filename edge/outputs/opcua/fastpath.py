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

Every asyncua internal this relies on is in :mod:`edge.outputs.opcua.asyncua_adapter`;
``tests/outputs/opcua`` checks the delivered notifications end to end with two client stacks,
on both paths. The numpy deadband at the source (step 1) is this module's own and runs on both.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.server.address_space import AttributeValue

from edge.core.model import STATUS_CODES, Quality, SampleBatch, TagInfo
from edge.outputs.opcua import asyncua_adapter

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
                self.deliver(attval, self._datavalue(tid, val, q, src, srv, text))
            if text_wanted:
                self.deliver(text_attval, self._text_datavalue(tid, val, q, src, srv))

    def set_value(self, attval: AttributeValue, dv: ua.DataValue) -> None:
        """Store a node's value and deliver it (status variables and other non-tag nodes)."""
        attval.value = dv
        if attval.datachange_callbacks:
            self.deliver(attval, dv)

    def deliver(self, attval: AttributeValue, dv: ua.DataValue) -> None:
        """Hand ``dv`` to every monitored item of one node (fast or the library's plain path)."""
        if self.fast:
            self.stats.notifications += asyncua_adapter.deliver_fast(attval, dv, self._spawn)
        else:
            self.stats.notifications += asyncua_adapter.deliver_plain(attval, dv, self._spawn)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        """A library callback's task ended: a failure is logged (as asyncua's own write path does), never lost."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("OPC UA: a data-change callback failed: %s: %s", type(exc).__name__, exc)
