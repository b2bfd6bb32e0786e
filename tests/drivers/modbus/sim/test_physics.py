"""The demo plant behaves like a plant: its physics checked over simulated time (issue 20).

Every value comes from the simulator's own functions (``SimPlant(...).physics.sample(t)``,
what the vectorised tick encodes into the registers), for the demo site's devices, over
10-20 simulated minutes (computed in well under a second per run, nothing served). The
alarms are the site's own, evaluated by the appliance's AlarmEngine on the simulated
samples with a simulated clock; the cabinet-fan rule is the site's own expressions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from drivers.modbus.sim.physics import DT_S, FAULT, RUNNING, STARTING, STOPPED, STOPPING, PlantPhysics, gauss
from drivers.modbus.sim.plant import SimPlant
from drivers.modbus.simulation import plant_specs
from edge.config.loader import LoadedConfig, load_config
from edge.core.model import SampleBatch
from edge.intelligence import alarms as alarms_module
from edge.intelligence.alarms import AlarmEngine
from edge.intelligence.expressions import compile_expression
from edge.intelligence.rules import tag_types

DEMO = Path(__file__).resolve().parents[4] / "provisioning" / "sites" / "demo" / "edge.yaml"
NOMINAL_V = 230.0


@pytest.fixture(scope="module")
def demo() -> LoadedConfig:
    return load_config(DEMO)


class SimClock:
    """Stands in for the alarm engine's ``time`` module: simulated seconds, simulated wall clock."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def time_ns(self) -> int:
        return 1_767_225_600_000_000_000 + int(self.t * 1e9)


@dataclass
class Run:
    """Samples of every model output over a simulated window, plus the alarm events seen."""

    t: np.ndarray
    series: dict[str, np.ndarray]
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (t, alarm, transition)
    rule_actions: list[tuple[float, str]] = field(default_factory=list)  # (t, fired/released)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.series[key]


