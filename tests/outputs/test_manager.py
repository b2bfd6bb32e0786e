"""The outputs manager (edge/outputs/manager.py) across a configuration reload."""
from __future__ import annotations

import asyncio
import time

from harness import wait_until

from edge.config.loader import load_config
from edge.storage.spool import KIND_WINDOWS, decode_windows


def site(first: str, second: str) -> str:
    """Two devices with one aggregated constant each; their order decides the tag ids."""
    devices = {
        "a": "{name: x, address: 0, sim: {kind: constant, value: 1}, aggregate: {windows: [1s], grace_ms: 0}}",
        "b": "{name: z, address: 0, sim: {kind: constant, value: 3}, aggregate: {windows: [1s], grace_ms: 0}}",
    }
    text = "site: {name: t}\nbuses: [{name: net, type: modbus_tcp, timeout_ms: 80}]\ndevices:\n"
    for name in (first, second):
        text += f"  - {{name: {name}, bus: net, port: {{port:{name}}}, interval_ms: 100, points: [{devices[name]}]}}\n"
    # windows close only when the test says so: at the reload (the periodic collection is a minute away)
    return text + "outputs: {aggregator: {collect_interval_ms: 60000}}\n"


def spooled_window_means(spool) -> dict[str, list[float]]:
    """Every spooled 1 s window's mean by tag key, decoded with the plant version it was stored under."""
    spool.flush(5)
    means: dict[str, list[float]] = {}
    for row in spool.rows(KIND_WINDOWS, "1s", 0, time.time_ns() + 10**9):
        tags = spool.plant_tags(row.plant)
        wb = decode_windows(row.blob, row.source)
        for tid, mean in zip(wb.tag_ids.tolist(), wb.stats["mean"].tolist(), strict=True):
            means.setdefault(f"{tags.device[tid]}.{tags.name[tid]}", []).append(mean)
    return means


async def test_windows_closed_by_a_reload_are_stored_under_their_own_tags(make_site, held_ports) -> None:
    """Regression (issue 18): Outputs.reload switched the spool to the new plant before closing the
    windows of the old one, so windows closed at a reload that renumbers tags were stored under the
    new plant's ids: a.x's windows (mean 1) came back as b.z's, and b.z's as a.x's."""
    s = await make_site(site("a", "b"))
    app = s.app
    assert (s.tag_id("a", "x"), s.tag_id("b", "z")) == (0, 1)
    assert await wait_until(lambda: all(rt.diag.polls_ok >= 2 for rt in app.devices.values()), 5)
    await asyncio.sleep(1.2)  # at least one whole 1 s window of each tag has ended, none is collected yet
    assert spooled_window_means(app.outputs.spool) == {}
    # same devices, other order: the tags swap ids; the runtime section make_site added stays (a
    # reload without it would also move the data dir, and so the spool, to the default place)
    runtime = s.loaded.path.read_text().split("\nruntime:", 1)[1]
    s.loaded.path.write_text(held_ports.fill(site("b", "a")) + "\nruntime:" + runtime)
    new = load_config(s.loaded.path)
    assert (new.plant.tag_by_key()["a.x"].id, new.plant.tag_by_key()["b.z"].id) == (1, 0)
    report = await app.reload(new)
    assert report["kept"] == ["b", "a"]
    means = spooled_window_means(app.outputs.spool)
    assert set(means) == {"a.x", "b.z"}, means
    assert set(means["a.x"]) == {1.0} and set(means["b.z"]) == {3.0}, means


async def test_stopping_outputs_that_never_started_does_not_wait_for_the_spool(make_site) -> None:
    """Regression: an appliance built but never started (as `edge read` and `edge write` build it) took
    5 s to stop: Outputs.stop appended a health record and waited its whole timeout for a spool writer
    thread that never ran. Stopping what never started has nothing to flush."""
    s = await make_site(site("a", "b"), start_app=False)
    t0 = time.monotonic()
    await s.app.stop(timeout_s=5.0)
    assert time.monotonic() - t0 < 2.0
    assert s.app.outputs.spool.stats()["appended_points"] == 0
