"""An independent Sparkplug B host application for the tests.

It does not use the appliance's encoder nor its generated protobuf module: the Sparkplug B
schema is written here again, field by field from the Eclipse Tahu ``sparkplug_b.proto`` (message
names, field numbers, wire types), into a descriptor of its own (a separate descriptor pool, its
own package name), and payloads are decoded and encoded with protobuf's runtime from that
descriptor. Datatype rules (two's complement in ``int_value``/``long_value``) are the spec's, also
written here. A field number or wire type the appliance got wrong shows up as a decode failure or
a wrong value here.

The host subscribes to ``spBv1.0/#`` with its own paho client (paho's network thread: this is a
test peer, not appliance code), records every message, tracks aliases from births, and can act
as primary host (STATE birth/death certificates) and send NCMD/DCMD.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from paho.mqtt.enums import CallbackAPIVersion

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
U32, U64, FLT, DBL, BOOL, STR, BYTES, MSG = (F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_FLOAT, F.TYPE_DOUBLE, F.TYPE_BOOL,
                                             F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE)

# Tahu sparkplug_b.proto, the parts a host reads and writes: (name, number, type, label, message type)
SCHEMA = {
    "Payload": [("timestamp", 1, U64, OPT, None), ("metrics", 2, MSG, REP, "Metric"), ("seq", 3, U64, OPT, None),
                ("uuid", 4, STR, OPT, None), ("body", 5, BYTES, OPT, None)],
    "Metric": [("name", 1, STR, OPT, None), ("alias", 2, U64, OPT, None), ("timestamp", 3, U64, OPT, None),
               ("datatype", 4, U32, OPT, None), ("is_historical", 5, BOOL, OPT, None),
               ("is_transient", 6, BOOL, OPT, None), ("is_null", 7, BOOL, OPT, None),
               ("properties", 9, MSG, OPT, "PropertySet"),
               ("int_value", 10, U32, OPT, None), ("long_value", 11, U64, OPT, None),
               ("float_value", 12, FLT, OPT, None), ("double_value", 13, DBL, OPT, None),
               ("boolean_value", 14, BOOL, OPT, None), ("string_value", 15, STR, OPT, None),
               ("bytes_value", 16, BYTES, OPT, None)],
    "PropertySet": [("keys", 1, STR, REP, None), ("values", 2, MSG, REP, "PropertyValue")],
    "PropertyValue": [("type", 1, U32, OPT, None), ("is_null", 2, BOOL, OPT, None), ("int_value", 3, U32, OPT, None),
                      ("long_value", 4, U64, OPT, None), ("float_value", 5, FLT, OPT, None),
                      ("double_value", 6, DBL, OPT, None), ("boolean_value", 7, BOOL, OPT, None),
                      ("string_value", 8, STR, OPT, None)],
}
# Sparkplug 3.0 datatypes (spec 6.4.16)
DT = {"Int8": 1, "Int16": 2, "Int32": 3, "Int64": 4, "UInt8": 5, "UInt16": 6, "UInt32": 7, "UInt64": 8, "Float": 9,
      "Double": 10, "Boolean": 11, "String": 12, "DateTime": 13, "Text": 14}
DT_NAME = {v: k for k, v in DT.items()}
PACKAGE = "testhost.sparkplug"


def _build_classes() -> dict[str, type]:
    fdp = descriptor_pb2.FileDescriptorProto(name="testhost_sparkplug.proto", package=PACKAGE, syntax="proto2")
    for msg, fields in SCHEMA.items():
        m = fdp.message_type.add(name=msg)
        for name, number, ftype, label, type_name in fields:
            f = m.field.add(name=name, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {msg: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{msg}")) for msg in SCHEMA}


CLASSES = _build_classes()
Payload = CLASSES["Payload"]


def decode(raw: bytes):
    p = Payload()
    p.ParseFromString(raw)
    return p


def value_of(metric, datatype: int):
    """A metric's value read per the spec for its (birth) datatype; None when null or absent."""
    if metric.is_null:
        return None
    if datatype in (DT["Int8"], DT["Int16"], DT["Int32"]) and metric.HasField("int_value"):
        v = metric.int_value
        return v - (1 << 32) if v >= 1 << 31 else v
    if datatype in (DT["UInt8"], DT["UInt16"], DT["UInt32"]):
        return metric.int_value if metric.HasField("int_value") else metric.long_value if metric.HasField(
            "long_value") else None
    if datatype == DT["Int64"] and metric.HasField("long_value"):
        v = metric.long_value
        return v - (1 << 64) if v >= 1 << 63 else v
    if datatype in (DT["UInt64"], DT["DateTime"]) and metric.HasField("long_value"):
        return metric.long_value
    for f in ("double_value", "float_value", "boolean_value", "string_value"):
        if metric.HasField(f):
            return getattr(metric, f)
    return None


def properties(metric) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in zip(metric.properties.keys, metric.properties.values, strict=True):
        for f in ("int_value", "long_value", "double_value", "float_value", "boolean_value", "string_value"):
            if v.HasField(f):
                out[k] = getattr(v, f)
    return out


@dataclass
class Msg:
    topic: str
    kind: str
    group: str
    node: str
    device: str | None
    payload: object  # decoded Payload (None for STATE)
    raw: bytes
    qos: int
    retain: bool
    at: float


@dataclass
class Delivery:
    """One metric of a DDATA as the host understood it."""

    device: str
    name: str
    ts: int
    value: object
    quality: int  # OPC DA code from the Quality property, 192 when absent
    historical: bool
    seq: int


