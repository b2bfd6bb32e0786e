"""The ``system`` driver proves the driver boundary (issue 18): registered through the same
``edge.drivers`` entry point as Modbus and configured next to Modbus devices, its tags reach
OPC UA, the spool and InfluxDB with no code for it under ``edge/``. Values are checked against
psutil and os, read by the test itself."""
from __future__ import annotations

import asyncio
import os

import psutil
from asyncua import Client, ua
from harness import wait_until

from edge.config.errors import ConfigError
from edge.config.loader import load_config
from edge.core.model import Quality
from edge.storage.history import read_history

SITE = """
site: {{name: mixed}}
buses:
  - {{name: net, type: modbus_tcp, timeout_ms: 100}}
  - {{name: host, type: system}}
devices:
  - name: plc
    bus: net
    port: {plc_port}
    interval_ms: 100
    points:
      - {{name: level, address: 0, type: float32, unit: "%", sim: {{kind: constant, value: 42.5}}}}
  - name: box
    bus: host
    interval_ms: 200
    points:
      - {{name: cores, metric: cpu_count}}
      - {{name: ram_total, metric: memory_total_bytes, unit: B}}
      - {{name: cpu, metric: cpu_percent, unit: "%"}}
      - {{name: root_free, metric: disk_free_bytes, path: /, unit: B}}
      - {{name: no_disk, metric: disk_percent, path: /no/such/mount}}
outputs:
  opcua:
    endpoint: opc.tcp://127.0.0.1:{opc_port}/edge
    security_policies: [None]
    allow_security_none: true
    anonymous: true
  influxdb: {{url: '{influx}', bucket: edge, token: x, batch_max_age_ms: 100}}
"""


async def test_host_metrics_reach_opcua_spool_and_influxdb(make_site, victoria_metrics, tmp_path):
    # the PLC's port is held for the simulator (make_site fills {port:plc}); OPC UA takes any free port
    site = await make_site(SITE.format(plc_port="{port:plc}", opc_port=0, influx=victoria_metrics.url))
    cores_id = site.tag_id("box", "cores")
    assert await wait_until(lambda: site.app.store.get(cores_id)[2] > 0 and site.diag("plc").polls_ok >= 3, 10)
    expected_cores = float(os.cpu_count() or 0)
    expected_ram = float(psutil.virtual_memory().total)
    assert site.value("box", "cores")[:2] == (expected_cores, Quality.GOOD)
    assert site.value("box", "ram_total")[:2] == (expected_ram, Quality.GOOD)
    assert 0 <= site.value("box", "cpu")[0] <= 100
    assert site.value("box", "no_disk")[1] == Quality.BAD_CONFIG_ERROR  # no such mount: configured wrong
    assert site.value("plc", "level")[:2] == (42.5, Quality.GOOD)
    assert site.diag("box").polls_ok >= 1 and "no_disk" in site.diag("box").last_error

    async with Client(site.app.outputs.opcua.endpoint_url, timeout=10) as client:
        ns = await client.get_namespace_index("urn:edge:mixed")
        dv = await client.get_node(ua.NodeId("box.ram_total", ns)).read_data_value()
        assert dv.Value.Value == expected_ram and dv.Value.VariantType == ua.VariantType.Double
        host = await client.nodes.objects.get_child([f"{ns}:mixed", f"{ns}:host", f"{ns}:box"])
        assert (await host.read_browse_name()).Name == "box"

    for _ in range(100):  # the forwarder delivers what the spool committed; VictoriaMetrics indexes it
        series = await asyncio.to_thread(victoria_metrics.samples, '{__name__="box_cores"}')
        if series:
            break
        await asyncio.sleep(0.1)
    await site.app.stop()  # flushes the spool
    ts, values, quality, _ = read_history(site.loaded.config.outputs.spool.path, site.loaded.plant, "box.cores",
                                       0, 2**62)
    assert len(ts) >= 1 and set(values.tolist()) == {expected_cores} and not quality.any()
    names = sorted({s["metric"]["__name__"] for s in victoria_metrics.export()})
    assert series, f"no box_cores series in VictoriaMetrics; it has {names[:40]}"
    (labels, points), = series.items()
    assert dict(labels)["device"] == "box" and dict(labels)["bus"] == "host"
    assert {v for _, v in points} == {expected_cores}


def test_system_points_are_validated_by_the_driver_schema(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text("site: {name: s}\nbuses: [{name: host, type: system}]\n"
                    "devices: [{name: box, bus: host, points: [{name: x, metric: cpu_percentage, writable: true}]}]\n")
    try:
        load_config(path)
        raise AssertionError("an unknown metric must be refused")
    except ConfigError as exc:
        text = "\n".join(str(i) for i in exc.issues)
    assert "devices[0].points[0].metric" in text and "cpu_percent" in text  # names what is allowed
    assert ":3:" in text or "edge.yaml:3" in text  # the line of the device
