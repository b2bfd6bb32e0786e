"""Hooks of the ATV320 plugin: the CiA 402 drive state from the ETA status word.

State machine of the CiA 402 drive profile (ATV320 communication manual, "ETA status word"):
the state is encoded in bits 0-3, 5 and 6.
"""
from edge.plugin_api import hook

NOT_READY, SWITCH_ON_DISABLED, READY, SWITCHED_ON, OPERATION_ENABLED, QUICK_STOP, FAULT_REACTION, FAULT = range(8)


@hook
def cia402_state(status_word: float) -> int:
    """ETA -> state number (see the enum of drive_state in points.yaml)."""
    w = int(status_word)
    if w & 0x4F == 0x00:
        return NOT_READY
    if w & 0x4F == 0x40:
        return SWITCH_ON_DISABLED
    if w & 0x6F == 0x21:
        return READY
    if w & 0x6F == 0x23:
        return SWITCHED_ON
    if w & 0x6F == 0x27:
        return OPERATION_ENABLED
    if w & 0x6F == 0x07:
        return QUICK_STOP
    if w & 0x4F == 0x0F:
        return FAULT_REACTION
    if w & 0x4F == 0x08:
        return FAULT
    return NOT_READY


@hook
def current_share(motor_current: float, nominal_current: float) -> float:
    """Motor current in percent of the motor's nominal current (NCR)."""
    return 100.0 * motor_current / nominal_current if nominal_current > 0 else 0.0
