"""The appliance polling real simulated devices over Modbus TCP, RTU on socat serial lines, and
RTU over TCP: every data type and order, every fault, offline back-off, hole learning, writes."""
from __future__ import annotations

import asyncio
import math

import pytest
from harness import wait_until

from edge.core.model import DeviceState, Quality, WriteStatus

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
VALUES = {"int16": -12345, "uint16": 54321, "int32": -123456789, "uint32": 3123456789,
          "int64": -1234567890123456, "uint64": 12345678901234567890, "float32": 1234.5,
          "float64": -9876.54321}


def typed_points() -> tuple[str, dict[str, float | str]]:
    """YAML for one point per (type, order) with a constant value, plus bits, coils, strings."""
    lines, expected, address = [], {}, 0
    for dtype, value in VALUES.items():
        width = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}.get(dtype, 4)
        for order in ORDERS:
            name = f"{dtype}_{order.lower()}"
            lines.append(f"      - {{name: {name}, address: {address}, type: {dtype}, order: {order}, "
                         f"sim: {{kind: constant, value: {value}}}}}")
            expected[name] = value
            address += width
    lines += [
        f"      - {{name: scaled, address: {address}, type: int16, scale: 0.1, offset: -40, unit: degC, "
        f"sim: {{kind: constant, value: 21.5}}}}",
        f"      - {{name: word, address: {address + 1}, type: uint16, sim: {{kind: constant, value: 5}}}}",
        f"      - {{name: bit0, address: {address + 1}, type: bool, bit: 0, sim: {{kind: constant, value: 1}}}}",
        f"      - {{name: bit1, address: {address + 1}, type: bool, bit: 1, sim: {{kind: constant, value: 0}}}}",
        f"      - {{name: bit2, address: {address + 1}, type: bool, bit: 2, sim: {{kind: constant, value: 1}}}}",
        f"      - {{name: text, address: {address + 2}, type: string, length: 4, sim: {{kind: constant, value: EDGE-42}}}}",
        "      - {name: coil, table: coil, address: 3, type: bool, sim: {kind: constant, value: 1}}",
        "      - {name: input_bit, table: discrete, address: 7, type: bool, sim: {kind: constant, value: 0}}",
        "      - {name: ireg, table: input, address: 10, type: int32, order: CDAB, sim: {kind: constant, value: -7}}",
    ]
    expected.update(scaled=21.5, word=5, bit0=1, bit1=0, bit2=1, text="EDGE-42", coil=1, input_bit=0, ireg=-7)
    return "\n".join(lines), expected


def bus_yaml(kind: str, port: str) -> str:
    if kind == "tcp":
        return f"  - {{name: b, type: modbus_tcp, host: 127.0.0.1, port: {port}, timeout_ms: 300}}"
    if kind == "rtu_over_tcp":
        return f"  - {{name: b, type: rtu_over_tcp, host: 127.0.0.1, port: {port}, baud: 115200, timeout_ms: 300}}"
    return "  - {name: b, type: modbus_rtu, port: '{tmp}/ttyA', baud: 115200, timeout_ms: 300}"


@pytest.mark.parametrize("kind", ["tcp", "serial", "rtu_over_tcp"])
async def test_every_type_and_order_decodes(make_site, kind):
    points, expected = typed_points()
    site = await make_site(f"""
site: {{name: t}}
buses:
{bus_yaml(kind, "{port:dev}")}
devices:
  - name: d
    bus: b
    unit_id: 7
    interval_ms: 500
    points:
{points}
""")
    assert await wait_until(lambda: site.diag("d").polls_ok >= 2, 10)
    for name, want in expected.items():
        value, quality, ts = site.value("d", name)
        assert quality == Quality.GOOD, name
        assert ts > 0
        if isinstance(want, str):
            assert value == want
        elif name.startswith("float32"):
            assert value == pytest.approx(want, rel=1e-6), name
        elif name.startswith(("int64", "uint64")):
            assert value == float(want), name  # float64 carries these to 2**53; exact for these constants
        else:
            assert value == pytest.approx(want, abs=1e-9), name


