"""The Sparkplug B 3.0 edge node: births, data, deaths, sequence numbers and commands of one session.

One appliance is one edge node (``spBv1.0/<group_id>/.../<edge_node_id>``); each appliance device
is one Sparkplug device. Everything here runs on the asyncio loop and publishes through a
:class:`~edge.outputs.mqtt.transport.Transport`; the connection loop, store-and-forward replay and
statistics are :class:`~edge.outputs.mqtt.output.MqttOutput`'s.

Message rules (Sparkplug 3.0): NBIRTH seq 0 with ``bdSeq`` (the NDEATH will carries the same
value) and ``Node Control/Rebirth``; DBIRTH per device with every tag (name, alias, datatype,
value, properties); DDATA with aliases only, the changes of a batch; DDEATH when a device goes
offline, DBIRTH when it returns; every message but NDEATH carries ``seq``, 0-255 across the node's
messages. Births, data and deaths are QoS 0, not retained; NDEATH QoS 1.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError

from edge.config.mqtt import MqttConfig
from edge.core.model import DeviceDiagnostics, DeviceState, Plant, Quality, SampleBatch, WriteStatus
from edge.core.writes import WriteService
from edge.outputs.mqtt import sparkplug as sp
from edge.outputs.mqtt.delivery import ChangeFilter
from edge.outputs.mqtt.transport import Transport

log = logging.getLogger("edge.outputs.mqtt")
NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
DEAD_STATES = (DeviceState.OFFLINE, DeviceState.QUARANTINED, DeviceState.DISABLED)
NO_COMM = int(Quality.BAD_NO_COMMUNICATION)


@dataclass(frozen=True, slots=True)
class Topics:
    group: str
    node: str
    host: str | None

    def node_topic(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}"

    def device_topic(self, kind: str, device: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}/{device}"

    @property
    def state(self) -> str | None:
        return f"{NAMESPACE}/STATE/{self.host}" if self.host else None


@dataclass
class NodeStats:
    births: int = 0
    rebirths: int = 0
    messages: int = 0
    metrics: int = 0
    historical_metrics: int = 0
    device_deaths: int = 0
    commands_ok: int = 0
    commands_refused: int = 0
    commands_failed: int = 0
    last_command: str = ""
    by_device: dict[str, int] = field(default_factory=dict)


class EdgeNode:
    """Sparkplug state of the appliance for one plant: layout, baselines, device liveness, seq.

    ``node_values()`` gives the node's own metrics (name -> value) for NBIRTH/NDATA.
    """

    def __init__(self, config: MqttConfig, plant: Plant, writes: WriteService,
                 diagnostics: Callable[[], list[DeviceDiagnostics]], node_values: Callable[[], dict[str, sp.MetricValue]]):
        self.config = config
        self.writes = writes
        self.diagnostics = diagnostics
        self.node_values = node_values
        sc = config.sparkplug
        self.topics = Topics(config.group_id(plant.site), config.edge_node_id(), sc.primary_host_id)
        self.stats = NodeStats()
        self.transport: Transport | None = None
        self.seq = 0
        self.bd_seq = 0
        self.born = False
        self.ddata_sent = 0  # DDATA messages handed to the current connection (its echoes confirm them)
        self._tasks: set[asyncio.Task] = set()
        self.set_plant(plant)

    # ------------------------------------------------------------------ plant

    def set_plant(self, plant: Plant) -> None:
        """A new plant (start or reload): new layout and baselines; the caller rebirths."""
        self.plant = plant
        self.layout = sp.Layout(plant.tags, ((d.name, d.tag_ids) for d in plant.devices))
        n = len(plant.tags)
        strings = {t.id for t in plant.tags if t.dtype == "string"}
        self.live = ChangeFilter(n, self.layout.deadband, strings)
        self.cur_value = np.full(n, np.nan, dtype=np.float64)
        self.cur_quality = np.full(n, NO_COMM, dtype=np.uint8)
        self.cur_ms = np.zeros(n, dtype=np.int64)
        self.cur_text: dict[int, str | None] = {}
        self.dead: set[str] = set()
        self.node_metrics = self._node_metric_defs()
        self._node_sent: dict[str, sp.MetricValue] = {}

    def _node_metric_defs(self) -> list[sp.NodeMetric]:
        defs = [sp.NodeMetric("bdSeq", 0, sp.DataType.Value("Int64")),
                sp.NodeMetric(REBIRTH, 1, sp.DataType.Value("Boolean"))]
        for i, (name, value) in enumerate(sorted(self.node_values().items())):
            dt = sp.DataType.Value("String") if isinstance(value, str) else (
                sp.DataType.Value("Boolean") if isinstance(value, bool) else sp.DataType.Value("Double"))
            defs.append(sp.NodeMetric(name, 10 + i, dt))
        return defs

    # ------------------------------------------------------------------ current values (every batch)

    def remember(self, batch: SampleBatch) -> None:
        """Keep the latest sample of each tag: the values a birth certificate carries."""
        ids = batch.tag_ids
        self.cur_value[ids] = batch.values
        self.cur_quality[ids] = batch.quality
        self.cur_ms[ids] = batch.ts_ns // 1_000_000
        if batch.texts:
            self.cur_text.update(batch.texts)

    # ------------------------------------------------------------------ publishing

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) % 256
        return seq

    def _publish(self, topic: str, payload: bytes, metrics: int, qos: int = 0) -> bool:
        assert self.transport is not None
        if self.transport.publish(topic, payload, qos, False):
            self.stats.messages += 1
            self.stats.metrics += metrics
            return True
        return False

    def birth(self, rebirth: bool = False) -> None:
        """NBIRTH (seq 0), a DBIRTH per device and a DDEATH for each device that is offline now.

        Synchronous: no batch can slip in between the certificates and the first data.
        """
        now = time.time_ns() // 1_000_000
        self.seq = 0
        values = self.node_values()
        node = [(m, self.bd_seq if m.name == "bdSeq" else False if m.name == REBIRTH else values.get(m.name))
                for m in self.node_metrics]
        self._publish(self.topics.node_topic("NBIRTH"), sp.node_payload(self._next_seq(), now, node, True), len(node))
        self._node_sent = {m.name: v for m, v in node}
        states = {d.name: d.state for d in self.diagnostics()}
        self.dead = set()
        for dev in self.layout.devices.values():
            self._dbirth(dev.name, now)
        for dev in self.layout.devices.values():
            if states.get(dev.name) in DEAD_STATES or self._all_no_comm(dev.tag_ids):
                self._ddeath(dev.name, now)
        self.born = True
        self.stats.births += 1
        self.stats.rebirths += rebirth

    def _all_no_comm(self, ids: np.ndarray) -> bool:
        """The device's last samples were all Bad_NoCommunication (a device never polled yet is not dead)."""
        seen = self.cur_ms[ids] > 0
        return bool(seen.any()) and bool((self.cur_quality[ids][seen] == NO_COMM).all())

    def _dbirth(self, device: str, now_ms: int) -> None:
        dev = self.layout.devices[device]
        payload = self.layout.dbirth(device, self._next_seq(), now_ms, self.cur_value, self.cur_quality,
                                     self.cur_ms, self.cur_text)
        self._publish(self.topics.device_topic("DBIRTH", device), payload, len(dev.tag_ids))
        ids = dev.tag_ids
        self.live.adopt(ids, self.cur_value[ids], self.cur_quality[ids], self.cur_text)
        self.dead.discard(device)

    def _ddeath(self, device: str, now_ms: int) -> None:
        self._publish(self.topics.device_topic("DDEATH", device), sp.ddeath_payload(self._next_seq(), now_ms), 0)
        self.dead.add(device)
        self.stats.device_deaths += 1

    def publish_live(self, batch: SampleBatch) -> None:
        """A batch while the session is live: DDATA with its changes; DDEATH/DBIRTH on offline/return."""
        device = batch.device
        if device not in self.layout.devices:
            return
        changed = self.live.changes(batch.tag_ids, batch.values, batch.quality, batch.texts)
        now = time.time_ns() // 1_000_000
        offline = len(batch) > 0 and bool((batch.quality == NO_COMM).all())
        if device in self.dead:
            if offline:
                return  # still offline: nothing to say
            self._dbirth_keep(device, now)
        if changed.any():
            self.send_data(device, batch.tag_ids[changed], batch.values[changed], batch.quality[changed],
                           batch.ts_ns // 1_000_000, batch.texts, historical=False)
        if offline and device not in self.dead:
            self._ddeath(device, now)

    def _dbirth_keep(self, device: str, now_ms: int) -> None:
        """DBIRTH of a returning device without moving the change baseline (the batch's DDATA follows)."""
        dev = self.layout.devices[device]
        payload = self.layout.dbirth(device, self._next_seq(), now_ms, self.cur_value, self.cur_quality,
                                     self.cur_ms, self.cur_text)
        self._publish(self.topics.device_topic("DBIRTH", device), payload, len(dev.tag_ids))
        self.dead.discard(device)

    def send_data(self, device: str, ids: np.ndarray, values: np.ndarray, quality: np.ndarray,
                  stamps_ms: np.ndarray | int, texts: dict[int, str] | None, historical: bool) -> None:
        """DDATA messages of ``device`` (split at ``max_metrics_per_message``)."""
        step = self.config.sparkplug.max_metrics_per_message
        topic = self.topics.device_topic("DDATA", device)
        now = time.time_ns() // 1_000_000
        stamps = np.asarray(stamps_ms)
        whole = device if len(ids) <= step else None  # one message: it may hold every tag of the device
        for i in range(0, len(ids), step):
            part = slice(i, i + step)
            st = stamps if stamps.ndim == 0 else stamps[part]
            payload = self.layout.ddata(self._next_seq(), now, ids[part], values[part], quality[part], st, texts,
                                        historical, whole)
            n = len(ids[part])
            if self._publish(topic, payload, n):
                self.ddata_sent += 1
            if historical:
                self.stats.historical_metrics += n
        self.stats.by_device[device] = self.stats.by_device.get(device, 0) + len(ids)

    def check_devices(self) -> None:
        """Periodic: DDEATH for a device the diagnostics show dead, DBIRTH for one back online."""
        now = time.time_ns() // 1_000_000
        for d in self.diagnostics():
            if d.name not in self.layout.devices:
                continue
            if d.state in DEAD_STATES and d.name not in self.dead:
                self._ddeath(d.name, now)
            elif d.state == DeviceState.ONLINE and d.name in self.dead:
                self._dbirth(d.name, now)

    def send_node_data(self) -> None:
        """NDATA with the node metrics that changed since the birth or the last NDATA."""
        values = self.node_values()
        changed = [(m, values.get(m.name)) for m in self.node_metrics[2:]
                   if m.name in values and values[m.name] != self._node_sent.get(m.name)]
        if not changed:
            return
        now = time.time_ns() // 1_000_000
        self._publish(self.topics.node_topic("NDATA"), sp.node_payload(self._next_seq(), now, changed, False),
                      len(changed))
        self._node_sent.update({m.name: v for m, v in changed})

    # ------------------------------------------------------------------ commands

    def on_ncmd(self, payload: bytes) -> bool:
        """NCMD: True when it asks for a rebirth (the caller rebirths); other metrics are refused."""
        try:
            p = sp.parse(payload)
        except DecodeError:
            log.warning("MQTT: NCMD is not a Sparkplug B payload; ignored")
            self.stats.commands_refused += 1
            return False
        rebirth = False
        by_alias = {m.alias: m for m in self.node_metrics}
        for m in p.metrics:
            nm = by_alias.get(m.alias) if m.HasField("alias") else next(
                (x for x in self.node_metrics if x.name == m.name), None)
            if nm is not None and nm.name == REBIRTH and m.WhichOneof("value") == "boolean_value" and m.boolean_value:
                rebirth = True
            else:
                self.stats.commands_refused += 1
                log.warning("MQTT: NCMD metric %s is not a command this edge node takes (only %r = true)",
                            m.name or m.alias, REBIRTH)
        return rebirth

    def on_dcmd(self, device: str, payload: bytes) -> None:
        """DCMD: each metric a write through the write service (role, range, type, read-back, audit)."""
        cfg = self.config
        target = f"{device}/?"
        try:
            p = sp.parse(payload)
        except DecodeError:
            self._refuse(target, None, WriteStatus.BAD_TYPE_MISMATCH, "the DCMD is not a Sparkplug B payload")
            return
        dev = self.layout.devices.get(device)
        for m in p.metrics:
            what = f"{device}/{m.name or f'alias {m.alias}'}"
            if not cfg.commands:
                self._refuse(what, None, WriteStatus.BAD_USER_ACCESS_DENIED,
                             "MQTT commands are disabled (outputs.mqtt.commands: false)")
                continue
            if dev is None:
                self._refuse(what, None, WriteStatus.BAD_CONFIG_ERROR, f"no device {device!r} on this edge node")
                continue
            tag_id = dev.tag_of_alias.get(m.alias) if m.HasField("alias") else dev.tag_of_name.get(m.name)
            if tag_id is None:
                self._refuse(what, None, WriteStatus.BAD_CONFIG_ERROR,
                             f"device {device!r} has no metric {m.name or f'with alias {m.alias}'}")
                continue
            tag = self.plant.tags[tag_id]
            dt = self.layout.datatype[tag_id]
            if m.HasField("datatype") and m.datatype != dt:
                self._refuse(tag.key, None, WriteStatus.BAD_TYPE_MISMATCH,
                             f"datatype {sp.DataType.Name(m.datatype)} sent, the metric is "
                             f"{sp.DataType.Name(dt)}")
                continue
            try:
                value = sp.metric_value(m, dt)
            except sp.MetricValueError as exc:
                self._refuse(tag.key, None, WriteStatus.BAD_TYPE_MISMATCH, str(exc))
                continue
            task = asyncio.get_running_loop().create_task(self._write(tag_id, value), name=f"mqtt-write:{tag.key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, tag_id: int, value: object) -> None:
        cfg = self.config
        result = await self.writes.write(tag_id, value, user=cfg.command_user, source="mqtt", role=cfg.command_role)
        key = self.plant.tags[tag_id].key
        self.stats.last_command = f"{key} = {value!r}: {result.status.name} {result.message}".strip()
        if result.ok:
            self.stats.commands_ok += 1
        elif result.status in (WriteStatus.BAD_TIMEOUT, WriteStatus.BAD_COMM_ERROR):
            self.stats.commands_failed += 1
        else:
            self.stats.commands_refused += 1

    def _refuse(self, target: str, value: object, status: WriteStatus, message: str) -> None:
        cfg = self.config
        self.writes.refuse(target, value, cfg.command_user, "mqtt", cfg.command_role, status, message)
        self.stats.commands_refused += 1
        self.stats.last_command = f"{target}: {status.name} {message}"

    async def drain_writes(self, timeout_s: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
