"""Every asyncua internal the OPC UA value path relies on for speed, fenced here and switchable.

Two replacements of the library's per-change work (measurements: docs/decisions/opcua.md):

1. **Direct delivery** (:func:`deliver_fast`): a data change goes straight onto each monitored
   item's queue, without asyncua's per-change deepcopy and service layers. It reads
   ``MonitoredItemService._monitored_datachange`` / ``_monitored_items``, ``MonitoredItemData.mvalue``
   and ``InternalSubscription._triggered_datachanges`` / ``_trigger_publish``.
2. **The notification encoder** (:func:`encode_notification`): ``MonitoredItemNotification`` is
   encoded with a few ``struct`` calls instead of the generic dataclass serializer, by replacing
   ``asyncua.ua.ua_binary.create_dataclass_serializer`` (process-wide) while a fast server runs.

3. **Requested sampling intervals** (:func:`_create_with_sampling`, :func:`_modify_with_sampling`):
   asyncua 2.1 revises every monitored item's sampling interval to the subscription's publishing
   interval and delivers every change. The fast path honours what a client asks (Part 4,
   5.12.1.2): -1 is the publishing interval, 0 the fastest the node changes (its
   MinimumSamplingInterval: the tag's poll interval), anything else at least that; an item whose
   revised interval is slower than its node changes gets at most one notification per interval,
   the newest value. A modified item's queue size is capped like a new one's (the library took
   any size, 0 unbounded). Wraps ``MonitoredItemService._create_data_change_monitored_item`` and
   ``_modify_monitored_item``.

4. **Extensions** (:func:`register_extension`): modules with more asyncua internals of their own
   (:mod:`edge.outputs.opcua.packed`: data changes of plain items encoded a batch at a time, and
   those items kept as rows of arrays instead of asyncua's per-item records) register their
   install/uninstall pair and the encoders of their own notification classes;
   they are installed and removed with the rest.

5. **Nodes on first access** (:mod:`edge.outputs.opcua.lazy_nodes`): a fast server's own node
   table (``AddressSpace._nodes``) is replaced by one that builds the plant's nodes when asked;
   per server, not process-wide, and only when :func:`acquire` put that server on the fast path.

Nothing is patched at import. A server calls :func:`acquire` when it starts and :func:`release`
when it stops; the encoder is installed while at least one fast server runs and the library's
serializer is back once none does. ``outputs.opcua.fast_path: false`` runs a server on the
library's plain path: asyncua's own data-change callbacks (its deepcopy and its filters, which
compare with the previous sample), its own serializer and its own node table (the plant's nodes
built at once and stored there, ~8 KB per tag). Both paths are tested
(``tests/outputs/opcua``, parametrised ``fast``/``plain``).

Pinned: setup.py requires asyncua 2.1.x (``TESTED``); with another version :func:`acquire`
refuses the fast path (one warning) and the server runs on the plain path.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Container
from datetime import UTC, datetime
from typing import Any

import asyncua
from asyncua import ua
from asyncua.server.address_space import AttributeValue
from asyncua.server.monitored_item_service import MonitoredItemService
from asyncua.ua import ua_binary

log = logging.getLogger(__name__)

TESTED = "2.1."  # the asyncua minor version these internals were written and tested against
_DISABLED = ua.MonitoringMode.Disabled
_TRIGGER_STATUS = int(ua.DataChangeTrigger.Status)
_ABSOLUTE = int(ua.DeadbandType.Absolute)

Spawn = Callable[[Any], None]  # schedules a coroutine on the running loop


# ----------------------------------------------------------------------------- install / release


class _State:
    fast_servers = 0


#: Extensions' (install, uninstall) pairs, installed after the adapter's own patches, removed before them.
_EXTENSIONS: list[tuple[Callable[[], None], Callable[[], None]]] = []
#: Encoders of extensions' own dataclasses (what the serializer lookup returns for them while installed).
_EXTRA_ENCODERS: dict[type, Callable[[Any], bytes]] = {}


def register_extension(install: Callable[[], None], uninstall: Callable[[], None],
                       encoders: dict[type, Callable[[Any], bytes]] | None = None) -> None:
    """A module with asyncua internals of its own joins the fast path: ``install`` runs when the
    first fast server starts (at once if one runs), ``uninstall`` when the last one stops;
    ``encoders`` are served by the serializer lookup meanwhile. Registering twice is a no-op."""
    if any(i is install for i, _ in _EXTENSIONS):
        return
    _EXTENSIONS.append((install, uninstall))
    _EXTRA_ENCODERS.update(encoders or {})
    if _State.fast_servers:
        install()
        _clear_serializer_caches()


def version_tested(version: str | None = None) -> bool:
    """True when the installed asyncua is the minor version the fast path was tested with."""
    return (version if version is not None else asyncua.__version__).startswith(TESTED)


def acquire(fast: bool) -> bool:
    """A server starts: returns the path it runs on (True: fast). Installs the encoder for the first fast one."""
    if not fast:
        return False
    if not version_tested():
        log.warning("OPC UA: asyncua %s is not the tested %sx: running on the library's plain path",
                    asyncua.__version__, TESTED)
        return False
    _State.fast_servers += 1
    if _State.fast_servers == 1:
        _install_encoder()
        _install_sampling()
        for install, _ in _EXTENSIONS:
            install()
    return True


def release(fast: bool) -> None:
    """A server that :func:`acquire` put on the fast path stops; the last one puts the library's encoder back."""
    if not fast or _State.fast_servers == 0:
        return
    _State.fast_servers -= 1
    if _State.fast_servers == 0:
        for _, uninstall in reversed(_EXTENSIONS):
            uninstall()
        _uninstall_encoder()
        _uninstall_sampling()


