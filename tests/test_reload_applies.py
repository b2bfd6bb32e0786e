"""Reload that applies or refuses (issue 17 point 4): a new InfluxDB URL is used at once (before:
'configuration reloaded' and still the old URL), polling does not stop while an output restarts,
and a misspelt plugin is refused by SIGHUP exactly as by `edge reload` (before: SIGHUP accepted it
and quarantined a working device). Judged by a second VictoriaMetrics and the processes' output."""
from __future__ import annotations

import asyncio
import os
import signal
import time

from harness import wait_until
from test_reload import Recorder, config, run_edge

from edge.runtime.reload import reload_appliance
from tests.fixtures.tsdb import VictoriaMetrics


async def test_reload_onto_a_new_influxdb_url_delivers_there(make_site, tmp_path):
    vm1, vm2 = VictoriaMetrics(tmp_path / "vm1"), VictoriaMetrics(tmp_path / "vm2")
    vm1.start()
    vm2.start()
    try:
        text = config() + (
            f"outputs:\n  influxdb: {{url: '{vm1.url}', bucket: edge, batch_max_age_ms: 100}}\n")
        site = await make_site(text)
        app = site.app
        assert await wait_until(lambda: app.outputs.spool.stats()["acked_points"] > 20, 20)
        rec = Recorder("a")
        app.pipeline.add("recorder", rec)
        path = site.loaded.path
        path.write_text(path.read_text().replace(vm1.url, vm2.url))
        t0 = time.time_ns()
        outcome = await reload_appliance(app, path, "test")
        assert outcome.result == "applied", outcome.reason
        assert outcome.outputs_restarted == ["influxdb"] and outcome.devices_restarted == []
        assert app.outputs.forwarder.stats()["url"] == vm2.url
        assert app.last_reload is outcome and "outputs restarted: influxdb" in outcome.summary()

        def arrived_at_vm2() -> bool:
            vm2.flush()
            return any(ts >= t0 for pts in vm2.samples('{__name__="a_x"}').values() for ts, _ in pts)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not await asyncio.to_thread(arrived_at_vm2):
            await asyncio.sleep(0.5)
        assert await asyncio.to_thread(arrived_at_vm2), app.outputs.forwarder.stats()
        gaps = [(b - a) / 1e6 for a, b in zip(rec.ts, rec.ts[1:], strict=False)]
        assert gaps and max(gaps) < 250, f"polling paused for {max(gaps):.0f} ms during the reload"
    finally:
        vm1.stop()
        vm2.stop()


async def test_unknown_plugin_is_refused_in_process_and_the_devices_keep_polling(make_site):
    site = await make_site(config())
    app = site.app
    assert await wait_until(lambda: site.diag("b").polls_ok >= 2, 5)
    path = site.loaded.path
    path.write_text(path.read_text().replace("    interval_ms: 200\n", "    interval_ms: 200\n    plugin: no_such_plugin\n"))
    outcome = await reload_appliance(app, path, "test")
    assert outcome.result == "refused" and "no_such_plugin" in outcome.reason
    assert app.last_reload is outcome
    ok = site.diag("b").polls_ok
    assert await wait_until(lambda: site.diag("b").polls_ok > ok + 2, 3)
    assert site.diag("b").state.name == "ONLINE"


async def test_unknown_plugin_is_refused_by_sighup_as_by_edge_reload(make_site):
    site = await make_site(config(), start_app=False)
    path = str(site.loaded.path)
    proc = await run_edge("--log-level", "info", "run", path, "--no-status", "--duration", "30")
    lines: list[str] = []

    async def read_until(text: str) -> bool:
        while True:
            line = await proc.stderr.readline()
            if not line:
                return False
            lines.append(line.decode())
            if text in lines[-1]:
                return True

    try:
        pid_file = site.loaded.data_dir / "edge.pid"
        assert await wait_until(pid_file.exists, 15)
        await asyncio.sleep(1.0)
        text = site.loaded.path.read_text()
        site.loaded.path.write_text(text.replace("    interval_ms: 200\n",
                                                 "    interval_ms: 200\n    plugin: no_such_plugin\n"))
        cli = await run_edge("reload", path)
        _, err = await cli.communicate()
        assert cli.returncode == 1 and b"no_such_plugin" in err, err.decode()
        os.kill(int(pid_file.read_text()), signal.SIGHUP)  # the appliance's own check, same path
        assert await asyncio.wait_for(read_until("reload refused"), 20), lines
        assert "no_such_plugin" in lines[-1] and "via sighup" in lines[-1]
        assert not any("quarantined" in line or "reload applied" in line for line in lines), lines
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0
