"""A small plant with physics for the simulator: device models whose values are consistent.

Independent per-point signals (:mod:`drivers.modbus.sim.signals`) cannot make an energy meter
whose active power is voltage x current x power factor, or a room that warms while the line
runs. Here a few **models** describe whole devices, coupled through one :class:`PlantPhysics`:

* a production **schedule** (:class:`LineSchedule`): the line is stopped, starts, runs, stops,
  now and then with maintenance (guard and cabinet door open) or an emergency stop;
* ``process_line`` (a line PLC): conveyor speed ramping to its setpoint, parts counted from the
  speed, a buffer tank that drains while the line runs and heats from the process (cooled
  faster while the cabinet fan output is on), header pressure and feed flow from the pump drive,
  ovens tracking their setpoints, alarm bits with causes (e-stop, guard open, temperatures);
* ``drive`` (a variable-speed drive): runs while the line runs (or while an input such as a
  PLC coil is on), ramps its output frequency to the written speed reference with the
  acceleration and deceleration ramps, current / speed / power from the load's affinity laws,
  a thermal state that integrates the current, CiA 402 status word;
* ``room`` (a temperature and humidity sensor): a day curve, heat from the running line with a
  thermal lag, humidity from a vapour pressure that follows the temperature (Magnus), now and
  then a humid spell;
* ``power_meter`` (a three-phase meter): the plant's loads (a day-curve base load plus every
  other model's electrical load) on three phases of a 230 V grid: per phase P = V I PF,
  Q = sqrt(S^2 - P^2); totals with P^2 + Q^2 = S^2, energy counters integrating the power,
  a thermal demand and its maximum, line-to-line voltages and the neutral current from phasors.

**Pure function of time and seed.** The state is integrated on a fixed grid of ``DT_S``
seconds from ``t = 0``; the value at time ``t`` is the state at step ``floor(t / DT_S)`` plus
noise hashed from (seed, output, step). Nothing depends on when or how often values are asked
for: asking again for an earlier time recomputes from a checkpoint. Inputs (setpoints that a
client writes, a coil another device reads) are the only other influence; each change is
logged with the step it took effect, so a recomputation replays it.

Usage (the simulator does this from the devices' ``sim: {kind: model, ...}`` hints)::

    physics = PlantPhysics(seed=0)
    physics.add_model("meter", "power_meter")
    physics.add_model("plc", "process_line")
    values = physics.sample(t)          # every output of every model at t seconds
    values[physics.slot("meter", "power_total")]
"""
from __future__ import annotations

import bisect
import cmath
import math
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

DT_S = 0.1  # integration step of every model, seconds
CHECKPOINT_STEPS = 100  # state kept every 10 s of simulated time ...
CHECKPOINTS_KEPT = 360  # ... for the last hour (older times are recomputed from t = 0)
TWO_PI = 2.0 * math.pi
_M64 = (1 << 64) - 1

# Line phases (the enumeration of a line PLC's state word).
STOPPED, STARTING, RUNNING, STOPPING, FAULT, MAINTENANCE = range(6)
ACTIVE = (STARTING, RUNNING)


# ----------------------------------------------------------------------------- noise and shapes


def _splitmix(x: int) -> int:
    """SplitMix64: a well-mixed 64-bit hash (the counter-based generator of the noise)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def key_of(seed: int, *parts: object) -> int:
    """A 64-bit key for a noise stream: the seed and names (device, output) hashed together."""
    text = "/".join(str(p) for p in parts).encode()
    return _splitmix((seed & _M64) ^ (zlib.crc32(text) << 20) ^ len(text))


# 65,536 standard normal numbers drawn once (fixed seed): noise is one of them, picked by a hash
_NORMALS = np.random.default_rng(20_201_120).standard_normal(1 << 16)
_NORMALS_LIST = _NORMALS.tolist()
_STEP_MIX = 0xD1B54A32D192ED03


def gauss(key: int, step: int) -> float:
    """Standard normal noise, a pure function of (key, step): a table entry picked by a hash."""
    return _NORMALS_LIST[_splitmix(key ^ ((step * _STEP_MIX) & _M64)) & 0xFFFF]


def gauss_array(keys: np.ndarray, step: int) -> np.ndarray:
    """:func:`gauss` for many keys at once (numpy uint64 arithmetic wraps like the scalar one)."""
    x = keys ^ np.uint64((step * _STEP_MIX) & _M64)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return _NORMALS[(x & np.uint64(0xFFFF)).astype(np.intp)]


class Wander:
    """Slow deterministic drift in [-1, 1]: three sines with seeded periods and phases."""

    def __init__(self, rng: random.Random, shortest_s: float = 60.0) -> None:
        self.terms = [(0.5, rng.uniform(1.0, 3.0) * shortest_s, rng.uniform(0, TWO_PI)),
                      (0.3, rng.uniform(5.0, 15.0) * shortest_s, rng.uniform(0, TWO_PI)),
                      (0.2, rng.uniform(25.0, 60.0) * shortest_s, rng.uniform(0, TWO_PI))]

    def __call__(self, t: float) -> float:
        return sum(a * math.sin(TWO_PI * t / p + ph) for a, p, ph in self.terms)


def smooth_window(t: float, start: float, end: float, edge_s: float) -> float:
    """0 outside [start, end], 1 inside, raised-cosine edges of ``edge_s`` (a spell that comes and goes)."""
    if t <= start or t >= end:
        return 0.0
    rise = min(1.0, (t - start) / edge_s)
    fall = min(1.0, (end - t) / edge_s)
    x = min(rise, fall)
    return 0.5 - 0.5 * math.cos(math.pi * x)


def follow(value: float, target: float, rate_up: float, rate_down: float) -> float:
    """One step of a ramp: move towards ``target`` by at most the rate times the step."""
    if target > value:
        return min(target, value + rate_up * DT_S)
    return max(target, value - rate_down * DT_S)


def lag(value: float, target: float, tau_s: float) -> float:
    """One step of a first-order lag (exact for a constant target over the step)."""
    return target + (value - target) * math.exp(-DT_S / tau_s)


# ----------------------------------------------------------------------------- the schedule


@dataclass(frozen=True, slots=True)
class Segment:
    """One phase of the line from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    phase: int


