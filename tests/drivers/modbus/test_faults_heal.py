"""Faults heal by themselves (issue 17): learned holes are re-probed, a slow slave's late answers
never reach its neighbours on a shared RTU line, an offline device is back within seconds.

Each test drives the real appliance against the simulator (pymodbus servers on loopback, socat
serial lines) and judges by the simulator's faults and the appliance's own state."""
from __future__ import annotations

import time

import pytest
from harness import wait_until

from edge.core.model import DeviceState, Quality

HOLE_SITE = """
site: {{name: t}}
buses: [{{name: b, type: modbus_tcp, port: {port}, timeout_ms: 100}}]
devices:
  - name: d
    bus: b
    interval_ms: 100
    hole_reprobe_s: {first}
    hole_reprobe_max_s: {most}
    holes: {holes}
    points:
      - {{name: speed, address: 0, type: uint16, sim: {{kind: constant, value: 11}}}}
      - {{name: line_speed, address: 4, type: uint16, sim: {{kind: constant, value: 12}}}}
      - {{name: fan_on, address: 5, type: uint16, sim: {{kind: constant, value: 1}}}}
      - {{name: temp, address: 6, type: float32, sim: {{kind: constant, value: 21.5}}}}
"""
REFUSED = ("line_speed", "fan_on", "temp")


@pytest.mark.slow
async def test_exception_02_spell_heals_within_the_reprobe_time(make_site):
    """A PLC in STOP answers exception 2 for 20 s; afterwards every refused tag is Good again
    within the configured longest re-probe period (before: never polled again)."""
    site = await make_site(HOLE_SITE.format(port="{port:dev}", first=2, most=4, holes="reprobe"))
    assert await wait_until(lambda: all(site.value("d", n)[1] == Quality.GOOD for n in (*REFUSED, "speed")), 5)
    site.sim.set_fault("d", "illegal_address", start=4, count=4)
    assert await wait_until(lambda: all(site.value("d", n)[1] == Quality.BAD_CONFIG_ERROR for n in REFUSED), 5)
    diag = site.diag("d")
    assert diag.holes >= 1 and diag.unreadable_points == len(REFUSED)
    assert any("unreadable" in h for h in diag.holes_detail)
    await wait_until(lambda: False, 20.0)  # the spell: re-probes meet exception 2 and back off
    assert diag.exceptions.get(2, 0) >= 3  # re-probed during the spell, not given up
    assert site.value("d", "speed")[1] == Quality.GOOD  # the rest of the device kept polling
    site.sim.clear_fault("d")
    t0 = time.monotonic()
    assert await wait_until(lambda: all(site.value("d", n)[1] == Quality.GOOD for n in REFUSED), 4.0 + 1.0)
    healed_after = time.monotonic() - t0
    assert healed_after <= 4.0 + 0.5, f"healed after {healed_after:.1f} s, re-probe period is 4 s"
    assert [site.value("d", n)[0] for n in REFUSED] == [12, 1, 21.5]
    assert diag.holes == 0 and diag.unreadable_points == 0 and diag.holes_healed >= 1
    assert len(site.app.devices["d"].runtime.plan.blocks("default")) == 1  # merged again into one read


async def test_permanent_holes_are_not_reprobed(make_site):
    site = await make_site(HOLE_SITE.format(port="{port:dev}", first=0.5, most=0.5, holes="permanent"),
                           start_app=False)
    site.sim.set_fault("d", "illegal_address", start=4, count=4)
    await site.app.start()
    assert await wait_until(lambda: site.value("d", "temp")[1] == Quality.BAD_CONFIG_ERROR, 5)
    site.sim.clear_fault("d")
    refusals = site.diag("d").exceptions.get(2, 0)
    await wait_until(lambda: False, 2.0)
    assert site.diag("d").exceptions.get(2, 0) == refusals
    assert site.value("d", "temp")[1] == Quality.BAD_CONFIG_ERROR
    assert site.value("d", "speed")[1] == Quality.GOOD


