"""Device specs refuse bad input with clear messages; default signals are sensible and in range."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from drivers.modbus.points import RegisterPoint, Table
from drivers.modbus.sim import SerialTransport, SignalSpec, SimDeviceSpec, SimPlant, TcpTransport
from drivers.modbus.sim.image import DeviceImage, PlantMemory
from drivers.modbus.sim.signals import BankEntry, SignalBank, default_signal, point_rng

P = RegisterPoint(0, "v", Table.HOLDING, 0, "uint16")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit_id": 0}, "greater than or equal to 1"),
        ({"unit_id": 248}, "less than or equal to 247"),
        ({"transport": {"kind": "udp"}}, "does not match any of the expected tags"),
        ({"transport": {"kind": "serial", "path": "/tmp/x", "parity": "X"}}, "Input should be 'N', 'E' or 'O'"),
        ({"points": [P, P]}, "duplicate point name 'v'"),
        ({"points": [RegisterPoint(0, "c", Table.COIL, 0, "uint16")]}, "holds bits, dtype must be bool"),
        ({"points": [RegisterPoint(0, "b", Table.HOLDING, 0, "bool")]}, "needs 'bit'"),
        ({"points": [RegisterPoint(0, "s", Table.HOLDING, 0, "string")]}, "needs length >= 1"),
        ({"points": [RegisterPoint(0, "f", Table.HOLDING, 65535, "float32")]}, "exceed 0..65535"),
        ({"points": [RegisterPoint(0, "w", Table.INPUT, 0, "uint16", writable=True)]}, "read-only, cannot be writable"),
        ({"points": [RegisterPoint(0, "o", Table.HOLDING, 0, "uint16", order="ADCB")]}, "order 'ADCB' is not one of"),
        ({"signals": {"nope": {"kind": "sine"}}}, "signals name unknown points \\['nope'\\]"),
        ({"signals": {"v": {"kind": "step"}}}, "needs a non-empty 'levels' list"),
        ({"signals": {"v": {"kind": "ramp", "low": 5, "high": 1}}}, "ramp needs high > low"),
        ({"update_interval_ms": 1}, "greater than or equal to 10"),
    ],
)
def test_bad_specs_are_refused_with_clear_messages(kwargs: dict, message: str) -> None:
    base = {"name": "d", "unit_id": 1, "transport": {"kind": "tcp"}, "points": [P]}
    with pytest.raises(ValidationError, match=message):
        SimDeviceSpec(**(base | kwargs))


def test_devices_that_cannot_share_a_line_or_port_are_refused(tmp_path) -> None:
    line = str(tmp_path / "tty")
    with pytest.raises(ValueError, match="both use unit id 1 on serial"):
        SimPlant([SimDeviceSpec(name=n, unit_id=1, transport=SerialTransport(path=line), points=[P]) for n in "ab"])
    with pytest.raises(ValueError, match="share serial endpoint .* different transports"):
        SimPlant([SimDeviceSpec(name="a", unit_id=1, transport=SerialTransport(path=line, baud=9600), points=[P]),
                  SimDeviceSpec(name="b", unit_id=2, transport=SerialTransport(path=line, baud=19200), points=[P])])
    with pytest.raises(ValueError, match="duplicate device names: \\['a'\\]"):
        SimPlant([SimDeviceSpec(name="a", unit_id=u, transport=TcpTransport(), points=[P]) for u in (1, 2)])


def bank_for(points: list[RegisterPoint], signals: dict[str, SignalSpec] | None = None):
    memory = PlantMemory([points])
    image = DeviceImage(memory, 0, points)
    entries = [BankEntry(image, p, (signals or {}).get(p.name) or default_signal(p, point_rng(0, "d", p.name)))
               for p in points]
    return SignalBank(entries), memory, image


def test_default_signals_follow_dtype_range_and_name() -> None:
    rng = np.random.default_rng(0)
    temp = RegisterPoint(0, "supply_temperature", Table.INPUT, 0, "int16", scale=0.1, low=40, high=90)
    assert default_signal(temp, rng).kind == "sine"
    assert default_signal(temp, rng).mean == pytest.approx(65)
    assert default_signal(RegisterPoint(0, "energy_total", Table.INPUT, 0, "uint32"), rng).kind == "counter"
    assert default_signal(RegisterPoint(0, "status_word", Table.INPUT, 0, "uint16"), rng).kind == "status_bits"
    assert default_signal(RegisterPoint(0, "trip_alarm", Table.DISCRETE, 0, "bool"), rng).duty == 0.1
    mode = RegisterPoint(0, "mode", Table.HOLDING, 0, "uint16", enum=((0, "off"), (3, "auto")))
    assert default_signal(mode, rng).levels == (0.0, 3.0)
    assert default_signal(RegisterPoint(0, "model", Table.HOLDING, 0, "string", length=4), rng).value == "model"


def test_bank_values_stay_in_range_and_counters_increase() -> None:
    points = [
        RegisterPoint(0, "temperature", Table.INPUT, 0, "float32", low=-20, high=60),
        RegisterPoint(1, "pressure", Table.INPUT, 2, "uint16", scale=0.01, low=0, high=16),
        RegisterPoint(2, "runtime_hours", Table.INPUT, 3, "uint32", low=0, high=1000),
        RegisterPoint(3, "flags", Table.INPUT, 5, "uint16"),
        RegisterPoint(4, "level", Table.INPUT, 6, "int16"),
        RegisterPoint(5, "noisy", Table.INPUT, 7, "float64", low=0, high=1),
    ]
    signals = {"noisy": SignalSpec(kind="sine", mean=0.5, amplitude=0.5, noise=5.0, period_s=3)}
    bank, memory, image = bank_for(points, signals)
    values = np.array([bank.values(t) for t in np.linspace(0, 2000, 400)])
    for i, p in enumerate(points):
        lo = p.low if p.low is not None else -np.inf
        hi = p.high if p.high is not None else np.inf
        assert ((values[:, i] >= lo) & (values[:, i] <= hi)).all(), p.name
        assert len(np.unique(values[:, i])) > 3, p.name  # it moves
    assert (np.diff(values[:100, 2]) >= 0).all()  # the counter climbs until it wraps at 1000
    written = bank.tick(123.0, memory.regs, memory.bits)
    for i, p in enumerate(points):  # what the registers hold is the value, to one raw step
        assert image.get_point(p) == pytest.approx(written[i], abs=abs(p.scale) / 2 + 1e-9, rel=1e-6), p.name


def test_a_thousand_devices_share_one_memory_and_one_tick() -> None:
    points = [RegisterPoint(i, f"t{i}", Table.HOLDING, 2 * i, "float32", "CDAB", low=0, high=100) for i in range(100)]
    memory = PlantMemory([points] * 1000)
    images = [DeviceImage(memory, d, points) for d in range(1000)]
    bank = SignalBank([BankEntry(img, p, default_signal(p, point_rng(0, str(d), p.name)))
                       for d, img in enumerate(images) for p in points])
    assert len(bank.word_groups) == 1 and memory.regs.size == 200_000
    bank.tick(10.0, memory.regs, memory.bits)
    expected = bank.values(10.0)  # noise differs per call: compare with the range instead
    got = np.array([images[d].get_point(points[i]) for d in (0, 499, 999) for i in (0, 50, 99)])
    assert ((got >= 0) & (got <= 100)).all() and expected.shape == (100_000,)


def test_set_value_and_get_registers_refuse_bad_input_clearly() -> None:
    plant = SimPlant([SimDeviceSpec(name="d", unit_id=1, transport=TcpTransport(), points=[P])])
    with pytest.raises(ValueError, match="point 'v' is uint16: give a number, not 'high'"):
        plant.set_value("d", "v", "high")
    with pytest.raises(KeyError, match="no point 'w'; points are \\['v'\\]"):
        plant.set_value("d", "w", 1)
    with pytest.raises(IndexError, match="holding 0..1 is outside 0..0"):
        plant.get_registers("d", "holding", 0, 2)
    with pytest.raises(ValueError, match="'coils' is not a valid Table"):
        plant.get_registers("d", "coils", 0, 1)
    plant.set_value("d", "v", "17")  # numeric text is fine
    assert plant.get_registers("d", "holding", 0, 1) == [17]


def test_default_counters_start_at_zero_and_climb() -> None:
    rng = np.random.default_rng(0)
    for point in (RegisterPoint(0, "energy_total", Table.INPUT, 0, "float32"),
                  RegisterPoint(0, "pulses", Table.INPUT, 0, "int32", scale=0.5)):
        signal = default_signal(point, rng)
        assert signal.kind == "counter" and signal.start == 0 and signal.rate_per_s > 0, point.name