class LineSchedule:
    """When the production line starts, runs and stops: seeded cycles, generated as far as asked.

    A cycle is: stopped (the first one only 20 s, so a demo shows a start at once), sometimes
    with a maintenance spell in the middle (guard and cabinet door open); starting (15 s);
    running (4-7 min), now and then cut short by an emergency stop (45 s of fault, the
    e-stop held for 30 s); stopping (15 s).
    """

    START_S = 15.0
    STOP_S = 15.0
    FAULT_S = 45.0
    ESTOP_HELD_S = 30.0

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.segments: list[Segment] = []
        self.starts: list[float] = []
        self._cycles = 0

    def _add(self, start: float, length: float, phase: int) -> float:
        self.segments.append(Segment(start, start + length, phase))
        self.starts.append(start)
        return start + length

    def _extend(self) -> None:
        rng = random.Random(f"{self.seed}/line/{self._cycles}")
        first = self._cycles == 0
        self._cycles += 1
        t = self.segments[-1].end if self.segments else 0.0
        stop_s = 20.0 if first else rng.uniform(150.0, 260.0)
        if not first and rng.random() < 0.3:  # maintenance during this stop
            t = self._add(t, stop_s / 3, STOPPED)
            t = self._add(t, 45.0, MAINTENANCE)
            t = self._add(t, stop_s * 2 / 3, STOPPED)
        else:
            t = self._add(t, stop_s, STOPPED)
        t = self._add(t, self.START_S, STARTING)
        run_s = rng.uniform(240.0, 330.0) if first else rng.uniform(240.0, 420.0)
        if not first and rng.random() < 0.12:  # an emergency stop cuts the run short
            t = self._add(t, rng.uniform(60.0, run_s - 30.0), RUNNING)
            self._add(t, self.FAULT_S, FAULT)
            return
        t = self._add(t, run_s, RUNNING)
        self._add(t, self.STOP_S, STOPPING)

    def segment(self, t: float) -> Segment:
        """The phase the line is in at ``t`` seconds (t < 0 counts as the first phase)."""
        while not self.segments or self.segments[-1].end <= t:
            self._extend()
        i = max(0, bisect.bisect_right(self.starts, t) - 1)
        return self.segments[i]


# ----------------------------------------------------------------------------- the models


class Env:
    """What the models share: time of day, the grid, the schedule and each other."""

    def __init__(self, seed: int, day_start_h: float) -> None:
        self.seed = seed
        self.day_start_h = day_start_h
        self.schedule = LineSchedule(seed)
        rng = random.Random(f"{seed}/grid")
        self._grid = Wander(rng, shortest_s=90.0)
        self._freq = Wander(rng, shortest_s=40.0)
        self._grid_t, self._grid_v = math.nan, 230.0
        self.models: list[Model] = []

    def hour(self, t: float) -> float:
        """Time of day in hours at ``t`` (the plant's clock: ``day_start_h`` at t = 0)."""
        return (self.day_start_h + t / 3600.0) % 24.0

    def day(self, t: float) -> float:
        """The day curve in [-1, 1]: +1 at 15:00 (warmest, busiest), -1 at 03:00."""
        return math.cos(TWO_PI * (self.hour(t) - 15.0) / 24.0)

    def grid_v(self, t: float) -> float:
        """Phase voltage of the supply before the plant's own voltage drop (230 V +/- ~1.5 %)."""
        if t != self._grid_t:
            self._grid_t, self._grid_v = t, 230.0 * (1.0 - 0.008 * self.day(t) + 0.006 * self._grid(t))
        return self._grid_v

    def grid_hz(self, t: float) -> float:
        return 50.0 + 0.025 * self._freq(t)

    def pump_fraction(self) -> float:
        """The feed pump's speed as a fraction of 50 Hz (0 with no pump drive in the plant)."""
        for m in self.models:
            if isinstance(m, Drive) and m.role == "pump":
                return max(0.0, m.s["f"] / 50.0)
        return 0.0

    def loads(self, exclude: Model) -> tuple[float, float]:
        """Sum of the other models' electrical loads, (W, var), balanced over three phases."""
        p = q = 0.0
        for m in self.models:
            if m is not exclude:
                mp, mq = m.load()
                p += mp
                q += mq
        return p, q


