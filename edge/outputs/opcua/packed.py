"""Data changes of plain monitored items encoded a batch at a time (asyncua 2.1 adapter).

With a lean delivery path (:mod:`edge.outputs.opcua.fastpath`) a data change still cost several
Python objects and calls per notification and per client (a DataValue, a Variant, a
MonitoredItemNotification, its queue entry, the publish loop's list, the encoder): ~6 us each,
the largest share of the appliance's CPU with one client watching every tag (bench/e2e.py profile).

Most monitored items are *plain*: reporting, no deadband filter (or asyncua's default
StatusValue trigger), on a numeric tag, in a subscription of a client session. For those this
module keeps, per subscription, numpy arrays (tag id, client handle, queue size, pending flag)
instead of notification objects:

* :meth:`PackedSubscription.mark` (per batch, with numpy): the batch's changed tags that such an
  item watches become pending; a tag already pending whose item queues more than one value has
  its pending value moved into asyncua's queue first (as the library would have queued it), so
  queue semantics hold;
* at publish time (asyncua's ``_pop_triggered_datachanges``, wrapped) the pending items are
  encoded straight from the publisher's value arrays into the binary MonitoredItemNotification
  records (one numpy structured array per variant type), and attached to the DataChangeNotification;
  its encoder (``encode_datachange``, served by the adapter's serializer lookup) writes the
  library's items and these bytes under one count.

An item stops being plain when its mode or parameters change (SetMonitoringMode,
ModifyMonitoredItems: wrapped) and goes back to the library's path; it is taken up again by the
delivery path when it is plain again. Internal (server-side) subscriptions never take this path:
they read the objects, not the bytes.

Pinned to asyncua 2.1: ``InternalSubscription._triggered_datachanges`` and
``_pop_triggered_datachanges``, ``MonitoredItemService._monitored_items``/``_set_monitoring_mode``/
``_modify_monitored_item``, ``MonitoredItemData``; tests/outputs/opcua check the bytes against the
library's encoder and the delivered values with asyncua and node-opcua clients.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from asyncua import ua
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.monitored_item_service import MonitoredItemData, MonitoredItemService
from asyncua.ua import ua_binary

from edge.core.model import STATUS_CODES, Quality
from edge.outputs.opcua import asyncua_adapter

if TYPE_CHECKING:
    from edge.outputs.opcua.fastpath import FastPublisher

EPOCH_TICKS = 116_444_736_000_000_000  # 1601-01-01 -> 1970-01-01 in 100 ns
PACKED_KEY = -1  # placeholder in a subscription's data-change queue: "packed items are pending"
_STATUS = np.array([STATUS_CODES[q] for q in Quality] + [STATUS_CODES[Quality.BAD_CONFIG_ERROR]] * (256 - len(Quality)),
                   dtype=np.uint32)
_BAD_CONFIG = STATUS_CODES[Quality.BAD_CONFIG_ERROR]
_REPORTING = ua.MonitoringMode.Reporting
_STATUS_VALUE = int(ua.DataChangeTrigger.StatusValue)
_NONE_DEADBAND = int(ua.DeadbandType.None_)

#: Variant type code -> numpy format of the value (what asyncua's encoder writes for a scalar).
VALUE_FORMATS: dict[int, str] = {
    ua.VariantType.Boolean.value: "u1", ua.VariantType.Int16.value: "<i2", ua.VariantType.UInt16.value: "<u2",
    ua.VariantType.Int32.value: "<i4", ua.VariantType.UInt32.value: "<u4", ua.VariantType.Int64.value: "<i8",
    ua.VariantType.UInt64.value: "<u8", ua.VariantType.Float.value: "<f4", ua.VariantType.Double.value: "<f8",
}
_NULL_RECORD = np.dtype([("h", "<u4"), ("m", "u1"), ("vt", "u1"), ("s", "<u4"), ("src", "<i8"), ("srv", "<i8")])
_VALUE_RECORDS = {code: np.dtype([("h", "<u4"), ("m", "u1"), ("vt", "u1"), ("v", fmt), ("s", "<u4"),
                                  ("src", "<i8"), ("srv", "<i8")]) for code, fmt in VALUE_FORMATS.items()}


def is_plain(isub: InternalSubscription, mdata: MonitoredItemData) -> bool:
    """May this item's data changes be packed (see the module docstring)?"""
    if isub.pub_request_callback is None or mdata.mode != _REPORTING or isub.data.RevisedPublishingInterval <= 0.0:
        return False
    if getattr(mdata, "edge_sampling_ns", 0):  # samples slower than its node changes: the adapter's timer path
        return False
    flt = mdata.filter
    if flt is None or (isinstance(flt, ua.ExtensionObject) and flt.Body is None):  # no filter (a null ExtensionObject)
        return True
    if not hasattr(flt, "Trigger") or not hasattr(flt, "DeadbandType"):
        return False
    return int(flt.Trigger) == _STATUS_VALUE and int(flt.DeadbandType) == _NONE_DEADBAND


