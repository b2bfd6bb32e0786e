"""The ``system`` field driver: the appliance host's own CPU, memory, disks, temperatures and network.

Registered as ``edge.drivers: system`` (``drivers.system.driver:DRIVER``), exactly like the
Modbus driver: its tags reach every output with no change under ``edge/``.
"""