class Model:
    """One device model: named outputs, inputs with defaults, parameters, a state stepped by DT_S."""

    kind: ClassVar[str] = ""
    outputs: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[dict[str, float]] = {}
    params: ClassVar[dict[str, float | str]] = {}

    def __init__(self, name: str, env: Env, params: dict[str, Any]) -> None:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"model {self.kind!r} of {name!r}: unknown parameter(s) {unknown}; "
                             f"allowed: {sorted(self.params)}")
        self.name = name
        self.env = env
        self.p: dict[str, Any] = {**self.params, **params}
        for k, default in self.params.items():
            if isinstance(default, float) and not isinstance(self.p[k], int | float):
                raise ValueError(f"model {self.kind!r} of {name!r}: parameter {k!r} must be a number, "
                                 f"got {self.p[k]!r}")
        self.key = key_of(env.seed, name)
        self.i: dict[str, float] = dict(self.inputs)  # current input values
        self.s: dict[str, float] = {}  # the integrated state
        self.init_state()

    def rng(self, purpose: str) -> random.Random:
        """A fresh generator for one purpose: the same numbers every time (a rewind re-initialises)."""
        return random.Random(f"{self.env.seed}/{self.name}/{purpose}")

    def init_state(self) -> None:
        """Fill ``self.s`` with the state at t = 0 (called again when the plant rewinds to t = 0)."""

    def step(self, t: float) -> None:
        """Advance the state from ``t`` to ``t + DT_S``."""

    def values(self, t: float, step: int) -> dict[str, float]:
        """Every output at ``t`` (state at ``step`` plus its noise)."""
        raise NotImplementedError

    def load(self) -> tuple[float, float]:
        """Electrical load of this device now: active power W, reactive power var (three-phase)."""
        return 0.0, 0.0

    def noise(self, output: str, step: int, sigma: float) -> float:
        return sigma * gauss(self.key ^ zlib.crc32(output.encode()), step)


