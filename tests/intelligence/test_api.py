"""The HTTP API against the running appliance: tokens and roles, writes through the one write path
(audit log, rate limit), tags, history, devices, health, readiness and Prometheus metrics."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import pytest
from harness import wait_until
from prometheus_client.parser import text_string_to_metric_families
from room_site import room_config

from edge.api.tokens import TokensFileError, TokenTable, load_tokens


def audit(site) -> list[dict]:
    """The audit log's entries (once the writer thread has put every queued one on disk)."""
    assert site.app.writes.audit.flush(5)
    path = site.loaded.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_tokens_and_roles(make_room):
    room = await make_room(room_config(rules=False))
    async with room.client(None) as anon, room.client("not-a-token") as bad, room.client(room.viewer) as viewer:
        r = await anon.get("/api/tags")
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        assert (await bad.get("/api/tags")).status_code == 401
        assert (await viewer.get("/api/whoami")).json() == {"name": "view", "role": "viewer"}
        r = await viewer.post("/api/tags/fancoil.setpoint/write", json={"value": 21.5})
        assert r.status_code == 403 and "operator" in r.json()["detail"]
        assert (await viewer.post("/api/alarms/fancoil.offline/ack", json={})).status_code == 403
        assert (await anon.get("/api/health")).status_code == 200  # liveness needs no token
        assert (await anon.get("/metrics")).status_code == 200  # metrics_public
    # a refused caller never reaches the write path, and the attempt is in the audit log (issue 15)
    assert [(e["user"], e["result"], e["http_status"]) for e in audit(room.site) if e["source"] == "api"] == [
        ("view", "BAD_USER_ACCESS_DENIED", 403)]


async def test_anonymous_viewer_when_configured(make_room):
    room = await make_room(room_config(rules=False).replace("write_burst: 3}", "write_burst: 3, anonymous_role: viewer}"))
    async with room.client(None) as anon:
        assert (await anon.get("/api/whoami")).json() == {"name": "anonymous", "role": "viewer"}
        assert (await anon.post("/api/tags/fancoil.setpoint/write", json={"value": 20})).status_code == 403


async def test_write_goes_to_the_device_through_the_audited_write_path(make_room):
    room = await make_room(room_config(rules=False))
    site = room.site
    assert await wait_until(lambda: site.diag("fancoil").polls_ok > 0, 5)
    async with room.client(room.operator) as op:
        r = await op.post("/api/tags/fancoil.setpoint/write", json={"value": 21.5})
        assert r.status_code == 200, r.text
        assert r.json() == {"tag": "fancoil.setpoint", "ok": True, "status": "GOOD",
                            "message": "written and read back", "read_back": 21.5}
        assert site.sim.get_value("fancoil", "setpoint") == 21.5
        r = await op.post("/api/tags/fancoil.fan/write", json={"value": True})
        assert r.status_code == 200 and site.sim.get_value("fancoil", "fan") in (1, True)
        # refused before the device is asked, with what is allowed
        cases = [("room.temperature", 3, 409, "not writable"),
                 ("fancoil.setpoint", 99, 422, "outside the tag's range [5, 35]"),
                 ("fancoil.speed", 1.5, 422, "whole number"),
                 ("fancoil.speed", "fast", 422, "send a number"),
                 ("fancoil.fan", 2, 422, "true/false or 0/1"),
                 ("room.nothing", 1, 404, "no tag 'room.nothing'")]
        for key, value, code, text in cases:
            r = await op.post(f"/api/tags/{key}/write", json={"value": value})
            assert (r.status_code, text in r.json()["detail"]) == (code, True), (key, r.text)
    entries = [e for e in audit(site) if e["source"] == "api"]
    assert [(e["tag"], e["new"], e["user"], e["role"], e["result"]) for e in entries if e["result"] == "GOOD"] == [
        ("fancoil.setpoint", 21.5, "op", "operator", "GOOD"), ("fancoil.fan", True, "op", "operator", "GOOD")]
    # the refused attempts are in the log too, with the answer the caller got (issue 15)
    assert [(e["tag"], e["http_status"]) for e in entries if e["result"] != "GOOD"] == [
        (key, code) for key, _, code, _ in cases]


async def test_scaled_tag_takes_values_on_its_resolution_grid_and_names_it_when_refusing(make_room):
    """Issue 14: a 0.1-resolution tag (int16, scale 0.1) refused 0.5 over HTTP with 422 "send a whole
    number". Now any multiple of 0.1 is written (raw 5 on the device), a value between two steps is
    refused with a message naming the resolution, and the device keeps its value."""
    room = await make_room(room_config(rules=False))
    site = room.site
    assert await wait_until(lambda: site.diag("fancoil").polls_ok > 0, 5)
    async with room.client(room.operator) as op:
        r = await op.post("/api/tags/fancoil.valve/write", json={"value": 0.5})
        assert r.status_code == 200, r.text
        assert r.json()["read_back"] == 0.5
        assert site.sim.get_registers("fancoil", "holding", 3, 1) == [5]
        r = await op.post("/api/tags/fancoil.valve/write", json={"value": 37.3})
        assert r.status_code == 200 and site.sim.get_registers("fancoil", "holding", 3, 1) == [373]
        r = await op.post("/api/tags/fancoil.valve/write", json={"value": 0.55})
        assert r.status_code == 422, r.text
        assert "resolution 0.1" in r.json()["message"] and "37.3" not in r.json()["message"]
        assert site.sim.get_registers("fancoil", "holding", 3, 1) == [373]
        r = await op.get("/api/tags/fancoil.valve")
        assert r.json()["value"] == 37.3 and r.json()["resolution"] == 0.1


