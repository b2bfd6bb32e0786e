"""The test site of the intelligence tests: a room with a temperature sensor and a fan coil."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from harness import server_pki

from edge.intelligence.service import Intelligence


def room_config(influx_url: str | None = None, opcua: bool = False, extra: str = "",
                rules: bool = True, write_burst: int = 3, opcua_users: str | None = None) -> str:
    """The room's site; the devices' ports are held for the simulator by make_site (``{port:NAME}``),
    OPC UA (``opcua=True``) and the API take any free port and report it."""
    outputs = ""
    if opcua or influx_url:
        outputs = "outputs:\n"
    if opcua:
        outputs += ("  opcua: {endpoint: 'opc.tcp://127.0.0.1:0/edge', security_policies: [None], "
                    "allow_security_none: true, anonymous: true"
                    + (f", users_file: '{opcua_users}', pki_dir: '{server_pki(Path(opcua_users).parent)}'"
                       if opcua_users else "") + "}\n")
    if influx_url:
        outputs += f"  influxdb: {{url: '{influx_url}', bucket: edge, token: x, batch_max_age_ms: 100}}\n"
    rule_text = """
rules:
  - name: cooling
    when: room.temperature > 26
    release_when: room.temperature < 24
    for_ms: 300
    then: {fancoil.fan: true, fancoil.speed: 2}
    otherwise: {fancoil.fan: false, fancoil.speed: 0}
    interlocks: [{when: fancoil.maintenance, reason: fan coil in maintenance}]
""" if rules else ""
    return f"""
site: {{name: plant1}}
buses:
  - {{name: net, type: modbus_tcp, timeout_ms: 100}}
devices:
  - name: room
    bus: net
    port: {{port:room}}
    interval_ms: 100
    points:
      - {{name: temperature, address: 0, type: float32, unit: degC, range: [-40, 120], sim: {{kind: constant, value: 21}}}}
      - {{name: mode, address: 2, type: uint16, enum: {{0: auto, 1: manual, 2: fault}}, sim: {{kind: constant, value: 0}}}}
  - name: fancoil
    bus: net
    port: {{port:fancoil}}
    interval_ms: 100
    points:
      - {{name: fan, table: coil, address: 0, type: bool, writable: true}}
      - {{name: maintenance, table: discrete, address: 0, type: bool}}
      - {{name: speed, address: 0, type: uint16, writable: true, range: [0, 3]}}
      - {{name: setpoint, address: 1, type: float32, unit: degC, writable: true, range: [5, 35]}}
      - {{name: valve, address: 3, type: int16, scale: 0.1, unit: "%", writable: true, range: [0, 100]}}
{outputs}
alarms:
  - {{kind: limit, tag: room.temperature, h: 30, hh: 40, l: 10, deadband: 1, on_delay_ms: 500, priority: high}}
  - {{kind: state, tag: room.mode, states: [fault]}}
  - {{kind: offline, device: fancoil}}
  - {{kind: quality, tag: room.temperature, on_delay_ms: 300}}
  - {{kind: bit, tag: fancoil.maintenance, priority: low}}
{rule_text}
api: {{port: 0, tokens_file: '{{tmp}}/tokens.txt', write_rate_per_min: 60, write_burst: {write_burst}}}
{extra}"""


@dataclass
class Room:
    site: object  # tests.conftest.Site
    intel: Intelligence
    viewer: str
    operator: str

    @property
    def url(self) -> str:
        return self.intel.url

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)