@dataclass
class DeviceView:
    alias: dict[int, str] = field(default_factory=dict)
    datatype: dict[str, int] = field(default_factory=dict)
    props: dict[str, dict] = field(default_factory=dict)
    births: int = 0
    deaths: int = 0
    online: bool = False


class SpbHost:
    """The test host (see the module docstring). ``host_id`` makes it a primary host with STATE."""

    def __init__(self, port: int, host_id: str | None = None, client_id: str = "test-host"):
        self.port = port
        self.host_id = host_id
        self.lock = threading.Lock()
        self.messages: list[Msg] = []
        self.devices: dict[tuple[str, str, str], DeviceView] = {}
        self.deliveries: list[Delivery] = []
        self.errors: list[str] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.2)
        self.connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.announce = True  # as primary host: STATE online after every (re)connection
        self.session_ts = self._now()  # STATE birth and death carry the same timestamp (spec 3.0)
        if host_id:
            self.client.will_set(self.state_topic, json.dumps({"online": False, "timestamp": self.session_ts}), 1,
                                 True)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        """Subscribe first, then (primary host) STATE online: the order the spec asks of a host."""
        client.subscribe([("spBv1.0/#", 1)])
        if self.host_id and self.announce:
            client.publish(self.state_topic, json.dumps({"online": True, "timestamp": self.session_ts}), 1, True)
        self.connected.set()

    @staticmethod
    def _now() -> int:
        return time.time_ns() // 1_000_000

    @property
    def state_topic(self) -> str:
        return f"spBv1.0/STATE/{self.host_id}"

    def start(self, timeout_s: float = 10.0) -> SpbHost:
        self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        if not self.connected.wait(timeout_s):
            raise RuntimeError("test host could not connect")
        time.sleep(0.1)
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def kill(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the host's will (STATE offline)."""
        sock = self.client.socket()
        self.client.loop_stop()
        if sock is not None:
            sock.close()

    # ------------------------------------------------------------------ acting as primary host

    def publish_state(self, online: bool, ts: int | None = None) -> None:
        self.announce = online
        info = self.client.publish(self.state_topic, json.dumps({"online": online,
                                                                 "timestamp": ts or self.session_ts}), 1, True)
        info.wait_for_publish(5)

    def ncmd(self, group: str, node: str, metrics: list) -> None:
        p = Payload(timestamp=self._now())
        for m in metrics:
            p.metrics.add().CopyFrom(m)
        self.client.publish(f"spBv1.0/{group}/NCMD/{node}", p.SerializeToString(), 0, False).wait_for_publish(5)

    def rebirth(self, group: str, node: str) -> None:
        m = CLASSES["Metric"](name="Node Control/Rebirth", datatype=DT["Boolean"], boolean_value=True,
                              timestamp=self._now())
        self.ncmd(group, node, [m])

    def dcmd(self, group: str, node: str, device: str, metrics: list) -> None:
        p = Payload(timestamp=self._now())
        for m in metrics:
            p.metrics.add().CopyFrom(m)
        self.client.publish(f"spBv1.0/{group}/DCMD/{node}/{device}", p.SerializeToString(), 0,
                            False).wait_for_publish(5)

    def dcmd_raw(self, group: str, node: str, device: str, raw: bytes) -> None:
        self.client.publish(f"spBv1.0/{group}/DCMD/{node}/{device}", raw, 0, False).wait_for_publish(5)

    def metric(self, **kw):
        return CLASSES["Metric"](**kw)

    # ------------------------------------------------------------------ receiving

    def _on_message(self, client, userdata, message) -> None:
        parts = message.topic.split("/")
        try:
            if parts[1] == "STATE":
                msg = Msg(message.topic, "STATE", "", parts[2], None, None, message.payload, message.qos,
                          message.retain, time.monotonic())
            else:
                kind = parts[2]
                payload = decode(message.payload)
                msg = Msg(message.topic, kind, parts[1], parts[3], parts[4] if len(parts) > 4 else None, payload,
                          message.payload, message.qos, message.retain, time.monotonic())
        except Exception as exc:  # noqa: BLE001 - a payload this host cannot read is a test failure
            with self.lock:
                self.errors.append(f"{message.topic}: {type(exc).__name__}: {exc}")
            return
        with self.lock:
            self.messages.append(msg)
            if msg.device is not None:
                self._device_message(msg)

    def _device_message(self, msg: Msg) -> None:
        view = self.devices.setdefault((msg.group, msg.node, msg.device), DeviceView())
        p = msg.payload
        if msg.kind == "DBIRTH":
            view.births += 1
            view.online = True
            for m in p.metrics:
                view.alias[m.alias] = m.name
                view.datatype[m.name] = m.datatype
                view.props[m.name] = properties(m)
        elif msg.kind == "DDEATH":
            view.deaths += 1
            view.online = False
        elif msg.kind == "DDATA":
            for m in p.metrics:
                name = view.alias.get(m.alias)
                if name is None or m.HasField("name"):
                    self.errors.append(f"{msg.topic}: metric alias {m.alias} name {m.name!r} (aliases only expected)")
                    continue
                q = properties(m).get("Quality", 192)
                self.deliveries.append(Delivery(msg.device, name, m.timestamp, value_of(m, view.datatype[name]), int(q),
                                                m.is_historical, p.seq))

    # ------------------------------------------------------------------ queries (thread-safe copies)

    def of_kind(self, kind: str, device: str | None = None) -> list[Msg]:
        with self.lock:
            return [m for m in self.messages if m.kind == kind and (device is None or m.device == device)]

    def all(self) -> list[Msg]:
        with self.lock:
            return list(self.messages)

    def view(self, group: str, node: str, device: str) -> DeviceView:
        with self.lock:
            return self.devices.setdefault((group, node, device), DeviceView())

    def delivered(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)