async def test_writes_are_rate_limited_per_token(make_room):
    room = await make_room(room_config(rules=False, write_burst=3))
    assert await wait_until(lambda: room.site.diag("fancoil").polls_ok > 0, 5)
    async with room.client(room.operator) as op:
        codes = [(await op.post("/api/tags/fancoil.speed/write", json={"value": i % 3})).status_code
                 for i in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = await op.post("/api/tags/fancoil.speed/write", json={"value": 1})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "60/min, burst 3" in r.json()["detail"]
    assert room.intel.api_counters["rate_limited"] == 3
    assert [e["result"] for e in audit(room.site) if e["source"] == "api"] == ["GOOD"] * 3 + [
        "BAD_TOO_MANY_OPERATIONS"] * 3


async def test_tags_devices_history_and_health(make_room):
    room = await make_room(room_config(rules=False))
    site = room.site
    async with room.client(room.viewer) as v:
        r = await v.get("/api/ready")
        assert r.status_code in (200, 503)
        assert await wait_until(lambda: site.diag("room").polls_ok > 3 and site.diag("fancoil").polls_ok > 0, 5)
        assert (await v.get("/api/ready")).json() == {"ready": True, "status": "ready", "reason": None}
        tag = (await v.get("/api/tags/room.temperature")).json()
        assert (tag["value"], tag["quality"], tag["unit"], tag["writable"]) == (21.0, "Good", "degC", False)
        assert abs(tag["ts_ns"] - time.time_ns()) < 5e9
        mode = (await v.get("/api/tags/room.mode")).json()
        assert (mode["value"], mode["state"]) == (0.0, "auto")
        names = [t["key"] for t in (await v.get("/api/tags", params={"device": "fancoil"})).json()]
        assert names == ["fancoil.fan", "fancoil.maintenance", "fancoil.speed", "fancoil.setpoint", "fancoil.valve"]
        r = await v.get("/api/tags", params={"devcie": "fancoil"})
        assert r.status_code == 422 and "unknown query parameter(s) devcie; allowed: device" in r.json()["detail"]
        devices = {d["name"]: d for d in (await v.get("/api/devices")).json()}
        assert devices["room"]["state"] == "ONLINE" and devices["room"]["polls_ok"] > 3
        assert devices["room"]["line"].startswith("tcp://127.0.0.1:")
        assert (await v.get("/api/devices/nope")).status_code == 404

        site.sim.set_value("room", "temperature", 22.5)
        assert await wait_until(lambda: site.value("room", "temperature")[0] == 22.5, 5)
        assert await asyncio.to_thread(site.app.outputs.spool.flush)  # history comes from the spool on disk
        h = (await v.get("/api/tags/room.temperature/history",
                         params={"start_ns": time.time_ns() - 60 * 10**9})).json()
        assert 21.0 in h["values"] and 22.5 in h["values"]
        assert h["ts_ns"] == sorted(h["ts_ns"]) and set(h["quality"]) == {0}
        r = await v.get("/api/tags/room.temperature/history", params={"start_ns": 10, "end_ns": 5})
        assert r.status_code == 400 and "after end_ns" in r.json()["detail"]
        openapi = (await v.get("/openapi.json")).json()
        assert "/api/tags/{key}/write" in openapi["paths"] and "HTTPBearer" in openapi["components"]["securitySchemes"]


async def test_prometheus_metrics(make_room):
    room = await make_room(room_config())
    site = room.site
    assert await wait_until(lambda: room.intel.rules.rules["cooling"].state == "released", 5)
    site.sim.set_value("room", "temperature", 35.0)
    assert await wait_until(lambda: room.intel.alarms.get("room.temperature.limit").active, 5)
    async with httpx.AsyncClient(base_url=room.url) as anon:
        r = await anon.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(r.text) for s in fam.samples}
    assert samples[("edge_device_up", (("bus", "net"), ("device", "room")))] == 1.0
    assert samples[("edge_tag_value", (("device", "room"), ("tag", "temperature")))] == 35.0
    assert samples[("edge_alarm_active", (("alarm", "room.temperature.limit"), ("priority", "high")))] == 1.0
    assert samples[("edge_rule_actions_total", (("rule", "cooling"),))] >= 1
    assert samples[("edge_device_polls_total", (("device", "room"), ("result", "ok")))] > 0


