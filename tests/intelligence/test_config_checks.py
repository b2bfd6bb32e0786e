"""`edge check` on alarms, rules and api: every problem names file, line, key path and what is allowed;
unknown tags, writes to read-only tags, wrong value types and type errors in expressions are caught
before anything runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config.errors import ConfigError
from edge.config.loader import load_config

REPO = Path(__file__).resolve().parents[2]

BASE = """site: {name: s}
buses:
  - {name: net, type: modbus_tcp, port: 5020}
devices:
  - name: room
    bus: net
    points:
      - {name: temperature, address: 0, type: float32}
      - {name: label, address: 2, type: string, length: 4}
      - {name: mode, address: 6, type: uint16, enum: {0: auto, 2: fault}}
  - name: fc
    bus: net
    unit_id: 2
    points:
      - {name: fan, table: coil, address: 0, type: bool, writable: true}
      - {name: speed, address: 0, type: uint16, writable: true, range: [0, 3]}
      - {name: status, address: 1, type: uint16}
"""


def load(tmp_path: Path, extra: str):
    path = tmp_path / "edge.yaml"
    path.write_text(BASE + extra)
    return load_config(path)


def problems(tmp_path: Path, extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra)
    return [str(i) for i in info.value.issues if i.severity == "error"]


def test_a_good_configuration_loads(tmp_path):
    loaded = load(tmp_path, """
alarms:
  - {kind: limit, tag: room.temperature, h: 30, hh: 40, deadband: 0.5, on_delay_ms: 1000}
  - {kind: state, tag: room.mode, states: [fault, 3]}
  - {kind: offline, device: fc, priority: critical}
rules:
  - name: cool
    when: room.temperature > 26 and room.mode != 2
    release_when: room.temperature < 24
    then: {fc.fan: true, fc.speed: 2}
    otherwise: {fc.fan: false, fc.speed: 0}
    interlocks: [{when: "fc.status == 4", reason: fault}]
api: {port: 0, anonymous_role: viewer}
""")
    assert [a.key for a in loaded.config.alarms] == ["room.temperature.limit", "room.mode.state", "fc.offline"]
    assert loaded.config.rules[0].then == {"fc.fan": True, "fc.speed": 2}


def test_unknown_tags_and_devices(tmp_path):
    out = problems(tmp_path, """
alarms:
  - {kind: limit, tag: room.humidity, h: 80}
  - {kind: offline, device: boiler}
rules:
  - {name: r, when: room.humidity > 80, then: {fc.damper: 1}}
""")
    assert any(":20: error: alarms[0].tag: unknown tag" in p and "'room.humidity'" in p for p in out), out
    assert any(":21: error: alarms[1].device: unknown device; devices: fc, room" in p for p in out), out
    assert any(":23: error: rules[0].when: 'room.humidity > 80': unknown tag(s) room.humidity" in p for p in out), out
    assert any("rules[0].then.fc.damper: unknown tag fc.damper" in p for p in out), out


def test_writes_to_read_only_tags_and_wrong_value_types(tmp_path):
    out = problems(tmp_path, """
rules:
  - name: r
    when: room.temperature > 26
    then: {fc.status: 1, fc.fan: 2, fc.speed: 7}
    otherwise: {fc.speed: "fast"}
""")
    text = "\n".join(out)
    assert "rules[0].then.fc.status: fc.status is not writable" in text
    assert "rules[0].then.fc.fan: fc.fan is bool: the value must be true/false or 0/1 (value: 2)" in text
    assert "rules[0].then.fc.speed: fc.speed: 7 is outside the tag's range [0, 3]" in text
    assert "rules[0].otherwise.fc.speed: fc.speed is uint16: the value must be a number" in text


@pytest.mark.parametrize(("expr", "message"), [
    ("room.label > 3", "type error: '>' not supported between instances of 'str' and 'int'"),
    ("room.temperature + 1", "a condition must be true or false (a comparison), this gives a float"),
    ("room.temperature >", "syntax error"),
    ("__import__('os') == 1", "unknown name '__import__'"),
    ("__import__('os').system('true')", "only 'device.tag' may be written with a dot"),
    ("room.temperature.real > 1", "only 'device.tag' may be written with a dot"),
    ("temperature > 1", "unknown name 'temperature'; write a tag as 'device.tag'"),
])
def test_expression_errors(tmp_path, expr, message):
    out = problems(tmp_path, f"""
