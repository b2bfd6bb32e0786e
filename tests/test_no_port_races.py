"""Servers in tests bind port 0 or hold their port until use (tests/conftest.py ``HeldPorts``,
``drivers.modbus.sim.plant.listening_socket``/``hold_port``/``reserve_port``): a port found by
binding a socket and closing it again may be taken by another process before its server binds
it, and such a ``free_port()`` once returned one port twice in a fresh-clone CI run (issue 18).
New code keeps arriving from several engineers: this test keeps the helper from coming back."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORT_PICKER = re.compile(r"\bdef free_port\b|\bfree_port\(")


def test_no_bind_and_close_port_picker_anywhere():
    hits = []
    for folder in ("edge", "drivers", "tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if "node_modules" in path.parts or path == Path(__file__).resolve():
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if PORT_PICKER.search(line):
                    hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hits == [], "bind-and-close port pickers (hold the port or bind port 0 instead):\n" + "\n".join(hits)
