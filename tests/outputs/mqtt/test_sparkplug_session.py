"""The appliance as a Sparkplug B edge node against a real Mosquitto, seen by an independent host.

Births (NBIRTH with bdSeq and the node's metrics, a DBIRTH per device with typed metrics and
properties), DDATA with aliases only in seq order with scaled values carrying their decimals,
a full rebirth on NCMD, DDEATH/DBIRTH when a device goes offline and returns, and the ledger
of every change delivered exactly once against the spool.
"""
from __future__ import annotations

import numpy as np
from harness import wait_until
from mqtt_site import GROUP, NODE, ledger, site_yaml
from spb_host import DT, SpbHost, properties, value_of


def seqs_in_order(msgs) -> list[str]:
    """Gaps in seq across the node's messages from one NBIRTH on (each NBIRTH restarts at 0)."""
    problems = []
    prev = None
    for m in msgs:
        if m.kind not in ("NBIRTH", "NDATA", "DBIRTH", "DDATA", "DDEATH"):
            continue  # NDEATH has no seq; STATE, NCMD, DCMD are the host's
        seq = m.payload.seq
        if m.kind == "NBIRTH":
            if seq != 0:
                problems.append(f"NBIRTH seq {seq}")
        elif prev is not None and seq != (prev + 1) % 256:
            problems.append(f"{m.kind} seq {seq} after {prev}")
        prev = seq
    return problems


async def test_births_data_in_seq_order_and_rebirth(broker, make_site, hosts):
    host = SpbHost(broker.port).start()
    hosts.append(host)
    site = await make_site(site_yaml(broker.url))
    # ~300 messages: seq wraps past 255 at least once
    assert await wait_until(lambda: len(host.of_kind("DDATA")) > 300, 20), host.all()[-3:]
    out = site.app.outputs.mqtt
    assert not host.errors, host.errors[:3]

    nbirth = host.of_kind("NBIRTH")[0]
    assert nbirth.topic == f"spBv1.0/{GROUP}/NBIRTH/{NODE}" and nbirth.qos == 0 and not nbirth.retain
    node = {m.name: m for m in nbirth.payload.metrics}
    assert nbirth.payload.seq == 0
    assert node["bdSeq"].datatype == DT["Int64"] and node["bdSeq"].long_value == out.node.bd_seq
    assert node["Node Control/Rebirth"].datatype == DT["Boolean"] and node["Node Control/Rebirth"].boolean_value is False
    for name in ("Health/Uptime s", "Health/Devices online", "Spool/Unsent points", "Spool/Dropped points",
                 "Forwarder/State", "MQTT/Backlog points"):
        assert name in node, name
    assert value_of(node["Forwarder/State"], DT["String"]) == "none"  # no InfluxDB in this site

    dbirths = {m.device: m for m in host.of_kind("DBIRTH")}
    assert set(dbirths) == {"boiler", "pump"}
    boiler = {m.name: m for m in dbirths["boiler"].payload.metrics}
    assert set(boiler) == {"temp", "setpoint", "level", "flow", "burner_on", "count"}
    assert {n: m.datatype for n, m in boiler.items()} == {
        "temp": DT["Double"], "setpoint": DT["Double"], "level": DT["Int16"], "flow": DT["Float"],
        "burner_on": DT["Boolean"], "count": DT["UInt32"]}
    assert len({m.alias for m in boiler.values()}) == 6
    assert properties(boiler["temp"]) == {"engUnit": "degC", "engLow": -50.0, "engHigh": 150.0,
                                          "Documentation": "water temperature", "readOnly": True,
                                          "Quality": properties(boiler["temp"])["Quality"],
                                          "StatusCode": properties(boiler["temp"])["StatusCode"]}
    assert properties(boiler["setpoint"])["readOnly"] is False

    # DDATA: aliases only, the node's seq without a gap, scaled values with their decimals
    assert seqs_in_order(host.all()) == []
    view = host.view(GROUP, NODE, "boiler")
    got = [d for d in host.delivered() if d.device == "boiler"]
    setpoints = {d.value for d in got if d.name == "setpoint"} | {value_of(boiler["setpoint"], DT["Double"])}
    assert setpoints - {None} == {55.5}
    temps = [d.value for d in got if d.name == "temp"]
    assert len(temps) > 10 and any(abs(t * 10 - round(t * 10)) < 1e-9 and t != int(t) for t in temps)
    levels = {d.value for d in got if d.name == "level"} | {value_of(boiler["level"], DT["Int16"])}
    assert levels - {None} == {-12}
    assert all(d.ts > 0 for d in got) and view.alias

    # NCMD rebirth: a new NBIRTH (seq 0, same bdSeq) and every DBIRTH again
    before = len(host.of_kind("DBIRTH"))
    host.rebirth(GROUP, NODE)
    assert await wait_until(lambda: len(host.of_kind("NBIRTH")) == 2 and len(host.of_kind("DBIRTH")) == before + 2, 5)
    reborn = host.of_kind("NBIRTH")[1]
    assert reborn.payload.seq == 0
    assert {m.name: m.long_value for m in reborn.payload.metrics}["bdSeq"] == out.node.bd_seq
    n = len(host.of_kind("DDATA"))
    assert await wait_until(lambda: len(host.of_kind("DDATA")) > n + 20, 5)
    assert seqs_in_order(host.all()) == []
    assert out.stats()["rebirths"] == 1

    # every change polled so far reached the host exactly once (live and, before the first birth, replayed)
    assert await wait_until(lambda: out.stats()["backlog_ranges"] == 0, 10)
    await site.app.stop()
    led = ledger(host, site.loaded.data_dir / "spool.db")
    assert not led.lost and not led.duplicated and not led.wrong and not led.unexpected, str(led)
    assert led.expected > 300