rules:
  - name: r
    when: "{expr}"
    then: {{fc.fan: true}}
""")
    assert any("rules[0].when:" in p and message in p for p in out), out


def test_alarm_shape_errors_list_what_is_allowed(tmp_path):
    out = problems(tmp_path, """
alarms:
  - {kind: limit, tag: room.temperature, h: 40, hh: 30}
  - {kind: limit, tag: room.temperature}
  - {kind: offline, tag: room.temperature}
  - {kind: limit, tag: room.temperature, h: 1, priority: urgent}
  - {kind: bit, tag: room.temperature, deadband: 1}
""")
    text = "\n".join(out)
    assert "alarms[0]: limits must be ordered ll < l < h < hh" in text
    assert "alarms[1]: a limit alarm needs at least one of hh, h, l, ll" in text
    assert "alarms[2]: an offline alarm needs 'device'; an offline alarm watches a device" in text
    assert "alarms[3].priority" in text and "'low', 'medium', 'high' or 'critical'" in text
    assert "alarms[4]: hh, h, l, ll and deadband are only for limit alarms, not bit" in text


def test_alarm_kind_must_fit_the_tag(tmp_path):
    out = problems(tmp_path, """
alarms:
  - {kind: bit, tag: room.temperature}
  - {kind: state, tag: room.mode, states: [broken]}
  - {kind: limit, tag: room.label, h: 1}
  - {kind: state, tag: room.temperature, states: [1]}
""")
    text = "\n".join(out)
    assert "alarms[0].kind: a bit alarm needs a bool tag; room.temperature is float32" in text
    assert "alarms[1].states[0]: not a state of the tag's enum; allowed: auto, fault (value: 'broken')" in text
    assert "alarms[2].kind: a limit alarm needs a numeric tag; room.label is string" in text
    assert "alarms[3].kind: a state alarm needs an integer (enumerated) tag; room.temperature is float32" in text


def test_duplicate_names(tmp_path):
    out = problems(tmp_path, """
alarms:
  - {kind: limit, tag: room.temperature, h: 30}
  - {kind: limit, tag: room.temperature, hh: 40}
rules:
  - {name: r, when: room.temperature > 1, then: {fc.fan: true}}
  - {name: r, when: room.temperature > 2, then: {fc.fan: true}}
""")
    text = "\n".join(out)
    assert "alarms[1].name: duplicate alarm name 'room.temperature.limit'" in text
    assert "rules[1].name: duplicate rule name (also rules[0])" in text


def test_edge_check_command_reports_a_bad_rule(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text(BASE + "rules:\n  - {name: r, when: room.label > 3, then: {fc.fan: true}}\n")
    proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "check", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"{path}:19: error: rules[0].when: 'room.label > 3': type error" in proc.stdout + proc.stderr


def test_api_tokens_file_is_checked(tmp_path):
    # a missing file is a warning (issue 15: 'edge provision' runs on the configuration before any token exists)
    loaded = load(tmp_path, "api: {tokens_file: missing.txt}\n")
    assert any("api.tokens_file" in str(i) and "does not exist yet" in str(i) and "edge provision token" in str(i)
               for i in loaded.issues if i.severity == "warning"), loaded.issues
    (tmp_path / "tokens.txt").write_text("x:viewer:md5$abc\n")
    out = problems(tmp_path, "api: {tokens_file: tokens.txt}\n")
    assert any("api.tokens_file:" in p and "tokens.txt:1: the hash of 'x' must be 'sha256$'" in p for p in out), out
    loaded = load(tmp_path, "api: {port: 0}\n")
    assert any("every API request will be refused" in str(i) for i in loaded.issues if i.severity == "warning")
