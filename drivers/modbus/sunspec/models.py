"""SunSpec model definitions (from ``pysunspec2``) laid out at a device's addresses, as points.

A model instance is laid out from its definition, its start address and its length: the
fixed points of the top group, then each repeating group as many times as the definition
says (a count of 0 fills the rest of the model's length; a count naming a point takes that
point's value, read at discovery). Each laid-out point becomes one configuration point
(``edge.config.models.Point`` fields) named ``<model>_<point>``, with ``<group><n>_`` for each
repeating group level (``mppt_module2_DCW``), so tag names keep the model and point names.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import sunspec2.mb as sunspec_mb

#: SunSpec point type -> (the appliance's type, registers); None: occupies registers, no tag.
TYPES: dict[str, tuple[str | None, int]] = {
    "int16": ("int16", 1), "uint16": ("uint16", 1), "count": ("uint16", 1), "acc16": ("uint16", 1),
    "enum16": ("uint16", 1), "bitfield16": ("uint16", 1), "sunssf": ("int16", 1), "pad": (None, 1),
    "int32": ("int32", 2), "uint32": ("uint32", 2), "acc32": ("uint32", 2), "enum32": ("uint32", 2),
    "bitfield32": ("uint32", 2), "ipaddr": ("uint32", 2), "float32": ("float32", 2),
    "int64": ("int64", 4), "uint64": ("uint64", 4), "acc64": ("uint64", 4), "float64": ("float64", 4),
    "ipv6addr": (None, 8), "eui48": (None, 4), "string": ("string", 0),
}
#: SunSpec units -> the units the appliance's other plugins use (others are kept as written).
UNITS = {"C": "degC", "Pct": "%", "WH": "Wh", "Secs": "s", "Sec": "s", "Var": "var", "Varh": "varh", "AH": "Ah"}
NAME_LIMIT = 63
END_MODEL = 0xFFFF


class SunSpecError(ValueError):
    """A model that cannot be laid out (a length that does not fit its definition)."""


@functools.cache
def model_definition(model_id: int) -> dict[str, Any] | None:
    """The official definition of a model (pysunspec2's JSON), or None when it ships none."""
    path = resources.files("sunspec2") / "models" / "json" / f"model_{int(model_id)}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, OSError):
        return None


def sentinel(sunspec_type: str, registers: int) -> list[int | str]:
    """The "not implemented" value of a SunSpec type as the appliance's ``invalid`` list."""
    if sunspec_type == "string":
        return ["all_nul"]
    value = sunspec_mb.unimpl_value.get(sunspec_type)
    if value is None or TYPES.get(sunspec_type, (None, 0))[0] is None:
        return []
    return [int(value) & ((1 << (16 * registers)) - 1)]


@dataclass(frozen=True)
class LaidPoint:
    """One point of a model instance at its protocol address."""

    tag: str  # <model>_<group><n>_..._<point>
    definition: dict[str, Any]
    address: int
    registers: int
    scope: tuple[str, ...]  # tag prefixes of its group and every enclosing group (innermost first)


@dataclass
class ModelInstance:
    """One model found in a device's chain (``name`` None: no definition: skipped)."""

    id: int
    address: int  # of its ID register
    length: int  # registers after ID and L
    name: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # repeating group path -> repeats
    points: list[LaidPoint] = field(default_factory=list)
    problem: str | None = None  # why a model with a definition could not be laid out (skipped)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "address": self.address, "length": self.length, "name": self.name,
                "counts": self.counts}


def _registers(pdef: dict[str, Any]) -> int:
    kind = TYPES.get(pdef["type"])
    if kind is None:
        raise SunSpecError(f"point {pdef['name']!r} has unknown SunSpec type {pdef['type']!r}")
    return int(pdef.get("size", 1)) if pdef["type"] == "string" else kind[1]


def fixed_length(group: dict[str, Any]) -> int:
    """Registers of one instance of a group whose sub-groups have fixed, numeric counts."""
    n = sum(_registers(p) for p in group.get("points", []))
    for sub in group.get("groups", []):
        count = sub.get("count", 1)
        if not isinstance(count, int):
            raise SunSpecError(f"group {sub['name']!r} repeats a variable number of times inside a repeated group")
        n += count * fixed_length(sub)
    return n