def encoder_installed() -> bool:
    return ua_binary.create_dataclass_serializer is _dataclass_serializer


# ----------------------------------------------------------------------------- delivery


def deliver_fast(attval: AttributeValue, dv: ua.DataValue, spawn: Spawn, skip: Container[int] | None = None,
                 taken: list[tuple[MonitoredItemService, int, int, Any]] | None = None) -> int:
    """Queue ``dv`` on every monitored item of one node; returns the notifications queued.

    Keeps each item's last value by reference (DataValues are never mutated after creation),
    applies the client's own DataChangeFilter against the last value *sent to that item*, and
    caps the queue at the item's size. Callbacks that are not a MonitoredItemService (e.g.
    asyncua's history subscription) are called the library's way. Items whose callback handle is
    in ``skip`` are left out (the packed path has them); ``taken`` collects (service, item id,
    handle, item) of every item that queued ``dv`` and samples as fast as the node changes.
    """
    queued = 0
    for handle, callback in attval.datachange_callbacks.items():
        if skip and handle in skip:
            continue
        mis = getattr(callback, "__self__", None)
        if not isinstance(mis, MonitoredItemService):
            deliver_plain_one(callback, handle, dv, spawn)
            continue
        mid = mis._monitored_datachange.get(handle)
        mdata = mis._monitored_items.get(mid) if mid is not None else None
        if mdata is None or mdata.mode == _DISABLED:
            continue
        interval = getattr(mdata, "edge_sampling_ns", 0)
        if interval and not _sampled(mis, mid, mdata, interval, dv, spawn):
            continue
        n = _enqueue(mis, mid, mdata, dv, spawn)
        queued += n
        if n and taken is not None and not interval:
            taken.append((mis, mid, handle, mdata))
    return queued


def enqueue(mis: MonitoredItemService, mid: int, mdata: Any, dv: ua.DataValue, spawn: Spawn, reserve: int = 0) -> int:
    """One value onto an item's queue (:func:`_enqueue`); ``reserve`` places of the queue stay free
    (a newer value of a packed item waits outside it)."""
    return _enqueue(mis, mid, mdata, dv, spawn, reserve)


def _enqueue(mis: MonitoredItemService, mid: int, mdata: Any, dv: ua.DataValue, spawn: Spawn, reserve: int = 0) -> int:
    """The item's DataChangeFilter, then onto the subscription's queue (capped at the item's size
    less ``reserve``, at least 1); returns the notifications queued (0 or 1)."""
    mv = mdata.mvalue
    flt = mdata.filter
    if flt is not None and not _filter_passes(flt, mv.current_dvalue, dv):
        return 0
    mv.old_dvalue = mv.current_dvalue
    mv.current_dvalue = dv
    notif = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=dv)
    isub = mis.isub
    queue = isub._triggered_datachanges
    items = queue.get(mid)
    if items is None:
        queue[mid] = [notif]
        if isub.data.RevisedPublishingInterval <= 0.0:
            spawn(isub._trigger_publish())
    else:
        size = max(mdata.queue_size - reserve, 1) if mdata.queue_size else 0
        if size and len(items) >= size:
            del items[: len(items) - size + 1]
        items.append(notif)
    return 1


