"""Sparkplug B payloads from the appliance's tags and sample batches (Eclipse Tahu schema, protobuf).

Only this module builds or parses Sparkplug payloads; it uses the code protoc generated from
``sparkplug_b.proto`` (the Tahu schema), never hand-made wire bytes. Topics, sessions and
sequence numbers are the session's job (:mod:`edge.outputs.mqtt.session`).

Data types: a tag's engineering type (:attr:`TagInfo.dtype`) decides its Sparkplug datatype, so a
scaled register is a Double and carries its decimals. Integer values travel as the spec says:
Int8/16/32 and UInt8/16/32 in ``int_value`` (signed ones as 32-bit two's complement), Int64 and
UInt64 in ``long_value`` (64-bit two's complement); :func:`metric_value` also reads a UInt32 from
``long_value`` (older Tahu and Ignition send it there).

Quality: every birth metric carries the properties ``Quality`` (Int32, the OPC DA code hosts such
as Ignition read: 192 Good) and ``StatusCode`` (UInt32, the exact OPC UA StatusCode of
:class:`~edge.core.model.Quality`); data metrics carry them only when the quality is not Good, the
convention Sparkplug hosts follow ("no quality property: Good").
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from edge.core.model import STATUS_CODES, Quality, TagInfo
from edge.outputs.mqtt import sparkplug_b_pb2 as pb

Payload = pb.Payload
Metric = pb.Payload.Metric
PropertySet = pb.Payload.PropertySet
PropertyValue = pb.Payload.PropertyValue
DataType = pb.DataType

#: Engineering type of a tag -> Sparkplug DataType.
DATATYPES: dict[str, int] = {
    "bool": DataType.Value("Boolean"), "int16": DataType.Value("Int16"), "uint16": DataType.Value("UInt16"),
    "int32": DataType.Value("Int32"), "uint32": DataType.Value("UInt32"), "int64": DataType.Value("Int64"),
    "uint64": DataType.Value("UInt64"), "float32": DataType.Value("Float"), "float64": DataType.Value("Double"),
    "string": DataType.Value("String"),
}
INT32_TYPES = {DataType.Value(n) for n in ("Int8", "Int16", "Int32")}
UINT32_TYPES = {DataType.Value(n) for n in ("UInt8", "UInt16", "UInt32")}
INT64_TYPES = {DataType.Value("Int64")}
UINT64_TYPES = {DataType.Value(n) for n in ("UInt64", "DateTime")}
FLOAT_TYPES = {DataType.Value("Float"), DataType.Value("Double")}

#: Quality -> OPC DA quality code, the number Sparkplug hosts read from a ``Quality`` property.
OPC_DA_QUALITY: dict[Quality, int] = {
    Quality.GOOD: 192,  # 0xC0 Good
    Quality.UNCERTAIN_LAST_USABLE: 68,  # 0x44 Uncertain, last usable value
    Quality.BAD_NO_COMMUNICATION: 8,  # 0x08 Bad, not connected
    Quality.BAD_COMM_ERROR: 24,  # 0x18 Bad, communication failure
    Quality.BAD_CONFIG_ERROR: 4,  # 0x04 Bad, configuration error
    Quality.BAD_OUT_OF_RANGE: 0,  # 0x00 Bad (OPC DA has no Bad out-of-range sub-status)
    Quality.BAD_SENSOR_FAILURE: 16,  # 0x10 Bad, sensor failure (the device's own "no valid value")
}
#: Qualities whose value is still meaningful (sent with the value, not as null).
VALUE_KEPT = {Quality.GOOD, Quality.UNCERTAIN_LAST_USABLE}

# value kinds of a tag (index into the per-kind encoders)
K_DOUBLE, K_FLOAT, K_INT32, K_UINT32, K_INT64, K_UINT64, K_BOOL, K_STRING = range(8)
_KIND_OF_DTYPE = {"float64": K_DOUBLE, "float32": K_FLOAT, "int16": K_INT32, "int32": K_INT32,
                  "uint16": K_UINT32, "uint32": K_UINT32, "int64": K_INT64, "uint64": K_UINT64,
                  "bool": K_BOOL, "string": K_STRING}


def now_ms(ts_ns: int) -> int:
    return ts_ns // 1_000_000


def quality_properties(quality: int) -> PropertySet:
    """``Quality`` (OPC DA code, Int32) and ``StatusCode`` (OPC UA, UInt32) of one quality."""
    q = Quality(quality)
    return PropertySet(keys=["Quality", "StatusCode"], values=[
        PropertyValue(type=DataType.Value("Int32"), int_value=OPC_DA_QUALITY[q]),
        PropertyValue(type=DataType.Value("UInt32"), int_value=STATUS_CODES[q]),
    ])


_QUALITY_PROPS = {int(q): quality_properties(int(q)) for q in Quality}


def tag_properties(tag: TagInfo, quality: int) -> PropertySet:
    """Birth properties of a tag: engineering unit, range, description, read-only flag and quality."""
    keys: list[str] = []
    values: list[PropertyValue] = []

    def add(key: str, value: PropertyValue) -> None:
        keys.append(key)
        values.append(value)

    if tag.unit:
        add("engUnit", PropertyValue(type=DataType.Value("String"), string_value=tag.unit))
    if tag.low is not None:
        add("engLow", PropertyValue(type=DataType.Value("Double"), double_value=float(tag.low)))
    if tag.high is not None:
        add("engHigh", PropertyValue(type=DataType.Value("Double"), double_value=float(tag.high)))
    if tag.description:
        add("Documentation", PropertyValue(type=DataType.Value("String"), string_value=tag.description))
    add("readOnly", PropertyValue(type=DataType.Value("Boolean"), boolean_value=not tag.writable))
    q = _QUALITY_PROPS[int(quality)]
    keys.extend(q.keys)
    values.extend(q.values)
    return PropertySet(keys=keys, values=values)


def set_value(metric: Metric, datatype: int, value: bool | int | float | str | None) -> None:
    """Put a Python value into the right field of ``metric`` for ``datatype`` (None: null)."""
    if value is None or (isinstance(value, float) and math.isnan(value) and datatype not in FLOAT_TYPES):
        metric.is_null = True
    elif datatype in INT32_TYPES or datatype in UINT32_TYPES:
        metric.int_value = int(value) & 0xFFFFFFFF
    elif datatype in INT64_TYPES or datatype in UINT64_TYPES:
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype == DataType.Value("Float"):
        metric.float_value = float(value)
    elif datatype == DataType.Value("Double"):
        metric.double_value = float(value)
    elif datatype == DataType.Value("Boolean"):
        metric.boolean_value = bool(value)
    elif datatype in (DataType.Value("String"), DataType.Value("Text"), DataType.Value("UUID")):
        metric.string_value = str(value)
    else:
        raise ValueError(f"datatype {DataType.Name(datatype)} is not supported here")


class MetricValueError(ValueError):
    """A command metric whose value cannot be read for the datatype it targets."""


def metric_value(metric: Metric, datatype: int) -> object:
    """The Python value of a received metric, read as ``datatype`` (the target's birth datatype).

    Raises :class:`MetricValueError` when the metric has no value or one of a kind that does
    not fit the datatype (a string for a Double, a Double for a Boolean...).
    """
    field = metric.WhichOneof("value")
    if metric.is_null or field is None:
        raise MetricValueError("the metric has no value")
    raw = getattr(metric, field)
    if datatype == DataType.Value("Boolean"):
        if field == "boolean_value":
            return bool(raw)
        if field in ("int_value", "long_value") and raw in (0, 1):
            return bool(raw)
        raise MetricValueError(f"a Boolean needs boolean_value, got {field}")
    if datatype in (DataType.Value("String"), DataType.Value("Text")):
        if field != "string_value":
            raise MetricValueError(f"a {DataType.Name(datatype)} needs string_value, got {field}")
        return raw
    if field in ("string_value", "bytes_value", "dataset_value", "template_value", "extension_value"):
        raise MetricValueError(f"a {DataType.Name(datatype)} needs a number, got {field}")
    if field == "boolean_value":
        raise MetricValueError(f"a {DataType.Name(datatype)} needs a number, got boolean_value")
    if field in ("float_value", "double_value"):
        return float(raw)
    if datatype in INT32_TYPES and field == "int_value":
        return raw - (1 << 32) if raw >= 1 << 31 else raw
    if datatype in INT64_TYPES and field == "long_value":
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    return int(raw)


# ----------------------------------------------------------------------------- device layout


@dataclass(frozen=True, slots=True)
class DeviceMetrics:
    """One Sparkplug device (an appliance device): its tags, their aliases, datatypes and value kinds."""

    name: str
    tag_ids: np.ndarray  # int32, the device's tags in site order
    tags: tuple[TagInfo, ...]
    alias_of: dict[int, int]  # tag id -> alias
    tag_of_alias: dict[int, int]  # alias -> tag id
    tag_of_name: dict[str, int]  # metric name -> tag id


class _WholeDevice:
    """A device's DDATA with every tag, built once and filled in place for each message.

    Setting a timestamp and a value on each existing metric costs a third of adding the metric
    (``metrics.add(alias=, timestamp=, double_value=)``) each time; the generated code serializes
    it as usual. ``ids`` is the tag order it holds (grouped by value kind, as :meth:`Layout.ddata`
    orders them); ``groups`` are (kind, metrics, slice of ``ids``).
    """

    __slots__ = ("payload", "ids", "groups")

    def __init__(self, payload: Payload, ids: np.ndarray, groups: list[tuple[int, list[Metric], slice]]):
        self.payload = payload
        self.ids = ids
        self.groups = groups


class Layout:
    """Aliases, datatypes and value kinds of every tag of a plant (aliases unique in the edge node).

    Tag aliases are ``ALIAS_BASE + tag id``; the node's own metrics take the aliases below.
    Arrays are indexed by tag id, so a batch's metrics are gathered with numpy.
    """

    ALIAS_BASE = 1000

    def __init__(self, tags: Sequence[TagInfo], devices: Iterable[tuple[str, Sequence[int]]]):
        self.tags = list(tags)
        n = len(self.tags)
        self.alias = np.arange(n, dtype=np.int64) + self.ALIAS_BASE
        self.kind = np.array([_KIND_OF_DTYPE.get(t.dtype, K_DOUBLE) for t in self.tags], dtype=np.int8)
        self.datatype = [DATATYPES.get(t.dtype, DataType.Value("Double")) for t in self.tags]
        self.deadband = np.array([t.deadband for t in self.tags], dtype=np.float64)
        self.devices: dict[str, DeviceMetrics] = {}
        self._whole: dict[str, _WholeDevice | None] = {}
        for name, ids in devices:
            ids_arr = np.asarray(ids, dtype=np.int32)
            tags_d = tuple(self.tags[i] for i in ids_arr.tolist())
            alias_of = {int(i): int(self.alias[i]) for i in ids_arr.tolist()}
            self.devices[name] = DeviceMetrics(
                name, ids_arr, tags_d, alias_of, {a: t for t, a in alias_of.items()},
                {t.name: t.id for t in tags_d})

    # ------------------------------------------------------------------ births

    def dbirth(self, device: str, seq: int, ts_ms: int, values: np.ndarray, quality: np.ndarray,
               stamps_ms: np.ndarray, texts: Mapping[int, str | None]) -> bytes:
        """DBIRTH of ``device``: every tag with name, alias, datatype, current value, properties.

        ``values``, ``quality`` and ``stamps_ms`` are indexed by tag id (the latest sample of each tag).
        """
        dev = self.devices[device]
        p = Payload(timestamp=ts_ms, seq=seq)
        add = p.metrics.add
        for tag in dev.tags:
            i = tag.id
            q = int(quality[i])
            dt = self.datatype[i]
            m = add(name=tag.name, alias=int(self.alias[i]), timestamp=int(stamps_ms[i]) or ts_ms, datatype=dt)
            v = texts.get(i) if self.kind[i] == K_STRING else float(values[i])
            if q not in VALUE_KEPT or (isinstance(v, float) and math.isnan(v)) or v is None:
                m.is_null = True
            else:
                set_value(m, dt, v)
            m.properties.CopyFrom(tag_properties(tag, q))
        return p.SerializeToString()

    # ------------------------------------------------------------------ data

    def ddata(self, seq: int, ts_ms: int, tag_ids: np.ndarray, values: np.ndarray, quality: np.ndarray,
              stamps_ms: np.ndarray | int, texts: dict[int, str] | None, historical: bool,
              device: str | None = None) -> bytes:
        """DDATA (or NDATA-shaped data) with aliases only: one metric per given tag.

        ``tag_ids``, ``values``, ``quality`` are parallel arrays (one metric each); ``stamps_ms``
        one timestamp for all or an array. Metrics are grouped by value kind (one tight loop per
        kind); their order in the message carries no meaning. With ``device``: when the metrics are
        every tag of that device in its order, live, Good and of one timestamp (a device whose
        every value changed), the device's reusable message is filled in (:class:`_WholeDevice`);
        the bytes are the same.
        """
        if device is not None and not historical and np.ndim(stamps_ms) == 0 and not quality.any():
            whole = self._ddata_whole(device, seq, ts_ms, tag_ids, values, int(stamps_ms))
            if whole is not None:
                return whole
        p = Payload(timestamp=ts_ms, seq=seq)
        self.add_data(p, tag_ids, values, quality, stamps_ms, texts, historical)
        return p.SerializeToString()

    def add_data(self, p: Payload, tag_ids: np.ndarray, values: np.ndarray, quality: np.ndarray,
                 stamps_ms: np.ndarray | int, texts: dict[int, str] | None, historical: bool) -> None:
        n = len(tag_ids)
        if n == 0:
            return
        good = quality == 0
        if not historical and good.all():
            self._add_good(p, tag_ids, values, stamps_ms, texts)
            return
        stamps = np.broadcast_to(np.asarray(stamps_ms, dtype=np.int64), (n,))
        for sel in (good, ~good):
            if sel.any():
                ids, vals, q, ts = tag_ids[sel], values[sel], quality[sel], stamps[sel]
                if sel is good:
                    self._add_good(p, ids, vals, ts, texts)
                else:
                    self._add_bad(p, ids, vals, q, ts, texts)
        if historical:
            for m in p.metrics:
                m.is_historical = True

    def _add_good(self, p: Payload, ids: np.ndarray, vals: np.ndarray, stamps: np.ndarray | int,
                  texts: dict[int, str] | None) -> None:
        kinds = self.kind[ids]
        aliases = self.alias[ids]
        one_kind = kinds.min() == kinds.max()
        present = [int(kinds[0])] if one_kind else np.unique(kinds).tolist()
        add = p.metrics.add
        scalar = np.ndim(stamps) == 0
        for kind in present:
            sel = slice(None) if one_kind else kinds == kind
            a, v = aliases[sel].tolist(), vals[sel]
            t = repeat(int(stamps), len(a)) if scalar else np.asarray(stamps)[sel].tolist()
            if kind == K_DOUBLE:
                for x, y, z in zip(a, t, v.tolist(), strict=True):
                    add(alias=x, timestamp=y, double_value=z)
            elif kind == K_FLOAT:
                for x, y, z in zip(a, t, v.tolist(), strict=True):
                    add(alias=x, timestamp=y, float_value=z)
            elif kind == K_BOOL:
                for x, y, z in zip(a, t, (v != 0).tolist(), strict=True):
                    add(alias=x, timestamp=y, boolean_value=z)
            elif kind in (K_INT32, K_UINT32, K_INT64, K_UINT64):
                field = "int_value" if kind in (K_INT32, K_UINT32) else "long_value"
                mask = 0xFFFFFFFF if kind in (K_INT32, K_UINT32) else 0xFFFFFFFFFFFFFFFF
                for x, y, z in zip(a, t, self._ints(v, mask), strict=True):
                    if z is None:
                        add(alias=x, timestamp=y, is_null=True)
                    else:
                        add(alias=x, timestamp=y, **{field: z})
            else:  # strings: their text is in the batch's texts
                for x, y, i in zip(a, t, ids[sel].tolist(), strict=True):
                    s = (texts or {}).get(i)
                    if s is None:
                        add(alias=x, timestamp=y, is_null=True)
                    else:
                        add(alias=x, timestamp=y, string_value=s)

    def _whole_device(self, device: str) -> _WholeDevice | None:
        """The reusable DDATA of ``device`` (None for a device with string tags: their texts vary)."""
        if device in self._whole:
            return self._whole[device]
        ids = self.devices[device].tag_ids
        kinds = self.kind[ids]
        whole = None
        if len(ids) and not (kinds == K_STRING).any():
            p = Payload()
            order, groups = [], []
            for kind in np.unique(kinds).tolist():
                sel = ids[kinds == kind]
                start = len(p.metrics)
                metrics = [p.metrics.add(alias=a) for a in self.alias[sel].tolist()]
                groups.append((kind, metrics, slice(start, start + len(sel))))
                order.append(sel)
            whole = _WholeDevice(p, np.concatenate(order), groups)
        self._whole[device] = whole
        return whole

    def _ddata_whole(self, device: str, seq: int, ts_ms: int, tag_ids: np.ndarray, values: np.ndarray,
                     stamp_ms: int) -> bytes | None:
        """DDATA of every tag of ``device`` (all Good, one timestamp) by filling its reusable message;
        None when the metrics are not exactly the device's tags in its order, or an integer has no value."""
        whole = self._whole_device(device) if device in self.devices else None
        if whole is None or len(tag_ids) != len(whole.ids) or not np.array_equal(tag_ids, whole.ids):
            return None
        filled: list[tuple[int, list[Metric], list]] = []
        for kind, metrics, part in whole.groups:
            v = values[part]
            if kind == K_DOUBLE or kind == K_FLOAT:
                filled.append((kind, metrics, v.tolist()))
            elif kind == K_BOOL:
                filled.append((kind, metrics, (v != 0).tolist()))
            else:
                ints = self._ints(v, 0xFFFFFFFF if kind in (K_INT32, K_UINT32) else 0xFFFFFFFFFFFFFFFF)
                if None in ints:
                    return None  # a null metric: the general path writes it
                filled.append((kind, metrics, ints))
        p = whole.payload
        p.timestamp = ts_ms
        p.seq = seq
        for kind, metrics, vals in filled:
            if kind == K_DOUBLE:
                for m, x in zip(metrics, vals, strict=True):
                    m.timestamp = stamp_ms
                    m.double_value = x
            elif kind == K_FLOAT:
                for m, x in zip(metrics, vals, strict=True):
                    m.timestamp = stamp_ms
                    m.float_value = x
            elif kind == K_BOOL:
                for m, x in zip(metrics, vals, strict=True):
                    m.timestamp = stamp_ms
                    m.boolean_value = x
            elif kind in (K_INT32, K_UINT32):
                for m, x in zip(metrics, vals, strict=True):
                    m.timestamp = stamp_ms
                    m.int_value = x
            else:
                for m, x in zip(metrics, vals, strict=True):
                    m.timestamp = stamp_ms
                    m.long_value = x
        return p.SerializeToString()

    @staticmethod
    def _ints(v: np.ndarray, mask: int) -> list[int | None]:
        """Integers as two's complement of the field width; NaN (no value) as None."""
        if np.isfinite(v).all() and not (v >= 2.0**63).any():
            return [x & mask for x in v.astype(np.int64).tolist()]
        return [int(x) & mask if math.isfinite(x) else None for x in v.tolist()]

    def _add_bad(self, p: Payload, ids: np.ndarray, vals: np.ndarray, quality: np.ndarray, stamps: np.ndarray,
                 texts: dict[int, str] | None) -> None:
        add = p.metrics.add
        for i, v, q, t in zip(ids.tolist(), vals.tolist(), quality.tolist(), stamps.tolist(), strict=True):
            m = add(alias=int(self.alias[i]), timestamp=t)
            value: float | str | None = (texts or {}).get(i) if self.kind[i] == K_STRING else v
            if q in VALUE_KEPT and value is not None and not (isinstance(value, float) and math.isnan(value)):
                set_value(m, self.datatype[i], value)
            else:
                m.is_null = True
            m.properties.CopyFrom(_QUALITY_PROPS[q])


# ----------------------------------------------------------------------------- node and death payloads


@dataclass(frozen=True, slots=True)
class NodeMetric:
    """One of the edge node's own metrics (NBIRTH / NDATA)."""

    name: str
    alias: int
    datatype: int


MetricValue = bool | int | float | str | None  # a metric's Python value (None: null)


def node_payload(seq: int | None, ts_ms: int, metrics: Iterable[tuple[NodeMetric, MetricValue]],
                 with_names: bool) -> bytes:
    """NBIRTH (``with_names``: name, alias, datatype) or NDATA (alias and value only)."""
    p = Payload(timestamp=ts_ms)
    if seq is not None:
        p.seq = seq
    for nm, value in metrics:
        m = p.metrics.add(alias=nm.alias, timestamp=ts_ms)
        if with_names:
            m.name = nm.name
            m.datatype = nm.datatype
        set_value(m, nm.datatype, value)
    return p.SerializeToString()


def death_payload(bd_seq: int, ts_ms: int | None = None) -> bytes:
    """NDEATH: only the bdSeq metric (Int64), no seq."""
    p = Payload()
    if ts_ms is not None:
        p.timestamp = ts_ms
    m = p.metrics.add(name="bdSeq", datatype=DataType.Value("Int64"))
    if ts_ms is not None:
        m.timestamp = ts_ms
    m.long_value = bd_seq
    return p.SerializeToString()


def ddeath_payload(seq: int, ts_ms: int) -> bytes:
    return Payload(timestamp=ts_ms, seq=seq).SerializeToString()


def parse(payload: bytes) -> Payload:
    """A received Sparkplug payload (NCMD, DCMD); raises ``google.protobuf.message.DecodeError``."""
    p = Payload()
    p.ParseFromString(payload)
    return p