def lay_out(instance: ModelInstance, value_at: Callable[[int], int | None] | None = None,
            prefix: str | None = None) -> ModelInstance:
    """Fill ``instance.points`` (and ``counts``) from the model's definition.

    ``value_at(address)``: the register value at an address (for counts named by a point), or
    None where not read; known ``counts`` (from a cache) are used first.
    """
    defn = model_definition(instance.id)
    if defn is None:
        return instance
    top = defn["group"]
    instance.name = top["name"]
    head = prefix or top["name"]
    end = instance.address + 2 + instance.length
    points: list[LaidPoint] = []

    def group(g: dict[str, Any], address: int, scope: tuple[str, ...], path: str) -> int:
        values: dict[str, int] = {}
        for pdef in g.get("points", []):
            n = _registers(pdef)
            points.append(LaidPoint(f"{scope[0]}_{pdef['name']}", pdef, address, n, scope))
            if value_at is not None and n == 1:
                v = value_at(address)
                if v is not None:
                    values[pdef["name"]] = v
            address += n
        subs = g.get("groups", [])
        for k, sub in enumerate(subs):
            key = f"{path}/{sub['name']}"
            count = _count(sub, key, values, address, subs[k + 1:])
            instance.counts[key] = count
            for i in range(count):
                address = group(sub, address, (f"{scope[0]}_{sub['name']}{i + 1}", *scope), key)
        return address

    def _count(sub: dict[str, Any], key: str, values: dict[str, int], address: int, rest: list) -> int:
        if key in instance.counts:
            return instance.counts[key]
        count = sub.get("count", 1)
        if isinstance(count, str):
            if count not in values:
                raise SunSpecError(f"model {instance.id}: count {count!r} of group {sub['name']!r} was not read")
            return values[count]
        if count == 0:  # as many as the model's length holds
            after = sum(fixed_length(r) * int(r.get("count", 1) or 0) for r in rest)
            room = end - address - after
            size = fixed_length(sub)
            if size <= 0 or room < 0 or room % size:
                raise SunSpecError(f"model {instance.id} ({top['name']}): length {instance.length} does not hold "
                                   f"whole {sub['name']!r} groups of {size} registers")
            return room // size
        return int(count)

    stop = group(top, instance.address, (head,), "")
    if stop != end:
        raise SunSpecError(f"model {instance.id} ({top['name']}) at {instance.address}: its definition lays out "
                           f"{stop - instance.address - 2} registers, the device says {instance.length}")
    instance.points = points
    return instance


def _tag_name(tag: str, model_id: int) -> str:
    if len(tag) <= NAME_LIMIT:
        return tag
    short = f"m{model_id}_{tag.split('_', 1)[1]}"
    return short[:NAME_LIMIT]


def config_points(instance: ModelInstance) -> list[dict[str, Any]]:
    """Configuration points (``Point`` fields) of a laid-out model instance; ID, L and pads left out."""
    by_scope = {(lp.scope[0], lp.definition["name"]): lp for lp in instance.points}
    out = []
    for lp in instance.points:
        pdef = lp.definition
        kind = TYPES[pdef["type"]][0]
        if kind is None or (len(lp.scope) == 1 and pdef["name"] in ("ID", "L")):
            continue
        point: dict[str, Any] = {"name": _tag_name(lp.tag, instance.id), "table": "holding", "address": lp.address,
                                 "type": kind, "order": "ABCD",
                                 "description": (pdef.get("label") or pdef.get("desc") or pdef["name"])[:200]}
        if kind == "string":
            point["length"] = lp.registers
        if pdef.get("units"):
            point["unit"] = UNITS.get(pdef["units"], pdef["units"])
        point["invalid"] = sentinel(pdef["type"], lp.registers)
        sf = pdef.get("sf")
        if isinstance(sf, int) or (isinstance(sf, str) and sf.lstrip("-").isdigit()):
            point["scale"] = 10.0 ** int(sf)
        elif isinstance(sf, str):
            holder = next((by_scope[(s, sf)] for s in lp.scope if (s, sf) in by_scope), None)
            if holder is None:
                raise SunSpecError(f"model {instance.id}: scale factor {sf!r} of {pdef['name']!r} is not in its model")
            point["scale_factor"] = _tag_name(holder.tag, instance.id)
        symbols = {int(s["value"]): s["name"] for s in pdef.get("symbols", [])}
        if symbols and pdef["type"].startswith("enum"):
            point["enum"] = symbols
        elif symbols and pdef["type"].startswith("bitfield"):
            point["bits"] = symbols
        if pdef.get("static") == "S":
            point["group"] = "static"
        out.append(point)
    return out


def describe(models: Sequence[ModelInstance]) -> list[str]:
    """One line per model of a chain: id, name (or unknown), address, length, repeats."""
    lines = []
    for m in models:
        reps = ", ".join(f"{k.rsplit('/', 1)[-1]} x{v}" for k, v in m.counts.items())
        what = m.name if m.name else (f"skipped: {m.problem}" if m.problem else
                                      "unknown (no definition in pysunspec2): skipped")
        lines.append(f"model {m.id:>5} {what:<32} at {m.address:>5}, {m.length:>4} registers"
                     + (f" ({reps})" if reps else ""))
    return lines
