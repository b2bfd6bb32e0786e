"""A broken plugin takes down only its own devices: syntax errors, missing keys, hooks that raise,
return nonsense or run too long. Every other device keeps polling."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from harness import wait_until

from edge.core.model import DeviceState, Quality

MANIFEST = "id: p\nname: Test device\nversion: '1.0'\nvendor: ACME\nmodel: T1\n"
POINTS = """
points:
  - {name: raw, address: 0, type: uint16, sim: {kind: constant, value: 21}}
derived:
  - {name: doubled, inputs: [raw], hook: double}
"""
GOOD_HOOKS = "from edge.plugin_api import hook\n\n@hook\ndef double(x):\n    return 2 * x\n"


def site_config(plugins: Path) -> str:
    return f"""
site: {{name: t}}
plugins_dir: {plugins}
buses: [{{name: rs485, type: modbus_rtu, port: '{{tmp}}/ttyI', baud: 38400, timeout_ms: 100}}]
devices:
  - {{name: good, bus: rs485, unit_id: 1, interval_ms: 100, points: [{{name: v, address: 0, sim: {{kind: constant, value: 5}}}}]}}
  - {{name: dev_x, bus: rs485, unit_id: 2, interval_ms: 100, plugin: p}}
"""


def make_plugin(tmp_path: Path, manifest: str = MANIFEST, points: str = POINTS, hooks: str = GOOD_HOOKS) -> Path:
    folder = tmp_path / "plugins" / "p"
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(manifest)
    (folder / "points.yaml").write_text(points)
    (folder / "hooks.py").write_text(hooks)
    return folder.parent


async def start_with_broken_plugin(make_site, tmp_path, **plugin):
    """The simulator serves dev_x from a good copy; the appliance loads the broken one."""
    good_plugins = make_plugin(tmp_path / "good")
    site = await make_site(site_config(good_plugins), start_app=False)
    await site.app.stop()
    broken = make_plugin(tmp_path / "broken", **plugin)
    path = site.loaded.path
    path.write_text(path.read_text().replace(str(good_plugins), str(broken)))
    from edge.config.loader import load_config
    from edge.runtime.app import Appliance

    loaded = load_config(path, strict_plugins=False)
    app = Appliance(loaded)
    await app.start()
    return site, app


@pytest.mark.parametrize("broken", [
    {"hooks": "from edge.plugin_api import hook\n\n@hook\ndef double(x)\n    return 2 * x\n"},
    {"manifest": "id: p\nname: Test device\nversion: '1.0'\nmodel: T1\n"},
    {"points": POINTS.replace("type: uint16", "type: uint17")},
    {"hooks": "import no_such_module\n"},
], ids=["syntax_error", "missing_key", "bad_type", "import_error"])
async def test_plugin_that_fails_to_load_quarantines_only_its_devices(make_site, tmp_path, broken):
    site, app = await start_with_broken_plugin(make_site, tmp_path, **broken)
    try:
        assert await wait_until(lambda: app.devices["good"].diag.polls_ok >= 3, 5)
        x = app.devices["dev_x"].diag
        assert x.state == DeviceState.QUARANTINED
        assert "plugin 'p' is broken" in x.last_error
        assert app.store.get(app.plant.tag_by_key()["good.v"].id) [:2] == (5.0, Quality.GOOD)
        assert app.devices["dev_x"].runtime is None
    finally:
        await app.stop()


@pytest.mark.parametrize("body, problem", [
    ("    raise ValueError('sensor says no')\n", "raised ValueError: sensor says no"),
    ("    return 'twenty'\n", "returned 'twenty'"),
    ("    return float('nan')\n", "returned nan"),
])
async def test_hook_that_misbehaves_fails_only_its_tag(make_site, tmp_path, caplog, body, problem):
    hooks = "from edge.plugin_api import hook\n\n@hook\ndef double(x):\n" + body
    caplog.set_level(logging.ERROR, logger="edge.hooks")
    site = await make_site(site_config(make_plugin(tmp_path, hooks=hooks)))
    await _only_the_hook_tag_fails(site, caplog, problem)


async def test_fractional_result_of_an_int64_hook_is_refused_not_truncated(make_site, tmp_path, caplog):
    """Issue 14: a derived int64 tag whose hook returned 52.5 was served as 52 (int(val) in the
    OPC UA path). An engineering value is never cut: the tag is Bad_ConfigurationError, saying why."""
    points = POINTS.replace("hook: double}", "hook: double, type: int64}")
    hooks = "from edge.plugin_api import hook\n\n@hook\ndef double(x):\n    return x * 2.5\n"
    caplog.set_level(logging.ERROR, logger="edge.hooks")
    site = await make_site(site_config(make_plugin(tmp_path, points=points, hooks=hooks)))
    await _only_the_hook_tag_fails(site, caplog, "returned 52.5 for an int64 tag")


async def test_float64_hook_keeps_its_decimals(make_site, tmp_path):
    hooks = "from edge.plugin_api import hook\n\n@hook\ndef double(x):\n    return x * 0.1\n"
    site = await make_site(site_config(make_plugin(tmp_path, hooks=hooks)))
    app = site.app
    assert await wait_until(lambda: app.devices["dev_x"].diag.polls_ok >= 2, 5)
    tag = app.plant.tag_by_key()["dev_x.doubled"]
    assert tag.dtype == "float64"
    assert await wait_until(lambda: app.store.get(tag.id)[1] == Quality.GOOD, 5)
    assert app.store.get(tag.id)[0] == 21 * 0.1


async def _only_the_hook_tag_fails(site, caplog, problem: str) -> None:
    app = site.app
    # hooks run off the loop: a poll's hook result (and its error count) lands just after the poll
    assert await wait_until(lambda: app.devices["dev_x"].diag.polls_ok >= 5 and app.devices["dev_x"].diag.hook_errors >= 5, 5)
    tags = app.plant.tag_by_key()
    assert app.store.get(tags["dev_x.doubled"].id)[1] == Quality.BAD_CONFIG_ERROR
    assert app.store.get(tags["dev_x.raw"].id)[:2] == (21.0, Quality.GOOD)
    assert app.store.get(tags["good.v"].id)[:2] == (5.0, Quality.GOOD)
    diag = app.devices["dev_x"].diag
    assert diag.state == DeviceState.ONLINE and diag.hook_errors >= 5
    assert problem in diag.last_error
    logged = [r for r in caplog.records if problem in r.getMessage()]
    assert len(logged) == 1  # logged once, counted every time


async def test_slow_hook_is_reported_then_disabled(make_site, tmp_path, caplog):
    """A hook over its budget is reported (its value kept); five overruns in a row disable it: its
    tag goes Bad_ConfigurationError saying why, and it is not called again (issue 17)."""
    hooks = ("import time\nfrom edge.plugin_api import hook\n\n@hook(budget_ms=1)\ndef double(x):\n"
             "    time.sleep(0.005)\n    return 2 * x\n")
    caplog.set_level(logging.WARNING, logger="edge.hooks")
    site = await make_site(site_config(make_plugin(tmp_path, hooks=hooks)))
    app = site.app
    tag = app.plant.tag_by_key()["dev_x.doubled"]
    diag = app.devices["dev_x"].diag
    assert await wait_until(lambda: app.store.get(tag.id)[:2] == (42.0, Quality.GOOD), 5)  # slow, still served
    assert await wait_until(lambda: diag.hooks_disabled == 1, 5)
    assert await wait_until(lambda: app.store.get(tag.id)[1] == Quality.BAD_CONFIG_ERROR, 2)
    assert "disabled: took longer than its budget 5 times in a row" in diag.last_error
    slow = diag.hook_slow
    await wait_until(lambda: False, 0.5)
    assert diag.hook_slow == slow == 5  # not called again
    assert any("took" in r.getMessage() and "budget 1.0 ms" in r.getMessage() for r in caplog.records)
    assert app.store.get(app.plant.tag_by_key()["dev_x.raw"].id)[:2] == (21.0, Quality.GOOD)


EXIT_HOOKS = "import sys\nfrom edge.plugin_api import hook\n\n@hook\ndef double(x):\n    sys.exit(3)\n"
SLEEPY_HOOKS = ("import time\nfrom edge.plugin_api import hook\n\n@hook\ndef double(x):\n"
                "    time.sleep(0.5)\n    return 2 * x\n")


def good_p99_ms(app, seconds_of_samples: int) -> float:
    poller = app.devices["good"].runtime.poller
    n = min(poller._latency_n, len(poller._latency))
    samples = np.sort(poller._latency[:n])
    assert n >= seconds_of_samples * 5, n
    return float(samples[int(0.99 * (n - 1))]) * 1e3


@pytest.mark.parametrize("hooks", [EXIT_HOOKS, SLEEPY_HOOKS], ids=["sys_exit", "sleep_0_5_s"])
async def test_hook_cannot_stop_or_stall_the_appliance(make_site, tmp_path, hooks):
    """Before: sys.exit() in a hook ended the appliance; a 0.5 s hook ran on the event loop and
    pushed another device's p99 from 22 to 508 ms. Now hooks run off the loop with an enforced
    budget: the appliance runs on, the hook is disabled (its tag Bad_ConfigurationError), the other
    device's p99 stays within 2x of its normal (the same site with a well-behaved hook)."""
    site = await make_site(site_config(make_plugin(tmp_path / "ok")))
    app = site.app
    assert await wait_until(lambda: app.devices["good"].diag.polls_ok >= 5, 5)
    await wait_until(lambda: False, 3.0)
    normal = good_p99_ms(app, 3)
    await app.stop()
    from edge.config.loader import load_config
    from edge.runtime.app import Appliance

    bad = make_plugin(tmp_path / "bad", hooks=hooks)
    path = site.loaded.path
    path.write_text(path.read_text().replace(str(tmp_path / "ok" / "plugins"), str(bad)))
    app = site.app = Appliance(load_config(path, strict_plugins=False))
    await app.start()
    try:
        diag = app.devices["dev_x"].diag
        tag = app.plant.tag_by_key()["dev_x.doubled"]
        assert await wait_until(lambda: diag.hooks_disabled == 1, 6), diag.last_error
        assert await wait_until(lambda: app.store.get(tag.id)[1] == Quality.BAD_CONFIG_ERROR, 2)
        assert "disabled" in diag.last_error
        await wait_until(lambda: False, 3.0)
        assert app.devices["good"].task is not None and not app.devices["good"].task.done()
        assert app.store.get(app.plant.tag_by_key()["good.v"].id)[:2] == (5.0, Quality.GOOD)
        assert app.store.get(app.plant.tag_by_key()["dev_x.raw"].id)[:2] == (21.0, Quality.GOOD)
        p99 = good_p99_ms(app, 3)
        # floor 100 ms: the suite's parallel workers on 2 cores put scheduling noise on any p99 (88.5 ms
        # against a normal 25.8 ms in one loaded run); the defect this guards against (a 0.5 s hook on
        # the loop) gave 508 ms, over twice the bound
        assert p99 <= 2 * max(normal, 100.0), f"good device p99 {p99:.1f} ms, normal {normal:.1f} ms"
    finally:
        await app.stop()


async def test_hook_input_gone_bad_propagates_its_quality(make_site, tmp_path):
    site = await make_site(site_config(make_plugin(tmp_path)))
    app = site.app
    tags = app.plant.tag_by_key()
    assert await wait_until(lambda: app.store.get(tags["dev_x.doubled"].id)[:2] == (42.0, Quality.GOOD), 5)
    site.sim.set_fault("dev_x", "silence")
    assert await wait_until(
        lambda: app.store.get(tags["dev_x.doubled"].id)[1] in (Quality.BAD_COMM_ERROR, Quality.BAD_NO_COMMUNICATION), 5)
    assert app.devices["dev_x"].diag.hook_errors == 0
