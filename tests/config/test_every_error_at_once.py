"""One `edge check` run reports the errors of every stage (issue 16 point 7).

Before: schema errors stopped the load (plugin and cross-object errors showed only after they
were fixed: three runs for five errors), a broken plugin showed one error and "(+N more)", and an
unquoted Off in an enumeration became False with a puzzling message.
"""
from __future__ import annotations

import re
from pathlib import Path

from edge.cli.main import main

SITE = """site: {name: t}
plugins_dir: plugins
buses:
  - {name: net, type: modbus_tcp, port: 70000}
  - {name: net2, type: modbus_tcp, port: 1502}
devices:
  - {name: a, bus: net2, unit_id: 1, plugin: broken}
  - name: b
    bus: net2
    unit_id: 1
    points:
      - {name: mode, address: 0, type: uint16, enum: {0: Off, 1: auto}}
      - {name: t, address: 1, type: int16, description: Temperature, in degC}
      - {name: w, address: 2, type: int16, scale_factor: nope}
  - {name: b, bus: net2, unit_id: 3, points: [{name: x, address: 0}]}
  - {name: c, bus: net, unit_id: 4, points: [{name: y, address: 0}]}
"""
MANIFEST = 'id: broken\nname: Broken\nversion: "1.0"\nvendor: V\nmodel: M\n'
POINTS = """points:
  - {name: p1, address: 0, type: float99}
  - {name: p2, address: 1, type: bool}
  - {name: p3, address: 2, type: uint16}
"""

EXPECTED = [  # (line, key path, text): schema, YAML traps, plugin, cross-object
    (4, "buses[0].port", "less than or equal to 65535"),
    (12, "devices[1].points[0].enum[0]", 'YAML reads the unquoted word Off as false: quote it ("Off")'),
    (13, "devices[1].points[1].in degC", 'a comma inside {...} ends a value: quote the text ("Temperature, in degC")'),
    (2, "points[0].type", "float99"),
    (3, "points[1]", "a bool in a register needs 'bit'"),
    (10, "devices[1].unit_id", "unit id 1 is already used by device 'a'"),
    (14, "devices[1].points[2].scale_factor", "no point 'nope' in device 'b'"),
    (15, "devices[2].name", "duplicate name"),
]


def test_every_stage_in_one_run(tmp_path: Path, capsys):
    (tmp_path / "plugins" / "broken").mkdir(parents=True)
    (tmp_path / "plugins" / "broken" / "manifest.yaml").write_text(MANIFEST)
    (tmp_path / "plugins" / "broken" / "points.yaml").write_text(POINTS)
    (tmp_path / "edge.yaml").write_text(SITE)
    assert main(["check", str(tmp_path / "edge.yaml")]) == 1
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert f"{len(EXPECTED)} error(s): configuration rejected" in err, err
    assert len(errors) == len(EXPECTED), "\n".join(errors)
    for line, path, text in EXPECTED:
        assert any(re.search(rf":{line}: error: (.*: )?{re.escape(path)}: .*{re.escape(text)}", ln) for ln in errors), \
            f"missing line {line} {path} {text!r}:\n" + "\n".join(errors)
    assert "no bus named 'net'" not in err  # the bus with its own error is not reported again through device c


def test_plugin_check_prints_every_problem(tmp_path: Path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.yaml").write_text(MANIFEST)
    (tmp_path / "broken" / "points.yaml").write_text(POINTS)
    assert main(["plugin", "check", "broken", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "float99" in out and "a bool in a register needs 'bit'" in out and "(+1 more, listed below)" in out
