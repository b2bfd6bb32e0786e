"""Reload: unchanged devices keep polling without a gap, changed ones restart, an invalid config is
rejected whole; SIGHUP and `edge reload` drive the same path in a running `edge run`."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from harness import wait_until

from edge.config.loader import load_config
from edge.core.model import Quality

REPO = Path(__file__).resolve().parents[1]


def config() -> str:
    return """
site: {name: t}
buses:
  - {name: rs485, type: modbus_rtu, port: '{tmp}/ttyR', baud: 38400, timeout_ms: 100}
  - {name: net, type: modbus_tcp, timeout_ms: 100}
devices:
  - name: a
    bus: net
    port: {port:a}
    interval_ms: 100
    points:
      - {name: x, address: 0, sim: {kind: constant, value: 1}}
      - {name: y, address: 1, sim: {kind: constant, value: 2}}
  - name: b
    bus: net
    port: {port:b}
    interval_ms: 200
    points:
      - {name: z, address: 0, sim: {kind: constant, value: 3}}
  - name: s
    bus: rs485
    unit_id: 4
    interval_ms: 100
    points:
      - {name: w, address: 0, sim: {kind: constant, value: 4}}
"""


class Recorder:
    """A sink that keeps the source timestamps of one device's batches."""

    def __init__(self, device: str):
        self.device = device
        self.ts: list[int] = []

    def consume(self, batch) -> None:
        if batch.device == self.device:
            self.ts.append(batch.ts_ns)


async def test_reload_keeps_unchanged_devices_polling_without_a_gap(make_site, tmp_path):
    site = await make_site(config())
    app = site.app
    assert await wait_until(lambda: all(rt.diag.polls_ok >= 2 for rt in app.devices.values()), 5)
    rec_a, rec_s = Recorder("a"), Recorder("s")
    app.pipeline.add("rec_a", rec_a)
    app.pipeline.add("rec_s", rec_s)
    poller_a, poller_s = app.devices["a"].runtime, app.devices["s"].runtime
    task_a = app.devices["a"].task
    await asyncio.sleep(0.5)
    # b changes (interval, one more tag, added before s so every id of s moves)
    path = site.loaded.path
    path.write_text(path.read_text().replace("interval_ms: 200", "interval_ms: 300").replace(
        "value: 3}}", "value: 3}}\n      - {name: extra, address: 0, scale: 2}"))
    report = await app.reload(load_config(path))
    assert report == {"kept": ["a", "s"], "started": ["b"], "removed": [], "outputs": []}
    assert app.devices["a"].runtime is poller_a and app.devices["a"].task is task_a
    assert app.devices["s"].runtime is poller_s
    await asyncio.sleep(1.0)
    for rec, interval_ms in ((rec_a, 100), (rec_s, 100)):
        gaps = np.diff(np.array(rec.ts)) / 1e6
        assert len(gaps) > 10 and gaps.max() < 2.5 * interval_ms, (rec.device, gaps.max())
    # values land under the right (renumbered) tags, including the new one
    tags = app.plant.tag_by_key()
    assert await wait_until(lambda: app.store.get(tags["b.extra"].id)[0] == 6, 3)
    for key, want in (("a.x", 1), ("a.y", 2), ("b.z", 3), ("s.w", 4)):
        assert await wait_until(lambda k=key, w=want: app.store.get(tags[k].id)[0] == w, 3), key
        assert app.store.get(tags[key].id)[1] == Quality.GOOD


def spooled_lines(app) -> list[str]:
    """Every sample row of the appliance's spool as the forwarder would write it (line protocol)."""
    from edge.config.storage import InfluxConfig
    from edge.outputs.influx import LineEncoder
    from edge.storage.spool import KIND_SAMPLES, Row

    spool = app.outputs.spool
    encoder = LineEncoder(spool, InfluxConfig(url="http://127.0.0.1:9", bucket="b"))
    rows = spool.reader().execute("SELECT seq, ts_ns, kind, source, n, plant, blob FROM batches WHERE kind = ? "
                                  "ORDER BY seq", (KIND_SAMPLES,)).fetchall()
    return [encoder.encode_bytes(Row(*r)).decode() for r in rows]


async def test_batches_polled_while_a_reload_restarts_outputs_keep_their_own_tag_names(make_site, monkeypatch):
    """A reload renumbers the kept devices' tag ids, then restarts outputs (which awaits: an OPC UA
    server, a forwarder finishing its request). Batches polled meanwhile carried the new ids and were
    spooled under the old plant version: the forwarder wrote device s's value under the removed
    device b's tag name (and OPC UA, the rings and the alarms read them with the old plant too).
    The simulator's constants are the truth: every spooled value must be its own tag's."""
    site = await make_site(config())
    app = site.app
    assert await wait_until(lambda: all(rt.diag.polls_ok >= 2 for rt in app.devices.values()), 5)
    restart = app.outputs._restart_changed

    async def slow_restart(loaded):  # an output restart that takes half a second
        restarted = await restart(loaded)
        await asyncio.sleep(0.5)
        return restarted

    monkeypatch.setattr(app.outputs, "_restart_changed", slow_restart)
    polls_before = app.devices["s"].diag.polls_ok
    path = site.loaded.path
    text = path.read_text()
    start, end = text.index("  - name: b"), text.index("  - name: s")
    path.write_text(text[:start] + text[end:])  # b removed: s.w takes b.z's id
    report = await app.reload(load_config(path))
    assert report["removed"] == ["b"] and report["kept"] == ["a", "s"], report
    assert app.devices["s"].diag.polls_ok >= polls_before + 3  # s was polled during the reload
    await asyncio.sleep(0.3)
    assert await asyncio.to_thread(app.outputs.spool.flush, 5)
    truth = {"a": {"x": "1.0", "y": "2.0"}, "b": {"z": "3.0"}, "s": {"w": "4.0"}}
    seen = {"a": 0, "b": 0, "s": 0}
    for line in await asyncio.to_thread(spooled_lines, app):
        series, fields, _ = line.split(" ")
        device = series.split(",")[0]
        values = {k: v for k, v in (f.split("=") for f in fields.split(",")) if not k.startswith("q_")}
        assert values == truth[device], line
        seen[device] += 1
    assert seen["s"] >= 10 and seen["a"] >= 10 and seen["b"] >= 1, seen


