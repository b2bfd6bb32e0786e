"""Acceptance: a simulated room temperature crosses its limit; the alarm activates after its delay and
shows in OPC UA events, the HTTP API and InfluxDB (VictoriaMetrics); acknowledging through the API
changes its state everywhere; a rule switches the simulated fan coil on and off with hysteresis and
an interlock blocks it."""
from __future__ import annotations

import asyncio
import json
import time

from asyncua import Client, ua
from harness import wait_until
from room_site import room_config

from edge.config.loader import load_config
from edge.intelligence.service import Intelligence

ALARM = "room.temperature.limit"


class EventLog:
    """asyncua subscription handler keeping every event's fields."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def event_notification(self, event) -> None:
        self.events.append(event.get_event_props_as_fields_dict())

    def of(self, name: str) -> list[dict]:
        return [{k: v.Value for k, v in e.items()} for e in self.events
                if e.get("ConditionName") is not None and e["ConditionName"].Value == name]


def alarm_series(vm, field: str) -> list[tuple[int, float]]:
    found = vm.samples(f'edge_alarms_{field}{{alarm="{ALARM}"}}')
    return sorted(p for pts in found.values() for p in pts)


async def test_limit_alarm_everywhere_and_ack_through_the_api(make_room, victoria_metrics):
    room = await make_room(room_config(victoria_metrics.url, opcua=True, rules=False))
    site, intel = room.site, room.intel
    assert await wait_until(lambda: site.value("room", "temperature")[1].is_good, 5)

    client = Client(site.app.outputs.opcua.endpoint_url, timeout=5)
    async with client:
        log = EventLog()
        sub = await client.create_subscription(50, log)
        await sub.subscribe_events(client.nodes.server, ua.ObjectIds.AlarmConditionType)

        t0 = time.monotonic()
        site.sim.set_value("room", "temperature", 33.0)
        assert await wait_until(lambda: site.value("room", "temperature")[0] == 33.0, 5)
        seen_at = time.monotonic()
        assert await wait_until(lambda: intel.alarms.get(ALARM).active, 5)
        active_after = time.monotonic() - seen_at
        assert active_after >= 0.4, f"alarm activated {active_after:.2f} s after the value: the 500 ms delay was skipped"
        assert intel.alarms.get(ALARM).state == "UNACK" and intel.alarms.get(ALARM).level == "H"

        async with room.client(room.viewer) as http:
            resp = await http.get("/api/alarms", params={"active": True})
            assert resp.status_code == 200, resp.text
            rows = resp.json()
            row = next(r for r in rows if r["name"] == ALARM)
            assert (row["state"], row["level"], row["value"], row["priority"]) == ("UNACK", "H", 33.0, "high")
            # a viewer may not acknowledge
            r = await http.post(f"/api/alarms/{ALARM}/ack", json={})
            assert r.status_code == 403, r.text

        assert await wait_until(lambda: len(log.of(ALARM)) >= 1, 5)
        first = log.of(ALARM)[0]
        assert first["ActiveState/Id"] is True and first["AckedState/Id"] is False
        assert first["Severity"] == 750 and first["SourceName"] == "room.temperature"
        assert first["SourceNode"] == ua.NodeId("room.temperature", intel.app.outputs.opcua.ns)  # the tag's node
        assert first["ActiveState"].Text == "Active"

        async with room.client(room.operator) as http:
            r = await http.post(f"/api/alarms/{ALARM}/ack", json={"comment": "seen, opening window"})
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "ACKED" and r.json()["ack_user"] == "op"
            again = await http.post(f"/api/alarms/{ALARM}/ack", json={})
            assert again.status_code == 409 and "nothing to acknowledge" in again.json()["detail"]

        assert await wait_until(lambda: len(log.of(ALARM)) >= 2, 5)
        acked = log.of(ALARM)[-1]
        assert acked["AckedState/Id"] is True and acked["ActiveState/Id"] is True
        assert acked["ClientUserId"] == "op" and acked["Comment"].Text == "seen, opening window"

        # back below the limit but inside the deadband: stays active; below it: clears
        site.sim.set_value("room", "temperature", 29.5)
        await asyncio.sleep(0.5)
        assert intel.alarms.get(ALARM).active, "cleared inside the 1 degree deadband"
        site.sim.set_value("room", "temperature", 28.0)
        assert await wait_until(lambda: intel.alarms.get(ALARM).state == "NORMAL", 5)
        assert await wait_until(lambda: log.of(ALARM)[-1]["ActiveState/Id"] is False, 5)
        await sub.delete()
    assert time.monotonic() - t0 < 30

    # InfluxDB: the state changes arrived as edge_alarms points (VictoriaMetrics keeps numeric fields)
    def influx_has_all() -> bool:
        return len(alarm_series(victoria_metrics, "acked")) >= 3
    for _ in range(100):
        if influx_has_all():
            break
        await asyncio.sleep(0.1)
    active = [v for _, v in alarm_series(victoria_metrics, "active")]
    acked = [v for _, v in alarm_series(victoria_metrics, "acked")]
    assert active[:3] == [1.0, 1.0, 0.0], active
    assert acked[:3] == [0.0, 1.0, 1.0], acked
    assert [v for _, v in alarm_series(victoria_metrics, "severity")][0] == 750.0

    async with room.client(room.viewer) as http:
        events = (await http.get("/api/alarms/events", params={"limit": 10})).json()
    mine = [e["transition"] for e in events if e["alarm"] == ALARM][::-1]
    assert mine == ["activated", "acknowledged", "cleared"]


def audit(site) -> list[dict]:
    """The audit log's entries (once the writer thread has put every queued one on disk)."""
    assert site.app.writes.audit.flush(5)
    path = site.loaded.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_rule_switches_fan_coil_with_hysteresis_and_interlock_blocks_it(make_room):
    room = await make_room(room_config())
    site, intel = room.site, room.intel
    sim = site.sim
    rule = intel.rules.rules["cooling"]
    assert await wait_until(lambda: rule.state == "released", 5), rule.status  # 21 degC: released at start
    assert sim.get_value("fancoil", "fan") in (0, False)

    sim.set_value("room", "temperature", 27.0)
    assert await wait_until(lambda: rule.state == "fired" and not rule.busy, 5), rule.status
    assert sim.get_value("fancoil", "fan") in (1, True) and sim.get_value("fancoil", "speed") == 2

    # inside the hysteresis band (24..26): nothing changes
    sim.set_value("room", "temperature", 25.0)
    await asyncio.sleep(0.6)
    assert sim.get_value("fancoil", "fan") in (1, True) and rule.state == "fired"

    sim.set_value("room", "temperature", 23.0)
    assert await wait_until(lambda: rule.state == "released" and not rule.busy, 5), rule.status
    assert sim.get_value("fancoil", "fan") in (0, False) and sim.get_value("fancoil", "speed") == 0

    # interlock: the fan coil is in maintenance; a hot room no longer switches it on
    sim.set_value("fancoil", "maintenance", True)
    assert await wait_until(lambda: site.value("fancoil", "maintenance")[0] == 1.0, 5)
    bad_quality = rule.bad_quality
    sim.set_value("room", "temperature", 28.0)
    assert await wait_until(lambda: rule.status.startswith("blocked by interlock"), 5), rule.status
    await asyncio.sleep(0.6)
    assert sim.get_value("fancoil", "fan") in (0, False)
    # one blocked episode; a poll that timed out on a starved machine makes its inputs Bad for a
    # moment ("bad quality: not acting"), and blocking after it counts as a new episode
    assert "fan coil in maintenance" in rule.status
    assert 1 <= rule.blocked <= 1 + rule.bad_quality - bad_quality, (rule.blocked, rule.bad_quality, bad_quality)
    async with room.client(room.viewer) as http:
        shown = next(r for r in (await http.get("/api/rules")).json() if r["name"] == "cooling")
    assert shown["status"].startswith("blocked by interlock") and shown["blocked"] == rule.blocked

    # interlock released: the rule acts
    sim.set_value("fancoil", "maintenance", False)
    assert await wait_until(lambda: sim.get_value("fancoil", "fan") in (1, True), 5), rule.status
    assert await wait_until(lambda: rule.state == "fired" and not rule.busy, 5), rule.status

    # every action went through the write path and its audit log, as the rule
    entries = [e for e in audit(site) if e["source"] == "rule"]
    assert [(e["tag"], e["new"]) for e in entries] == [
        ("fancoil.fan", False), ("fancoil.speed", 0),  # released at start
        ("fancoil.fan", True), ("fancoil.speed", 2),
        ("fancoil.fan", False), ("fancoil.speed", 0),
        ("fancoil.fan", True), ("fancoil.speed", 2)]
    assert {e["user"] for e in entries} == {"rule:cooling"} and {e["result"] for e in entries} == {"GOOD"}


