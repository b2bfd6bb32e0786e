"""Finding a device's SunSpec models: the "SunS" marker, then the model chain by ID and length.

The marker (0x5375 0x6E53) sits at protocol address 40000, 0 or 50000 (tried in that order).
The first model's ID follows it; each model's length L counts the registers after its ID and
L, so the next model starts 2 + L further on; ID 0xFFFF ends the chain. A model with a
definition is read whole at discovery when one of its repeating groups is counted by a point,
so the layout knows how many instances there are.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.modbus.client import ModbusExceptionResponse
from drivers.modbus.sunspec.models import END_MODEL, ModelInstance, SunSpecError, lay_out, model_definition

MARKER = [0x5375, 0x6E53]  # "SunS"
BASES = (40000, 0, 50000)
MAX_MODELS = 64
READ_CHUNK = 125

Reader = Callable[[int, int], Awaitable[list[int]]]  # (address, count) -> holding registers


class SunSpecNotFound(LookupError):
    """No "SunS" marker at any of the standard addresses."""


@dataclass
class Discovery:
    """A device's SunSpec model chain."""

    base: int
    models: list[ModelInstance] = field(default_factory=list)

    @property
    def known(self) -> list[ModelInstance]:
        return [m for m in self.models if m.name is not None]

    @property
    def unknown(self) -> list[ModelInstance]:
        return [m for m in self.models if m.name is None]

    def as_dict(self) -> dict[str, Any]:
        return {"base": self.base, "models": [m.as_dict() for m in self.models]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Discovery:
        """From :meth:`as_dict` (a cache): the layout is rebuilt from the definitions."""
        found = cls(int(data["base"]))
        for m in data["models"]:
            inst = ModelInstance(int(m["id"]), int(m["address"]), int(m["length"]), counts=dict(m.get("counts", {})))
            found.models.append(inst)
        _lay_out_all(found, None)
        return found


def _variable_counts(group: dict[str, Any]) -> bool:
    return any(isinstance(g.get("count"), str) or _variable_counts(g) for g in group.get("groups", []))


async def _read_span(read: Reader, address: int, count: int) -> list[int]:
    out: list[int] = []
    while len(out) < count:
        n = min(READ_CHUNK, count - len(out))
        out += [int(v) for v in await read(address + len(out), n)]
    return out


async def discover(read: Reader, bases: tuple[int, ...] = BASES) -> Discovery:
    """Find the marker and walk the chain; raises :class:`SunSpecNotFound`. An exception answer
    means "no marker here"; the reader's other errors (a timeout, no connection) propagate."""
    base = None
    for candidate in bases:
        try:
            regs = await read(candidate, 2)
        except ModbusExceptionResponse:  # illegal data address and the like: no marker here
            continue
        if [int(v) for v in regs] == MARKER:
            base = candidate
            break
    if base is None:
        raise SunSpecNotFound(f"no SunSpec marker 'SunS' at {', '.join(map(str, bases))}")
    found = Discovery(base)
    address = base + 2
    data: dict[int, list[int]] = {}
    for _ in range(MAX_MODELS):
        if address + 2 > 65536:
            break
        model_id, length = (int(v) for v in await read(address, 2))
        if model_id == END_MODEL:
            break
        inst = ModelInstance(model_id, address, length)
        defn = model_definition(model_id)
        if defn is not None and _variable_counts(defn["group"]):
            data[address] = await _read_span(read, address, length + 2)
        found.models.append(inst)
        address += 2 + length
    _lay_out_all(found, data)
    return found


def _lay_out_all(found: Discovery, data: dict[int, list[int]] | None) -> None:
    """Lay out every known model; a second instance of a model gets ``<name>_2`` tags, and so on."""
    seen: dict[str, int] = {}
    for inst in found.models:
        defn = model_definition(inst.id)
        if defn is None:
            continue
        name = defn["group"]["name"]
        seen[name] = seen.get(name, 0) + 1
        prefix = name if seen[name] == 1 else f"{name}_{seen[name]}"
        regs = (data or {}).get(inst.address)

        def value_at(address: int, regs: list[int] | None = regs, start: int = inst.address) -> int | None:
            return regs[address - start] if regs is not None and 0 <= address - start < len(regs) else None

        try:
            lay_out(inst, value_at, prefix)
        except SunSpecError as exc:  # a length or count that does not fit the definition: skipped, reported
            inst.name, inst.points, inst.problem = None, [], str(exc)
