"""DCMD writes through the write service: the value lands on the simulated device (its registers),
is read back and audited with source mqtt; refused commands (read-only tag, out of range, wrong
type, unknown metric, a role that may not write) are logged and audited with the reason."""
from __future__ import annotations

import json

from harness import wait_until
from mqtt_site import GROUP, NODE, site_yaml
from spb_host import DT, SpbHost


def audit(site) -> list[dict]:
    path = site.loaded.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def started(broker, make_site, hosts, mqtt_extra: str = ""):
    host = SpbHost(broker.port).start()
    hosts.append(host)
    site = await make_site(site_yaml(broker.url, mqtt_extra=mqtt_extra))
    assert await wait_until(lambda: len(host.of_kind("DBIRTH")) == 2, 10)
    return host, site


def alias(host: SpbHost, device: str, name: str) -> int:
    view = host.view(GROUP, NODE, device)
    return next(a for a, n in view.alias.items() if n == name)


async def test_dcmd_write_lands_on_the_device_with_read_back_and_audit(broker, make_site, hosts):
    host, site = await started(broker, make_site, hosts)
    host.dcmd(GROUP, NODE, "boiler", [host.metric(alias=alias(host, "boiler", "setpoint"), datatype=DT["Double"],
                                                  double_value=61.3)])
    assert await wait_until(lambda: site.sim.get_registers("boiler", "holding", 1, 1) == [613], 5)  # int16 x 0.1
    assert abs(site.sim.get_value("boiler", "setpoint") - 61.3) < 1e-9
    assert await wait_until(lambda: any(e["source"] == "mqtt" for e in audit(site)), 5)
    entry = [e for e in audit(site) if e["source"] == "mqtt"][-1]
    assert entry["tag"] == "boiler.setpoint" and entry["result"] == "GOOD" and entry["user"] == "mqtt"
    assert entry["role"] == "operator" and entry["new"] == 61.3 and entry["read_back"] == 61.3
    # the new value comes back to the host as DDATA
    assert await wait_until(lambda: any(d.name == "setpoint" and d.value == 61.3 for d in host.delivered()), 5)
    assert site.app.outputs.mqtt.stats()["commands_ok"] == 1


async def test_dcmd_refusals_are_audited_with_the_reason(broker, make_site, hosts):
    host, site = await started(broker, make_site, hosts)
    temp, setpoint = alias(host, "boiler", "temp"), alias(host, "boiler", "setpoint")
    host.dcmd(GROUP, NODE, "boiler", [host.metric(alias=temp, datatype=DT["Double"], double_value=30.0)])
    host.dcmd(GROUP, NODE, "boiler", [host.metric(alias=setpoint, double_value=95.0)])  # range [20, 90]
    host.dcmd(GROUP, NODE, "boiler", [host.metric(alias=setpoint, string_value="hot")])
    host.dcmd(GROUP, NODE, "boiler", [host.metric(alias=setpoint, datatype=DT["Int32"], int_value=40)])
    host.dcmd(GROUP, NODE, "boiler", [host.metric(alias=999_999, double_value=1.0)])
    host.dcmd(GROUP, NODE, "nosuch", [host.metric(name="x", double_value=1.0)])
    host.dcmd_raw(GROUP, NODE, "boiler", b"\xff\xff not protobuf")
    assert await wait_until(lambda: len([e for e in audit(site) if e["source"] == "mqtt"]) == 7, 5), audit(site)
    entries = [e for e in audit(site) if e["source"] == "mqtt"]
    by = {(e["tag"], e["result"]): e["message"] for e in entries}
    assert ("boiler.temp", "BAD_NOT_WRITABLE") in by
    assert ("boiler.setpoint", "BAD_OUT_OF_RANGE") in by and "95" in by[("boiler.setpoint", "BAD_OUT_OF_RANGE")]
    mismatches = [m for (tag, r), m in by.items() if tag == "boiler.setpoint" and r == "BAD_TYPE_MISMATCH"]
    assert len([e for e in entries if e["result"] == "BAD_TYPE_MISMATCH"]) == 3  # string, datatype, undecodable
    assert any("string_value" in m for m in mismatches) or any("Int32" in e["message"] for e in entries)
    assert any("alias 999999" in e["message"] for e in entries)
    assert any("'nosuch'" in e["message"] for e in entries)
    assert site.sim.get_registers("boiler", "holding", 1, 1) == [555]  # nothing was written
    assert site.app.outputs.mqtt.stats()["commands_refused"] == 7


async def test_a_viewer_role_may_not_write(broker, make_site, hosts):
    host, site = await started(broker, make_site, hosts, mqtt_extra="command_role: viewer")
    host.dcmd(GROUP, NODE, "boiler", [host.metric(alias=alias(host, "boiler", "setpoint"), double_value=40.0)])
    assert await wait_until(lambda: any(e["source"] == "mqtt" for e in audit(site)), 5)
    entry = [e for e in audit(site) if e["source"] == "mqtt"][-1]
    assert entry["result"] == "BAD_USER_ACCESS_DENIED" and entry["role"] == "viewer"
    assert site.sim.get_registers("boiler", "holding", 1, 1) == [555]