async def test_rule_with_bad_quality_input_does_not_act_and_says_so(make_room, caplog):
    room = await make_room(room_config())
    site, intel = room.site, room.intel
    rule = intel.rules.rules["cooling"]
    assert await wait_until(lambda: rule.state == "released", 5)
    await site.sim.stop()  # every device goes silent: the temperature turns bad
    assert await wait_until(lambda: rule.status.startswith("bad quality"), 10), rule.status
    assert "room.temperature" in rule.status and rule.bad_quality == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.intelligence.rules" and "bad quality" in r.getMessage()]
    await asyncio.sleep(0.5)
    again = [r.getMessage() for r in caplog.records if r.name == "edge.intelligence.rules" and "bad quality" in r.getMessage()]
    assert len(messages) == 1 and len(again) == 1, "logged once per episode, not per tick"
    assert rule.actions == 1  # only the release at start
    quality_alarm = intel.alarms.get("room.temperature.quality")
    assert await wait_until(lambda: quality_alarm.active, 5)
    assert await wait_until(lambda: intel.alarms.get("fancoil.offline").active, 15)


async def test_a_failed_rule_write_is_visible_and_retried(make_room):
    text = room_config().replace("  - name: fancoil\n    bus: net\n", "  - name: fancoil\n    bus: net\n    enabled: false\n")
    text = text.replace("    interlocks: [{when: fancoil.maintenance, reason: fan coil in maintenance}]\n", "")
    room = await make_room(text)
    rule = room.intel.rules.rules["cooling"]
    assert await wait_until(lambda: rule.failures >= 1, 5), rule.status
    assert rule.status.startswith("write failed: fancoil.fan: BAD_CONFIG_ERROR device fancoil is disabled")
    assert rule.state == "unknown" and rule.actions == 0
    assert await wait_until(lambda: rule.failures >= 2, 5), "retried after RETRY_S"
    async with room.client(room.viewer) as http:
        shown = (await http.get("/api/rules")).json()[0]
    assert shown["last_error"].startswith("fancoil.fan: BAD_CONFIG_ERROR") and shown["failures"] >= 2


