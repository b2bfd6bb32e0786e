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

**The item itself lives only here** (issue 21, memory): a plain item is packed when it is created
(``MonitoredItemService._create_data_change_monitored_item``, wrapped: its initial value is queued
the library's way first) and asyncua's records of it (``MonitoredItemData``, ``MonitoredItemValues``
with a deep copy of the value, the request's ``ReadValueId`` and filter, the entries of
``_monitored_items``, ``_monitored_datachange``, ``AddressSpace._handle_to_attribute_map`` and the
callback in the tag's Value record, which the publisher then lets go) give way to one row of the
subscription's arrays (item id, callback handle, client handle, queue size, tag id, a few flags;
a filter object only for the few items that sent a DataChangeFilter): ~2.3 KB per item before,
~0.1-0.3 KB now (bench/item_memory.py). When a service asks for an item the records are rebuilt
from the row: SetMonitoringMode and ModifyMonitoredItems (wrapped) put it back on the library's
path first (its pending value queued the library's way); it is packed again by the delivery path
when it is plain again. DeleteMonitoredItems (``_delete_monitored_items``) and a deleted
subscription or session (``delete_all_monitored_items``) drop rows without rebuilding anything.
An item whose tag leaves the plant on a reload gets its records back and one last notification,
Bad_NodeIdUnknown (no callback after it: silent until the client deletes it). Internal
(server-side) subscriptions never take this path: they read the objects, not the bytes.

Pinned to asyncua 2.1: ``InternalSubscription._triggered_datachanges`` and
``_pop_triggered_datachanges``, ``MonitoredItemService._monitored_items``/``_monitored_datachange``/
``_set_monitoring_mode``/``_modify_monitored_item``/``_create_data_change_monitored_item``/
``_delete_monitored_items``/``delete_all_monitored_items``, ``MonitoredItemData``,
``AddressSpace._handle_to_attribute_map``/``_nodes``; tests/outputs/opcua check the bytes against the
library's encoder and the delivered values with asyncua and node-opcua clients.
"""
from __future__ import annotations

import time
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
_VALUE_ATTR = int(ua.AttributeIds.Value)
FLAG_EMPTY_RANGE, FLAG_NULL_FILTER = 1, 2  # PackedSubscription.flags: what to give back when an item leaves

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
        self.mids = np.zeros(0, dtype=np.int64)  # monitored item ids (-1: free row)
        self.cb_handles = np.zeros(0, dtype=np.int64)  # the address space's callback handles
        self.flags = np.zeros(0, dtype=np.uint8)  # how the request read (IndexRange "", a null filter object)
        self.filters: dict[int, Any] = {}  # row -> the item's DataChangeFilter object, for the few that sent one
        self.mid_base = 0  # row_of_mid[mid - mid_base]: monitored item id -> row (-1: not packed here)
        self.row_of_mid = np.zeros(0, dtype=np.int32)
        self.n_queueing = 0  # items whose queue holds more than one value (mark() spills only for those)
        self.n_rows = 0  # rows used so far (free ones included)
        self._free: list[int] = []  # rows of removed items, reused

    def __len__(self) -> int:
        return self.n_rows - len(self._free)

    def add(self, tid: int, mid: int, cb_handle: int, mdata: MonitoredItemData) -> int | None:
        """Take up an item (None when its tag already has a packed item here: the library keeps that one)."""
        if tid >= len(self.item_of) or self.item_of[tid] >= 0:
            return None
        if self._free:
            row = self._free.pop()
        else:
            row = self.n_rows
            self.n_rows += 1
            if row >= len(self.tids):
                self._grow(row + 1)
        self.mids[row], self.cb_handles[row] = mid, cb_handle
        self.tids[row] = tid
        self.handles[row] = int(mdata.client_handle or 0)
        self.queue[row] = int(mdata.queue_size or 0)
        self.n_queueing += int(self.queue[row] != 1)
        self.pending[row] = False
        flags = 0
        rvi = mdata.read_value_id
        if rvi is not None and rvi.IndexRange == "":
            flags |= FLAG_EMPTY_RANGE
        flt = mdata.filter
        if flt is not None:
            if isinstance(flt, ua.ExtensionObject) and flt.Body is None:
                flags |= FLAG_NULL_FILTER
            else:
                self.filters[row] = flt
        self.flags[row] = flags
        self.item_of[tid] = row
        self._index_mid(mid, row)
        return row

    def _index_mid(self, mid: int, row: int) -> None:
        """``row_of_mid`` covers ``mid`` (ids of one subscription are consecutive: one int32 per id)."""
        if not len(self.row_of_mid):
            self.mid_base = mid
        if mid < self.mid_base:
            shift = self.mid_base - mid
            self.row_of_mid = np.concatenate([np.full(shift, -1, dtype=np.int32), self.row_of_mid])
            self.mid_base = mid
        at = mid - self.mid_base
        if at >= len(self.row_of_mid):
            extra = max(at + 1, 2 * len(self.row_of_mid), 64) - len(self.row_of_mid)
            self.row_of_mid = np.concatenate([self.row_of_mid, np.full(extra, -1, dtype=np.int32)])
        self.row_of_mid[at] = row

    def row_of(self, mid: int) -> int:
        """The row of packed item ``mid`` (-1: not packed here)."""
        at = mid - self.mid_base
        if 0 <= at < len(self.row_of_mid):
            return int(self.row_of_mid[at])
        return -1

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.mids[:self.n_rows] >= 0)

    def _grow(self, need: int) -> None:
        """Room for at least ``need`` rows, doubling: one ``np.append`` per item copied every array
        per item (quadratic: a client creating 50,000 items spent seconds of the server's loop in it).
        Rows past ``n_rows`` are unused: tag id -1, never pending."""
        size = max(need, 2 * len(self.tids), 64)
        extra = size - len(self.tids)
        self.tids = np.concatenate([self.tids, np.full(extra, -1, dtype=np.int64)])
        self.handles = np.concatenate([self.handles, np.zeros(extra, dtype=np.uint32)])
        self.queue = np.concatenate([self.queue, np.zeros(extra, dtype=np.int64)])
        self.pending = np.concatenate([self.pending, np.zeros(extra, dtype=bool)])
        self.pending_u8 = self.pending.view(np.uint8)
        self.mids = np.concatenate([self.mids, np.full(extra, -1, dtype=np.int64)])
        self.cb_handles = np.concatenate([self.cb_handles, np.full(extra, -1, dtype=np.int64)])
        self.flags = np.concatenate([self.flags, np.zeros(extra, dtype=np.uint8)])

    def remove(self, row: int) -> None:
        tid = int(self.tids[row])
        if 0 <= tid < len(self.item_of) and self.item_of[tid] == row:
            self.item_of[tid] = -1
        at = int(self.mids[row]) - self.mid_base
        if 0 <= at < len(self.row_of_mid) and self.row_of_mid[at] == row:
            self.row_of_mid[at] = -1
        self.pending[row] = False
        self.n_queueing -= int(self.queue[row] != 1)
        self.queue[row] = 1
        self.tids[row] = -1
        self.mids[row] = -1
        self.cb_handles[row] = -1
        self.flags[row] = 0
        self.filters.pop(row, None)
        self._free.append(row)

    def filter_of(self, row: int) -> Any:
        """The item's filter as the client sent it (None, a null ExtensionObject or its DataChangeFilter)."""
        flt = self.filters.get(row)
        if flt is None and self.flags[row] & FLAG_NULL_FILTER:
            return ua.ExtensionObject()
        return flt

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


def enqueue_row(ps: PackedSubscription, row: int, dv: ua.DataValue, reserve: int) -> int:
    """A packed item's value onto its subscription's queue the library's way (capped at its queue
    size less ``reserve``, at least 1: the newer value waits in the row); returns 1."""
    notif = ua.MonitoredItemNotification(ClientHandle=int(ps.handles[row]), Value=dv)
    queue = ps.isub._triggered_datachanges
    mid = int(ps.mids[row])
    items = queue.get(mid)
    if items is None:
        queue[mid] = [notif]
        return 1
    size = max(int(ps.queue[row]) - reserve, 1) if ps.queue[row] else 0
    if size and len(items) >= size:
        del items[: len(items) - size + 1]
    items.append(notif)
    return 1


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
    """Every subscription's packed items for one publisher, and the lookups the hot path needs.

    A packed item exists only here (issue 21: asyncua's records of a monitored item, its
    ``MonitoredItemData``, ``MonitoredItemValues``, the request's ``ReadValueId`` and filter, three
    handle maps and a callback in the tag's Value record, were ~1.6 KB each): :meth:`take_up` moves
    an item out of the library's tables into a row of its subscription's arrays, :meth:`restore`
    puts the same records back when the item stops being plain (SetMonitoringMode,
    ModifyMonitoredItems) or its tag leaves the plant, :meth:`drop_mid` / :meth:`drop_subscription`
    delete it (DeleteMonitoredItems, a deleted subscription or session)."""

    def __init__(self, pub: FastPublisher) -> None:
        self.pub = pub
        self.subs: dict[int, PackedSubscription] = {}  # id(isub) -> its packed items
        self.packed_per_tag = np.zeros(0, dtype=np.int32)  # packed items per tag (all subscriptions)
        self.ns: int | None = None  # namespace of the plant's tag nodes (their NodeIds are rebuilt from it)

    @property
    def count(self) -> int:
        return sum(len(ps) for ps in self.subs.values())

    def rebind(self, n_tags: int, tid_map: dict[int, int] | None, old_keys: list[str] | None = None) -> None:
        """A new plant: items move with their tags (``tid_map``: old id -> new id); the items of
        tags that left go back to the library's tables (``old_keys``: the old plant's tag keys)."""
        old = [(ps, ps.live_rows()) for ps in self.subs.values()]
        self.subs = {}
        self.packed_per_tag = np.zeros(n_tags, dtype=np.int32)
        self.pub._lib_dirty = True
        for ps, rows in old:
            fresh = PackedSubscription(ps.isub, ps.mis, n_tags)
            for row in rows.tolist():
                old_tid = int(ps.tids[row])
                new_tid = tid_map.get(old_tid) if tid_map else None
                item = _RowItem(ps, row)
                if new_tid is not None and fresh.add(new_tid, int(ps.mids[row]), int(ps.cb_handles[row]),
                                                     item) is not None:
                    new_row = fresh.row_of(int(ps.mids[row]))
                    fresh.pending[new_row] = ps.pending[row]
                    self.packed_per_tag[new_tid] += 1
                else:
                    key = old_keys[old_tid] if old_keys and 0 <= old_tid < len(old_keys) else None
                    self._give_back(ps, row, key, None)
            if len(fresh):
                self.subs[id(ps.isub)] = fresh
            else:
                _SUBSCRIPTIONS.pop(id(ps.isub), None)
                ps.isub._triggered_datachanges.pop(PACKED_KEY, None)

    def add(self, isub: InternalSubscription, mis: MonitoredItemService, tid: int, mid: int, handle: int,
            mdata: MonitoredItemData) -> bool:
        """Rows for an item (the arrays only; :meth:`take_up` also moves it out of the library's tables)."""
        ps = self.subs.get(id(isub))
        if ps is None:
            ps = self.subs[id(isub)] = PackedSubscription(isub, mis, len(self.packed_per_tag))
            _SUBSCRIPTIONS[id(isub)] = (weakref.ref(isub), self)
        row = ps.add(tid, mid, handle, mdata)
        if row is None:
            return False
        self.packed_per_tag[tid] += 1
        self.pub._lib_dirty = True
        return True

    def take_up(self, mis: MonitoredItemService, tid: int, mid: int, handle: int, mdata: MonitoredItemData,
                record: Any) -> bool:
        """A plain item of tag ``tid`` (``record``: the tag's Value record) leaves asyncua's tables for
        a row here; False when it cannot (it stays the library's)."""
        rvi = mdata.read_value_id
        aspace = mis.aspace
        if rvi is None or int(rvi.AttributeId) != _VALUE_ATTR or rvi.IndexRange not in (None, ""):
            return False
        enc = rvi.DataEncoding
        if enc is not None and (enc.NamespaceIndex or enc.Name):
            return False
        if not 0 <= tid < len(self.pub._tags) or rvi.NodeId != self.tag_nodeid(self.pub._tags[tid].key,
                                                                              rvi.NodeId.NamespaceIndex):
            return False
        if self.ns is None:
            self.ns = rvi.NodeId.NamespaceIndex
        elif self.ns != rvi.NodeId.NamespaceIndex:
            return False
        callbacks = record.datachange_callbacks
        if mis._monitored_items.get(mid) is not mdata or mis._monitored_datachange.get(handle) != mid \
                or handle not in callbacks or handle not in aspace._handle_to_attribute_map:
            return False
        if not self.add(mis.isub, mis, tid, mid, handle, mdata):
            return False
        del mis._monitored_items[mid]
        del mis._monitored_datachange[handle]
        del aspace._handle_to_attribute_map[handle]
        del callbacks[handle]  # the last one: the publisher lets go of the record
        return True

    @staticmethod
    def tag_nodeid(key: str, ns: int) -> ua.NodeId:
        return ua.NodeId(key, ns, ua.NodeIdType.String)

    def _locate(self, mis: MonitoredItemService, mid: int) -> tuple[PackedSubscription, int] | None:
        ps = self.subs.get(id(mis.isub))
        if ps is None or ps.mis is not mis:
            return None
        row = ps.row_of(mid)
        return (ps, row) if row >= 0 else None

    def is_packed(self, mis: MonitoredItemService, mid: int) -> bool:
        return self._locate(mis, mid) is not None

    def restore(self, mis: MonitoredItemService, mid: int) -> bool:
        """Packed item ``mid`` goes back to the library's tables (as it was, its pending value queued
        the library's way): SetMonitoringMode/ModifyMonitoredItems change it next. False: not packed."""
        at = self._locate(mis, mid)
        if at is None:
            return False
        ps, row = at
        tid = int(ps.tids[row])
        self._give_back(ps, row, self.pub._tags[tid].key, tid)
        self._forget(ps, row, tid)
        return True

    def _give_back(self, ps: PackedSubscription, row: int, key: str | None, tid: int | None) -> None:
        """asyncua's records of a packed item, rebuilt: ``MonitoredItemData`` in the subscription's
        tables, the callback handle in the address space's map and, when its tag ``tid`` is in the
        plant, in the tag's Value record (else it is sent Bad_NodeIdUnknown and stays until the client deletes it)."""
        mis = ps.mis
        mid, handle = int(ps.mids[row]), int(ps.cb_handles[row])
        nodeid = self.tag_nodeid(key, self.ns if self.ns is not None else 0) if key is not None else ua.NodeId()
        mdata = MonitoredItemData()
        mdata.client_handle = int(ps.handles[row])
        mdata.callback_handle = handle
        mdata.monitored_item_id = mid
        mdata.mode = _REPORTING
        mdata.read_value_id = ua.ReadValueId(NodeId=nodeid, AttributeId=ua.AttributeIds.Value,
                                             IndexRange="" if ps.flags[row] & FLAG_EMPTY_RANGE else None)
        mdata.filter = ps.filter_of(row)
        mdata.queue_size = int(ps.queue[row])
        mdata.edge_sampling_ns = 0  # the adapter's sampling state (packed: none)
        mdata.edge_sampled_ns = time.monotonic_ns()
        mis._monitored_items[mid] = mdata
        mis._monitored_datachange[handle] = mid
        if tid is None:  # no node to reach any more: told so once; a delete finds nothing to unhook (answers Good)
            self.pub.stats.notifications += asyncua_adapter.enqueue(mis, mid, mdata, asyncua_adapter.gone_value(),
                                                                    self.pub._spawn)
            return
        mdata.mvalue.current_dvalue = self.pub.read_value(tid)  # the last value this item was sent
        mis.aspace._handle_to_attribute_map[handle] = (nodeid, ua.AttributeIds.Value)
        if ps.pending[row]:  # its newest value still goes out, now from the library's queue
            ps.pending[row] = False
            self.pub.stats.notifications += asyncua_adapter.enqueue(mis, mid, mdata, self.pub.read_value(tid),
                                                                    self.pub._spawn)
        # the record asyncua reaches through the node table (a cached node may hold an earlier one)
        node = mis.aspace._nodes.get(nodeid)
        record = node.attributes[ua.AttributeIds.Value] if node is not None else self.pub.value_record(tid)
        record.datachange_callbacks[handle] = mis.datachange_callback

    def _forget(self, ps: PackedSubscription, row: int, tid: int) -> None:
        ps.remove(row)
        if 0 <= tid < len(self.packed_per_tag):
            self.packed_per_tag[tid] -= 1
        self.pub._lib_dirty = True
        if not len(ps):
            self._drop_sub(ps)

    def _drop_sub(self, ps: PackedSubscription) -> None:
        self.subs.pop(id(ps.isub), None)
        ps.isub._triggered_datachanges.pop(PACKED_KEY, None)
        _SUBSCRIPTIONS.pop(id(ps.isub), None)

    def drop_mid(self, mis: MonitoredItemService, mid: int) -> bool:
        """DeleteMonitoredItems of a packed item (what the library does for its own: values it
        already queued still go out); False when ``mid`` is not packed."""
        at = self._locate(mis, mid)
        if at is None:
            return False
        ps, row = at
        self._forget(ps, row, int(ps.tids[row]))
        return True

    def drop_subscription(self, isub: InternalSubscription) -> None:
        """Every packed item of a subscription that is being deleted."""
        ps = self.subs.get(id(isub))
        if ps is None:
            return
        tids = ps.tids[ps.live_rows()]
        tids = tids[(tids >= 0) & (tids < len(self.packed_per_tag))]
        np.subtract.at(self.packed_per_tag, tids, 1)
        self.pub._lib_dirty = True
        self._drop_sub(ps)


class _RowItem:
    """A packed row seen as the fields :meth:`PackedSubscription.add` reads (moving it to a new plant)."""

    def __init__(self, ps: PackedSubscription, row: int) -> None:
        self.client_handle = int(ps.handles[row])
        self.queue_size = int(ps.queue[row])
        self.read_value_id = ua.ReadValueId(IndexRange="" if ps.flags[row] & FLAG_EMPTY_RANGE else None)
        self.filter = ps.filter_of(row)


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
    create: Any = None
    delete: Any = None
    delete_all: Any = None


def _registry_of(isub: InternalSubscription) -> PackedRegistry | None:
    entry = _SUBSCRIPTIONS.get(id(isub))
    if entry is None or entry[0]() is not isub:
        return None
    return entry[1]


def _pop_triggered_datachanges(self: InternalSubscription, result: ua.PublishResult) -> None:
    reg = _registry_of(self)
    queue = self._triggered_datachanges
    queue.pop(PACKED_KEY, None)
    count, blob = (0, b"")
    if reg is not None:
        ps = reg.subs.get(id(self))
        if ps is not None:
            if queue:
                _superseded(ps, queue)
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


def _superseded(ps: PackedSubscription, queue: dict[int, list[Any]]) -> None:
    """A packed item of queue size 1 with a newer value pending: the value it queued the library's
    way before it was packed (its initial value) is superseded, as a queue of one keeps the newest."""
    for mid in list(queue):
        row = ps.row_of(mid)
        if row >= 0 and ps.pending[row] and ps.queue[row] == 1:
            del queue[mid]


async def _create_data_change_monitored_item(self: MonitoredItemService, params: ua.MonitoredItemCreateRequest
                                             ) -> ua.MonitoredItemCreateResult:
    """A new item that is plain is packed at once (its initial value was queued the library's way)."""
    result = await _Previous.create(self, params)
    if result.StatusCode.is_good():
        mdata = self._monitored_items.get(result.MonitoredItemId)
        if mdata is not None and mdata.callback_handle is not None:
            _take_up_new(self, result.MonitoredItemId, mdata)
    return result


def _take_up_new(mis: MonitoredItemService, mid: int, mdata: MonitoredItemData) -> None:
    handle = mdata.callback_handle
    entry = mis.aspace._handle_to_attribute_map.get(handle)
    if entry is None or int(entry[1]) != _VALUE_ATTR:
        return
    node = mis.aspace._nodes.get(entry[0])
    record = node.attributes.get(ua.AttributeIds.Value) if node is not None else None
    watchers = getattr(record, "datachange_callbacks", None)
    owner = getattr(watchers, "owner", None)  # a tag's Value record: fastpath._Watchers
    take_up = getattr(owner, "take_up", None)
    if take_up is not None:
        take_up(mis, mid, handle, mdata, watchers.tid, record)  # type: ignore[union-attr]


def _delete_monitored_items(self: MonitoredItemService, mid: int) -> ua.StatusCode:
    reg = _registry_of(self.isub)
    if reg is not None and reg.drop_mid(self, mid):
        return ua.StatusCode()
    return _Previous.delete(self, mid)


def _delete_all_monitored_items(self: MonitoredItemService) -> None:
    reg = _registry_of(self.isub)
    if reg is not None:
        reg.drop_subscription(self.isub)
    _Previous.delete_all(self)


async def _set_monitoring_mode(self: MonitoredItemService, mode: ua.MonitoringMode, mid: int) -> ua.StatusCode:
    reg = _registry_of(self.isub)
    if reg is not None:
        reg.restore(self, mid)
    return await _Previous.set_mode(self, mode, mid)


def _modify_monitored_item(self: MonitoredItemService, params: Any) -> Any:
    reg = _registry_of(self.isub)
    if reg is not None:
        reg.restore(self, params.MonitoredItemId)
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
    """Wrap the asyncua methods above (the adapter calls it when the first fast server starts,
    after its own patches); :func:`uninstall` restores what was there."""
    if _Previous.pop is not None:
        return
    _Previous.pop = InternalSubscription._pop_triggered_datachanges
    _Previous.set_mode = MonitoredItemService._set_monitoring_mode
    _Previous.modify = MonitoredItemService._modify_monitored_item
    _Previous.create = MonitoredItemService._create_data_change_monitored_item
    _Previous.delete = MonitoredItemService._delete_monitored_items
    _Previous.delete_all = MonitoredItemService.delete_all_monitored_items
    InternalSubscription._pop_triggered_datachanges = _pop_triggered_datachanges
    MonitoredItemService._set_monitoring_mode = _set_monitoring_mode
    MonitoredItemService._modify_monitored_item = _modify_monitored_item
    MonitoredItemService._create_data_change_monitored_item = _create_data_change_monitored_item
    MonitoredItemService._delete_monitored_items = _delete_monitored_items
    MonitoredItemService.delete_all_monitored_items = _delete_all_monitored_items


def uninstall() -> None:
    if _Previous.pop is None:
        return
    InternalSubscription._pop_triggered_datachanges = _Previous.pop
    MonitoredItemService._set_monitoring_mode = _Previous.set_mode
    MonitoredItemService._modify_monitored_item = _Previous.modify
    MonitoredItemService._create_data_change_monitored_item = _Previous.create
    MonitoredItemService._delete_monitored_items = _Previous.delete
    MonitoredItemService.delete_all_monitored_items = _Previous.delete_all
    _Previous.pop = _Previous.set_mode = _Previous.modify = None
    _Previous.create = _Previous.delete = _Previous.delete_all = None


asyncua_adapter.register_extension(install, uninstall, {PackedDataChange: encode_datachange})