def test_tokens_file_keeps_only_hashes_and_reports_bad_lines(tmp_path):
    path = tmp_path / "tokens.txt"
    out = subprocess.run([sys.executable, "-m", "edge.api.tokens", str(path), "scada", "operator"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert len(out) >= 40 and out not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    entry = TokenTable(load_tokens(path)).find(out)
    assert entry is not None and (entry.name, entry.role.value) == ("scada", "operator")
    assert TokenTable(load_tokens(path)).find(out + "x") is None
    path.write_text("a:viewer:sha256$1234\n")
    with pytest.raises(TokensFileError, match=r"tokens.txt:1: the hash of 'a' must be 'sha256\$' and 64"):
        load_tokens(path)
    path.write_text("# c\nb:admin:sha256$" + "0" * 64 + "\n")
    with pytest.raises(TokensFileError, match="tokens.txt:2: role 'admin' is not one of viewer, operator"):
        load_tokens(path)


async def test_shelve_and_unshelve_through_the_api(make_room):
    room = await make_room(room_config(rules=False))
    room.site.sim.set_value("room", "temperature", 35.0)
    assert await wait_until(lambda: room.intel.alarms.get("room.temperature.limit").active, 5)
    name = "room.temperature.limit"
    async with room.client(room.operator) as op:
        r = await op.post(f"/api/alarms/{name}/shelve", json={"duration_s": 600, "comment": "sensor swap"})
        assert r.status_code == 200 and r.json()["shelved"] is True and r.json()["state"] == "UNACK"
        assert (await op.get(f"/api/alarms/{name}")).json()["shelved"] is True
        r = await op.post(f"/api/alarms/{name}/shelve", json={"duration_s": 0})
        assert r.status_code == 422
        assert (await op.post(f"/api/alarms/{name}/unshelve")).status_code == 200
        r = await op.post(f"/api/alarms/{name}/unshelve")
        assert r.status_code == 409 and "is not shelved" in r.json()["detail"]
        assert (await op.post("/api/alarms/nope/ack", json={})).status_code == 404
        events = [(e["transition"], e["user"], e["comment"]) for e in
                  (await op.get("/api/alarms/events")).json() if e["alarm"] == name][::-1]
    assert events == [("activated", "", ""), ("shelved", "op", "sensor swap"), ("unshelved", "op", "")]


async def test_alarm_changes_and_state_reads_run_on_the_appliance_loop(make_room, monkeypatch):
    """Regression (issue 18): the acknowledge, shelve and unshelve routes were plain functions, which
    FastAPI runs in worker threads: they changed alarm state next to the loop that owns it."""
    import threading

    room = await make_room(room_config(rules=False))
    engine = room.intel.alarms
    threads: dict[str, int] = {}
    for name in ("acknowledge", "shelve", "unshelve", "snapshot"):
        original = getattr(engine, name)

        def recording(*args, _name=name, _original=original, **kw):
            threads[_name] = threading.get_ident()
            return _original(*args, **kw)

        monkeypatch.setattr(engine, name, recording)
    room.site.sim.set_value("room", "temperature", 33.0)
    assert await wait_until(lambda: engine.get("room.temperature.limit").active, 5)
    async with room.client(room.operator) as op:
        assert (await op.post("/api/alarms/room.temperature.limit/ack", json={})).status_code == 200
        assert (await op.post("/api/alarms/room.temperature.limit/shelve", json={"duration_s": 60})).status_code == 200
        assert (await op.post("/api/alarms/room.temperature.limit/unshelve", json={})).status_code == 200
        assert (await op.get("/api/alarms")).status_code == 200
    loop_thread = threading.get_ident()  # this test runs on the appliance's loop
    assert threads == dict.fromkeys(("acknowledge", "shelve", "unshelve", "snapshot"), loop_thread)


async def test_overrunning_poll_cycles_show_in_the_api_and_the_metrics(make_room):
    """A device whose cycle outlasts its interval skips cycles (overruns): the OPC UA Status and the
    health records showed them, the API and /metrics did not (a fuzz run that lost polls could not say
    whether they were skipped)."""
    room = await make_room(room_config(rules=False))
    site = room.site
    assert await wait_until(lambda: site.diag("fancoil").polls_ok > 2, 5)
    site.sim.set_fault("fancoil", "slow", delay_ms=60)  # three blocks of 60 ms each: 180 ms per 100 ms cycle
    try:
        assert await wait_until(lambda: site.diag("fancoil").overruns >= 3, 10)
        async with room.client(room.viewer) as v:
            api = (await v.get("/api/devices/fancoil")).json()
        async with httpx.AsyncClient(base_url=room.url) as anon:
            text = (await anon.get("/metrics")).text
    finally:
        site.sim.clear_fault("fancoil")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert api["overruns"] >= 3 and api["jitter_p99_ms"] > 0, api
    assert samples[("edge_device_overruns_total", (("device", "fancoil"),))] >= 3
    assert ("edge_device_overruns_total", (("device", "room"),)) in samples  # every device, zero or not