async def test_reload_keeps_alarm_state_and_applies_new_rules(make_room):
    room = await make_room(room_config())
    site, intel = room.site, room.intel
    site.sim.set_value("room", "temperature", 33.0)
    assert await wait_until(lambda: intel.alarms.get(ALARM).active, 5)
    path = site.loaded.path
    path.write_text(path.read_text().replace("h: 30, hh: 40", "h: 31, hh: 40").replace(
        "when: room.temperature > 26", "when: room.temperature > 50"))
    loaded = load_config(path)
    await site.app.reload(loaded)
    await intel.reload(loaded)
    alarm = intel.alarms.get(ALARM)
    assert alarm.active and alarm.state == "UNACK" and alarm.config.h == 31
    assert intel.rules.rules["cooling"].config.when == "room.temperature > 50"
    site.sim.set_value("room", "temperature", 20.0)
    assert await wait_until(lambda: intel.alarms.get(ALARM).state == "RTN_UNACK", 5)
    async with room.client(room.operator) as http:
        r = await http.post(f"/api/alarms/{ALARM}/ack", json={})
    assert r.status_code == 200 and r.json()["state"] == "NORMAL"


async def test_without_an_api_section_alarms_and_rules_still_run(make_site, tmp_path):
    text = room_config()
    text = text[:text.index("api: {")]
    site = await make_site(text)
    intel = site.app.intelligence
    assert isinstance(intel, Intelligence)
    try:
        assert intel.api is None and intel.url == ""
        site.sim.set_value("room", "temperature", 33.0)
        assert await wait_until(lambda: intel.alarms.get(ALARM).active, 5)
        assert await wait_until(lambda: intel.rules.rules["cooling"].state == "fired", 5)
    finally:
        await intel.stop()
    assert "alarms" not in site.app.pipeline.sinks
