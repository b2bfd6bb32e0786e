"""Issue 15: every write attempt is in the audit log, refused or not, whoever sent it: OPC UA writes
refused before the write path (BadUserAccessDenied, BadOutOfRange, BadTypeMismatch, BadNotWritable),
API writes refused with 401/403/422/429, a rule's write, and MQTT's audit API. Each entry has the
time, user, source address, tag, value, result and reason."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from asyncua import ua
from harness import wait_until
from room_site import room_config

from edge.core.model import WriteStatus
from edge.security.users import add_user

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "outputs" / "opcua"))
from opcua_helpers import client_from  # noqa: E402

FIELDS = {"ts", "time", "user", "source", "address", "tag", "new", "result", "reason"}


def audit(site) -> list[dict]:
    assert site.app.writes.audit.flush(5)
    path = site.loaded.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_every_refused_write_kind_is_audited_with_who_and_from_where(make_room, tmp_path: Path) -> None:
    users = tmp_path / "opcua-users"
    add_user(users, "olga", "operator", "operator-pass-1")
    add_user(users, "vic", "viewer", "viewer-pass-1")
    room = await make_room(room_config(opcua=True, opcua_users=str(users), write_burst=1))
    site = room.site
    assert await wait_until(lambda: site.diag("fancoil").polls_ok > 2, 5)
    url = site.app.outputs.opcua.endpoint_url
    ns = site.app.outputs.opcua.ns

    async def opc_write(user: str, password: str, key: str, variant: ua.Variant) -> int:
        c = client_from(url, "127.0.0.2", user, password)
        async with c:
            try:
                await c.get_node(ua.NodeId(key, ns)).write_value(ua.DataValue(variant))
            except ua.UaStatusCodeError as e:
                return e.code
        return ua.StatusCodes.Good

    f32 = ua.VariantType.Float
    assert await opc_write("vic", "viewer-pass-1", "fancoil.setpoint", ua.Variant(20.0, f32)) == \
        ua.StatusCodes.BadUserAccessDenied
    assert await opc_write("olga", "operator-pass-1", "fancoil.setpoint", ua.Variant(99.0, f32)) == \
        ua.StatusCodes.BadOutOfRange
    assert await opc_write("olga", "operator-pass-1", "fancoil.setpoint", ua.Variant("warm", ua.VariantType.String)) \
        == ua.StatusCodes.BadTypeMismatch
    assert await opc_write("olga", "operator-pass-1", "room.temperature", ua.Variant(20.0, f32)) == \
        ua.StatusCodes.BadNotWritable
    assert await opc_write("olga", "operator-pass-1", "fancoil.setpoint", ua.Variant(22.0, f32)) == \
        ua.StatusCodes.Good

    async with room.client(None) as anon, room.client(room.viewer) as viewer, room.client(room.operator) as op:
        assert (await anon.post("/api/tags/fancoil.setpoint/write", json={"value": 20})).status_code == 401
        assert (await viewer.post("/api/tags/fancoil.setpoint/write", json={"value": 20})).status_code == 403
        assert (await op.post("/api/tags/fancoil.setpoint/write", json={"value": 99})).status_code == 422
        assert (await op.post("/api/tags/fancoil.setpoint/write", json={"valu": 1})).status_code == 422
        assert (await op.post("/api/tags/fancoil.setpoint/write", json={"value": 21})).status_code == 200
        assert (await op.post("/api/tags/fancoil.setpoint/write", json={"value": 21})).status_code == 429

    # MQTT's audit API (the MQTT output calls it for DCMD writes it refuses itself)
    site.app.writes.refuse("fancoil.nope", 5, "scada-host", "mqtt", "operator", WriteStatus.BAD_NODE_ID_UNKNOWN,
                           "no metric 'fancoil.nope' in the device's DBIRTH", address="10.0.0.5")
    # a rule acts through the write path too (the cooling rule writes the fan coil at start)
    assert await wait_until(lambda: any(e["source"] == "rule" for e in audit(site)), 10)

    entries = audit(site)
    for e in entries:
        assert FIELDS <= set(e), e
    opc = [(e["user"], e["address"], e["tag"], e["new"], e["result"], e["status_code"] if "status_code" in e else "")
           for e in entries if e["source"] == "opcua"]
    assert opc == [
        ("vic", "127.0.0.2", "fancoil.setpoint", 20.0, "BAD_USER_ACCESS_DENIED", "BadUserAccessDenied"),
        ("olga", "127.0.0.2", "fancoil.setpoint", 99.0, "BAD_OUT_OF_RANGE", "BadOutOfRange"),
        ("olga", "127.0.0.2", "fancoil.setpoint", "warm", "BAD_TYPE_MISMATCH", "BadTypeMismatch"),
        ("olga", "127.0.0.2", "room.temperature", 20.0, "BAD_NOT_WRITABLE", "BadNotWritable"),
        ("olga", "127.0.0.2", "fancoil.setpoint", 22.0, "GOOD", ""),
    ]
    api = [(e["user"], e["address"], e.get("http_status"), e["result"]) for e in entries if e["source"] == "api"]
    assert api == [("anonymous", "127.0.0.1", 401, "BAD_USER_ACCESS_DENIED"),
                   ("view", "127.0.0.1", 403, "BAD_USER_ACCESS_DENIED"),
                   ("op", "127.0.0.1", 422, "BAD_OUT_OF_RANGE"),
                   ("op", "127.0.0.1", 422, "BAD_TYPE_MISMATCH"),
                   ("op", "127.0.0.1", None, "GOOD"),
                   ("op", "127.0.0.1", 429, "BAD_TOO_MANY_OPERATIONS")]
    mqtt = [e for e in entries if e["source"] == "mqtt"]
    assert [(e["user"], e["address"], e["tag"], e["result"]) for e in mqtt] == [
        ("scada-host", "10.0.0.5", "fancoil.nope", "BAD_NODE_ID_UNKNOWN")]
    assert all(e["reason"] for e in entries if e["result"] != "GOOD")
    out_of_range = next(e for e in entries if e["source"] == "opcua" and e["result"] == "BAD_OUT_OF_RANGE")
    assert "outside what fancoil.setpoint (float32 [5, 35])" in out_of_range["reason"], out_of_range["reason"]
    assert site.app.writes.refused == {"opcua": 4, "api": 5, "mqtt": 1}


@pytest.mark.parametrize("source", ["mqtt"])
def test_the_audit_api_takes_any_source(tmp_path: Path, source: str) -> None:
    from edge.core.audit import AuditLog
    from edge.core.model import Plant
    from edge.core.writes import WriteService

    log = AuditLog(tmp_path / "audit.log")
    writes = WriteService(Plant(site="s"), None, log)
    result = writes.refuse("plc.speed", 10, "node-1", source, "operator", WriteStatus.BAD_TYPE_MISMATCH,
                           "a Boolean metric for a float tag", address="192.0.2.7", metric_alias=12)
    assert not result.ok and result.status == WriteStatus.BAD_TYPE_MISMATCH
    assert log.flush(5)
    (entry,) = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    assert entry["source"] == source and entry["metric_alias"] == 12 and entry["address"] == "192.0.2.7"
    log.close()
