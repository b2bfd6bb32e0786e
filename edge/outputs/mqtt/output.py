"""The MQTT output: connection life cycle, the pipeline sink, store-and-forward replay, status.

:class:`MqttOutput` is a pipeline sink (``consume(batch)``, on the loop, never blocking: a batch's
changes are encoded and queued in paho, the socket is written when writable). It connects with
capped exponential back-off, each connection with the next ``bdSeq`` (persisted in the data
directory, so a restarted appliance never reuses the bdSeq of the will the broker may still
publish for its previous process), subscribes NCMD, DCMD and the primary host's STATE, waits for
the host when one is configured, then births the node and its devices.

Store and forward: every batch is in the spool before it reaches this sink (the pipeline feeds
the spool first) and :attr:`Spool.last_consumed` names its row. While the session is live, rows
are confirmed by barriers (:meth:`Transport.barrier`) and by the echoes of our own DDATA; when the broker or the primary host goes
away, everything after the last confirmed row is held (:class:`Backlog`) and replayed in spool
order with ``is_historical`` once a session is live again, at ``replay_metrics_per_s`` next to
live data. The spool keeps held rows (a pin) until they are confirmed.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config.mqtt import MqttConfig
from edge.core.model import DeviceDiagnostics, Plant, SampleBatch
from edge.core.writes import WriteService
from edge.outputs.mqtt import sparkplug as sp
from edge.outputs.mqtt.delivery import Backlog, ChangeFilter
from edge.outputs.mqtt.session import NAMESPACE, EdgeNode
from edge.outputs.mqtt.transport import ConnectError, Transport, Will
from edge.outputs.mqtt.uns import UnsPublisher
from edge.storage.spool import Row, Spool, decode_samples

log = logging.getLogger("edge.outputs.mqtt")
CURSOR = "mqtt"
BARRIER_INTERVAL_S = 0.1
BARRIER_MIN_GAP_S = 0.005  # at high rates one barrier per 5 ms covers many messages (each costs a round trip)
STALL_S = 10.0  # no barrier acknowledged for this long while data flow: the connection is stalled
REPLAY_MAX_UNCONFIRMED = 50  # the replay waits while more barriers than this are unacknowledged
REPLAY_ROWS = 500
STOP_CONFIRM_S = 2.0
ECHO_MARKS_MAX = 100_000  # marks waiting for their echo; beyond, the oldest go (the barriers still confirm)


@dataclass
class Counters:
    state: str = "starting"
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    host_offline: int = 0
    stalls: int = 0
    last_error: str = ""
    last_error_ns: int = 0
    connected_since_ns: int = 0
    replayed_rows: int = 0
    replay_skipped_rows: int = 0  # rows of devices or tags the current configuration no longer has
    unspooled_batches: int = 0  # batches the spool refused: published live only, never replayable
    barriers: int = 0
    backlog_points: int = 0


class BdSeqFile:
    """The Sparkplug bdSeq, one more for every MQTT CONNECT, kept across restarts."""

    def __init__(self, path: Path):
        self.path = path

    def next(self) -> int:
        """Blocking (a thread): read, increment modulo 256, write and fsync before the CONNECT uses it."""
        value = (self.last() + 1) % 256
        self._write(value)
        return value

    def unuse(self, value: int) -> None:
        """The CONNECT carrying ``value`` was never sent (no TCP connection): the next one takes it again."""
        self._write((value - 1) % 256 if value else -1)

    def last(self) -> int:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return -1

    def _write(self, value: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{value}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class MqttOutput:
    """Sparkplug B edge node and/or JSON namespace publisher (see the module docstring)."""

    def __init__(self, config: MqttConfig, plant: Plant, spool: Spool, writes: WriteService,
                 diagnostics: Callable[[], list[DeviceDiagnostics]], health: Callable[[], dict[str, float | str]],
                 data_dir: Path, base_dir: Path | None):
        self.config = config
        self.spool = spool
        self.base_dir = base_dir
        self.health = health
        self.c = Counters()
        self.site = plant.site
        self.sparkplug = config.sparkplug.enabled
        self.forward = self.sparkplug and config.sparkplug.store_and_forward
        self.node = EdgeNode(config, plant, writes, diagnostics, self.node_values)
        self.uns = UnsPublisher(config.unified_namespace, plant) if config.unified_namespace.enabled else None
        self.bdseq = BdSeqFile(data_dir / "mqtt-bdseq")
        self.client_id = config.resolved_client_id(plant.site)
        self.transport: Transport | None = None
        self.live = False  # births sent, data flowing
        self.paused = False  # live, but no more data: the session is about to end (everything is being confirmed)
        self._barrier_due = False
        self._last_barrier = 0.0
        self._dirty = False
        self.backlog = Backlog()
        self.live_last = 0  # spool seq of the last batch handled live
        self.live_confirmed = 0  # every live batch up to this seq reached the broker
        self.replay_pos = 0  # the replay has published every backlog row below this seq
        self.replay = ChangeFilter(len(plant.tags), self.node.layout.deadband,
                                   {t.id for t in plant.tags if t.dtype == "string"})
        self.host_online = config.sparkplug.primary_host_id is None
        self._host_ts = -1
        self._host_event = asyncio.Event()
        self._end_event = asyncio.Event()
        self._end_reason = ""
        self._replay_wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._id_maps: dict[int, np.ndarray] = {}
        self._barrier_marks = (0, 0)
        self._echo_marks: deque[tuple[int, int, int]] = deque()  # (DDATA count, live mark, replay mark)
        self._echoed = 0  # echoes of our own DDATA received on this connection
        self._stopping = False

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        if self.forward:
            text = await asyncio.to_thread(self.spool.get_cursor, CURSOR)
            self.backlog = Backlog.from_json(text, self.spool.next_seq)
            self.live_confirmed = self.spool.next_seq - 1
            self._persist()
        self._tasks = [asyncio.create_task(self._run(), name="mqtt-session"),
                       asyncio.create_task(self._periodic(), name="mqtt-periodic")]
        if self.forward:
            self._tasks.append(asyncio.create_task(self._replay_loop(), name="mqtt-replay"))

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Confirm what was published, NDEATH, DISCONNECT; what is unconfirmed stays in the backlog."""
        self._stopping = True
        self.paused = True
        t = self.transport
        if t is not None and t.connected:
            if self.live:
                await self._confirm_now(min(timeout_s, STOP_CONFIRM_S))
            with contextlib.suppress(Exception):
                await self._death_and_disconnect(t, min(timeout_s, 2.0))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._offline("stopped")
        await self.node.drain_writes(timeout_s)
        self.c.state = "stopped"

    def reload(self, plant: Plant) -> None:
        """A new configuration: new aliases and baselines, and a rebirth when a session is live."""
        self.site = plant.site
        self.node.set_plant(plant)
        self.replay = ChangeFilter(len(plant.tags), self.node.layout.deadband,
                                   {t.id for t in plant.tags if t.dtype == "string"})
        self._id_maps.clear()
        if self.uns is not None:
            self.uns.set_plant(plant)
        if self.live:
            self.node.birth(rebirth=True)

    # ------------------------------------------------------------------ sink

    def consume(self, batch: SampleBatch) -> None:
        """The pipeline sink: remember, and publish the batch's changes when the session is live."""
        last, seq = self.spool.last_consumed
        if last is not batch:
            seq = 0
        if seq == 0:
            self.c.unspooled_batches += 1
        self.node.remember(batch)
        t = self.transport
        if t is None or not t.connected:
            return
        if self.uns is not None:
            self.uns.publish_batch(t, batch)
        if self.live and not self.paused:
            sent = self.node.stats.messages
            ddata = self.node.ddata_sent
            self.node.publish_live(batch)
            if seq:
                self.live_last = seq
            messages = self.node.stats.messages - sent
            if messages and not (self.forward and self.node.ddata_sent - ddata == messages):
                self._barrier_soon()  # DDATA only, with store and forward on: their echoes confirm them
            self._mark_sent(ddata)

    # ------------------------------------------------------------------ sessions

    async def _run(self) -> None:
        cfg = self.config
        backoff = cfg.retry_initial_ms / 1000
        while not self._stopping:
            try:
                await self._session()
                backoff = cfg.retry_initial_ms / 1000
                # the primary host went offline: reconnect and wait for it, but only after the broker has
                # surely read our DISCONNECT: a new connection with the same client id arriving first would
                # take the old one over, and the broker would publish its will (a second NDEATH)
                await asyncio.sleep(max(backoff, 0.1))
                continue
            except ConnectError as exc:
                self._error("refused" if exc.refused else "broker_down", str(exc))
                self.c.connect_failures += 1
            except (ConnectionError, TimeoutError, OSError) as exc:
                self._error("broker_down", str(exc) or type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - a bug must not end the output: logged, counted, retried
                log.exception("MQTT: session failed")
                self._error("error", f"{type(exc).__name__}: {exc}")
            finally:
                self._offline(self._end_reason or "connection ended")
            if self.c.connected_since_ns:  # a session had been established: start the back-off again
                backoff = cfg.retry_initial_ms / 1000
                self.c.connected_since_ns = 0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, cfg.retry_max_ms / 1000)

    async def _session(self) -> None:
        """One MQTT connection: connect, subscribe, (wait for the host,) birth, run until it ends."""
        cfg, node = self.config, self.node
        self._end_event = asyncio.Event()
        self._end_reason = ""
        bd = await asyncio.to_thread(self.bdseq.next) if self.sparkplug else 0
        t = Transport(cfg, self.client_id, self.base_dir, self._on_message, lambda why: self._lose(t, why),
                      self._ddata_prefix if self.forward else None, self._on_echoes)
        t.barrier_topic = f"$edge/sync/{self.client_id.replace('+', '_').replace('#', '_')}"
        will = Will(node.topics.node_topic("NDEATH"), sp.death_payload(bd), 1, False) if self.sparkplug else None
        if self.c.state not in ("broker_down", "refused", "error"):
            self.c.state = "connecting"  # after a failure the state stays what went wrong until a connection holds
        try:
            await t.connect(will)
        except ConnectError:
            if self.sparkplug and not t.connect_sent:
                await asyncio.to_thread(self.bdseq.unuse, bd)
            raise
        self.transport, node.transport, node.bd_seq = t, t, bd
        node.ddata_sent = self._echoed = 0
        self._echo_marks.clear()
        self.c.connects += 1
        self.c.connected_since_ns = time.time_ns()
        log.info("MQTT: connected to %s as %s (bdSeq %d)", cfg.url, self.client_id, bd)
        await t.subscribe(self._subscriptions(), cfg.connect_timeout_s)
        if self.uns is not None:
            self.uns.publish_all(t, node.cur_value, node.cur_quality, node.cur_ms, node.cur_text)
        if self.sparkplug:
            if not self.host_online:
                self.c.state = "waiting_host"
                log.warning("MQTT: waiting for primary host %s to be online", cfg.sparkplug.primary_host_id)
                await self._wait_host_or_end()
            if self._end_event.is_set():
                raise ConnectionError(self._end_reason)
            self._go_live()
        self.c.state = "online" if self.sparkplug else "connected"
        await self._end_event.wait()
        if self._end_reason == "host_offline":
            self.paused = True  # no more data; what was published is confirmed before NDEATH
            await self._confirm_now(STOP_CONFIRM_S)
            await self._end_session(t)
            return
        raise ConnectionError(self._end_reason)

    def _subscriptions(self) -> list[tuple[str, int]]:
        topics = self.node.topics
        subs: list[tuple[str, int]] = []
        if self.sparkplug:
            subs += [(topics.node_topic("NCMD"), 1), (topics.device_topic("DCMD", "+"), 1)]
            if topics.state:
                subs.append((topics.state, 1))
        if self.forward:  # our own DDATA come back: each echo proves the broker took it (see _on_echoes)
            subs.append((topics.device_topic("DDATA", "+"), 0))
        if not subs:  # JSON namespace only: subscribe to nothing, but keep one round trip for the check
            subs.append((f"$edge/none/{self.client_id.replace('+', '_').replace('#', '_')}", 0))
        return subs

    async def _wait_host_or_end(self) -> None:
        while not self.host_online and not self._end_event.is_set():
            self._host_event.clear()
            waits = [asyncio.ensure_future(self._host_event.wait()), asyncio.ensure_future(self._end_event.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    def _go_live(self) -> None:
        """Births, then everything up to now is backlog and everything after is live (one loop step)."""
        self.node.birth()
        nxt = self.spool.next_seq
        if self.forward:
            self.backlog.close(nxt)
        self.live_last = self.live_confirmed = nxt - 1
        self.paused = False
        self.replay_pos = 0
        self.replay.reset()
        self.live = True
        self._persist()
        self._replay_wake.set()
        log.warning("MQTT: edge node %s/%s online (bdSeq %d); backlog %s", self.node.topics.group,
                    self.node.topics.node, self.node.bd_seq, self.backlog.ranges or "empty")

    async def _end_session(self, t: Transport) -> None:
        """Intended end (the primary host went offline): hold the data, NDEATH, then DISCONNECT (spec 3.0)."""
        self.transport = self.node.transport = None  # no data after this point
        self._offline("primary host offline")
        await self._death_and_disconnect(t, STOP_CONFIRM_S)

    async def _death_and_disconnect(self, t: Transport, timeout_s: float) -> None:
        """NDEATH (QoS 1, acknowledged by the broker), then DISCONNECT: the will is not published.

        Waiting for the PUBACK first keeps DISCONNECT out of the read that holds the NDEATH and any
        acknowledgement still queued: Mosquitto 2.0.11 was seen to drop such a connection as "out
        of memory" and publish the will as a second NDEATH.
        """
        if self.sparkplug:
            await t.publish_acked(self.node.topics.node_topic("NDEATH"),
                                  sp.death_payload(self.node.bd_seq, time.time_ns() // 1_000_000), timeout_s)
        await t.disconnect(timeout_s)

    def _lose(self, t: Transport, why: str) -> None:
        """The connection is gone (or stalled): end the session; the run loop reconnects."""
        if t is not self.transport:
            return
        self.c.disconnects += 1
        if self.live:
            log.warning("MQTT: connection to %s lost: %s", self.config.url, why)
        t.close()
        self._end_reason = why
        self._end_event.set()

    def _offline(self, why: str) -> None:
        """Not live any more: what was not confirmed is held for the next session."""
        if self.live:
            self.live = False
            if self.forward:
                self.backlog.hold_from(self.live_confirmed + 1)
            self._persist()
        self.node.born = False
        if self.transport is not None:
            self.transport.close()
        self.transport = None
        self.node.transport = None

    def _error(self, state: str, message: str) -> None:
        if message != self.c.last_error or state != self.c.state:
            log.error("MQTT: %s: %s", state.replace("_", " "), message)
        self.c.state = state
        self.c.last_error = message
        self.c.last_error_ns = time.time_ns()

    # ------------------------------------------------------------------ incoming messages

    def _on_message(self, topic: str, payload: bytes) -> None:
        topics = self.node.topics
        if topic == topics.state:
            self._on_state(payload)
        elif topic == topics.node_topic("NCMD"):
            if self.node.on_ncmd(payload) and self.live:
                log.warning("MQTT: rebirth requested by NCMD")
                self.node.birth(rebirth=True)
        elif topic.startswith(topics.node_topic("DCMD") + "/"):
            self.node.on_dcmd(topic.rsplit("/", 1)[1], payload)

    def _on_state(self, payload: bytes) -> None:
        """The primary host's STATE: JSON ``{"online": bool, "timestamp": ms}`` (3.0) or ONLINE/OFFLINE."""
        try:
            text = payload.decode()
            if text.strip() in ("ONLINE", "OFFLINE"):
                online, ts = text.strip() == "ONLINE", self._host_ts
            else:
                data = json.loads(text)
                online, ts = bool(data["online"]), int(data.get("timestamp", 0))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            log.warning("MQTT: STATE of the primary host is neither Sparkplug 3.0 JSON nor ONLINE/OFFLINE; ignored")
            return
        if ts < self._host_ts:
            return  # an older STATE than the one we know (spec 3.0: compare the timestamps)
        self._host_ts = ts
        was, self.host_online = self.host_online, online
        self._host_event.set()
        if was and not online:
            self.c.host_offline += 1
            log.warning("MQTT: primary host %s offline: holding data", self.config.sparkplug.primary_host_id)
            if self.transport is not None and not self._end_event.is_set():
                self._end_reason = "host_offline"
                self._end_event.set()

    # ------------------------------------------------------------------ confirmation (barriers)

    def _barrier_soon(self) -> None:
        """A barrier right after this loop step's messages (at most one per ``BARRIER_MIN_GAP_S``): the
        broker's acknowledgement follows them closely. Live DDATA with store and forward on do not ask
        for one: the echoes of our DDATA (:meth:`_on_echoes`) confirm them sooner, so a broker that
        dies after forwarding data leaves nothing of it to replay twice; the periodic barrier (every
        ``BARRIER_INTERVAL_S``) still covers what an echo the broker dropped leaves unconfirmed, and
        the stall check. The replay keeps its barriers: their count paces it."""
        if self._barrier_due:
            return
        self._barrier_due = True
        wait = self._last_barrier + BARRIER_MIN_GAP_S - time.monotonic()
        loop = asyncio.get_running_loop()
        if wait <= 0:
            loop.call_soon(self._barrier)
        else:
            loop.call_later(wait, self._barrier)

    def _barrier(self) -> None:
        self._barrier_due = False
        self._last_barrier = time.monotonic()
        t = self.transport
        if t is None or not t.connected or not self.live:
            return
        marks = (self.live_last, self.replay_pos)
        if marks == self._barrier_marks:
            return
        self._barrier_marks = marks
        live_mark, replay_mark = marks

        def confirmed() -> None:
            if t is not self.transport or not self.live:
                return
            self.c.barriers += 1
            self._confirm(live_mark, replay_mark)

        t.barrier(confirmed)

    def _confirm(self, live_mark: int, replay_mark: int) -> None:
        """Everything published up to these marks reached the broker (a barrier's ack or an echo)."""
        self.live_confirmed = max(self.live_confirmed, live_mark)
        if replay_mark and self.forward:
            self.backlog.confirm(replay_mark)
        self._dirty = True  # persisted by the periodic task (the spool commits it at its next commit anyway)

    @property
    def _ddata_prefix(self) -> str:
        return self.node.topics.node_topic("DDATA") + "/"

    def _mark_sent(self, ddata_before: int) -> None:
        """DDATA went out (live batch or replayed row): once its echo is back, the marks as they are now hold."""
        n = self.node.ddata_sent
        if not self.forward or n == ddata_before:
            return
        self._echo_marks.append((n, self.live_last, self.replay_pos))
        if len(self._echo_marks) > ECHO_MARKS_MAX:
            self._echo_marks.popleft()

    def _on_echoes(self, n: int) -> None:
        """``n`` more of our DDATA came back from the broker: they (and every earlier PUBLISH of this
        connection, which the broker handles in order) were taken and forwarded to the subscribers, the
        host included. The transport counts them under paho (no message object per echo) and reports
        what one read of the socket held at once.

        This closes the window a barrier leaves: the broker forwards a DDATA at once but acknowledges
        the barrier that follows it only later (up to ``BARRIER_MIN_GAP_S`` plus a read of the broker);
        a broker killed in between had delivered data the barrier never confirmed, and the replay sent
        it a second time. The broker delivers QoS 0 messages of one publisher to one subscriber in order,
        so the k-th echo is the k-th DDATA of this connection; an echo the broker drops only delays the
        confirmation (the count lags: what is confirmed was surely taken).
        """
        if not self.live:
            return
        self._echoed += n
        marks = None
        while self._echo_marks and self._echo_marks[0][0] <= self._echoed:
            marks = self._echo_marks.popleft()
        if marks is not None:
            self._confirm(marks[1], marks[2])

    async def _confirm_now(self, timeout_s: float) -> None:
        """Send a barrier for everything published so far and wait (bounded) for its acknowledgement."""
        t = self.transport
        if t is None or not t.connected:
            return
        self._barrier_marks = (-1, -1)
        self._barrier()
        acked = asyncio.Event()
        t.barrier(acked.set)  # acknowledged after the one above (and every packet queued before it)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acked.wait(), timeout_s)

    def _persist(self) -> None:
        if not self.forward:
            return
        self.spool.set_cursor(CURSOR, self.backlog.to_json(self.live_confirmed if self.live else None))
        low = self.backlog.lowest()
        need = self.live_confirmed + 1 if self.live else None
        pins = [s for s in (low, need) if s is not None]
        self.spool.pin(CURSOR, min(pins) if pins else None)

    # ------------------------------------------------------------------ replay

    async def _replay_loop(self) -> None:
        rate = self.config.sparkplug.replay_metrics_per_s
        while True:
            await self._replay_wake.wait()
            self._replay_wake.clear()
            debt = 0.0
            while self.live and not self.paused and not self._stopping:
                work = self._next_work()
                if work is None:
                    break
                lo, hi = work
                if self.replay_pos < lo:
                    self.replay.reset()  # a new range: no previous sample to compare with
                    self.replay_pos = lo
                upto = min(hi, self.spool.last_seq + 1)  # rows not committed yet cannot be read yet
                if self.replay_pos >= upto:
                    await asyncio.sleep(0.05)
                    continue
                rows = await asyncio.to_thread(self._fetch, self.replay_pos, upto)
                if not self.live:
                    break
                if not rows:
                    self.replay_pos = upto
                    continue
                for row in rows:
                    if not self.live or self.paused:
                        break
                    ddata = self.node.ddata_sent
                    sent = self._replay_row(row)
                    self.replay_pos = row.seq + 1
                    if sent:
                        self._barrier_soon()
                        self._mark_sent(ddata)
                    debt += sent / rate if rate > 0 else 0.0
                    if debt >= 0.02:
                        await asyncio.sleep(debt)
                        debt = 0.0
                    t = self.transport
                    while t is not None and self.live and t.unconfirmed > REPLAY_MAX_UNCONFIRMED:
                        await asyncio.sleep(0.01)  # the broker does not keep up: do not pile the backlog on it
                await asyncio.sleep(0)

    def _next_work(self) -> tuple[int, int] | None:
        for lo, hi in self.backlog.ranges:
            if hi is not None and hi > self.replay_pos:
                return lo, hi  # type: ignore[return-value]
        return None

    def _fetch(self, lo: int, hi: int) -> list[Row]:
        """Rows to replay and the tag id maps of their plant versions (worker thread)."""
        rows = self.spool.samples_between(lo, hi, REPLAY_ROWS)
        for pid in {r.plant for r in rows} - set(self._id_maps):
            self._id_maps[pid] = self._id_map(pid)
        return rows

    def _id_map(self, plant_id: int) -> np.ndarray:
        """Tag ids of a spooled plant version -> ids now (-1: gone)."""
        old = self.spool.plant_tags(plant_id)
        now = {t.key: t.id for t in self.node.plant.tags}
        return np.array([now.get(f"{d}.{n}", -1) for d, n in zip(old.device, old.name, strict=True)], dtype=np.int32)

    def _replay_row(self, row: Row) -> int:
        """One spooled batch as historical DDATA (its changes); the number of metrics sent."""
        if row.source not in self.node.layout.devices or row.plant not in self._id_maps:
            self.c.replay_skipped_rows += 1
            return 0
        d = decode_samples(row.blob)
        ids, values, quality, texts = d.tag_ids, d.values, d.quality, d.texts
        if row.plant != self.spool.plant_id:
            mapped = self._id_maps[row.plant][ids]
            keep = mapped >= 0
            ids, values, quality = mapped[keep], values[keep], quality[keep]
            if texts:
                m = self._id_maps[row.plant]
                texts = {int(m[k]): v for k, v in texts.items() if m[k] >= 0}
        changed = self.replay.changes(ids, values, quality, texts)
        self.c.replayed_rows += 1
        n = int(changed.sum())
        if n and self.transport is not None:
            self.node.send_data(row.source, ids[changed], values[changed], quality[changed],
                                row.ts_ns // 1_000_000, texts, historical=True)
        return n

    # ------------------------------------------------------------------ periodic work

    async def _periodic(self) -> None:
        sc = self.config.sparkplug
        next_node = time.monotonic() + sc.node_metrics_interval_s
        next_backlog = 0.0
        while True:
            await asyncio.sleep(BARRIER_INTERVAL_S)
            try:
                self._barrier()
                self._check_stall()
                if self._dirty:
                    self._dirty = False
                    self._persist()
                now = time.monotonic()
                if self.live:
                    self.node.check_devices()
                    if now >= next_node:
                        next_node = now + sc.node_metrics_interval_s
                        self.node.send_node_data()
                if self.forward and now >= next_backlog:
                    next_backlog = now + 1.0
                    self.c.backlog_points = await asyncio.to_thread(self._count_backlog)
            except Exception:  # noqa: BLE001 - keep the output running; the error is logged
                log.exception("MQTT: periodic work failed")

    def _check_stall(self) -> None:
        """A connection whose broker stopped acknowledging (a silent network) is dropped and redone;
        without this, paho would queue data in memory until the keep-alive notices."""
        t = self.transport
        if t is not None and self.live and t.oldest_barrier_age() > STALL_S:
            self.c.stalls += 1
            self._lose(t, f"no acknowledgement from the broker for {STALL_S:g} s")

    def _count_backlog(self) -> int:
        total = 0
        conn = self.spool._reader()  # noqa: SLF001 - a read of the spool's own file, in this thread
        for lo, hi in list(self.backlog.ranges):
            q = "SELECT coalesce(sum(n), 0) FROM batches WHERE kind = 0 AND seq >= ?" + (" AND seq < ?" if hi else "")
            total += conn.execute(q, (lo, hi) if hi else (lo,)).fetchone()[0]
        return int(total)

    # ------------------------------------------------------------------ status

    def node_values(self) -> dict[str, sp.MetricValue]:
        """The node's own metrics (NBIRTH/NDATA): health, spool depth, forwarder state, this output."""
        h = self.health()
        out: dict[str, sp.MetricValue] = {"Node Info/Site": self.site}
        for key, value in h.items():
            out[key] = value
        st = self.c
        out.update({"MQTT/Backlog points": float(st.backlog_points), "MQTT/Replayed rows": float(st.replayed_rows),
                    "MQTT/Reconnects": float(max(st.connects - 1, 0))})
        return out

    def stats(self) -> dict[str, object]:
        c, n = self.c, self.node.stats
        t = self.transport
        return {
            "state": c.state, "url": self.config.url, "client_id": self.client_id,
            "group_id": self.node.topics.group if self.sparkplug else None,
            "edge_node_id": self.node.topics.node if self.sparkplug else None,
            "primary_host_id": self.config.sparkplug.primary_host_id, "primary_host_online": self.host_online,
            "bd_seq": self.node.bd_seq, "connects": c.connects, "connect_failures": c.connect_failures,
            "disconnects": c.disconnects, "stalls": c.stalls, "host_offline_events": c.host_offline,
            "last_error": c.last_error, "last_error_ns": c.last_error_ns,
            "messages": n.messages + (self.uns.messages if self.uns else 0), "metrics": n.metrics,
            "historical_metrics": n.historical_metrics, "births": n.births, "rebirths": n.rebirths,
            "device_deaths": n.device_deaths, "backlog_points": c.backlog_points,
            "backlog_ranges": len(self.backlog.ranges), "replayed_rows": c.replayed_rows,
            "replay_skipped_rows": c.replay_skipped_rows, "unspooled_batches": c.unspooled_batches,
            "lost_points": int(self.spool.c.pinned_dropped_points) if self.forward else 0,
            "commands_ok": n.commands_ok, "commands_refused": n.commands_refused, "commands_failed": n.commands_failed,
            "last_command": n.last_command, "unconfirmed_barriers": t.unconfirmed if t is not None else 0,
            "uns_messages": self.uns.messages if self.uns else 0,
        }


def namespace_of(topic: str) -> bool:
    return topic.startswith(NAMESPACE + "/")