SERIAL_LINE = """
site: {{name: t}}
buses:
  - {{name: rs485, type: modbus_rtu, port: '{{tmp}}/ttyL', baud: 38400, timeout_ms: 100, retries: 1}}
devices:
{devices}
"""


def serial_devices(n: int, interval_ms: int = 200, backoff_max_s: float = 2.0) -> str:
    return "\n".join(
        f"  - {{name: dev{i}, bus: rs485, unit_id: {i + 1}, interval_ms: {interval_ms}, backoff_max_s: {backoff_max_s}, "
        f"points: [{{name: t, address: 0, type: int16, scale: 0.1, range: [-50, 150]}}, "
        f"{{name: h, address: 1, type: uint16}}]}}"
        for i in range(n))


async def test_dead_device_goes_offline_and_the_others_keep_their_rate(make_site):
    site = await make_site(SERIAL_LINE.format(devices=serial_devices(4)))
    assert await wait_until(lambda: all(site.diag(f"dev{i}").state == DeviceState.ONLINE for i in range(4)), 10)
    site.sim.set_fault("dev3", "silence")
    before = {i: site.diag(f"dev{i}").polls_ok for i in range(3)}
    window_s = 6.0
    await wait_until(lambda: False, window_s)
    expected_polls = window_s / 0.2
    for i in range(3):
        done = site.diag(f"dev{i}").polls_ok - before[i]
        assert done >= 0.9 * expected_polls, f"dev{i} polled {done} times in {window_s} s, expected ~{expected_polls}"
    dead = site.diag("dev3")
    assert dead.state == DeviceState.OFFLINE
    assert dead.timeouts >= 3
    assert "Timeout" in dead.last_error
    for tag in ("t", "h"):
        value, quality, _ = site.value("dev3", tag)
        assert quality == Quality.BAD_NO_COMMUNICATION
    # offline: probed with back-off, not polled every cycle, and no stale values re-published
    timeouts = dead.timeouts
    await wait_until(lambda: False, 2.0)
    assert dead.timeouts - timeouts <= 2
    site.sim.clear_fault("dev3")
    assert await wait_until(lambda: dead.state == DeviceState.ONLINE, 6)
    assert await wait_until(lambda: site.value("dev3", "t")[1] == Quality.GOOD, 3)


async def test_busy_is_retried_and_an_exception_marks_tags_not_the_device(make_site):
    port = "{port:dev}"
    site = await make_site(f"""
site: {{name: t}}
buses: [{{name: b, type: modbus_tcp, port: {port}, timeout_ms: 100}}]
devices:
  - {{name: d, bus: b, interval_ms: 100, retries: 3, points: [{{name: v, address: 0}}, {{name: w, address: 1}}]}}
""")
    assert await wait_until(lambda: site.diag("d").polls_ok >= 2, 5)
    site.sim.set_fault("d", "busy", probability=0.5)
    await wait_until(lambda: site.diag("d").exceptions.get(6, 0) >= 5, 10)
    assert site.diag("d").state == DeviceState.ONLINE
    assert site.value("d", "v")[1] == Quality.GOOD or site.diag("d").exceptions[6] > 0
    site.sim.set_fault("d", "busy", probability=1.0)
    assert await wait_until(lambda: site.value("d", "v")[1] == Quality.BAD_COMM_ERROR, 5)
    assert site.diag("d").state == DeviceState.ONLINE  # it answers: an exception is not offline
    site.sim.clear_fault("d")
    assert await wait_until(lambda: site.value("d", "v")[1] == Quality.GOOD, 5)