class PackedSubscription:
    """The plain monitored items of one subscription, as arrays (see the module docstring)."""

    def __init__(self, isub: InternalSubscription, mis: MonitoredItemService, n_tags: int) -> None:
        self.isub = isub
        self.mis = mis
        self.item_of = np.full(n_tags, -1, dtype=np.int64)  # tag id -> row
        self.tids = np.zeros(0, dtype=np.int64)
        self.handles = np.zeros(0, dtype=np.uint32)  # client handles
        self.queue = np.zeros(0, dtype=np.int64)  # revised queue sizes
        self.pending = np.zeros(0, dtype=bool)
        self.pending_u8 = self.pending.view(np.uint8)  # the same flags for the compiled marking (_changes.pyx)
        self.n_queueing = 0  # items whose queue holds more than one value (mark() spills only for those)
        self.mids: list[int] = []
        self.cb_handles: list[int] = []  # the address space's callback handles (what _Watchers pops)
        self._free: list[int] = []  # rows of removed items, reused

    def __len__(self) -> int:
        return len(self.mids) - len(self._free)

    def add(self, tid: int, mid: int, cb_handle: int, mdata: MonitoredItemData) -> int | None:
        """Take up an item (None when its tag already has a packed item here: the library keeps that one)."""
        if tid >= len(self.item_of) or self.item_of[tid] >= 0:
            return None
        if self._free:
            row = self._free.pop()
            self.mids[row], self.cb_handles[row] = mid, cb_handle
        else:
            row = len(self.mids)
            self.mids.append(mid)
            self.cb_handles.append(cb_handle)
            if row >= len(self.tids):
                self._grow(row + 1)
        self.tids[row] = tid
        self.handles[row] = int(mdata.client_handle or 0)
        self.queue[row] = int(mdata.queue_size or 0)
        self.n_queueing += int(self.queue[row] != 1)
        self.pending[row] = False
        self.item_of[tid] = row
        return row

    def _grow(self, need: int) -> None:
        """Room for at least ``need`` rows, doubling: one ``np.append`` per item copied every array
        per item (quadratic: a client creating 50,000 items spent seconds of the server's loop in it).
        Rows past ``len(self.mids)`` are unused: tag id -1, never pending."""
        size = max(need, 2 * len(self.tids), 64)
        extra = size - len(self.tids)
        self.tids = np.concatenate([self.tids, np.full(extra, -1, dtype=np.int64)])
        self.handles = np.concatenate([self.handles, np.zeros(extra, dtype=np.uint32)])
        self.queue = np.concatenate([self.queue, np.zeros(extra, dtype=np.int64)])
        self.pending = np.concatenate([self.pending, np.zeros(extra, dtype=bool)])
        self.pending_u8 = self.pending.view(np.uint8)

    def remove(self, row: int) -> None:
        tid = int(self.tids[row])
        if 0 <= tid < len(self.item_of) and self.item_of[tid] == row:
            self.item_of[tid] = -1
        self.pending[row] = False
        self.n_queueing -= int(self.queue[row] != 1)
        self.queue[row] = 1
        self.tids[row] = -1
        self.mids[row] = -1
        self.cb_handles[row] = -1
        self._free.append(row)

    # ------------------------------------------------------------------ per batch

    def mark(self, tids: np.ndarray, spill: Callable[[PackedSubscription, np.ndarray], None]) -> None:
        """The items watching these changed tags have a new value pending (call before the
        publisher's arrays take the new values: ``spill`` queues the old ones where needed)."""
        rows = self.item_of[tids]
        rows = rows[rows >= 0]
        if rows.size == 0:
            return
        if self.n_queueing:
            again = rows[self.pending[rows] & (self.queue[rows] != 1)]
            if again.size:
                spill(self, again)
        self.pending[rows] = True
        self.queued()

    def queued(self) -> None:
        """Items of this subscription have values pending: its next publish asks :meth:`take` for them."""
        queue = self.isub._triggered_datachanges
        if PACKED_KEY not in queue:
            queue[PACKED_KEY] = []

    # ------------------------------------------------------------------ at publish time

    def take(self, pub: FastPublisher) -> tuple[int, bytes]:
        """Encode the pending items' current values as MonitoredItemNotification records; clear them."""
        rows = np.flatnonzero(self.pending)
        if rows.size == 0:
            return 0, b""
        self.pending[rows] = False
        return len(rows), encode_rows(pub, self.tids[rows], self.handles[rows])


