"""The one stable module a device plugin's ``hooks.py`` imports.

A plugin's ``points.yaml`` declares *derived* tags computed by pure functions of the device's
point values, each naming a function of the plugin's ``hooks.py``::

    derived:
      - name: drive_state                  # a new tag of the device
        inputs: [status_word]              # point names, passed positionally as numbers
        hook: cia402_state                 # a function in hooks.py marked with @hook
        enum: {0: not_ready, 1: switch_on_disabled, 2: ready, 3: switched_on, 4: operation_enabled, 5: fault}
      - name: apparent_power_l1
        inputs: [voltage_l1, current_l1]
        hook: product
        unit: VA

and ``hooks.py``::

    from edge.plugin_api import hook, bit

    @hook
    def cia402_state(word: float) -> int:
        ...

    @hook
    def product(a: float, b: float) -> float:
        return a * b

A hook gets its inputs' latest good values (floats; bools as 0.0/1.0) and returns one number
or bool. It must be pure and fast: it runs on the appliance's event loop for every poll that
brings a new input value. A hook that raises, returns something that is not a finite number,
or runs longer than its budget is contained: only its derived tag goes Bad_ConfigurationError
(or is reported as slow), the error is logged once and counted, and every other tag and
device keeps running.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

API_VERSION = "1.0"
DEFAULT_BUDGET_MS = 5.0

F = TypeVar("F", bound=Callable[..., object])


class HookError(Exception):
    """Raise from a hook to say its inputs make no sense; the message is shown to the operator."""


def hook(fn: F | None = None, *, budget_ms: float = DEFAULT_BUDGET_MS):
    """Mark a function of ``hooks.py`` as a hook (only marked functions can be named in points.yaml)."""

    def mark(f: F) -> F:
        f.__edge_hook__ = True  # type: ignore[attr-defined]
        f.__edge_budget_ms__ = float(budget_ms)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def bit(word: float, n: int) -> bool:
    """Bit ``n`` (0 = least significant) of a register value."""
    return bool((int(word) >> n) & 1)


def bits(word: float, names: dict[int, str]) -> dict[str, bool]:
    """Named bits of a status word: ``bits(w, {0: "ready", 3: "fault"})``."""
    value = int(word)
    return {name: bool((value >> n) & 1) for n, name in names.items()}


def combine(high: float, low: float, signed: bool = False, bits_per_word: int = 16) -> int:
    """Two registers (high word first) as one integer, for devices that split counters."""
    value = (int(high) << bits_per_word) | (int(low) & ((1 << bits_per_word) - 1))
    if signed and value >= 1 << (2 * bits_per_word - 1):
        value -= 1 << (2 * bits_per_word)
    return value


__all__ = ["API_VERSION", "HookError", "bit", "bits", "combine", "hook"]