async def test_illegal_address_hole_is_learned(make_site):
    port = "{port:dev}"
    site = await make_site(f"""
site: {{name: t}}
buses: [{{name: b, type: modbus_tcp, port: {port}, timeout_ms: 100}}]
devices:
  - name: d
    bus: b
    interval_ms: 100
    max_gap: 8
    points:
      - {{name: a, address: 0, type: float32, sim: {{kind: constant, value: 1.5}}}}
      - {{name: b, address: 2, type: uint16, sim: {{kind: constant, value: 2}}}}
      - {{name: c, address: 8, type: uint16, sim: {{kind: constant, value: 3}}}}
      - {{name: e, address: 9, type: float32, sim: {{kind: constant, value: 4.5}}}}
""", start_app=False)
    site.sim.set_fault("d", "illegal_address", start=4, count=3)  # a hole the merged block crosses
    plan = site.app.devices["d"].runtime.plan
    assert len(plan.blocks("default")) == 1
    await site.app.start()
    assert await wait_until(lambda: site.diag("d").polls_ok >= 3, 5)
    blocks = plan.blocks("default")
    assert len(blocks) == 2
    assert all(not (b.start < 7 and b.end > 4) for b in blocks)
    assert site.diag("d").exceptions.get(2, 0) == 1  # learned once, not asked again
    assert [site.value("d", n)[0] for n in "abce"] == [1.5, 2, 3, 4.5]


async def test_point_refused_alone_becomes_configuration_error(make_site):
    port = "{port:dev}"
    site = await make_site(f"""
site: {{name: t}}
buses: [{{name: b, type: modbus_tcp, port: {port}, timeout_ms: 100}}]
devices:
  - {{name: d, bus: b, interval_ms: 100, points: [{{name: ok, address: 0}}, {{name: missing, address: 5}}]}}
""", start_app=False)
    site.sim.set_fault("d", "illegal_address", start=5, count=1)
    await site.app.start()
    assert await wait_until(lambda: site.value("d", "missing")[1] == Quality.BAD_CONFIG_ERROR, 5)
    assert await wait_until(lambda: site.value("d", "ok")[1] == Quality.GOOD, 5)
    assert site.diag("d").state == DeviceState.ONLINE


@pytest.mark.parametrize("fault", ["garbage", "bad_crc"])
async def test_bad_frames_are_counted_and_recovered_without_reconnecting(make_site, fault):
    site = await make_site(SERIAL_LINE.format(devices=serial_devices(1, interval_ms=100)))
    assert await wait_until(lambda: site.diag("dev0").polls_ok >= 2, 5)
    site.sim.set_fault("dev0", fault, probability=0.5)
    assert await wait_until(lambda: site.diag("dev0").crc_errors >= 3, 10)
    site.sim.clear_fault("dev0")
    ok = site.diag("dev0").polls_ok
    assert await wait_until(lambda: site.diag("dev0").polls_ok >= ok + 5, 5)
    assert site.value("dev0", "t")[1] == Quality.GOOD
    assert site.app.devices["dev0"].runtime.line_object.transport.connects == 1


async def test_slow_answers_time_out(make_site):
    site = await make_site(SERIAL_LINE.format(devices=serial_devices(1, interval_ms=200)))
    assert await wait_until(lambda: site.diag("dev0").polls_ok >= 1, 5)
    site.sim.set_fault("dev0", "slow", delay_ms=250)
    assert await wait_until(lambda: site.diag("dev0").timeouts >= 2, 5)
    assert await wait_until(lambda: site.value("dev0", "t")[1] in (Quality.BAD_COMM_ERROR,
                                                                   Quality.BAD_NO_COMMUNICATION), 5)


async def test_tcp_device_gone_reconnects_with_backoff(make_site):
    port = "{port:dev}"
    site = await make_site(f"""
site: {{name: t}}
buses: [{{name: b, type: modbus_tcp, port: {port}, timeout_ms: 200}}]
devices:
  - {{name: d, bus: b, interval_ms: 200, backoff_max_s: 1, points: [{{name: v, address: 0}}]}}
""")
    assert await wait_until(lambda: site.diag("d").polls_ok >= 1, 5)
    site.sim.set_fault("d", "offline")
    assert await wait_until(lambda: site.diag("d").state == DeviceState.OFFLINE, 10)
    assert site.value("d", "v")[1] == Quality.BAD_NO_COMMUNICATION
    site.sim.clear_fault("d")
    assert await wait_until(lambda: site.diag("d").state == DeviceState.ONLINE, 10)
    assert site.app.devices["d"].runtime.line_object.transport.connects >= 2


