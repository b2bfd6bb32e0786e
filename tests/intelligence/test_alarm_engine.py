"""The alarm engine on its own, fed real sample batches with an explicit clock: ISA-18.2 states,
delays, deadband, escalation, shelving, bad quality, offline, contained listener failures."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edge.config.intelligence import AlarmConfig
from edge.core.model import DeviceState, Plant, Quality, SampleBatch, TagInfo
from edge.intelligence.alarms import AlarmEngine, AlarmError, limit_level

PLANT = Plant("s", tags=[
    TagInfo(0, "room", "temperature", "net", "float32"),
    TagInfo(1, "room", "mode", "net", "uint16", enum={0: "auto", 2: "fault"}),
    TagInfo(2, "fc", "trip", "net", "bool"),
])


def batch(tag_id: int, value: float, quality: Quality = Quality.GOOD) -> SampleBatch:
    return SampleBatch("room", 1, np.array([tag_id], np.int32), np.array([value]), np.array([quality], np.uint8))


class Clock:
    """Feeds batches and ticks at chosen monotonic times (the engine takes ``now`` from its caller)."""

    def __init__(self, engine: AlarmEngine, monkeypatch):
        self.engine, self.t = engine, 1000.0
        monkeypatch.setattr("edge.intelligence.alarms.time.monotonic", lambda: self.t)

    def at(self, t: float, tag_id: int | None = None, value: float = 0.0, quality: Quality = Quality.GOOD):
        self.t = 1000.0 + t
        if tag_id is not None:
            self.engine.consume(batch(tag_id, value, quality))
        self.engine.tick()


def engine(*configs: dict, device_state=lambda _: None) -> tuple[AlarmEngine, list]:
    e = AlarmEngine(PLANT, [AlarmConfig(**c) for c in configs], device_state)
    events: list = []
    e.listeners.append(events.append)
    return e, events


def test_limit_alarm_states_delays_and_deadband(monkeypatch):
    e, events = engine({"kind": "limit", "tag": "room.temperature", "h": 30, "hh": 40, "deadband": 1,
                        "on_delay_ms": 500, "off_delay_ms": 200})
    c = Clock(e, monkeypatch)
    a = e.get("room.temperature.limit")
    c.at(0.0, 0, 31.0)
    c.at(0.4, 0, 31.0)
    assert not a.active and a.state == "NORMAL"  # still inside the on delay
    c.at(0.3, 0, 29.0)
    c.at(0.6)
    assert not a.active, "a condition that went away restarts the on delay"
    c.at(1.0, 0, 31.0)
    c.at(1.5)
    assert (a.active, a.state, a.level) == (True, "UNACK", "H")
    e.acknowledge(a.name, "op")
    assert a.state == "ACKED"
    c.at(1.6, 0, 41.0)
    assert (a.level, a.state) == ("HH", "UNACK"), "escalation needs a new acknowledgement"
    c.at(1.7, 0, 39.5)
    assert a.level == "HH", "inside the deadband of HH"
    c.at(1.8, 0, 38.0)
    assert (a.level, a.state) == ("H", "UNACK")
    c.at(1.9, 0, 29.5)
    c.at(2.5)
    assert a.active, "inside the deadband of H"
    c.at(3.0, 0, 28.0)
    c.at(3.1)
    assert a.active, "inside the off delay"
    c.at(3.25)
    assert a.state == "RTN_UNACK"
    e.acknowledge(a.name, "op")
    assert a.state == "NORMAL"
    assert [ev.transition for ev in events] == ["activated", "acknowledged", "level", "level", "cleared",
                                                "acknowledged"]
    assert [ev.state for ev in events] == ["UNACK", "ACKED", "UNACK", "UNACK", "RTN_UNACK", "NORMAL"]
    assert events[2].severity == 600 and events[0].severity == 500


def test_limit_level_low_side():
    cfg = AlarmConfig(kind="limit", tag="room.temperature", l=10, ll=5, deadband=1)
    assert limit_level(4.0, cfg, None) == "LL"
    assert limit_level(5.5, cfg, "LL") == "LL"
    assert limit_level(6.5, cfg, "LL") == "L"
    assert limit_level(10.5, cfg, "L") == "L"
    assert limit_level(11.5, cfg, "L") is None


def test_bad_quality_holds_the_state_and_the_quality_alarm_fires(monkeypatch):
    e, events = engine({"kind": "limit", "tag": "room.temperature", "h": 30},
                       {"kind": "quality", "tag": "room.temperature"})
    c = Clock(e, monkeypatch)
    c.at(0, 0, 35.0)
    assert e.get("room.temperature.limit").active
    c.at(1, 0, float("nan"), Quality.BAD_COMM_ERROR)
    assert e.get("room.temperature.limit").active, "a failed poll says nothing about the temperature"
    assert e.get("room.temperature.quality").active
    c.at(2, 0, 20.0)
    assert not e.get("room.temperature.limit").active
    assert not e.get("room.temperature.quality").active


def test_state_bit_and_offline_alarms(monkeypatch):
    state = {"fc": DeviceState.ONLINE}
    e, _ = engine({"kind": "state", "tag": "room.mode", "states": ["fault"]},
                  {"kind": "bit", "tag": "fc.trip", "active_when": False},
                  {"kind": "offline", "device": "fc", "on_delay_ms": 1000},
                  device_state=state.get)
    c = Clock(e, monkeypatch)
    c.at(0, 1, 0.0)
    c.at(0, 2, 1.0)
    assert not e.get("room.mode.state").active and not e.get("fc.trip.bit").active
    c.at(1, 1, 2.0)
    c.at(1, 2, 0.0)
    assert e.get("room.mode.state").active and e.get("fc.trip.bit").active
    state["fc"] = DeviceState.OFFLINE
    c.at(2)
    assert not e.get("fc.offline").active
    c.at(3.1)
    assert e.get("fc.offline").active and e.get("fc.offline").text() == "device fc offline"
    state["fc"] = DeviceState.ONLINE
    c.at(3.2)
    assert e.get("fc.offline").state == "RTN_UNACK"


def test_shelving_and_operator_errors(monkeypatch):
    e, events = engine({"kind": "limit", "tag": "room.temperature", "h": 30})
    Clock(e, monkeypatch).at(0, 0, 35.0)
    a = e.shelve("room.temperature.limit", 0.05, "op", "sensor being replaced")
    assert a.snapshot(events[-1].ts_ns)["shelved"] and events[-1].comment == "sensor being replaced"
    time.sleep(0.06)
    e.tick()
    assert events[-1].transition == "unshelved" and events[-1].user == "timer"
    with pytest.raises(AlarmError, match="not shelved"):
        e.unshelve("room.temperature.limit", "op")
    with pytest.raises(AlarmError, match="no alarm named 'nope'"):
        e.acknowledge("nope", "op")
    e.acknowledge("room.temperature.limit", "op")
    with pytest.raises(AlarmError, match="is ACKED: nothing to acknowledge"):
        e.acknowledge("room.temperature.limit", "op")


def test_a_failing_listener_is_contained_and_counted(monkeypatch):
    e, events = engine({"kind": "limit", "tag": "room.temperature", "h": 30})

    def broken(_event):
        raise RuntimeError("output down")

    e.listeners.insert(0, broken)
    Clock(e, monkeypatch).at(0, 0, 35.0)
    assert e.listener_errors == 1 and [ev.transition for ev in events] == ["activated"]


def test_take_over_keeps_live_state_by_name(monkeypatch):
    old, _ = engine({"kind": "limit", "tag": "room.temperature", "h": 30})
    Clock(old, monkeypatch).at(0, 0, 35.0)
    old.acknowledge("room.temperature.limit", "op")
    new, _ = engine({"kind": "limit", "tag": "room.temperature", "h": 32}, {"kind": "bit", "tag": "fc.trip"})
    new.take_over(old)
    a = new.get("room.temperature.limit")
    assert (a.state, a.ack_user, a.value) == ("ACKED", "op", 35.0)
    assert new.get("fc.trip.bit").state == "NORMAL"


def test_batches_of_other_tags_cost_one_mask(monkeypatch):
    e, events = engine({"kind": "limit", "tag": "room.temperature", "h": 30})
    e.consume(SampleBatch("x", 1, np.array([1, 2], np.int32), np.array([99.0, 1.0]), np.zeros(2, np.uint8)))
    e.consume(SampleBatch("x", 1, np.array([7], np.int32), np.array([99.0]), np.zeros(1, np.uint8)))  # newer plant
    assert not events


def test_backlog_alarm_follows_the_age_of_the_oldest_unsent_point():
    """Issue 17: an alarm kind for an outage that lasts (the oldest point not yet delivered)."""
    age = {"s": 0.0}
    eng = AlarmEngine(PLANT, [AlarmConfig(kind="backlog", max_age_s=60, priority="high")],
                      backlog_age=lambda: age["s"])
    events = []
    eng.listeners.append(events.append)
    alarm = eng.alarms["spool.backlog"]
    eng.tick(1.0)
    assert not alarm.active
    age["s"] = 75.0
    eng.tick(2.0)
    assert alarm.active and alarm.value == 75.0 and "75 s old (limit 60 s)" in alarm.text()
    age["s"] = 0.0
    eng.tick(3.0)
    assert not alarm.active
    assert [e.state for e in events][:1] == ["UNACK"]