def simulate(demo: LoadedConfig, seed: int, seconds: float, step_s: float = 0.5, rule: bool = True,
             monkeypatch: pytest.MonkeyPatch | None = None, writes: dict[float, tuple[str, str, float]] | None = None
             ) -> Run:
    """Sample the demo plant every ``step_s`` simulated seconds; alarms and the fan rule act on the samples."""
    plant = SimPlant(plant_specs(demo), seed=seed)
    physics = plant.physics
    keys = [(d, o) for d, m in physics.models.items() for o in m.outputs]
    tags = demo.plant.tag_by_key()
    clock = SimClock()
    engine = None
    if monkeypatch is not None:
        monkeypatch.setattr(alarms_module, "time", clock)
        engine = AlarmEngine(demo.plant, demo.config.alarms or [])
    events: list[tuple[float, str, str]] = []
    if engine is not None:
        engine.listeners.append(lambda e: events.append((clock.t, e.alarm, e.transition)))
    watched = [(tags[f"{d}.{o}"].id, physics.slot(d, o)) for d, o in keys if f"{d}.{o}" in tags]
    cfg = next(r for r in demo.config.rules or [] if r.name == "cabinet_fan")
    assert cfg.release_when is not None
    types = tag_types(demo.plant.tags)
    when, release = compile_expression(cfg.when, types), compile_expression(cfg.release_when, types)
    tank = physics.slot("plc_line1", "tank_temperature")
    fired, since, actions = False, None, []
    times = np.arange(0.0, seconds, step_s)
    rows = np.empty((len(times), len(keys)))
    pending = dict(writes or {})
    for j, t in enumerate(times):
        for at in [a for a in pending if a <= t]:
            device, point, value = pending.pop(at)
            plant.set_value(device, point, value)  # what a client's write does to the registers
        values = physics.sample(float(t))
        rows[j] = [values[physics.slot(d, o)] for d, o in keys]
        clock.t = float(t)
        if engine is not None:
            ids = np.array([i for i, _ in watched], dtype=np.int32)
            batch = SampleBatch("plant", clock.time_ns(), ids, values[[s for _, s in watched]],
                                np.zeros(len(ids), dtype=np.uint8))
            engine.consume(batch)
            engine.tick(clock.t)
        if rule:  # the site's cabinet_fan rule: when/release_when with for_ms, acting on the PLC's coil
            temp = float(values[tank])
            if not fired and when.evaluate([temp]):
                since = t if since is None else since
                if (t - since) * 1000 >= cfg.for_ms:
                    fired, since = True, None
                    plant.set_value("plc_line1", "fan_on", 1)
                    actions.append((float(t), "fired"))
            else:
                since = None
                if fired and release.evaluate([temp]):
                    fired = False
                    plant.set_value("plc_line1", "fan_on", 0)
                    actions.append((float(t), "released"))
    series = {f"{d}.{o}": rows[:, i] for i, (d, o) in enumerate(keys)}
    return Run(times, series, events, actions)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_meter_three_phase_values_are_consistent(demo, seed) -> None:
    run = simulate(demo, seed, 1200, step_s=1.0, rule=False)
    m = {k.split(".", 1)[1]: v for k, v in run.series.items() if k.startswith("meter_main.")}
    for k in (1, 2, 3):
        v, i, p, pf = m[f"voltage_l{k}"], m[f"current_l{k}"], m[f"power_l{k}"], m[f"power_factor_l{k}"]
        assert ((v > NOMINAL_V * 0.95) & (v < NOMINAL_V * 1.05)).all(), (k, v.min(), v.max())  # 230 V +/- 5 %
        s = v * i
        assert (s >= np.abs(p) * (1 - 1e-12)).all()  # S >= P per phase
        assert (np.abs(pf) <= 1.0).all() and (pf > 0.8).all()
        np.testing.assert_allclose(p, v * i * pf, rtol=1e-12)  # P = V I PF
    p, q, s = m["power_total"], m["reactive_power_total"], m["apparent_power_total"]
    np.testing.assert_allclose(p, m["power_l1"] + m["power_l2"] + m["power_l3"], rtol=1e-12)
    np.testing.assert_allclose(p ** 2 + q ** 2, s ** 2, rtol=1e-9)  # P^2 + Q^2 = S^2
    assert (s >= p).all() and (np.abs(m["power_factor_total"]) <= 1).all()
    np.testing.assert_allclose(m["power_factor_total"], p / s, rtol=1e-12)
    np.testing.assert_allclose(m["current_sum"], m["current_l1"] + m["current_l2"] + m["current_l3"], rtol=1e-12)
    for a, b in ((1, 2), (2, 3), (3, 1)):  # line-to-line = sqrt(3) x line-to-neutral, near balance
        ratio = m[f"voltage_l{a}_l{b}"] / ((m[f"voltage_l{a}"] + m[f"voltage_l{b}"]) / 2)
        assert (np.abs(ratio - math.sqrt(3)) < 0.01).all()
    assert ((m["frequency"] > 49.9) & (m["frequency"] < 50.1)).all()
    # energy counters integrate the power, never go back
    for name in ("energy_import", "energy_total", "import_reactive_energy", "total_reactive_energy"):
        assert (np.diff(m[name]) >= 0).all(), name
    imported = m["energy_import"][-1] - m["energy_import"][0]
    assert imported == pytest.approx(p[:-1].sum() / 3.6e6, rel=0.01)  # kWh = sum(P dt) / 3.6e6
    assert m["energy_total"] == pytest.approx(m["energy_import"] + m["energy_export"])
    assert (np.diff(m["max_power_demand"]) >= 0).all() and (m["total_power_demand"] <= m["max_power_demand"]).all()
    # the currents follow the load: higher while the line runs
    running = run["plc_line1.state"] == RUNNING
    stopped = run["plc_line1.state"] == STOPPED
    assert running.any() and stopped.any()
    assert m["current_l1"][running].mean() > 1.5 * m["current_l1"][stopped].mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_room_alarm_raised_and_cleared_within_ten_simulated_minutes(demo, seed, monkeypatch) -> None:
    run = simulate(demo, seed, 600, step_s=2.0, monkeypatch=monkeypatch)  # the XY-MD02 is polled every 2 s
    room = [(t, tr) for t, name, tr in run.events if name == "th_room1.temperature.limit"]
    assert [tr for _, tr in room][:2] == ["activated", "cleared"], run.events
    raised, cleared = room[0][0], room[1][0]
    assert 0 < raised < cleared < 600
    # why: the line ran (the hall warms with it) and it stopped before the alarm cleared
    t = run.t
    assert (run["plc_line1.state"][t < raised] == RUNNING).any()
    assert (run["plc_line1.state"][(t > raised) & (t < cleared)] != RUNNING).any()
    temp = run["th_room1.temperature"]
    assert temp[t == raised - 2][0] > 28  # crossed h = 28, then held above h - deadband for the 2 s on-delay
    assert (temp[(t >= raised - 2) & (t <= raised)] > 27.5).all()
    assert temp[t == cleared][0] < 27.5  # back below h - deadband
    for room_key in ("th_room1", "th_room2"):
        assert ((run[f"{room_key}.temperature"] > 15) & (run[f"{room_key}.temperature"] < 35)).all()
        assert ((run[f"{room_key}.humidity"] > 20) & (run[f"{room_key}.humidity"] < 80)).all()
    # warmer air holds the same water with a lower relative humidity (room 1 warms, its RH falls)
    assert np.corrcoef(run["th_room1.temperature"], run["th_room1.humidity"])[0, 1] < -0.5


def test_office_humidity_crosses_its_limit_now_and_then(demo, monkeypatch) -> None:
    run = simulate(demo, 0, 3600, step_s=2.0, rule=False, monkeypatch=monkeypatch)
    humid = [tr for _, name, tr in run.events if name == "th_room2.humidity.limit"]
    assert 1 <= humid.count("activated") <= 4 and humid.count("cleared") >= humid.count("activated") - 1, humid
    assert (run["th_room2.humidity"] < 60).mean() > 0.7  # now and then, not most of the time