class ProcessLine(Model):
    """The line PLC: conveyor, parts counters, buffer tank, header pressure, ovens, alarm bits."""

    kind = "process_line"
    outputs = ("state", "line_speed", "parts_good", "parts_rejected", "shift_counter", "cycle_time",
               "runtime_hours", "heartbeat", "tank_level", "tank_temperature", "level_high", "pressure", "flow",
               "compressed_air_flow", "zone1_temperature", "zone2_temperature", "zone3_temperature",
               "batch_energy", "alarm_word", "alarm_estop", "alarm_overtemp", "alarm_low_level",
               "alarm_guard_open", "door_closed")
    inputs = {"line_speed_setpoint": 120.0, "zone1_setpoint": 180.0, "zone2_setpoint": 190.0,
              "zone3_setpoint": 200.0, "fan_on": 0.0}
    params = {"pitch_m": 1.0, "conveyor_kw": 7.5, "oven_kw": 6.0, "tank_hot_c": 78.0, "tank_cold_c": 50.0,
              "fan_cooling_c": 14.0}

    def init_state(self) -> None:
        r = self.rng("init")
        self.s = {"speed": 0.0, "good": 0.0, "rejected": 0.0, "run_s": 0.0, "level": 62.0, "tank_c": 55.0,
                  "pressure": 2.4, "z1": 180.0, "z2": 190.0, "z3": 200.0, "batch_j": 0.0, "cycle": 0.5,
                  "good0": float(r.randint(1_000_000, 1_500_000)), "run0": round(r.uniform(3000, 6000), 2),
                  "shift0": float(r.randint(20_000_000, 30_000_000))}
        self.s["rej0"] = float(int(self.s["good0"] * 0.018))

    def step(self, t: float) -> None:
        s, i, p = self.s, self.i, self.p
        seg = self.env.schedule.segment(t)
        sp = max(0.0, i["line_speed_setpoint"])
        target = sp if seg.phase in ACTIVE else 0.0
        ramp = 120.0 / LineSchedule.START_S  # m/min per s: 0 -> 120 in the starting phase
        down = ramp * (4.0 if seg.phase == FAULT else 1.0)  # an emergency stop brakes hard
        s["speed"] = follow(s["speed"], target, ramp, down)
        speed = s["speed"]
        parts_per_s = speed / 60.0 / p["pitch_m"]
        scrap = 0.08 if seg.phase == RUNNING and t - seg.start < 30.0 else 0.015  # start-up scrap
        s["good"] += parts_per_s * (1.0 - scrap) * DT_S
        s["rejected"] += parts_per_s * scrap * DT_S
        if speed > 5.0:
            s["cycle"] = p["pitch_m"] / (speed / 60.0)
        if seg.phase == RUNNING:
            s["run_s"] += DT_S
        # buffer tank: drains while the line consumes, refills while it stands
        active = seg.phase in ACTIVE or seg.phase == STOPPING
        s["level"] = lag(s["level"], 30.0 if active else 82.0, 420.0 if active else 300.0)
        fan = i["fan_on"] != 0.0
        hot = p["tank_hot_c"] if active else p["tank_cold_c"]
        s["tank_c"] = lag(s["tank_c"], hot - (p["fan_cooling_c"] if fan else 0.0), 90.0 if fan else 140.0)
        pump = self.env.pump_fraction()
        s["pressure"] = lag(s["pressure"], 1.2 if seg.phase == FAULT else 2.4 + 5.2 * pump * pump, 3.0)
        for z in ("z1", "z2", "z3"):
            zsp = i[f"zone{z[1]}_setpoint"]
            s[z] = lag(s[z], zsp - 4.0 * speed / 120.0, 80.0)  # cold product pulls the zone down
        if seg.phase == STARTING and t - seg.start < DT_S:
            s["batch_j"] = 0.0  # a new batch starts with every start of the line
        s["batch_j"] += self.load()[0] * DT_S

    def oven_duty(self) -> float:
        s, i = self.s, self.i
        err = sum(i[f"zone{k}_setpoint"] - s[f"z{k}"] for k in (1, 2, 3)) / 3.0
        return min(1.0, max(0.0, 0.3 + 0.45 * self.s["speed"] / 120.0 + 0.1 * err))

    def load(self) -> tuple[float, float]:
        p = self.p
        frac = self.s["speed"] / 120.0
        conveyor = p["conveyor_kw"] * 1000.0 * (0.15 + 0.85 * frac) if self.s["speed"] > 0.5 else 0.0
        ovens = 3 * p["oven_kw"] * 1000.0 * self.oven_duty()
        controls = 400.0
        return conveyor + ovens + controls, conveyor * 0.70 + controls * 0.3  # motor PF ~0.82

    def values(self, t: float, step: int) -> dict[str, float]:
        s = self.s
        seg = self.env.schedule.segment(t)
        n = self.noise
        estop = seg.phase == FAULT and t - seg.start < LineSchedule.ESTOP_HELD_S
        overtemp = s["tank_c"] > 85.0
        low = s["level"] < 15.0
        guard = seg.phase == MAINTENANCE
        word = (1 if estop else 0) | (2 if overtemp else 0) | (4 if low else 0) | (8 if guard else 0)
        running = s["speed"] > 0.5
        return {
            "state": float(seg.phase),
            "line_speed": max(0.0, s["speed"] + (n("line_speed", step, 0.15) if running else 0.0)),
            "parts_good": math.floor(s["good0"] + s["good"]),
            "parts_rejected": math.floor(s["rej0"] + s["rejected"]),
            "shift_counter": math.floor(s["shift0"] + s["good"] + s["rejected"]),
            "cycle_time": s["cycle"],
            "runtime_hours": s["run0"] + s["run_s"] / 3600.0,
            "heartbeat": float(int(t) % 65536),
            "tank_level": s["level"] + n("tank_level", step, 0.05),
            "tank_temperature": s["tank_c"] + n("tank_temperature", step, 0.05),
            "level_high": float(s["level"] > 80.0),
            "pressure": max(0.0, s["pressure"] + n("pressure", step, 0.03)),
            "flow": max(0.0, 180.0 * self.env.pump_fraction() + n("flow", step, 0.8)) if running else 0.0,
            "compressed_air_flow": max(0.0, 35.0 + 220.0 * s["speed"] / 120.0 + n("air", step, 1.5)),
            "zone1_temperature": s["z1"] + n("z1", step, 0.2),
            "zone2_temperature": s["z2"] + n("z2", step, 0.2),
            "zone3_temperature": s["z3"] + n("z3", step, 0.2),
            "batch_energy": s["batch_j"] / 3.6e6,
            "alarm_word": float(word),
            "alarm_estop": float(estop),
            "alarm_overtemp": float(overtemp),
            "alarm_low_level": float(low),
            "alarm_guard_open": float(guard),
            "door_closed": float(not guard),
        }