def encode_rows(pub: FastPublisher, tids: np.ndarray, handles: np.ndarray) -> bytes:
    """Binary MonitoredItemNotifications (asyncua's layout) of tags' current values, one per row."""
    v = pub._last_v[tids]
    q = pub._last_q[tids]
    codes = pub._vcodes[tids]
    null = (q >= Quality.BAD_NO_COMMUNICATION) | np.isnan(v)
    status = _STATUS[q]
    status[null & (q < Quality.BAD_NO_COMMUNICATION)] = _BAD_CONFIG  # a Good sample without a value
    src = pub._last_src[tids] // 1000 * 10 + EPOCH_TICKS  # whole microseconds, as fastpath.ua_time
    srv = pub._last_srv[tids] // 1000 * 10 + EPOCH_TICKS
    parts: list[bytes] = []
    if null.any():
        sel = null
        rec = np.empty(int(sel.sum()), dtype=_NULL_RECORD)
        rec["h"], rec["m"], rec["vt"] = handles[sel], 0x0F, 0  # a Null variant, as the delivery path sends it
        rec["s"], rec["src"], rec["srv"] = status[sel], src[sel], srv[sel]
        parts.append(rec.tobytes())
    for code in np.unique(codes[~null]).tolist():
        sel = ~null & (codes == code)
        dtype = _VALUE_RECORDS[code]
        rec = np.empty(int(sel.sum()), dtype=dtype)
        rec["h"], rec["m"], rec["vt"], rec["s"], rec["src"], rec["srv"] = (
            handles[sel], 0x0F, code, status[sel], src[sel], srv[sel])
        vals = v[sel]
        if code == ua.VariantType.Boolean.value:
            rec["v"] = vals != 0.0
        elif dtype["v"].kind in "iu":
            rec["v"] = np.trunc(vals)
        else:
            rec["v"] = vals
        parts.append(rec.tobytes())
    return b"".join(parts)


class PackedRegistry:
    """Every subscription's packed items for one publisher, and the lookups the hot path needs."""

    def __init__(self, pub: FastPublisher) -> None:
        self.pub = pub
        self.subs: dict[int, PackedSubscription] = {}  # id(isub) -> its packed items
        self.by_handle: dict[int, tuple[PackedSubscription, int]] = {}  # callback handle -> (sub, row)
        self.packed_per_tag = np.zeros(0, dtype=np.int32)  # packed items per tag (all subscriptions)

    def rebind(self, n_tags: int, tid_map: dict[int, int] | None) -> None:
        """A new plant: items move with their tags (``tid_map``: old id -> new id); others are dropped."""
        old = list(self.by_handle.items())
        self.subs, self.by_handle = {}, {}
        self.packed_per_tag = np.zeros(n_tags, dtype=np.int32)
        self.pub._lib_dirty = True
        for handle, (ps, row) in old:
            new_tid = tid_map.get(int(ps.tids[row])) if tid_map else None
            mdata = ps.mis._monitored_items.get(ps.mids[row])
            if new_tid is not None and mdata is not None:
                self.add(ps.isub, ps.mis, new_tid, ps.mids[row], handle, mdata)

    def add(self, isub: InternalSubscription, mis: MonitoredItemService, tid: int, mid: int, handle: int,
            mdata: MonitoredItemData) -> bool:
        ps = self.subs.get(id(isub))
        if ps is None:
            ps = self.subs[id(isub)] = PackedSubscription(isub, mis, len(self.packed_per_tag))
            _SUBSCRIPTIONS[id(isub)] = (weakref.ref(isub), self)
        row = ps.add(tid, mid, handle, mdata)
        if row is None:
            return False
        self.by_handle[handle] = (ps, row)
        self.packed_per_tag[tid] += 1
        self.pub._lib_dirty = True
        return True

    def drop(self, handle: int, spill: bool = True) -> None:
        """The item with this callback handle leaves the packed path (deleted: ``spill`` False; or no
        longer plain: its pending value goes to the library's queue)."""
        entry = self.by_handle.pop(handle, None)
        if entry is None:
            return
        ps, row = entry
        tid = int(ps.tids[row])
        if spill and ps.pending[row] and 0 <= tid < len(self.packed_per_tag):
            self.pub.spill_rows(ps, np.array([row]), 0)  # its pending value still goes out, the library's way
        ps.remove(row)
        if 0 <= tid < len(self.packed_per_tag):
            self.packed_per_tag[tid] -= 1
            self.pub._lib_dirty = True
        if not len(ps):
            self.subs.pop(id(ps.isub), None)
            ps.isub._triggered_datachanges.pop(PACKED_KEY, None)
            _SUBSCRIPTIONS.pop(id(ps.isub), None)

    def drop_item(self, mis: MonitoredItemService, mid: int) -> None:
        """SetMonitoringMode/ModifyMonitoredItems changed an item: back to the library's path."""
        mdata = mis._monitored_items.get(mid)
        if mdata is not None and mdata.callback_handle in self.by_handle:
            self.drop(mdata.callback_handle)