@pytest.mark.parametrize("seed", [0, 1])
def test_line_starts_runs_and_stops_and_counts_what_it_makes(demo, seed) -> None:
    run = simulate(demo, seed, 1200, step_s=0.5, rule=False)
    state = run["plc_line1.state"]
    changes = [int(s) for s, prev in zip(state[1:], state[:-1], strict=True) if s != prev]
    seq = ",".join(map(str, changes))
    assert f"{STARTING},{RUNNING},{STOPPING},{STOPPED}" in seq or f"{RUNNING},{FAULT}" in seq, seq
    speed, setpoint = run["plc_line1.line_speed"], 120.0
    steady = (state == RUNNING) & (np.roll(state, 40) == RUNNING)  # 20 s into the run
    assert np.abs(speed[steady] - setpoint).max() < 1.5
    assert (speed[state == STOPPED] == 0).all()
    ramp = np.diff(speed[state == STARTING])
    assert ramp.max() <= setpoint / 15 * 0.5 + 1.0  # 0 -> 120 m/min over the 15 s start
    for name in ("parts_good", "parts_rejected", "shift_counter", "runtime_hours", "heartbeat"):
        assert (np.diff(run[f"plc_line1.{name}"]) >= 0).all(), name
    made = np.diff(run["plc_line1.parts_good"])
    assert made[speed[1:] == 0].sum() <= 1 and made.sum() > 500  # 2 parts/s at 120 m/min, none when stopped
    assert ((run["plc_line1.pressure"] > 2.0) & (run["plc_line1.pressure"] < 12.0)).all()  # no pressure alarm
    assert run["plc_line1.flow"][steady].mean() == pytest.approx(180 * 35 / 50, rel=0.02)  # feed pump at 35 Hz


def test_drives_follow_their_reference_with_ramps(demo) -> None:
    # a client writes 45 Hz into the pump's reference during the first run, then shuts it down (CMD 6)
    writes = {150.0: ("vfd_pump1", "speed_reference", 45.0), 200.0: ("vfd_pump1", "command_word", 6)}
    run = simulate(demo, 0, 240, step_s=0.1, rule=False, writes=writes)
    f, t = run["vfd_pump1.output_frequency"], run.t
    assert np.abs(np.diff(f)).max() <= 50 / 5 * 0.1 + 1e-9  # ACC/DEC 5 s for 0-50 Hz
    assert f[(t > 100) & (t < 150)] == pytest.approx(35.0)
    up = t[(t >= 150) & (f >= 45.0)][0]
    assert up - 150 == pytest.approx((45 - 35) / 10, abs=0.15)  # the ramp, not a jump
    assert f[(t > 155) & (t < 200)] == pytest.approx(45.0)
    assert f[t > 207] == pytest.approx(0.0)  # shutdown: ramps down and stays down though the line runs
    assert (run["plc_line1.state"][t > 207] == RUNNING).all()
    current, speed = run["vfd_pump1.motor_current"], run["vfd_pump1.motor_speed"]
    assert current[(t > 160) & (t < 200)].mean() > 1.2 * current[(t > 100) & (t < 150)].mean()
    assert speed[(t > 100) & (t < 150)].mean() == pytest.approx(35 * 30, rel=0.03)  # 4 poles, small slip
    assert (current[f == 0] == 0).all() and (speed[f == 0] == 0).all()
    words = {int(w) for w in run["vfd_pump1.status_word"]}
    assert words == {0x0233, 0x0237, 0x0231}  # switched on, operation enabled, ready (after CMD 6)


def test_cabinet_fan_rule_fires_for_a_reason_and_the_fan_drive_follows(demo) -> None:
    run = simulate(demo, 0, 1200, step_s=0.5, rule=True)
    actions = [a for _, a in run.rule_actions]
    assert actions[:2] == ["fired", "released"], run.rule_actions
    fired, released = run.rule_actions[0][0], run.rule_actions[1][0]
    t, tank = run.t, run["plc_line1.tank_temperature"]
    assert tank[t == fired][0] > 70 and tank[t == released][0] < 60
    assert (run["plc_line1.state"][t < fired] == RUNNING).any()  # the running line heated the tank
    fan = run["vfd_fan1.output_frequency"]
    assert fan[(t > fired + 6) & (t < released)] == pytest.approx(35.0)  # ramped up on the PLC's coil
    again = run.rule_actions[2][0] if len(run.rule_actions) > 2 else t[-1]
    assert fan[t < fired].max() == 0 and fan[(t > released + 6) & (t < again)].max() == 0


def test_values_are_a_pure_function_of_time_and_seed(demo) -> None:
    def physics(seed: int) -> PlantPhysics:
        return SimPlant(plant_specs(demo), seed=seed).physics

    a, b = physics(3), physics(3)
    dense = {round(t, 1): a.sample(t).copy() for t in np.arange(0, 400, 0.1)}
    for t in (399.9, 12.3, 250.0, 0.0, 333.3):  # another order, backwards too: the same values
        np.testing.assert_array_equal(b.sample(t), dense[round(t, 1)])
    np.testing.assert_array_equal(a.sample(123.45), dense[123.4])  # a rewind, and between two steps
    assert not np.array_equal(physics(4).sample(300.0), dense[300.0])
    assert gauss(7, 11) == gauss(7, 11) and gauss(7, 11) != gauss(7, 12)
    assert DT_S == 0.1