def _sampled(mis: MonitoredItemService, mid: int, mdata: Any, interval: int, dv: ua.DataValue, spawn: Spawn) -> bool:
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
        asyncio.get_running_loop().call_later(max(due - now, 0) / 1e9, _report_sample, mis, mid, spawn)
    mdata.edge_pending = dv
    return False


def _report_sample(mis: MonitoredItemService, mid: int, spawn: Spawn) -> None:
    """End of a sampling interval: the newest value that waited, if the item still exists."""
    mdata = mis._monitored_items.get(mid)
    if mdata is None:
        return
    dv, mdata.edge_pending = getattr(mdata, "edge_pending", None), None
    if dv is None or mdata.mode == _DISABLED:
        return
    mdata.edge_sampled_ns = time.monotonic_ns()
    _enqueue(mis, mid, mdata, dv, spawn)


def deliver_plain(attval: AttributeValue, dv: ua.DataValue, spawn: Spawn) -> int:
    """The library's way: every data-change callback of the node is called with ``dv`` (what
    ``AddressSpace.write_attribute_value`` does after storing a value); returns the callbacks called."""
    callbacks = list(attval.datachange_callbacks.items())
    for handle, callback in callbacks:
        deliver_plain_one(callback, handle, dv, spawn)
    return len(callbacks)


def gone_value() -> ua.DataValue:
    """What a monitored item receives when its node leaves the address space (a reload took its
    tag out of the plant): no value, Bad_NodeIdUnknown, stamped now."""
    now = datetime.now(UTC)
    return ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown), SourceTimestamp=now,
                        ServerTimestamp=now)


def deliver_plain_one(callback: Callable[..., Any], handle: int, dv: ua.DataValue, spawn: Spawn) -> None:
    result = callback(handle, dv)
    if asyncio.iscoroutine(result):
        spawn(result)


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
            return bool(abs(b - a) > flt.DeadbandValue)
    return True


# ----------------------------------------------------------------------------- notification encoding
#
# asyncua encodes every MonitoredItemNotification with its generic dataclass serializer
# (~10 us each here, the largest cost once the delivery path is lean). This encoder writes
# the same bytes for the common case (scalar built-in value, StatusCode, timestamps, no
# picoseconds) and hands anything else to the library's serializer. ``tests/outputs/opcua``
# compare both encoders' bytes.

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
library_notification_serializer = _library_dataclass_serializer(ua.MonitoredItemNotification)
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
        return library_notification_serializer(item)
    mask = 0
    parts = []
    var = dv.Value
    if var is not None:
        vb = _variant(var)
        if vb is None:
            return library_notification_serializer(item)
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
    extra = _EXTRA_ENCODERS.get(dataclazz)
    if extra is not None:
        return extra
    return _library_dataclass_serializer(dataclazz)


def _clear_serializer_caches() -> None:
    """Serializers built before hold the lookup they were built with: rebuild every one lazily."""
    _library_dataclass_serializer.cache_clear()  # not in the module's namespace while replaced
    for obj in list(vars(ua_binary).values()):
        clear = getattr(obj, "cache_clear", None)
        if callable(clear):
            clear()


def _install_encoder() -> None:
    if not encoder_installed():
        ua_binary.create_dataclass_serializer = _dataclass_serializer
        _clear_serializer_caches()


def _uninstall_encoder() -> None:
    if encoder_installed():
        ua_binary.create_dataclass_serializer = _library_dataclass_serializer
        _clear_serializer_caches()


# ----------------------------------------------------------------------------- sampling intervals

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


def _install_sampling() -> None:
    MonitoredItemService._create_data_change_monitored_item = _create_with_sampling
    MonitoredItemService._modify_monitored_item = _modify_with_sampling


def _uninstall_sampling() -> None:
    MonitoredItemService._create_data_change_monitored_item = _library_create
    MonitoredItemService._modify_monitored_item = _library_modify