class Drive(Model):
    """A variable-speed drive with a centrifugal load (pump or fan): ramps, affinity laws, CiA 402."""

    kind = "drive"
    outputs = ("status_word", "ready", "running", "fault", "warning", "output_frequency", "motor_current",
               "motor_speed", "motor_power", "drive_thermal_state", "mains_voltage")
    inputs = {"speed_reference": 35.0, "command_word": 15.0, "nominal_current": 12.5, "run": 0.0}
    params = {"role": "pump", "run": "line", "rated_kw": 7.5, "acc_s": 5.0, "dec_s": 5.0, "load": 0.85,
              "start_delay_s": 3.0}

    def __init__(self, name: str, env: Env, params: dict[str, Any]) -> None:
        super().__init__(name, env, params)
        if self.p["role"] not in ("pump", "fan"):
            raise ValueError(f"model 'drive' of {name!r}: role must be 'pump' or 'fan', got {self.p['role']!r}")
        run = str(self.p["run"])
        if run not in ("line", "always") and not (run.startswith("input:") and "." in run):
            raise ValueError(f"model 'drive' of {name!r}: run must be 'line', 'always' or 'input:DEVICE.POINT' "
                             f"(runs while that point is non-zero), got {run!r}")
        self.role = str(self.p["role"])

    @property
    def run_input(self) -> str | None:
        """``DEVICE.POINT`` whose value starts and stops the drive, if ``run: input:...``."""
        run = str(self.p["run"])
        return run.partition(":")[2] if run.startswith("input:") else None

    def init_state(self) -> None:
        self.s = {"f": 0.0, "thermal": 25.0 + 10.0 * self.rng("init").random(), "accel": 0.0}

    def demand(self, t: float) -> bool:
        run = str(self.p["run"])
        if run == "always":
            return True
        if run.startswith("input:"):
            return self.i["run"] != 0.0
        seg = self.env.schedule.segment(t - self.p["start_delay_s"])
        return seg.phase in ACTIVE

    def enabled(self) -> bool:
        return int(self.i["command_word"]) & 0x0F == 0x0F  # CiA 402 "enable operation"

    def step(self, t: float) -> None:
        s = self.s
        target = self.i["speed_reference"] if self.enabled() and self.demand(t) else 0.0
        before = s["f"]
        s["f"] = follow(before, target, 50.0 / self.p["acc_s"], 50.0 / self.p["dec_s"])
        s["accel"] = (s["f"] - before) / DT_S / (50.0 / self.p["acc_s"])  # 1 while ramping up at full rate
        current = self.current() / max(self.i["nominal_current"], 0.1)
        s["thermal"] = lag(s["thermal"], 100.0 * 1.1 * current * current + 15.0, 600.0)

    def torque(self) -> float:
        """Load torque as a fraction of nominal: quadratic in speed, plus the acceleration torque."""
        x = abs(self.s["f"]) / 50.0
        return self.p["load"] * x * x + 0.25 * max(0.0, self.s["accel"])

    def current(self) -> float:
        if abs(self.s["f"]) < 0.05:
            return 0.0
        return self.i["nominal_current"] * math.sqrt(0.35 ** 2 + (0.9 * self.torque()) ** 2)

    def mech_w(self) -> float:
        return self.p["rated_kw"] * 1000.0 * self.torque() * abs(self.s["f"]) / 50.0

    def load(self) -> tuple[float, float]:
        if abs(self.s["f"]) < 0.05:
            return 60.0, 20.0  # the drive's own electronics
        p = self.mech_w() / 0.93 + 60.0
        return p, p * 0.29  # displacement power factor ~0.96

    def values(self, t: float, step: int) -> dict[str, float]:
        s = self.s
        f = s["f"]
        running = abs(f) >= 0.05 or (self.enabled() and self.demand(t))
        warning = s["thermal"] > 100.0
        word = 0x0237 if running else (0x0233 if self.enabled() else 0x0231)
        word |= 0x80 if warning else 0
        slip = 0.03 * self.torque()
        current = self.current()
        v_ll = math.sqrt(3.0) * self.env.grid_v(t) - 2.0
        return {
            "status_word": float(word),
            "ready": 1.0,
            "running": float(word & 0x04 != 0),
            "fault": 0.0,
            "warning": float(warning),
            "output_frequency": f,
            "motor_current": current * (1.0 + self.noise("i", step, 0.004)) if current else 0.0,
            "motor_speed": 30.0 * f * (1.0 - slip),  # 4-pole motor: 1500 rpm synchronous at 50 Hz
            "motor_power": 100.0 * self.mech_w() / (self.p["rated_kw"] * 1000.0),
            "drive_thermal_state": s["thermal"],
            "mains_voltage": v_ll + self.noise("uln", step, 0.3),
        }


def saturation_hpa(temp_c: float) -> float:
    """Saturation vapour pressure over water (Magnus formula, WMO constants), hPa."""
    return 6.112 * math.exp(17.62 * temp_c / (243.12 + temp_c))


