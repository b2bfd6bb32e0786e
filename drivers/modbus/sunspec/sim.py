"""A simulated SunSpec device built from the official model definitions, with ground truth.

The register image starts with the "SunS" marker at ``base`` and holds each model (ID, L and
its points) as its definition lays it out, then the end model (0xFFFF, 0). Every point gets a
plausible raw value; optional points are left "not implemented" (their SunSpec sentinel) at
random; scale factors are chosen per model and can change while the device runs
(:meth:`SunSpecSim.set_scale_factor` re-encodes the values that depend on them, as an
inverter does). :attr:`SunSpecSim.truth` holds each tag's engineering value (None: not
implemented), computed from the raw value as the SunSpec specification defines it
(raw x 10**sf), for tests to compare with what the appliance reads.
"""
from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from typing import Any

from drivers.modbus.points import RegisterPoint, Table
from drivers.modbus.sim.plant import SimPlant
from drivers.modbus.sim.spec import SimDeviceSpec, TcpTransport
from drivers.modbus.sunspec.discovery import MARKER
from drivers.modbus.sunspec.models import (
    END_MODEL,
    ModelInstance,
    config_points,
    fixed_length,
    lay_out,
    model_definition,
    sentinel,
)

_RAW_RANGES = {"int16": (-3000, 3000), "uint16": (0, 20000), "int32": (-10**6, 10**6), "uint32": (1, 10**8),
               "int64": (-10**12, 10**12), "uint64": (1, 10**12)}


def _words(value: int, registers: int) -> list[int]:
    value &= (1 << (16 * registers)) - 1
    return [(value >> (16 * (registers - 1 - i))) & 0xFFFF for i in range(registers)]


def scaled(raw: int, sf: int) -> float:
    """raw x 10**sf, the nearest double to the decimal value (as the specification defines it)."""
    return raw * 10.0**sf if sf >= 0 else raw / 10**-sf


