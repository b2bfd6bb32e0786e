"""The alarm engine: limit, bit, enumerated-state, device-offline and bad-quality alarms with ISA-18.2 states.

A pipeline sink: ``consume(batch)`` looks only at the tags that have alarms (one numpy mask
per batch), ``tick()`` runs the on/off delays, offline checks and shelving expiry. Every
state change becomes an :class:`AlarmEvent` handed to the listeners (OPC UA events, the
``edge_alarms`` spool records, the API's event log).

States (ISA-18.2): ``NORMAL``; ``UNACK`` (active, unacknowledged); ``ACKED`` (active,
acknowledged); ``RTN_UNACK`` (returned to normal, unacknowledged). Shelving hides an alarm
from annunciation for a time without stopping its evaluation.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from edge.config.intelligence import SEVERITY, AlarmConfig
from edge.core.model import DeviceState, Plant, Quality, SampleBatch

log = logging.getLogger("edge.intelligence.alarms")

LEVEL_RANK = {"HH": 2, "H": 1, None: 0, "L": -1, "LL": -2}


class AlarmError(ValueError):
    """A request about an alarm cannot be done (unknown name, nothing to acknowledge); the message says why."""


@dataclass(slots=True)
class AlarmEvent:
    """One state change of one alarm, as every output sees it."""

    ts_ns: int
    alarm: str
    transition: str  # activated, cleared, level, acknowledged, confirmed, shelved, unshelved
    state: str  # NORMAL, UNACK, ACKED, RTN_UNACK
    active: bool
    acked: bool
    shelved: bool
    kind: str
    tag: str | None
    device: str
    level: str | None
    value: float | None
    priority: str
    severity: int
    message: str
    user: str = ""
    comment: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Alarm:
    """Configuration and live state of one alarm."""

    config: AlarmConfig
    tag_id: int | None
    device: str
    enum_values: frozenset[int] = frozenset()
    active: bool = False
    acked: bool = True
    confirmed: bool = True  # OPC UA Part 9 ConfirmedState: an acknowledged activation still to confirm
    level: str | None = None
    value: float | None = None
    pending: str | None = None  # the level waiting for its on delay, or "clear" waiting for the off delay
    pending_since: float = 0.0
    since_ns: int = 0  # last transition
    active_since_ns: int = 0
    shelved_until_ns: int = 0
    ack_user: str = ""
    ack_ns: int = 0
    transitions: int = 0
    history: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.key

    @property
    def state(self) -> str:
        if self.active:
            return "ACKED" if self.acked else "UNACK"
        return "NORMAL" if self.acked else "RTN_UNACK"

    def shelved(self, now_ns: int) -> bool:
        return self.shelved_until_ns > now_ns

    @property
    def severity(self) -> int:
        base = SEVERITY[self.config.priority]
        return min(1000, base + 100) if self.level in ("HH", "LL") else base

    def snapshot(self, now_ns: int) -> dict:
        c = self.config
        return {"name": self.name, "kind": c.kind, "tag": c.tag, "device": self.device, "state": self.state,
                "active": self.active, "acked": self.acked, "shelved": self.shelved(now_ns),
                "shelved_until_ns": self.shelved_until_ns or None, "level": self.level, "value": self.value,
                "priority": c.priority, "severity": self.severity, "message": self.text(),
                "since_ns": self.since_ns or None, "active_since_ns": self.active_since_ns or None,
                "ack_user": self.ack_user or None, "confirmed": self.confirmed, "limits": c.limits() or None}

    def text(self) -> str:
        c = self.config
        if c.message:
            return c.message
        if c.kind == "limit":
            return f"{c.tag} {self.level or 'limit'} alarm" + (f" ({self.value:g})" if self.value is not None else "")
        if c.kind == "offline":
            return f"device {self.device} offline"
        if c.kind == "backlog":
            age = f"{self.value:.0f} s" if self.value is not None else "too"
            return f"time-series backlog: the oldest unsent point is {age} old (limit {c.max_age_s:g} s)"
        if c.kind == "quality":
            return f"{c.tag} bad quality"
        return f"{c.tag} {c.kind} alarm"


def limit_level(value: float, cfg: AlarmConfig, current: str | None) -> str | None:
    """The level a value is in (HH/H/L/LL or None); the current level holds until left by the deadband."""
    limits = cfg.limits()
    raw: str | None = None
    if "HH" in limits and value >= limits["HH"]:
        raw = "HH"
    elif "H" in limits and value >= limits["H"]:
        raw = "H"
    elif "LL" in limits and value <= limits["LL"]:
        raw = "LL"
    elif "L" in limits and value <= limits["L"]:
        raw = "L"
    if current is None or raw == current:
        return raw
    r, c = LEVEL_RANK[raw], LEVEL_RANK[current]
    if r * c > 0 and abs(r) > abs(c):
        return raw  # escalation in the same direction
    db = cfg.deadband
    holds = value > limits[current] - db if c > 0 else value < limits[current] + db
    return current if holds else raw


class AlarmEngine:
    """All alarms of a site; a sink of the pipeline plus a periodic ``tick``."""

    def __init__(self, plant: Plant, configs: Iterable[AlarmConfig],
                 device_state: Callable[[str], DeviceState | None] = lambda _: None,
                 backlog_age: Callable[[], float | None] = lambda: None):
        self.plant = plant
        self.device_state = device_state
        self.backlog_age = backlog_age  # age (s) of the oldest unsent point; None: no spool to watch
        self.listeners: list[Callable[[AlarmEvent], None]] = []
        self.alarms: dict[str, Alarm] = {}
        keys = plant.tag_by_key()
        self._watch = np.zeros(len(plant.tags), dtype=bool)
        self._by_tag: dict[int, list[Alarm]] = {}
        self.events = 0
        self.listener_errors = 0
        for cfg in configs:
            tag = keys.get(cfg.tag) if cfg.tag else None
            if cfg.tag and tag is None:
                raise ValueError(f"alarm {cfg.key}: unknown tag {cfg.tag}")  # edge check reports it first
            alarm = Alarm(cfg, tag.id if tag else None, tag.device if tag else (cfg.device or ""),
                          frozenset(_enum_values(cfg, tag.enum if tag else None)))
            self.alarms[alarm.name] = alarm
            if tag is not None:
                self._watch[tag.id] = True
                self._by_tag.setdefault(tag.id, []).append(alarm)

    # ------------------------------------------------------------------ evaluation

    def consume(self, batch: SampleBatch) -> None:
        if not self._by_tag:
            return
        ids = batch.tag_ids
        if len(ids) and int(ids.max()) >= len(self._watch):
            return  # a batch of a newer plant, between the app's reload and ours
        selected = np.flatnonzero(self._watch[ids])
        if not len(selected):
            return
        now = time.monotonic()
        for i in selected:
            tid = int(ids[i])
            value = float(batch.values[i])
            quality = Quality(int(batch.quality[i]))
            for alarm in self._by_tag.get(tid, ()):
                self._update(alarm, self._condition(alarm, value, quality), value, now, batch.ts_ns)

    def _condition(self, alarm: Alarm, value: float, quality: Quality) -> str | None | Literal[False]:
        """The level the alarm's condition asks for (None: normal); False: cannot tell (bad quality)."""
        kind = alarm.config.kind
        if kind == "quality":
            return "BAD" if quality >= Quality.BAD_NO_COMMUNICATION else None
        if quality >= Quality.BAD_NO_COMMUNICATION or not math.isfinite(value):
            return False
        if kind == "limit":
            current = alarm.level if alarm.active else (alarm.pending if alarm.pending != "clear" else None)
            return limit_level(value, alarm.config, current)
        if kind == "bit":
            return "ON" if bool(value) == alarm.config.active_when else None
        if kind == "state":
            return "STATE" if int(value) in alarm.enum_values else None
        return None

    def tick(self, now: float | None = None) -> None:
        """Delays, device-offline alarms and shelving expiry (called every ~100 ms)."""
        now = time.monotonic() if now is None else now
        ts = time.time_ns()
        for alarm in self.alarms.values():
            if alarm.config.kind == "offline":
                state = self.device_state(alarm.device)
                if state is not None:
                    self._update(alarm, "OFFLINE" if state == DeviceState.OFFLINE else None, None, now, ts)
                    continue
            if alarm.config.kind == "backlog":
                age = self.backlog_age()
                if age is not None:
                    limit = alarm.config.max_age_s or math.inf
                    self._update(alarm, "BACKLOG" if age > limit else None, age, now, ts)
                    continue
            if alarm.pending is not None:
                self._apply_timers(alarm, now, ts)
            if alarm.shelved_until_ns and alarm.shelved_until_ns <= ts:
                alarm.shelved_until_ns = 0
                self._emit(alarm, "unshelved", ts, user="timer")

    def _update(self, alarm: Alarm, want: str | None | Literal[False], value: float | None, now: float,
                ts: int) -> None:
        """``want``: the level the value asks for, None for none, False for "quality bad: hold"."""
        if want is False:
            alarm.pending = None  # bad quality: hold the state, restart any delay when it is good again
            return
        if value is not None and math.isfinite(value):
            alarm.value = value
        if alarm.active:
            if want is None:
                if alarm.pending != "clear":
                    alarm.pending, alarm.pending_since = "clear", now
            else:
                alarm.pending = None
                if want != alarm.level:
                    escalated = abs(LEVEL_RANK.get(want, 0)) > abs(LEVEL_RANK.get(alarm.level, 0))
                    alarm.level = want
                    if escalated:
                        alarm.acked = False
                    self._emit(alarm, "level", ts)
        elif want is None:
            alarm.pending = None
        elif alarm.pending != want:
            alarm.pending, alarm.pending_since = want, now
        if alarm.pending is not None:
            self._apply_timers(alarm, now, ts)

    def _apply_timers(self, alarm: Alarm, now: float, ts: int) -> None:
        cfg = alarm.config
        if alarm.pending == "clear":
            if now - alarm.pending_since >= cfg.off_delay_ms / 1e3:
                alarm.pending, alarm.active, alarm.level = None, False, None
                self._emit(alarm, "cleared", ts)
        elif alarm.pending is not None and now - alarm.pending_since >= cfg.on_delay_ms / 1e3:
            alarm.active, alarm.acked, alarm.confirmed, alarm.level = True, False, False, alarm.pending
            alarm.pending, alarm.active_since_ns, alarm.ack_user = None, ts, ""
            self._emit(alarm, "activated", ts)

    # ------------------------------------------------------------------ operator actions

    def get(self, name: str) -> Alarm:
        try:
            return self.alarms[name]
        except KeyError:
            raise AlarmError(f"no alarm named {name!r}") from None

    def acknowledge(self, name: str, user: str, comment: str = "") -> Alarm:
        """Acknowledge an alarm; raises :class:`AlarmError` if it is unknown or already acknowledged."""
        alarm = self.get(name)
        if alarm.acked:
            raise AlarmError(f"alarm {name!r} is {alarm.state}: nothing to acknowledge")
        ts = time.time_ns()
        alarm.acked, alarm.ack_user, alarm.ack_ns = True, user, ts
        self._emit(alarm, "acknowledged", ts, user=user, comment=comment)
        return alarm

    def confirm(self, name: str, user: str, comment: str = "") -> Alarm:
        """Confirm an acknowledged activation (OPC UA Part 9 Confirm); raises :class:`AlarmError` when
        the alarm is unknown, not acknowledged yet or already confirmed."""
        alarm = self.get(name)
        if not alarm.acked:
            raise AlarmError(f"alarm {name!r} is {alarm.state}: acknowledge it before confirming")
        if alarm.confirmed:
            raise AlarmError(f"alarm {name!r} is confirmed already: nothing to confirm")
        alarm.confirmed = True
        self._emit(alarm, "confirmed", time.time_ns(), user=user, comment=comment)
        return alarm

    def shelve(self, name: str, duration_s: float, user: str, comment: str = "") -> Alarm:
        alarm = self.get(name)
        ts = time.time_ns()
        alarm.shelved_until_ns = ts + int(duration_s * 1e9)
        self._emit(alarm, "shelved", ts, user=user, comment=comment)
        return alarm

    def unshelve(self, name: str, user: str) -> Alarm:
        alarm = self.get(name)
        if not alarm.shelved(time.time_ns()):
            raise AlarmError(f"alarm {name!r} is not shelved")
        alarm.shelved_until_ns = 0
        self._emit(alarm, "unshelved", time.time_ns(), user=user)
        return alarm

    def snapshot(self) -> list[dict]:
        now = time.time_ns()
        return [a.snapshot(now) for a in self.alarms.values()]

    def take_over(self, old: AlarmEngine) -> None:
        """Keep the live state of alarms that exist, unchanged in kind and tag, after a reload."""
        for name, alarm in self.alarms.items():
            prev = old.alarms.get(name)
            if prev is not None and prev.config.kind == alarm.config.kind and prev.config.tag == alarm.config.tag:
                for attr in ("active", "acked", "confirmed", "level", "value", "since_ns", "active_since_ns", "shelved_until_ns",
                             "ack_user", "ack_ns", "transitions"):
                    setattr(alarm, attr, getattr(prev, attr))
        self.listeners = old.listeners
        self.events = old.events

    # ------------------------------------------------------------------ events

    def _emit(self, alarm: Alarm, transition: str, ts: int, user: str = "", comment: str = "") -> None:
        alarm.since_ns = ts
        alarm.transitions += 1
        c = alarm.config
        event = AlarmEvent(ts, alarm.name, transition, alarm.state, alarm.active, alarm.acked,
                           alarm.shelved(ts), c.kind, c.tag, alarm.device, alarm.level, alarm.value, c.priority,
                           alarm.severity, alarm.text(), user, comment)
        self.events += 1
        log.log(logging.WARNING if transition in ("activated", "level") else logging.INFO,
                "alarm %s %s: %s (%s)", alarm.name, transition, alarm.state, event.message)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one output must not stop the others
                self.listener_errors += 1
                log.exception("alarm listener failed on %s", alarm.name)


def _enum_values(cfg: AlarmConfig, enum: dict[int, str] | None) -> list[int]:
    """The integer states of a state alarm (names resolved through the tag's enum)."""
    if cfg.kind != "state" or not cfg.states:
        return []
    by_name = {v: k for k, v in (enum or {}).items()}
    out = []
    for s in cfg.states:
        if isinstance(s, int):
            out.append(s)
        elif s in by_name:
            out.append(by_name[s])
        else:
            raise ValueError(f"alarm {cfg.key}: state {s!r} is not in the tag's enum")
    return out
