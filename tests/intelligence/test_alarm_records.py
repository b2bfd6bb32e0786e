"""``edge_alarms`` records: alarm state changes go through the spool and the exporter's line protocol
into a real InfluxDB 1.x, and the query of the Grafana overview's alarm table reads them back."""
from __future__ import annotations

import time

import numpy as np

from edge.config.intelligence import AlarmConfig
from edge.config.storage import InfluxConfig, SpoolConfig
from edge.core.model import Plant, SampleBatch, TagInfo
from edge.intelligence.alarms import AlarmEngine
from edge.intelligence.service import alarm_record
from edge.outputs.influx import LineEncoder
from edge.storage.spool import Spool
from tests.fixtures.tsdb import influxdb1  # noqa: F401 - fixture

PLANT = Plant("site 1", tags=[TagInfo(0, "room_1", "temperature", "net", "float32"),
                              TagInfo(1, "fc", "trip", "net", "bool")])

#: The table query of the alarm panel (docs/influx-schema.md, "Alarms").
TABLE_QUERY = ('SELECT last("state") AS "state", last("active") AS "active", last("acked") AS "acked", '
               'last("severity") AS "severity", last("message") AS "message", last("user") AS "user" '
               'FROM "edge_alarms" WHERE "site" = \'site 1\' AND time > now() - 1h GROUP BY "alarm"')


def test_alarm_changes_reach_influxdb_and_the_table_query(tmp_path, influxdb1):  # noqa: F811
    sp = Spool(tmp_path / "s.db", PLANT, SpoolConfig(retention_s=0))
    sp.start()
    try:
        engine = AlarmEngine(PLANT, [AlarmConfig(kind="limit", tag="room_1.temperature", h=30, priority="high",
                                                 message='room "1" too hot, open window'),
                                     AlarmConfig(kind="bit", tag="fc.trip")])
        engine.listeners.append(lambda e: sp.append_alarm(e.alarm, e.ts_ns, alarm_record(e)))
        engine.consume(SampleBatch("room_1", time.time_ns(), np.array([0, 1], np.int32), np.array([35.5, 1.0]),
                                   np.zeros(2, np.uint8)))
        engine.acknowledge("room_1.temperature.limit", "op", "on it")
        assert sp.flush()
        rows = sp.unsent(0, None, 100)
        assert [r.source for r in rows] == ["room_1.temperature.limit", "fc.trip.bit", "room_1.temperature.limit"]
        enc = LineEncoder(sp, InfluxConfig(url="http://127.0.0.1:1", bucket="edge"))
        lines = [enc.encode(r) for r in rows]
        assert lines[0].startswith("edge_alarms,site=site\\ 1,alarm=room_1.temperature.limit,device=room_1,"
                                   "tag=room_1.temperature,kind=limit,priority=high ")
        assert 'active=1i' in lines[0] and 'value=35.5' in lines[0] and 'state="UNACK"' in lines[0]
        influxdb1.create_database("edge")
        influxdb1.write_lines("edge", "\n".join(lines))
    finally:
        sp.close()

    series = influxdb1.query(TABLE_QUERY, db="edge")["results"][0]["series"]
    table = {s["tags"]["alarm"]: dict(zip(s["columns"], s["values"][0], strict=True)) for s in series}
    hot = table["room_1.temperature.limit"]
    assert (hot["state"], hot["active"], hot["acked"], hot["severity"]) == ("ACKED", 1, 1, 750)
    assert hot["message"] == 'room "1" too hot, open window' and hot["user"] == "op"
    trip = table["fc.trip.bit"]
    assert (trip["state"], trip["active"], trip["acked"], trip["user"]) == ("UNACK", 1, 0, None)
    n = influxdb1.query('SELECT count("active") FROM "edge_alarms" WHERE "priority" = \'high\'', db="edge")
    assert n["results"][0]["series"][0]["values"][0][1] == 2  # both changes of the high-priority alarm