class Room(Model):
    """Air temperature and relative humidity of a room: day curve, line heat, humid spells."""

    kind = "room"
    outputs = ("temperature", "humidity")
    inputs = {"temperature_correction": 0.0, "humidity_correction": 0.0}  # the sensor's calibration offsets
    params = {"mean_c": 22.0, "day_swing_c": 1.5, "line_heat_c": 0.0, "tau_s": 180.0, "humidity_pct": 45.0,
              "humid_spells": 0.0}

    def init_state(self) -> None:
        self.wander = Wander(self.rng("wander"), shortest_s=120.0)
        self.s = {"c": self.p["mean_c"] + self.p["day_swing_c"] * self.env.day(0.0)}

    def target(self, t: float) -> float:
        p = self.p
        seg = self.env.schedule.segment(t)
        heat = p["line_heat_c"] if seg.phase in ACTIVE or seg.phase == STOPPING else 0.0
        return p["mean_c"] + p["day_swing_c"] * self.env.day(t) + heat + 0.3 * self.wander(t)

    def step(self, t: float) -> None:
        self.s["c"] = lag(self.s["c"], self.target(t), self.p["tau_s"])

    def spell(self, t: float) -> float:
        """A humid spell (cleaning, a door to the outside): 0..1, seeded, at most one per 15 min."""
        if not self.p["humid_spells"]:
            return 0.0
        slot = int(t // 900.0)
        r = random.Random(f"{self.env.seed}/{self.name}/spell/{slot}")
        if r.random() > 0.55:
            return 0.0
        start = slot * 900.0 + r.uniform(30.0, 560.0)
        return smooth_window(t, start, start + r.uniform(150.0, 300.0), 60.0)

    def values(self, t: float, step: int) -> dict[str, float]:
        c = self.s["c"]
        # the room's vapour pressure follows the day (and a spell); RH = e / e_sat(T)
        ref = self.p["mean_c"]
        vapour = (self.p["humidity_pct"] / 100.0) * saturation_hpa(ref) * (
            1.0 + 0.06 * self.env.day(t) + 0.05 * self.wander(t + 5000.0) + 0.45 * self.spell(t))
        rh = 100.0 * vapour / saturation_hpa(c)
        return {"temperature": c + self.i["temperature_correction"] + self.noise("t", step, 0.04),
                "humidity": min(100.0, max(0.0, rh + self.i["humidity_correction"] + self.noise("rh", step, 0.15)))}


class PowerMeter(Model):
    """A three-phase meter at the plant's incomer: every other model's load plus a base load."""

    kind = "power_meter"
    outputs = ("voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3",
               "power_l1", "power_l2", "power_l3", "power_factor_l1", "power_factor_l2", "power_factor_l3",
               "voltage_avg", "current_sum", "power_total", "apparent_power_total", "reactive_power_total",
               "power_factor_total", "frequency", "energy_import", "energy_export", "energy_total",
               "import_reactive_energy", "export_reactive_energy", "total_reactive_energy",
               "total_power_demand", "max_power_demand", "voltage_l1_l2", "voltage_l2_l3", "voltage_l3_l1",
               "current_neutral", "thd_voltage_l1", "thd_voltage_l2", "thd_voltage_l3")
    params = {"base_kw": 9.0, "day_kw": 4.0, "base_pf": 0.93, "demand_tau_s": 391.0, "source_ohm": 0.012}

    def init_state(self) -> None:
        r = self.rng("init")
        self.wander = Wander(r, shortest_s=45.0)
        # single-phase loads (lighting, offices) are not spread evenly over the phases
        share = [r.uniform(0.38, 0.45), r.uniform(0.30, 0.34)]
        self.share = (share[0], share[1], 1.0 - share[0] - share[1])
        self.offset_v = tuple(r.uniform(-0.004, 0.004) for _ in range(3))
        e0 = round(r.uniform(20_000.0, 60_000.0), 1)
        self.s = {"e_imp": e0 * 3.6e6, "e_exp": round(r.uniform(0.0, 50.0), 1) * 3.6e6,
                  "q_imp": e0 * 0.35 * 3.6e6, "q_exp": round(r.uniform(0.0, 20.0), 1) * 3.6e6,
                  "demand": 0.0, "max_demand": 0.0, "i1": 0.0, "i2": 0.0, "i3": 0.0}
        self._phases: tuple[tuple[float, float, float], ...] = ()

    def phases(self, t: float) -> tuple[tuple[float, float, float], ...]:
        """(V, P, Q) of each phase now: shared loads split evenly, the base load unevenly."""
        p = self.p
        base = 1000.0 * (p["base_kw"] + p["day_kw"] * 0.5 * (1.0 + self.env.day(t)) + 1.2 * self.wander(t))
        base_q = base * math.tan(math.acos(p["base_pf"]))
        shared_p, shared_q = self.env.loads(self)
        out = []
        for k in range(3):
            v = self.env.grid_v(t) * (1.0 + self.offset_v[k]) - p["source_ohm"] * self.s[f"i{k + 1}"]
            out.append((v, shared_p / 3.0 + base * self.share[k], shared_q / 3.0 + base_q * self.share[k]))
        return tuple(out)

    def step(self, t: float) -> None:
        s = self.s
        ph = self.phases(t)
        p_tot = sum(x[1] for x in ph)
        q_tot = sum(x[2] for x in ph)
        for k, (v, pk, qk) in enumerate(ph):
            s[f"i{k + 1}"] = math.hypot(pk, qk) / v
        if p_tot >= 0:
            s["e_imp"] += p_tot * DT_S
        else:
            s["e_exp"] -= p_tot * DT_S
        if q_tot >= 0:
            s["q_imp"] += q_tot * DT_S
        else:
            s["q_exp"] -= q_tot * DT_S
        s["demand"] = lag(s["demand"], p_tot, self.p["demand_tau_s"]) if s["demand"] else p_tot
        s["max_demand"] = max(s["max_demand"], s["demand"])

    def values(self, t: float, step: int) -> dict[str, float]:
        s, n = self.s, self.noise
        out: dict[str, float] = {}
        phasor_v, phasor_i = [], []
        p_tot = q_tot = 0.0
        for k, (v0, pk, qk) in enumerate(self.phases(t)):
            name = str(k + 1)
            v = v0 + n("v" + name, step, 0.05)
            s0 = math.hypot(pk, qk)
            i = s0 / v0 * (1.0 + n("i" + name, step, 0.002))
            pf = pk / s0 if s0 else 1.0
            p = v * i * pf
            q = math.sqrt(max(0.0, (v * i) ** 2 - p * p))
            out[f"voltage_l{name}"], out[f"current_l{name}"] = v, i
            out[f"power_l{name}"], out[f"power_factor_l{name}"] = p, pf
            angle = -TWO_PI * k / 3.0
            phasor_v.append(cmath.rect(v, angle))
            phasor_i.append(cmath.rect(i, angle - math.acos(max(-1.0, min(1.0, pf)))))
            p_tot += p
            q_tot += q
        s_tot = math.hypot(p_tot, q_tot)  # vector apparent power: P^2 + Q^2 = S^2
        drives = sum(1 for m in self.env.models if isinstance(m, Drive) and abs(m.s["f"]) > 0.05)  # noqa: PLR2004
        out.update({
            "voltage_avg": sum(abs(x) for x in phasor_v) / 3.0,
            "current_sum": out["current_l1"] + out["current_l2"] + out["current_l3"],
            "power_total": p_tot, "apparent_power_total": s_tot, "reactive_power_total": q_tot,
            "power_factor_total": p_tot / s_tot if s_tot else 1.0,
            "frequency": self.env.grid_hz(t) + n("hz", step, 0.002),
            "energy_import": s["e_imp"] / 3.6e6, "energy_export": s["e_exp"] / 3.6e6,
            "energy_total": (s["e_imp"] + s["e_exp"]) / 3.6e6,
            "import_reactive_energy": s["q_imp"] / 3.6e6, "export_reactive_energy": s["q_exp"] / 3.6e6,
            "total_reactive_energy": (s["q_imp"] + s["q_exp"]) / 3.6e6,
            "total_power_demand": s["demand"], "max_power_demand": s["max_demand"],
            "voltage_l1_l2": abs(phasor_v[0] - phasor_v[1]), "voltage_l2_l3": abs(phasor_v[1] - phasor_v[2]),
            "voltage_l3_l1": abs(phasor_v[2] - phasor_v[0]),
            "current_neutral": abs(sum(phasor_i)),
        })
        for k in (1, 2, 3):  # drives draw harmonic currents: the voltage distortion grows with them
            out[f"thd_voltage_l{k}"] = max(0.0, 1.6 + 0.9 * drives + n(f"thd{k}", step, 0.05))
        return out


MODELS: dict[str, type[Model]] = {m.kind: m for m in (ProcessLine, Drive, Room, PowerMeter)}
#: model kind -> its output names (the simulator's spec validation uses it)
MODEL_OUTPUTS: dict[str, tuple[str, ...]] = {k: m.outputs for k, m in MODELS.items()}
# the order models are stepped in: what others read (schedule, pump) first, the meter last
_STEP_ORDER = {"process_line": 0, "drive": 1, "room": 2, "power_meter": 3}


# ----------------------------------------------------------------------------- the plant


InputReader = Callable[[], float]


class PlantPhysics:
    """Every model of one simulated plant, stepped together on one time grid.

    ``sample(t)`` returns one float64 array with every output of every model at ``t``
    (positions from :meth:`slot`). Inputs are bound with :meth:`bind_input`; they are read at
    each ``sample`` call and a change takes effect from the step of that call.
    """

    def __init__(self, seed: int = 0, day_start_h: float = 10.0) -> None:
        self.env = Env(seed, day_start_h)
        self.models: dict[str, Model] = {}
        self._slots: dict[tuple[str, str], int] = {}
        self._order: list[Model] = []
        self._bindings: list[tuple[Model, str, InputReader]] = []
        self._log: list[tuple[Model, str, float]] = []  # input changes (model, input, value) ...
        self._log_steps: list[int] = []  # ... and the step each takes effect (non-decreasing)
        self._log_pos = 0  # the first change not applied yet
        self._latest: dict[tuple[str, str], float] = {}  # the newest logged value of each input
        self._initial_inputs: dict[tuple[str, str], float] = {}
        self.step = 0  # the models' state is at this step
        self._checkpoints: list[tuple[int, list[dict[str, float]], list[dict[str, float]]]] = []
        self._cached: tuple[tuple[int, int], np.ndarray] | None = None
        self.steps_computed = 0  # for the benchmarks: integration steps done so far

    # --- building --------------------------------------------------------------------------
    def add_model(self, device: str, kind: str, params: dict[str, Any] | None = None) -> Model:
        """Add the model of one device (``kind`` from :data:`MODELS`)."""
        if self.step or self._cached is not None:
            raise RuntimeError("models are added before the first sample")
        if device in self.models:
            raise ValueError(f"device {device!r} already has a model")
        cls = MODELS.get(kind)
        if cls is None:
            raise ValueError(f"device {device!r}: unknown simulator model {kind!r}; models are {sorted(MODELS)}")
        model = cls(device, self.env, dict(params or {}))
        self.models[device] = model
        self.env.models.append(model)
        for name in cls.outputs:
            self._slots[(device, name)] = len(self._slots)
        self._order = sorted(self.env.models, key=lambda m: _STEP_ORDER[m.kind])
        return model

    def slot(self, device: str, output: str) -> int:
        """Index of one output in the arrays :meth:`sample` returns."""
        try:
            return self._slots[(device, output)]
        except KeyError:
            model = self.models.get(device)
            allowed = ", ".join(model.outputs) if model else "none (no model)"
            raise KeyError(f"device {device!r} has no model output {output!r}; outputs: {allowed}") from None

    def set_initial_input(self, device: str, name: str, value: float) -> None:
        """The value an input has at t = 0 (a writable point's configured constant)."""
        model = self.models[device]
        if name not in model.i:
            raise KeyError(f"model {model.kind!r} of {device!r} has no input {name!r}; inputs: {sorted(model.i)}")
        model.i[name] = float(value)
        self._initial_inputs[(device, name)] = float(value)

    def bind_input(self, device: str, name: str, read: InputReader) -> None:
        """Read input ``name`` of ``device``'s model from ``read()`` at every sample."""
        model = self.models[device]
        if name not in model.i:
            raise KeyError(f"model {model.kind!r} of {device!r} has no input {name!r}; inputs: {sorted(model.i)}")
        self._bindings.append((model, name, read))

    # --- evaluation ------------------------------------------------------------------------
    def sample(self, t: float) -> np.ndarray:
        """Every output at ``t`` seconds after the start (``t`` < 0 is taken as 0)."""
        target = max(0, int(math.floor(max(t, 0.0) / DT_S + 1e-9)))
        self._read_inputs(target)
        key = (target, len(self._log))
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        self._advance(target)
        out = np.empty(len(self._slots), dtype=np.float64)
        t_step = target * DT_S
        j = 0
        for model in self.env.models:  # slots were given in insertion order
            values = model.values(t_step, target)
            for name in model.outputs:
                out[j] = values[name]
                j += 1
        self._cached = (key, out)
        return out

    def value(self, device: str, output: str, t: float) -> float:
        """One output at ``t`` (convenience for tests)."""
        return float(self.sample(t)[self.slot(device, output)])

    def _read_inputs(self, target: int) -> None:
        """Log every bound input that changed; it takes effect from this step (never in the past)."""
        for model, name, read in self._bindings:
            try:
                v = float(read())
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v) or v == self._latest.get((model.name, name), model.i[name]):
                continue
            at = max(target, self.step, self._log_steps[-1] if self._log_steps else 0)
            self._log.append((model, name, v))
            self._log_steps.append(at)
            self._latest[(model.name, name)] = v

    def _apply_inputs(self) -> None:
        """Inputs logged for the current step (or before it, not yet applied)."""
        while self._log_pos < len(self._log) and self._log_steps[self._log_pos] <= self.step:
            model, name, v = self._log[self._log_pos]
            model.i[name] = v
            self._log_pos += 1

    def _advance(self, target: int) -> None:
        if target < self.step:
            self._rewind(target)
        while self.step < target:
            if self.step % CHECKPOINT_STEPS == 0:
                self._checkpoint()
            self._apply_inputs()
            t = self.step * DT_S
            for model in self._order:
                model.step(t)
            self.step += 1
            self.steps_computed += 1
        self._apply_inputs()

    def _checkpoint(self) -> None:
        """Keep the state (before this step's inputs) to come back to it cheaply."""
        if self._checkpoints and self._checkpoints[-1][0] >= self.step:
            return
        self._checkpoints.append((self.step, [dict(m.s) for m in self.env.models],
                                  [dict(m.i) for m in self.env.models]))
        if len(self._checkpoints) > CHECKPOINTS_KEPT:
            del self._checkpoints[0]

    def _rewind(self, target: int) -> None:
        """Go back to the newest checkpoint at or before ``target`` (or to t = 0) and replay from there."""
        while self._checkpoints and self._checkpoints[-1][0] > target:
            self._checkpoints.pop()
        if self._checkpoints:
            self.step, states, inputs = self._checkpoints[-1]
            for model, st, inp in zip(self.env.models, states, inputs, strict=True):
                model.s, model.i = dict(st), dict(inp)
        else:
            self.step = 0
            for model in self.env.models:
                model.i = {**type(model).inputs, **{n: v for (d, n), v in self._initial_inputs.items()
                                                    if d == model.name}}
                model.init_state()
        self._log_pos = bisect.bisect_left(self._log_steps, self.step)


__all__ = ["DT_S", "MODELS", "MODEL_OUTPUTS", "LineSchedule", "Model", "PlantPhysics", "gauss", "gauss_array",
           "key_of"]
