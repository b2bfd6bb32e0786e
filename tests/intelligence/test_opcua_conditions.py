"""Alarms and Conditions over OPC UA (issue 14): ConditionRefresh returned BadNothingToDo while three
alarms stood, and alarms could not be acknowledged over OPC UA. Checked with node-opcua and asyncua
against the appliance's alarm engine, the HTTP API and the audit log."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
from asyncua import Client, ua
from harness import wait_until
from room_site import room_config

from edge.security.users import add_user

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "outputs" / "opcua"))
from opcua_helpers import node_ua  # noqa: E402

LIMIT, STATE, BIT = "room.temperature.limit", "room.mode.state", "fancoil.maintenance.bit"


def audit(site) -> list[dict]:
    """The audit log's entries (once the writer thread has put every queued one on disk)."""
    assert site.app.writes.audit.flush(5)
    path = site.loaded.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Events:
    def __init__(self) -> None:
        self.events: list = []

    def event_notification(self, event) -> None:  # noqa: ANN001
        self.events.append(event.get_event_props_as_fields_dict())

    def latest(self, name: str) -> dict:
        return [{k: v.Value for k, v in e.items()} for e in self.events
                if e.get("ConditionName") is not None and e["ConditionName"].Value == name][-1]


async def test_conditions_refresh_acknowledge_confirm_shelve(make_room, tmp_path: Path) -> None:
    users = tmp_path / "opcua-users"
    add_user(users, "olga", "operator", "operator-pass-1")
    add_user(users, "vic", "viewer", "viewer-pass-1")
    room = await make_room(room_config(opcua=True, rules=False, opcua_users=str(users)))
    site, intel = room.site, room.intel
    url = site.app.outputs.opcua.endpoint_url
    assert await wait_until(lambda: site.diag("room").polls_ok > 2 and site.diag("fancoil").polls_ok > 2, 5)
    site.sim.set_value("room", "temperature", 33.0)
    site.sim.set_value("room", "mode", 2)
    site.sim.set_value("fancoil", "maintenance", 1)
    standing = {LIMIT, STATE, BIT}
    assert await wait_until(lambda: all(intel.alarms.get(n).active for n in standing), 10)

    # node-opcua: ConditionRefresh delivers every standing alarm, typed as Part 9 asks
    ns = intel.app.outputs.opcua.ns
    (refresh,) = await node_ua(url, "vic", "viewer-pass-1", [{"op": "conditionRefresh", "waitMs": 1500}],
                               tmp_path / "pki")
    assert refresh["status"] == "Good"
    by_name = {e["ConditionName"]: e for e in refresh["events"] if e.get("ConditionName")}
    assert standing <= set(by_name), refresh
    assert by_name[LIMIT]["EventType"] == "ns=0;i=9341"  # ExclusiveLimitAlarmType
    assert by_name[BIT]["EventType"] == "ns=0;i=10637"  # OffNormalAlarmType
    assert by_name[LIMIT]["LimitState.CurrentState"] == "High" and by_name[LIMIT]["Retain"] is True
    assert by_name[LIMIT]["ConditionId"] == f"ns={ns};s={LIMIT}#condition"
    assert by_name[LIMIT]["AckedState.Id"] is False and by_name[LIMIT]["ActiveState.Id"] is True

    limit_node = ua.NodeId(f"{LIMIT}#condition", ns, ua.NodeIdType.String)
    ack = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)

    async def latest_event_id(client: Client, name: str) -> bytes:
        log = Events()
        sub = await client.create_subscription(50, log)
        await sub.subscribe_events(client.nodes.server, ua.ObjectIds.AlarmConditionType)
        await client.nodes.server.call_method(ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                                              ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
        assert await wait_until(lambda: any(e.get("ConditionName") and e["ConditionName"].Value == name
                                            for e in log.events), 5)
        return log.latest(name)["EventId"]

    # a viewer's Acknowledge is refused, audited, and changes nothing
    viewer = Client(url, timeout=10)
    viewer.set_user("vic")
    viewer.set_password("viewer-pass-1")
    async with viewer:
        event_id = await latest_event_id(viewer, LIMIT)
        try:
            await viewer.get_node(limit_node).call_method(ack, ua.Variant(event_id, ua.VariantType.ByteString),
                                                          ua.LocalizedText("viewer tries"))
            raise AssertionError("a viewer's Acknowledge must be refused")
        except ua.UaStatusCodeError as exc:
            assert exc.code == ua.StatusCodes.BadUserAccessDenied
    assert intel.alarms.get(LIMIT).state == "UNACK"

    # the operator acknowledges and confirms over OPC UA: the API shows it, the audit log has it
    operator = Client(url, timeout=10)
    operator.set_user("olga")
    operator.set_password("operator-pass-1")
    async with operator:
        event_id = await latest_event_id(operator, LIMIT)
        await operator.get_node(limit_node).call_method(ack, ua.Variant(event_id, ua.VariantType.ByteString),
                                                        ua.LocalizedText("seen from the SCADA"))
        async with httpx.AsyncClient(base_url=room.url, headers={"Authorization": f"Bearer {room.viewer}"}) as http:
            row = (await http.get(f"/api/alarms/{LIMIT}")).json()
            assert (row["state"], row["ack_user"], row["confirmed"]) == ("ACKED", "olga", False)
            event_id = await latest_event_id(operator, LIMIT)
            await operator.get_node(limit_node).call_method(
                ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Confirm),
                ua.Variant(event_id, ua.VariantType.ByteString), ua.LocalizedText("confirmed"))
            assert (await http.get(f"/api/alarms/{LIMIT}")).json()["confirmed"] is True
            # shelving over OPC UA is the API's shelving
            shelving = operator.get_node(ua.NodeId(f"{BIT}#condition.ShelvingState", ns, ua.NodeIdType.String))
            await shelving.call_method(ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_TimedShelve),
                                       ua.Variant(60_000.0, ua.VariantType.Double))
            row = (await http.get(f"/api/alarms/{BIT}")).json()
            assert row["shelved"] is True and 55e9 < row["shelved_until_ns"] - intel.alarms.get(BIT).since_ns <= 60e9
            await shelving.call_method(ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_Unshelve))
            assert (await http.get(f"/api/alarms/{BIT}")).json()["shelved"] is False
        stale = event_id
        try:  # an old EventId is refused
            await operator.get_node(limit_node).call_method(ack, ua.Variant(b"0" * 16, ua.VariantType.ByteString),
                                                            ua.LocalizedText(""))
            raise AssertionError("an unknown EventId must be refused")
        except ua.UaStatusCodeError as exc:
            assert exc.code == ua.StatusCodes.BadEventIdUnknown
        assert stale

    # node-opcua acknowledges another standing alarm with the EventId its refresh received
    (refresh2,) = await node_ua(url, "olga", "operator-pass-1", [{"op": "conditionRefresh", "waitMs": 1000}],
                                tmp_path / "pki")
    state_event = next(e for e in refresh2["events"] if e.get("ConditionName") == STATE)
    (called,) = await node_ua(url, "olga", "operator-pass-1", [
        {"op": "call", "objectId": f"ns={ns};s={STATE}#condition", "methodId": "i=9111",
         "args": [{"dataType": "ByteString", "value": state_event["EventId"]},
                  {"dataType": "LocalizedText", "value": "node-opcua ack"}]}], tmp_path / "pki")
    assert called["status"] == "Good"
    assert intel.alarms.get(STATE).state == "ACKED" and intel.alarms.get(STATE).ack_user == "olga"

    entries = [e for e in audit(site) if e.get("source") == "opcua" and "alarm" in e]
    assert [(e["action"], e["alarm"], e["user"], e["result"]) for e in entries] == [
        ("acknowledge", LIMIT, "vic", "BadUserAccessDenied"),
        ("acknowledge", LIMIT, "olga", "GOOD"),
        ("confirm", LIMIT, "olga", "GOOD"),
        ("shelve", BIT, "olga", "GOOD"),
        ("unshelve", BIT, "olga", "GOOD"),
        ("acknowledge", LIMIT, "olga", "BadEventIdUnknown"),
        ("acknowledge", STATE, "olga", "GOOD"),
    ]
    assert entries[1]["comment"] == "seen from the SCADA" and entries[1]["role"] == "operator"