@pytest.mark.parametrize("kind", ["tcp", "serial"])
async def test_writes_reach_the_device_and_are_read_back(make_site, kind):
    site = await make_site(f"""
site: {{name: t}}
buses:
{bus_yaml(kind, "{port:dev}")}
devices:
  - name: d
    bus: b
    interval_ms: 500
    points:
      - {{name: setpoint, address: 10, type: float32, order: CDAB, range: [0, 200], writable: true, unit: degC}}
      - {{name: speed, address: 20, type: int16, scale: 0.1, range: [-50, 50], writable: true}}
      - {{name: control, address: 30, type: uint16, writable: true, sim: {{kind: constant, value: 4}}}}
      - {{name: enable, address: 30, type: bool, bit: 0, writable: true}}
      - {{name: relay, table: coil, address: 5, type: bool, writable: true}}
      - {{name: reading, address: 40, type: uint16}}
""")
    assert await wait_until(lambda: site.diag("d").polls_ok >= 1, 5)
    w = site.app.writes
    r = await w.write(site.tag_id("d", "setpoint"), 123.25, user="alice", source="test")
    assert r.status == WriteStatus.GOOD and r.read_back == 123.25
    assert site.sim.get_value("d", "setpoint") == 123.25
    r = await w.write(site.tag_id("d", "speed"), -12.3, user="alice", source="test")
    assert r.ok and site.sim.get_registers("d", "holding", 20, 1) == [(-123) & 0xFFFF]
    r = await w.write(site.tag_id("d", "enable"), True, user="alice", source="test")
    assert r.ok and site.sim.get_registers("d", "holding", 30, 1) == [5]  # bit 0 set, bit 2 kept
    r = await w.write(site.tag_id("d", "relay"), "on", user="alice", source="test")
    assert r.ok and site.sim.get_registers("d", "coil", 5, 1) == [1]
    # refused before the device is touched
    r = await w.write(site.tag_id("d", "setpoint"), 500, user="alice", source="test")
    assert r.status == WriteStatus.BAD_OUT_OF_RANGE
    assert site.sim.get_value("d", "setpoint") == 123.25
    r = await w.write(site.tag_id("d", "reading"), 1, user="alice", source="test")
    assert r.status == WriteStatus.BAD_NOT_WRITABLE
    r = await w.write(site.tag_id("d", "speed"), "fast", user="alice", source="test")
    assert r.status == WriteStatus.BAD_TYPE_MISMATCH
    r = await w.write(site.tag_id("d", "speed"), 1, user="bob", source="test", role="viewer")
    assert r.status == WriteStatus.BAD_USER_ACCESS_DENIED
    # the poll sees the new value; the audit log has every attempt
    assert await wait_until(lambda: site.value("d", "setpoint")[0] == 123.25, 3)
    assert await asyncio.to_thread(site.app.writes.audit.flush, 5)  # the audit log is written by its own thread (issue 15)
    audit = (site.loaded.data_dir / "audit.log").read_text().splitlines()
    assert len(audit) == 8
    assert '"user":"alice"' in audit[0] and '"tag":"d.setpoint"' in audit[0] and '"result":"GOOD"' in audit[0]
    assert '"result":"BAD_USER_ACCESS_DENIED"' in audit[-1]


async def test_write_to_a_dead_device_times_out(make_site):
    port = "{port:dev}"
    site = await make_site(f"""
site: {{name: t}}
buses: [{{name: b, type: modbus_tcp, port: {port}, timeout_ms: 150}}]
devices:
  - {{name: d, bus: b, interval_ms: 500, points: [{{name: sp, address: 0, writable: true}}]}}
""")
    assert await wait_until(lambda: site.diag("d").polls_ok >= 1, 5)
    site.sim.set_fault("d", "silence")
    r = await site.app.writes.write(site.tag_id("d", "sp"), 7)
    assert r.status == WriteStatus.BAD_TIMEOUT
    assert not math.isnan(site.sim.get_value("d", "sp"))
