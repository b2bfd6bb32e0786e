"""The `edge` command as a technician uses it: help, check, plan, one-line errors, the demo, and the
simulator cross-checked with an independent Modbus master (mbpoll, C/libmodbus)."""
from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import DemoEnv

from edge.cli.main import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "provisioning" / "sites" / "demo" / "edge.yaml"


def edge(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


def test_help_lists_every_subcommand_with_a_description(capsys):
    out = edge("--help").stdout  # the installed entry point, in a process of its own
    for name, (_, description) in COMMANDS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(description[:30])}", out, re.M), name
    for name in COMMANDS:  # the same parser in this process: a child per command cost ~5 s each under load
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0 and "usage: edge " + name in capsys.readouterr().out, name


def test_check_on_the_demo_prints_bus_load_per_bus(capsys):
    assert main(["check", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"6 devices, 1\d\d tags", out)
    for bus in ("rs485_a", "plc_net", "gateway_b"):
        assert re.search(rf"^{bus}\s+\S+\s+\d+\.\d%\s+\d+\.\d$", out, re.M), bus
    assert "configuration OK" in out


def test_plan_prints_requests_and_bus_time(capsys):
    assert main(["plan", str(DEMO), "--device", "meter_main"]) == 0
    out = capsys.readouterr().out
    assert "meter_main / default every 1000 ms" in out
    assert re.search(r"FC4 input\s+0\.\.17\s+count\s+18", out)
    assert "bus time" in out


def test_errors_are_one_line_without_traceback(tmp_path):
    missing = edge("check", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert "cannot read file" in missing.stderr and "Traceback" not in missing.stderr
    bad_device = edge("read", str(DEMO), "no_such_device")
    assert bad_device.returncode == 1
    assert bad_device.stderr.strip().splitlines()[0].startswith("edge read: error: no device named 'no_such_device'")
    assert "Traceback" not in bad_device.stderr


@pytest.fixture
def demo_env(tmp_path):
    env = DemoEnv(tmp_path)
    yield env
    env.close()


def test_demo_shows_every_device_online(demo_env):
    proc = edge("demo", "--duration", "6", env=demo_env, timeout=90)
    assert proc.returncode == 0, proc.stderr
    tables = proc.stdout.split("device         bus")
    last = tables[-1]
    for device in ("meter_main", "th_room1", "th_room2", "plc_line1", "vfd_pump1", "vfd_fan1"):
        assert re.search(rf"^{device}\s+\S+\s+online\s", last, re.M), f"{device} not online:\n{last}"
    assert "voltage_l1=" in last and " V" in last
    assert "appliance stopped" in proc.stdout
    # the local spool is the historian when no InfluxDB is configured
    hist = edge("history", str(DEMO), "plc_line1.line_speed", "--since", "2m", env=demo_env)
    assert hist.returncode == 0, hist.stderr
    rows = [ln for ln in hist.stdout.splitlines() if ln.endswith("  Good")]
    assert len(rows) >= 15  # 250 ms polls for ~6 s
    assert re.search(r"^(\d+) sample\(s\) of plc_line1.line_speed", hist.stdout, re.M)
    unknown = edge("history", str(DEMO), "plc_line1.nope", env=demo_env)
    assert unknown.returncode == 1 and "unknown tag 'plc_line1.nope'" in unknown.stderr


def test_simulated_tcp_device_read_by_mbpoll(demo_env):
    """`edge simulate` + an independent C master: the PLC's registers hold the encoded values."""
    sim = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "simulate", str(DEMO)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env={**os.environ, **demo_env}, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = sim.stdout.readline()
            if "simulator ready" in line or not line:
                break
        port = demo_env["EDGE_DEMO_PLC_PORT"]
        # line_speed_setpoint: float32 ABCD at 40003 (protocol address 2) holds the constant 120.0
        out = subprocess.run(["mbpoll", "-m", "tcp", "-a", "1", "-p", port, "-t", "4:hex", "-0", "-r", "2", "-c", "2",
                              "-1", "127.0.0.1"], capture_output=True, text=True, timeout=20).stdout
        words = [int(w, 16) for w in re.findall(r"^\[\d+\]:\s+0x([0-9A-Fa-f]{4})", out, re.M)]
        assert len(words) == 2, out
        assert struct.unpack(">f", struct.pack(">HH", *words))[0] == 120.0
        # recipe: string of 8 registers at 40021 (protocol address 20)
        out = subprocess.run(["mbpoll", "-m", "tcp", "-a", "1", "-p", port, "-t", "4:hex", "-0", "-r", "20", "-c", "4",
                              "-1", "127.0.0.1"], capture_output=True, text=True, timeout=20).stdout
        words = [int(w, 16) for w in re.findall(r"^\[\d+\]:\s+0x([0-9A-Fa-f]{4})", out, re.M)]
        assert struct.pack(">4H", *words) == b"RCP-0042"
        # motor_on, fan_on, cabinet_light: coils 00001..00003 are readable as bits
        out = subprocess.run(["mbpoll", "-m", "tcp", "-a", "1", "-p", port, "-t", "0", "-0", "-r", "0", "-c", "3",
                              "-1", "127.0.0.1"], capture_output=True, text=True, timeout=20).stdout
        assert len(re.findall(r"^\[\d+\]:\s+[01]$", out, re.M)) == 3, out
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(15)


def test_json_logs_with_per_component_levels(demo_env):
    proc = edge("--log-json", "--log-level", "info", "demo", "--duration", "3", "--no-status", env=demo_env, timeout=90)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert records, proc.stderr
    assert all({"ts", "level", "component", "message"} <= set(r) for r in records)
    assert any(r["component"] == "drivers.modbus.poller" and "online" in r["message"] for r in records)
    assert not [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("{")]


#: Extensions whose build another doctor line reports (the aggregator's SIMD check, the Modbus driver's own).
REPORTED_ELSEWHERE = {"edge.aggregate._ringbuf": "aggregator implementation",
                      "drivers.modbus._codec_kernel": "Modbus block decoder"}


def setup_py_extensions() -> list[str]:
    """The module names of every ``Extension(...)`` in setup.py, read from its syntax tree."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    return [node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Extension"
            and node.args and isinstance(node.args[0], ast.Constant)]


def test_doctor_says_whether_each_compiled_extension_is_built(monkeypatch):
    """Every extension setup.py builds has a doctor line, ok in a built tree (this one: CI builds them):
    a tree where the OPC UA change detection was never built used ~10 % more CPU with no sign of it."""
    from edge.cli.commands import doctor

    names = setup_py_extensions()
    assert len(names) >= 5, names
    labels = {n: doctor.COMPILED[n][0] if n in doctor.COMPILED else REPORTED_ELSEWHERE.get(n) for n in names}
    assert all(labels.values()), {n: label for n, label in labels.items() if not label}
    results = {what: (ok, detail) for what, ok, detail in doctor.checks()}
    assert {label: results[label][0] for label in labels.values()} == dict.fromkeys(labels.values(), True), results
    monkeypatch.setitem(sys.modules, "edge.outputs.opcua._changes", None)  # as if it were not built
    missing = {what: (ok, detail) for what, ok, detail in doctor.compiled_checks()}
    ok, detail = missing["OPC UA change detection"]
    assert not ok and "edge.outputs.opcua._changes is not built" in detail and "pip install ." in detail, detail
    out = edge("doctor", "--quiet")
    assert out.returncode == 0 and "BAD" not in out.stdout, out.stdout