SHARED_LINE = """
site: {{name: t}}
buses:
  - {{name: rs485, type: modbus_rtu, port: '{{tmp}}/ttyS', baud: 38400, timeout_ms: 200, retries: 1}}
devices:
{devices}
"""


def room_sensors(n: int, interval_ms: int) -> str:
    return "\n".join(
        f"  - {{name: room{i}, bus: rs485, unit_id: {i + 1}, interval_ms: {interval_ms}, backoff_max_s: 2, "
        f"points: [{{name: t, address: 0, type: int16, scale: 0.1}}, {{name: h, address: 1, type: uint16}}]}}"
        for i in range(n))


async def test_slow_slave_does_not_make_its_neighbours_offline(make_site):
    """A slave answering in 250 ms with a 200 ms timeout on a shared RS-485 line: its late answers
    are drained and discarded, never read as a neighbour's answer (before: FrameError 'unexpected
    answer: unit 3 ... expected unit 2' and neighbours OFFLINE)."""
    interval_s = 0.3
    site = await make_site(SHARED_LINE.format(devices=room_sensors(4, int(interval_s * 1000))))
    names = [f"room{i}" for i in range(4)]
    assert await wait_until(lambda: all(site.diag(n).state == DeviceState.ONLINE for n in names), 10)
    neighbours = names[:3]
    offline_seen: set[str] = set()

    async def watch(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            offline_seen.update(n for n in neighbours if site.diag(n).state != DeviceState.ONLINE)
            await wait_until(lambda: False, 0.02)

    site.sim.set_fault("room3", "slow", delay_ms=250)
    errors_before = {n: site.diag(n).crc_errors for n in neighbours}
    await watch(4.0)  # the slow slave fails its polls and goes offline meanwhile
    assert site.diag("room3").state == DeviceState.OFFLINE
    before = {n: site.diag(n).polls_ok for n in neighbours}
    window_s = 8.0
    await watch(window_s)
    transport = site.app.devices["room0"].runtime.line_object.transport
    assert not offline_seen, f"neighbours went offline: {offline_seen}"
    for n in neighbours:
        # no late answer decoded for or counted against a neighbour (before: FrameError 'unexpected answer')
        assert site.diag(n).crc_errors == errors_before[n], (n, site.diag(n).last_error)
        assert "unexpected answer" not in site.diag(n).last_error
        done = site.diag(n).polls_ok - before[n]
        assert done >= 0.9 * window_s / interval_s, f"{n} polled {done} times in {window_s} s"
        assert site.value(n, "h")[1] == Quality.GOOD
    assert transport.late_frames >= 3  # the slow slave's answers came, late, and were dropped
    site.sim.clear_fault("room3")
    assert await wait_until(lambda: site.diag("room3").state == DeviceState.ONLINE, 10)


@pytest.mark.slow
async def test_offline_device_is_back_within_10_s_of_answering(make_site):
    """Default probing of an offline device: back within 10 s of answering again (before: up to
    30 s of back-off)."""
    port = "{port:dev}"
    site = await make_site(f"""
site: {{name: t}}
buses: [{{name: b, type: modbus_tcp, port: {port}, timeout_ms: 100}}]
devices:
  - {{name: d, bus: b, interval_ms: 200, points: [{{name: v, address: 0}}]}}
""")
    assert await wait_until(lambda: site.diag("d").polls_ok >= 1, 5)
    site.sim.set_fault("d", "silence")
    assert await wait_until(lambda: site.diag("d").state == DeviceState.OFFLINE, 10)
    await wait_until(lambda: False, 16.0)  # long enough for the back-off to reach its cap
    poller = site.app.devices["d"].runtime.poller
    assert poller._backoff_s <= 8.0
    site.sim.clear_fault("d")
    t0 = time.monotonic()
    assert await wait_until(lambda: site.diag("d").state == DeviceState.ONLINE, 12)
    assert time.monotonic() - t0 <= 10.0
