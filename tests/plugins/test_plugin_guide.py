"""Follows plugins/README.md literally: ``edge plugin new``, the guide's edits to manifest.yaml
and points.yaml (read from the guide itself, so test and guide cannot drift apart), ``edge plugin
check``, then the guide's site snippet served by the simulator on a socat serial line and polled
by the appliance."""
from __future__ import annotations

import re
import struct
from pathlib import Path

from harness import wait_until
from pluginsupport import REPO, edge, tag_lines

from edge.core.model import Quality

GUIDE = REPO / "plugins" / "README.md"


def guide_block(marker: str) -> str:
    """The ```yaml block that follows ``<!-- guide-example: MARKER -->`` in the guide."""
    m = re.search(rf"<!-- guide-example: {marker} -->\n```yaml\n(.*?)```", GUIDE.read_text(), re.S)
    assert m, f"plugins/README.md has no example block {marker!r}"
    return m.group(1)


def guide_plugin_name() -> str:
    m = re.search(r"^    edge plugin new (\w+)$", GUIDE.read_text(), re.M)
    assert m, "the guide tells the technician to run 'edge plugin new NAME'"
    return m.group(1)


def edit_manifest(path: Path, block: str) -> None:
    """Step 3: change each line of the manifest whose key the guide's block lists."""
    lines = path.read_text().splitlines()
    for new in block.strip().splitlines():
        key = new.split(":", 1)[0]
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{key}:")]
        assert len(hits) == 1, f"the template's manifest.yaml has {len(hits)} '{key}:' lines"
        lines[hits[0]] = new
    path.write_text("\n".join(lines) + "\n")


def edit_points(path: Path, block: str) -> None:
    """Step 4: keep the comment block, replace from the line 'order: ABCD' to the end."""
    lines = path.read_text().splitlines()
    assert lines.count("order: ABCD") == 1, "the template's points.yaml has one 'order: ABCD' line"
    start = lines.index("order: ABCD")
    assert all(line.startswith("#") or not line.strip() for line in lines[:start])
    path.write_text("\n".join(lines[:start]) + "\n" + block)


async def test_following_the_guide_gives_a_working_device(make_site, tmp_path: Path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    name = guide_plugin_name()
    code, out = await edge("plugin", "new", name, "--dir", str(plugins))
    assert code == 0, out
    folder = plugins / name
    assert f"created {folder}" in out and "next steps" in out

    edit_manifest(folder / "manifest.yaml", guide_block("manifest"))
    edit_points(folder / "points.yaml", guide_block("points"))
    assert "delete `plugins/my_lumasmart/hooks.py`".replace("my_lumasmart", name) in GUIDE.read_text()
    (folder / "hooks.py").unlink()

    code, out = await edge("plugin", "check", name, "--dir", str(plugins))
    assert code == 0, out
    rows = tag_lines(out)
    assert rows["temperature_ch1"] == ("36.5 degC", "Good", "float32", "input 0..1 CDAB")
    assert rows["signal_ch2"] == ("91.0", "Good", "float32", "input 6..7 CDAB")  # full precision: the float as it reads back (issue 16)
    assert rows["relay1_alarm_setpoint"] == ("35 degC", "Good", "int16", "holding 65")
    assert rows["ch1_enabled"] == ("true", "Good", "bool", "holding 148 bit 0")
    assert rows["ch2_enabled"] == ("false", "Good", "bool", "holding 148 bit 1")
    assert f"{name}: OK: 9 of 9 tags Good" in out

    (folder / "sample.yaml").write_text(guide_block("site"))
    assert f"`plugins/{name}/sample.yaml`" in GUIDE.read_text()
    site_block = (folder / "sample.yaml").read_text().replace("port: /dev/ttyUSB0", "port: '{tmp}/ttyGuide'")
    site = await make_site(f"site: {{name: guide}}\nplugins_dir: '{plugins}'\n{site_block}")
    ids = [site.tag_id("hotspot_tx1", t) for t in ("temperature_ch1", "signal_ch1", "temperature_ch2",
                                                    "relay1_restore_setpoint", "ch1_enabled", "ch2_enabled")]
    assert await wait_until(lambda: bool((site.app.store.quality[ids] == Quality.GOOD).all()), 15)
    assert site.value("hotspot_tx1", "temperature_ch1")[0] == 36.5
    assert site.value("hotspot_tx1", "temperature_ch2")[0] == 41.25
    assert site.value("hotspot_tx1", "signal_ch1")[0] == 87.5
    assert site.value("hotspot_tx1", "relay1_restore_setpoint")[0] == 25
    assert [site.value("hotspot_tx1", t)[0] for t in ("ch1_enabled", "ch2_enabled")] == [1.0, 0.0]
    # on the wire the float is low word first, as the datasheet says ("Float CD AB")
    high, low = struct.unpack(">HH", struct.pack(">f", 36.5))
    assert site.sim.get_registers("hotspot_tx1", "input", 0, 2) == [low, high]
    # the set point the guide made writable can be written through the appliance
    result = await site.app.writes.write(site.tag_id("hotspot_tx1", "relay1_alarm_setpoint"), 40)
    assert result.ok, result.message
    assert site.sim.get_registers("hotspot_tx1", "holding", 65, 1) == [40]
    assert result.read_back == 40
