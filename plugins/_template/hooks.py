"""Hooks of the _template plugin (optional file: delete it if points.yaml has no ``derived:`` tags).

A hook is a pure function marked with ``@hook``: it gets the latest Good values of the points
named in ``inputs`` (numbers; bools as 0.0/1.0), in that order, and returns one number or bool.
Keep it fast (it runs on every poll) and free of I/O. Import only ``edge.plugin_api``.
If a hook raises or returns something that is not a finite number, only its derived tag turns
Bad_ConfigurationError and the error is shown in ``edge run`` and ``edge plugin check``.
"""
from edge.plugin_api import HookError, bit, hook


@hook
def fahrenheit(celsius: float) -> float:
    """degC -> degF (the example derived tag ``temperature_f`` of points.yaml)."""
    return celsius * 9.0 / 5.0 + 32.0


@hook
def alarm_active(status_word: float) -> bool:
    """True when bit 3 (fault) or bit 5 (warning) of a status word is set (name it in points.yaml to use it)."""
    return bit(status_word, 3) or bit(status_word, 5)


@hook
def ratio_percent(part: float, whole: float) -> float:
    """``part`` in percent of ``whole``; a zero ``whole`` is reported instead of dividing by zero."""
    if whole == 0:
        raise HookError("the reference value is 0")
    return 100.0 * part / whole