class SunSpecSim:
    """Builds the image and the truth; serve it with :meth:`spec` in a :class:`SimPlant`."""

    def __init__(self, models: Sequence[int | tuple[int, int]], *, base: int = 40000, seed: int = 0,
                 unimplemented: float = 0.25, unknown: Sequence[tuple[int, int]] = ()):
        """``models``: ids, or (id, repeats of its repeating group); ``unknown``: (id, length) of
        models without a definition, put after the known ones (a vendor model)."""
        self.rng = random.Random(seed)
        self.base = base
        self.unimplemented = unimplemented
        self.regs: dict[int, int] = {base: MARKER[0], base + 1: MARKER[1]}
        self.models: list[ModelInstance] = []
        self.truth: dict[str, Any] = {}
        self.sf: dict[str, int] = {}  # scale-factor tag -> its value
        self.raw: dict[str, int] = {}  # tag of a scaled point -> raw integer
        self.points: dict[str, dict[str, Any]] = {}  # tag -> config point
        address = base + 2
        seen: dict[str, int] = {}
        for entry in models:
            model_id, repeats = entry if isinstance(entry, tuple) else (entry, 1)
            inst = self._instance(model_id, address, repeats, seen)
            self.models.append(inst)
            self._fill(inst)
            address += 2 + inst.length
        for model_id, length in unknown:
            self.regs.update({address: model_id, address + 1: length})
            self.regs.update({address + 2 + i: self.rng.randrange(0x10000) for i in range(length)})
            self.models.append(ModelInstance(model_id, address, length))
            address += 2 + length
        self.regs.update({address: END_MODEL, address + 1: 0})
        self.end = address + 2

    # ------------------------------------------------------------------ layout and values

    def _instance(self, model_id: int, address: int, repeats: int, seen: dict[str, int]) -> ModelInstance:
        defn = model_definition(model_id)
        if defn is None:
            raise ValueError(f"model {model_id} has no definition in pysunspec2")
        top = defn["group"]
        seen[top["name"]] = seen.get(top["name"], 0) + 1
        prefix = top["name"] if seen[top["name"]] == 1 else f"{top['name']}_{seen[top['name']]}"
        counts = {f"/{g['name']}": repeats for g in top.get("groups", []) if g.get("count", 1) in (0,) or
                  isinstance(g.get("count"), str)}
        probe = ModelInstance(model_id, address, 0, counts=dict(counts))
        length = self._length(probe, prefix)
        return lay_out(ModelInstance(model_id, address, length, counts=counts), None, prefix)

    @staticmethod
    def _length(inst: ModelInstance, prefix: str) -> int:
        """The model's length (registers after ID and L) with the given repeat counts."""
        defn = model_definition(inst.id)
        assert defn is not None
        top = defn["group"]
        n = fixed_length({**top, "groups": []})
        for g in top.get("groups", []):
            n += int(inst.counts.get(f"/{g['name']}", g.get("count", 1))) * fixed_length(g)
        return n - 2

    def _fill(self, inst: ModelInstance) -> None:
        points = {p["name"]: p for p in config_points(inst)}
        self.points.update(points)
        counts = {name.rsplit("/", 1)[-1]: v for name, v in inst.counts.items()}
        for lp in inst.points:  # scale factors first: the values depend on them
            if lp.definition["type"] == "sunssf":
                self._set(lp, self.rng.randint(-3, 0), points)
        for lp in inst.points:
            pdef, kind = lp.definition, lp.definition["type"]
            if kind == "sunssf":
                continue
            if pdef["name"] == "ID" and len(lp.scope) == 1:
                self._write(lp.address, [inst.id])
            elif pdef["name"] == "L" and len(lp.scope) == 1:
                self._write(lp.address, [inst.length])
            elif kind == "pad":
                self._write(lp.address, [0x8000])
            elif kind == "count":  # the number of repeating groups (one repeating group per model here)
                self._set(lp, next(iter(counts.values()), 1), points)
            elif pdef.get("mandatory") != "M" and self.rng.random() < self.unimplemented:
                self._not_implemented(lp, points)
            else:
                self._set(lp, self._value(lp), points)

    def _value(self, lp: Any) -> Any:
        pdef, kind = lp.definition, lp.definition["type"]
        symbols = [int(s["value"]) for s in pdef.get("symbols", [])]
        if kind.startswith("enum") and symbols:
            return self.rng.choice(symbols)
        if kind.startswith("bitfield"):
            return sum(1 << b for b in symbols if self.rng.random() < 0.3) if symbols else self.rng.randrange(16)
        if kind == "string":
            return f"{pdef['name']}-{self.rng.randrange(1000)}"[: 2 * lp.registers]
        if kind in ("float32", "float64"):
            return round(self.rng.uniform(-500, 500), 2)
        if kind == "ipaddr":
            return self.rng.randrange(1, 1 << 32)
        base_kind = {"acc16": "uint16", "acc32": "uint32", "acc64": "uint64"}.get(kind, kind)
        lo, hi = _RAW_RANGES.get(base_kind, (0, 100))
        return self.rng.randint(max(lo, 1) if kind.startswith("acc") else lo, hi)

    def _not_implemented(self, lp: Any, points: dict[str, dict[str, Any]]) -> None:
        pattern = sentinel(lp.definition["type"], lp.registers)
        if pattern == ["all_nul"]:
            self._write(lp.address, [0] * lp.registers)
        elif pattern:
            self._write(lp.address, _words(int(pattern[0]), lp.registers))
        tag = self._tag(lp, points)
        if tag is not None:
            self.truth[tag] = None
            for name, _bit in self._bit_tags(tag, points):
                self.truth[name] = None
            self.raw.pop(tag, None)

    def _tag(self, lp: Any, points: dict[str, dict[str, Any]]) -> str | None:
        tag = lp.tag if lp.tag in points else next((n for n in points if points[n]["address"] == lp.address), None)
        return tag

    @staticmethod
    def _bit_tags(tag: str, points: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
        return [(f"{tag}_{name}", bit) for bit, name in points[tag].get("bits", {}).items()]

    def _set(self, lp: Any, value: Any, points: dict[str, dict[str, Any]]) -> None:
        """Write a raw value (for a scaled point: the raw integer) and record the truth."""
        kind, n = lp.definition["type"], lp.registers
        tag = self._tag(lp, points)
        if kind == "string":
            raw = str(value).encode("ascii").ljust(2 * n, b"\0")
            self._write(lp.address, [int.from_bytes(raw[i:i + 2], "big") for i in range(0, 2 * n, 2)])
        elif kind == "float32":
            self._write(lp.address, _words(struct.unpack(">I", struct.pack(">f", value))[0], 2))
            value = struct.unpack(">f", struct.pack(">f", value))[0]
        elif kind == "float64":
            self._write(lp.address, _words(struct.unpack(">Q", struct.pack(">d", value))[0], 4))
        else:
            self._write(lp.address, _words(int(value), n))
        if tag is None:
            return
        point = points[tag]
        if kind == "sunssf":
            self.sf[tag] = int(value)
        if "scale_factor" in point:
            self.raw[tag] = int(value)
            value = scaled(int(value), self.sf[point["scale_factor"]])
        elif "scale" in point:
            value = value * point["scale"]
        self.truth[tag] = value
        for name, bit in self._bit_tags(tag, points):
            self.truth[name] = bool(int(self.truth[tag]) >> bit & 1)

    def _write(self, address: int, words: list[int]) -> None:
        for i, w in enumerate(words):
            self.regs[address + i] = w & 0xFFFF

    # ------------------------------------------------------------------ run time

    def set_scale_factor(self, sf_tag: str, value: int, image: Any = None) -> None:
        """Change a scale factor as an inverter does: dependent raw values are re-encoded to keep
        their engineering value as well as the new factor allows; the truth follows."""
        self.sf[sf_tag] = value
        self.truth[sf_tag] = value
        sf_point = self.points[sf_tag]
        self._write(sf_point["address"], _words(value, 1))
        for tag, point in self.points.items():
            if point.get("scale_factor") != sf_tag or tag not in self.raw:
                continue
            old = self.truth[tag]
            raw = round(old / 10.0**value) if value >= 0 else round(old * 10**-value)
            registers = 2 if point["type"] in ("int32", "uint32") else 4 if point["type"].endswith("64") else 1
            self.raw[tag] = raw
            self._write(point["address"], _words(raw, registers))
            self.truth[tag] = scaled(raw, value)
        if image is not None:
            self.flush(image)

    def flush(self, image: Any) -> None:
        """Write the register image into a simulated device's holding table."""
        for address, word in self.regs.items():
            image[address] = word

    def spec(self, name: str = "inverter", unit_id: int = 1, port: int = 0) -> SimDeviceSpec:
        """A simulated device sized to the image (its registers are written by :meth:`flush`)."""
        points = [RegisterPoint(0, "sunspec_end", Table.HOLDING, self.end - 1, "uint16", writable=True)]
        return SimDeviceSpec(name=name, unit_id=unit_id, transport=TcpTransport(port=port), points=points,
                             update_interval_ms=1000)

    async def serve(self, name: str = "inverter", unit_id: int = 1, port: int = 0) -> SimPlant:
        """Start a :class:`SimPlant` serving this device; stop it with ``await plant.stop()``."""
        plant = SimPlant([self.spec(name, unit_id, port)])
        await plant.start()
        self.flush(plant.device(name).image.view(Table.HOLDING))
        return plant