async def test_invalid_config_is_rejected_whole_and_the_running_one_stays(make_site):
    site = await make_site(config())
    assert await wait_until(lambda: site.diag("a").polls_ok >= 2, 5)
    path = site.loaded.path
    good = path.read_text()
    path.write_text(good.replace("interval_ms: 200", "interval_ms: 200\n    unit_id: 999"))
    from edge.cli.commands.run import reload_config

    assert await reload_config(site.app, str(path)) is False
    assert set(site.app.devices) == {"a", "b", "s"}
    ok = site.diag("b").polls_ok
    assert await wait_until(lambda: site.diag("b").polls_ok > ok + 2, 3)


async def run_edge(*args: str, **kw) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "edge.cli.main", *args, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, **kw)


async def test_sighup_through_edge_reload(make_site):
    site = await make_site(config(), start_app=False)
    path = str(site.loaded.path)
    proc = await run_edge("--log-level", "info", "run", path, "--no-status", "--duration", "20")
    try:
        pid_file = site.loaded.data_dir / "edge.pid"
        assert await wait_until(pid_file.exists, 15)
        await asyncio.sleep(1.0)
        text = site.loaded.path.read_text()
        site.loaded.path.write_text(text.replace("interval_ms: 200", "interval_ms: 250"))
        reload = await run_edge("reload", path)
        out, err = await reload.communicate()
        assert reload.returncode == 0, err.decode()
        assert b"reload requested" in out
        site.loaded.path.write_text(text.replace("type: modbus_tcp", "type: modbus_tcpx"))
        bad = await run_edge("reload", path)
        _, err = await bad.communicate()
        assert bad.returncode == 1 and b"modbus_tcpx" in err  # checked before anything is sent
        lines: list[str] = []

        async def read_until(text: str) -> bool:
            while True:
                line = await proc.stderr.readline()
                if not line:
                    return False
                lines.append(line.decode())
                if text in lines[-1]:
                    return True

        assert await asyncio.wait_for(read_until("configuration reloaded: 2 devices kept running"), 15), lines
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0


async def test_the_configuration_is_loaded_off_the_loop_at_a_reload(make_site, monkeypatch):
    """SIGHUP loads and validates the file in a worker thread (about 11 s for 50,000 points in one
    file), so the loop keeps polling meanwhile; the loaded configuration is then applied on the loop."""
    import threading

    from edge.cli.commands import run as run_command
    from edge.runtime import reload as reload_module

    site = await make_site(config())
    threads: list[str] = []

    def recording_load(*args, **kw):
        threads.append(threading.current_thread().name)
        return load_config(*args, **kw)

    monkeypatch.setattr(reload_module, "load_config", recording_load)
    assert await run_command.reload_config(site.app, str(site.loaded.path)) is True
    assert threads and threads[0] != threading.main_thread().name


def stranger() -> subprocess.Popen:
    """A process that SIGHUP would end (sleep's default action)."""
    return subprocess.Popen(["sleep", "60"])


def test_edge_reload_does_not_signal_a_process_that_is_not_the_appliance(tmp_path):
    """Regression (issue 18): a pid file left behind named a pid that another program may get;
    `edge reload` sent it SIGHUP (which ends most programs)."""
    site = tmp_path / "edge.yaml"
    site.write_text(SMALL_SITE.format(data=tmp_path / "data", endpoint=""))
    other = stranger()
    try:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "edge.pid").write_text(f"{other.pid}\n")
        r = subprocess.run([sys.executable, "-m", "edge.cli.main", "reload", str(site)], capture_output=True,
                           text=True, timeout=60, cwd=REPO)
        assert r.returncode == 1 and "is not a running edge appliance" in r.stderr, r.stderr
        time.sleep(0.2)
        assert other.poll() is None  # still running: nothing was signalled
    finally:
        other.kill()
        other.wait(5)


SMALL_SITE = """
site: {{name: t}}
buses: [{{name: net, type: modbus_tcp, host: 127.0.0.1, port: 9, timeout_ms: 100}}]
devices: [{{name: d, bus: net, interval_ms: 1000, points: [{{name: x, address: 0}}]}}]
runtime: {{data_dir: '{data}'}}
{endpoint}
"""


def test_a_failed_start_leaves_no_pid_file_and_says_why_in_one_line(tmp_path):
    """Regression (issue 18): the pid file was written before the start and left behind when it failed,
    so a later `edge reload` would signal whatever process got that pid."""
    with socket.socket() as taken:  # the OPC UA port is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        opcua = (f"outputs: {{opcua: {{endpoint: 'opc.tcp://127.0.0.1:{port}/edge', security_policies: [None], "
                 "allow_security_none: true, anonymous: true}}")
        site = tmp_path / "edge.yaml"
        site.write_text(SMALL_SITE.format(data=tmp_path / "data", endpoint=opcua))
        r = subprocess.run([sys.executable, "-m", "edge.cli.main", "run", str(site), "--no-status",
                            "--duration", "30"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 1, r.stdout + r.stderr
    assert not (tmp_path / "data" / "edge.pid").exists()
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("edge run: error: the appliance did not start:") and str(port) in last, r.stderr
    assert "Traceback" not in r.stderr