class PackedDataChange(ua.DataChangeNotification):
    """A DataChangeNotification that also carries packed records (encoded by :func:`encode_datachange`;
    its TypeId is found through the base class)."""

    __slots__ = ("_edge_packed",)


#: id(InternalSubscription) -> (weak reference to it, the registry that packs its items)
_SUBSCRIPTIONS: dict[int, tuple[weakref.ref, PackedRegistry]] = {}


# ----------------------------------------------------------------------------- asyncua hooks

class _Previous:
    """The methods :func:`install` wrapped (the library's, or the adapter's sampling wrapper), restored by :func:`uninstall`."""

    pop: Any = None
    set_mode: Any = None
    modify: Any = None


def _registry_of(isub: InternalSubscription) -> PackedRegistry | None:
    entry = _SUBSCRIPTIONS.get(id(isub))
    if entry is None or entry[0]() is not isub:
        return None
    return entry[1]


def _pop_triggered_datachanges(self: InternalSubscription, result: ua.PublishResult) -> None:
    reg = _registry_of(self)
    self._triggered_datachanges.pop(PACKED_KEY, None)
    count, blob = (0, b"")
    if reg is not None:
        ps = reg.subs.get(id(self))
        if ps is not None:
            count, blob = ps.take(reg.pub)
    _Previous.pop(self, result)
    if not count:
        return
    data = result.NotificationMessage.NotificationData
    at = next((i for i, n in enumerate(data) if isinstance(n, ua.DataChangeNotification)), None)
    notif = PackedDataChange(MonitoredItems=data[at].MonitoredItems if at is not None else [])
    notif._edge_packed = (count, blob)
    if at is None:
        data.insert(0, notif)
    else:
        data[at] = notif


async def _set_monitoring_mode(self: MonitoredItemService, mode: ua.MonitoringMode, mid: int) -> ua.StatusCode:
    reg = _registry_of(self.isub)
    if reg is not None:
        reg.drop_item(self, mid)
    return await _Previous.set_mode(self, mode, mid)


def _modify_monitored_item(self: MonitoredItemService, params: Any) -> Any:
    reg = _registry_of(self.isub)
    if reg is not None:
        reg.drop_item(self, params.MonitoredItemId)
    return _Previous.modify(self, params)


_U32 = np.dtype("<u4")
_library_datachange_serializer: Callable[[Any], bytes] | None = None
_diag_serializer: Callable[[Any], bytes] | None = None


def encode_datachange(notif: ua.DataChangeNotification) -> bytes:
    """A DataChangeNotification: the library's items and the packed records under one count."""
    global _library_datachange_serializer, _diag_serializer
    if _library_datachange_serializer is None or _diag_serializer is None:
        _library_datachange_serializer = asyncua_adapter._library_dataclass_serializer(ua.DataChangeNotification)
        _diag_serializer = ua_binary.create_list_serializer(ua.DiagnosticInfo)
    body = _library_datachange_serializer(notif)
    packed = getattr(notif, "_edge_packed", None)
    if packed is None:
        return body
    count, blob = packed
    diag = _diag_serializer(notif.DiagnosticInfos)
    n = int.from_bytes(body[:4], "little", signed=True)
    items = body[4:len(body) - len(diag)]
    return (max(n, 0) + count).to_bytes(4, "little", signed=True) + items + blob + diag


def install() -> None:
    """Wrap the three asyncua methods (the adapter calls it when the first fast server starts,
    after its own patches); :func:`uninstall` restores what was there."""
    if _Previous.pop is not None:
        return
    _Previous.pop = InternalSubscription._pop_triggered_datachanges
    _Previous.set_mode = MonitoredItemService._set_monitoring_mode
    _Previous.modify = MonitoredItemService._modify_monitored_item
    InternalSubscription._pop_triggered_datachanges = _pop_triggered_datachanges
    MonitoredItemService._set_monitoring_mode = _set_monitoring_mode
    MonitoredItemService._modify_monitored_item = _modify_monitored_item


def uninstall() -> None:
    if _Previous.pop is None:
        return
    InternalSubscription._pop_triggered_datachanges = _Previous.pop
    MonitoredItemService._set_monitoring_mode = _Previous.set_mode
    MonitoredItemService._modify_monitored_item = _Previous.modify
    _Previous.pop = _Previous.set_mode = _Previous.modify = None


asyncua_adapter.register_extension(install, uninstall, {PackedDataChange: encode_datachange})