async def test_device_death_on_offline_and_birth_on_return(broker, make_site, hosts):
    host = SpbHost(broker.port).start()
    hosts.append(host)
    site = await make_site(site_yaml(broker.url))
    assert await wait_until(lambda: len(host.of_kind("DBIRTH")) == 2 and len(host.of_kind("DDATA")) > 5, 10)
    site.sim.set_fault("pump", "offline")
    assert await wait_until(lambda: len(host.of_kind("DDEATH", "pump")) == 1, 10)
    death = host.of_kind("DDEATH", "pump")[0]
    assert death.topic == f"spBv1.0/{GROUP}/DDEATH/{NODE}/pump" and death.payload.seq >= 0
    # the data before the death: every pump metric went Bad_NoCommunication (OPC DA 8)
    bad = [d for d in host.delivered() if d.device == "pump" and d.quality == 8]
    assert {d.name for d in bad} == {"speed", "current"} and all(d.value is None for d in bad)
    n_pump = len([d for d in host.delivered() if d.device == "pump"])
    boiler_before = len([d for d in host.delivered() if d.device == "boiler"])
    assert await wait_until(lambda: len([d for d in host.delivered() if d.device == "boiler"]) > boiler_before + 10, 5)
    assert len([d for d in host.delivered() if d.device == "pump"]) == n_pump  # nothing from a dead device
    site.sim.clear_fault("pump")
    assert await wait_until(lambda: len(host.of_kind("DBIRTH", "pump")) == 2, 10)
    assert await wait_until(lambda: any(d.device == "pump" and d.quality == 192
                                        for d in host.delivered()[n_pump:]), 5)
    assert host.view(GROUP, NODE, "pump").online
    assert seqs_in_order(host.all()) == []
    assert not host.errors
    assert site.app.outputs.mqtt.stats()["device_deaths"] == 1
    assert np.isfinite(site.value("pump", "speed")[0])


async def test_reload_rebirths_with_the_new_metrics(broker, make_site, hosts):
    from edge.config.loader import load_config

    host = SpbHost(broker.port).start()
    hosts.append(host)
    site = await make_site(site_yaml(broker.url))
    assert await wait_until(lambda: len(host.of_kind("DBIRTH")) == 2 and len(host.of_kind("DDATA")) > 10, 10)
    path = site.loaded.path
    path.write_text(path.read_text().replace(
        "      - {name: current, address: 1,",
        "      - {name: pressure, address: 1, type: int16, scale: 0.01, unit: bar}\n"  # the current's register
        "      - {name: current, address: 1,"))
    await site.app.reload(load_config(path))
    assert await wait_until(lambda: len(host.of_kind("NBIRTH")) == 2 and len(host.of_kind("DBIRTH")) == 4, 10)
    pump = {m.name: m for m in host.of_kind("DBIRTH", "pump")[-1].payload.metrics}
    assert set(pump) == {"speed", "pressure", "current"} and pump["pressure"].datatype == DT["Double"]
    def same_as_current() -> bool:
        got = host.delivered()
        current = {d.ts: d.value for d in got if d.name == "current"}
        return any(d.name == "pressure" and d.quality == 192 and current.get(d.ts) == d.value for d in got)

    assert await wait_until(same_as_current, 10)
    n = len(host.delivered())
    assert await wait_until(lambda: len(host.delivered()) > n + 10, 5)
    assert not host.errors and seqs_in_order(host.all()) == []
