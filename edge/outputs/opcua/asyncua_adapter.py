"""Every asyncua internal the OPC UA value path relies on for speed, fenced here and switchable.

Two replacements of the library's per-change work (measurements: docs/decisions/opcua.md):

1. **Direct delivery** (:func:`deliver_fast`): a data change goes straight onto each monitored
   item's queue, without asyncua's per-change deepcopy and service layers. It reads
   ``MonitoredItemService._monitored_datachange`` / ``_monitored_items``, ``MonitoredItemData.mvalue``
   and ``InternalSubscription._triggered_datachanges`` / ``_trigger_publish``.
2. **The notification encoder** (:func:`encode_notification`): ``MonitoredItemNotification`` is
   encoded with a few ``struct`` calls instead of the generic dataclass serializer, by replacing
   ``asyncua.ua.ua_binary.create_dataclass_serializer`` (process-wide) while a fast server runs.

Nothing is patched at import. A server calls :func:`acquire` when it starts and :func:`release`
when it stops; the encoder is installed while at least one fast server runs and the library's
serializer is back once none does. ``outputs.opcua.fast_path: false`` runs a server on the
library's plain path: asyncua's own data-change callbacks (its deepcopy and its filters, which
compare with the previous sample) and its own serializer. Both paths are tested
(``tests/outputs/opcua``, parametrised ``fast``/``plain``).

Pinned: setup.py requires asyncua 2.1.x (``TESTED``); with another version :func:`acquire`
refuses the fast path (one warning) and the server runs on the plain path.
"""
from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from datetime import datetime
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
    return True


def release(fast: bool) -> None:
    """A server that :func:`acquire` put on the fast path stops; the last one puts the library's encoder back."""
    if not fast or _State.fast_servers == 0:
        return
    _State.fast_servers -= 1
    if _State.fast_servers == 0:
        _uninstall_encoder()


def encoder_installed() -> bool:
    return ua_binary.create_dataclass_serializer is _dataclass_serializer


# ----------------------------------------------------------------------------- delivery


def deliver_fast(attval: AttributeValue, dv: ua.DataValue, spawn: Spawn) -> int:
    """Queue ``dv`` on every monitored item of one node; returns the notifications queued.

    Keeps each item's last value by reference (DataValues are never mutated after creation),
    applies the client's own DataChangeFilter against the last value *sent to that item*, and
    caps the queue at the item's size. Callbacks that are not a MonitoredItemService (e.g.
    asyncua's history subscription) are called the library's way.
    """
    queued = 0
    for handle, callback in attval.datachange_callbacks.items():
        mis = getattr(callback, "__self__", None)
        if not isinstance(mis, MonitoredItemService):
            deliver_plain_one(callback, handle, dv, spawn)
            continue
        mid = mis._monitored_datachange.get(handle)
        mdata = mis._monitored_items.get(mid) if mid is not None else None
        if mdata is None or mdata.mode == _DISABLED:
            continue
        mv = mdata.mvalue
        flt = mdata.filter
        if flt is not None and not _filter_passes(flt, mv.current_dvalue, dv):
            continue
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
            size = mdata.queue_size
            if size and len(items) >= size:
                del items[: len(items) - size + 1]
            items.append(notif)
        queued += 1
    return queued


def deliver_plain(attval: AttributeValue, dv: ua.DataValue, spawn: Spawn) -> int:
    """The library's way: every data-change callback of the node is called with ``dv`` (what
    ``AddressSpace.write_attribute_value`` does after storing a value); returns the callbacks called."""
    callbacks = list(attval.datachange_callbacks.items())
    for handle, callback in callbacks:
        deliver_plain_one(callback, handle, dv, spawn)
    return len(callbacks)


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
