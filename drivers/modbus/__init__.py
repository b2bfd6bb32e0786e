"""Modbus field driver: TCP, RTU on serial lines, RTU over TCP (serial gateways).

Registered as the ``modbus`` entry of the ``edge.drivers`` entry-point group
(``drivers.modbus.driver:DRIVER``); the core knows it only through that object.
"""
