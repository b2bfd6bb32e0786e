"""Reload applies the `api` and `runtime` sections too (issue 17 point 4): before, `edge reload` said
"configuration reloaded" and the API stayed on its old port, the log format and levels stayed.

From outside: `edge run`, then `edge reload` (SIGHUP) onto a new API port and JSON logs: the new
port answers, the old one refuses connections, the log turns to JSON lines, polling goes on in the
same process. In process (the same `reload_appliance` path): a port the appliance cannot listen on
and a moved `runtime.data_dir` refuse the reload by name, and nothing changed; a new statistics
window restarts the devices; the audit rotation takes the new limits."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from harness import wait_until
from test_reload import Recorder, config, run_edge

from drivers.modbus.sim.plant import listening_socket
from edge.runtime.reload import reload_appliance

RUNTIME = "runtime: {data_dir: '{tmp}/data', status_interval_s: 0.2, log_level: warning}\n"


def get_status(url: str) -> dict | None:
    """``/api/status`` of ``url``; None when nothing listens there."""
    try:
        with urllib.request.urlopen(f"{url}/api/status", timeout=3) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError:
        raise
    except OSError:
        return None


def polls(status: dict, device: str) -> int:
    return next(d["polls_ok"] for d in status["devices"] if d["name"] == device)


async def test_edge_reload_moves_the_api_and_switches_the_log_format_while_polling_goes_on(make_site):
    site = await make_site(config() + "api: {port: 0, anonymous_role: viewer}\n" + RUNTIME, start_app=False)
    path = str(site.loaded.path)
    proc = await run_edge("run", path, "--no-status", "--duration", "60")
    assert proc.stdout is not None and proc.stderr is not None
    err: list[str] = []

    async def read_stderr() -> None:
        async for line in proc.stderr:
            err.append(line.decode())

    reader = asyncio.create_task(read_stderr())
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "API at " in line, line + "".join(err)
        old_url = line.split("API at ")[1].split(",")[0].strip()
        before = await asyncio.to_thread(get_status, old_url)
        assert before is not None
        held = listening_socket()  # the new port, held until the appliance takes it
        new_port = held.getsockname()[1]
        text = site.loaded.path.read_text()
        site.loaded.path.write_text(text.replace("port: 0,", f"port: {new_port},").replace(
            "log_level: warning}", "log_level: warning, log_format: json}"))
        held.close()
        cli = await run_edge("reload", path)
        out, cli_err = await cli.communicate()
        assert cli.returncode == 0, cli_err.decode()
        new_url = f"http://127.0.0.1:{new_port}"

        async def moved() -> bool:  # the API moves first in the reload; the outcome is recorded at its end
            status = await asyncio.to_thread(get_status, new_url)
            return status is not None and status.get("reload") is not None

        for _ in range(100):  # bounded: ~20 s
            if await moved():
                break
            await asyncio.sleep(0.2)
        after = await asyncio.to_thread(get_status, new_url)
        assert after is not None, "".join(err[-20:])
        assert await asyncio.to_thread(get_status, old_url) is None, "the old API port still answers"
        assert after["reload"]["result"] == "applied" and after["reload"]["api"] == new_url
        await asyncio.sleep(1.0)
        later = await asyncio.to_thread(get_status, new_url)
        assert later is not None and polls(later, "a") > polls(after, "a") > polls(before, "a")
        assert await wait_until(lambda: any("reload applied" in e for e in err), 5), err[-10:]
        applied = json.loads(next(e for e in err if "reload applied" in e))  # the log is JSON lines now
        assert f"API restarted: {new_url}" in applied["message"] and "log_format" in applied["message"]
        assert applied["level"] == "warning"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
        reader.cancel()
    assert proc.returncode == 0


async def test_an_api_port_in_use_refuses_the_reload_and_the_old_api_keeps_serving(make_site):
    site = await make_site(config() + "api: {port: 0, anonymous_role: viewer}\n")
    app = site.app
    assert app.intelligence is not None and app.intelligence.api is not None
    old_url = app.intelligence.url
    taken = listening_socket()  # another program listens on the port the new configuration names
    try:
        path = site.loaded.path
        path.write_text(path.read_text().replace("port: 0,", f"port: {taken.getsockname()[1]},")
                        .replace("interval_ms: 200", "interval_ms: 300"))
        outcome = await reload_appliance(app, path, "test")
        assert outcome.result == "refused" and f"api: cannot listen on 127.0.0.1:{taken.getsockname()[1]}" \
            in outcome.reason, outcome.reason
        assert app.devices["b"].resolved.config.interval_ms == 200  # nothing else was applied either
        assert app.intelligence.url == old_url and await asyncio.to_thread(get_status, old_url) is not None
    finally:
        taken.close()


async def test_the_api_moves_without_a_gap_in_polling(make_site):
    site = await make_site(config() + "api: {port: 0, anonymous_role: viewer}\n")
    app = site.app
    assert app.intelligence is not None
    old_url = app.intelligence.url
    assert await wait_until(lambda: site.diag("a").polls_ok >= 2, 5)
    rec = Recorder("a")
    app.pipeline.add("recorder", rec)
    held = listening_socket()
    port = held.getsockname()[1]
    path = site.loaded.path
    path.write_text(path.read_text().replace("port: 0,", f"port: {port}, max_connections: 32,"))
    held.close()
    outcome = await reload_appliance(app, path, "test")
    assert outcome.result == "applied" and outcome.api == f"http://127.0.0.1:{port}", outcome.summary()
    assert outcome.devices_restarted == [] and outcome.outputs_restarted == []
    assert await asyncio.to_thread(get_status, outcome.api) is not None
    assert await asyncio.to_thread(get_status, old_url) is None
    await asyncio.sleep(0.5)
    gaps = [(b - a) / 1e6 for a, b in zip(rec.ts, rec.ts[1:], strict=False)]
    assert len(gaps) > 5 and max(gaps) < 250, f"polling paused for {max(gaps):.0f} ms while the API moved"


async def test_a_moved_data_dir_is_refused_by_name(make_site, tmp_path):
    site = await make_site(config())
    path = site.loaded.path
    path.write_text(path.read_text().replace(f"data_dir: {tmp_path}/data", f"data_dir: {tmp_path}/elsewhere"))
    outcome = await reload_appliance(site.app, path, "test")
    assert outcome.result == "refused" and "runtime.data_dir changed" in outcome.reason, outcome.reason
    assert "restart the appliance" in outcome.reason
    assert site.app.loaded.data_dir == tmp_path / "data"


async def test_runtime_settings_apply_in_place(make_site):
    site = await make_site(config())
    app = site.app
    assert await wait_until(lambda: site.diag("a").polls_ok >= 2, 5)
    runners = {name: rt.runtime for name, rt in app.devices.items()}
    path = site.loaded.path
    path.write_text(path.read_text().replace("status_interval_s: 0.2}", "status_interval_s: 0.3, "
                                             "stats_window_s: 30, audit_max_bytes: 100000, audit_backups: 2}"))
    outcome = await reload_appliance(app, path, "test")
    assert outcome.result == "applied", outcome.reason
    assert set(outcome.runtime_changed) == {"status_interval_s", "stats_window_s", "audit_max_bytes", "audit_backups"}
    assert "runtime applied: " in outcome.summary()
    # a new statistics window restarts the devices (their latency windows are built with it)
    assert sorted(outcome.devices_restarted) == ["a", "b", "s"]
    assert all(app.devices[n].runtime is not runners[n] for n in runners)
    audit = app.writes.audit
    assert audit is not None and (audit.max_bytes, audit.backups) == (100000, 2)
    ok = site.diag("a").polls_ok
    assert await wait_until(lambda: site.diag("a").polls_ok > ok + 2, 5)
