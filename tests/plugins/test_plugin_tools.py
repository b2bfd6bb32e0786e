"""``edge plugin new``, ``list`` and ``check`` on their error paths, run as real child processes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pluginsupport import PLUGINS, copy_plugin, edge, tag_lines


async def test_new_copies_the_template_fills_the_id_and_refuses_to_overwrite(tmp_path: Path):
    code, out = await edge("plugin", "new", "acme_pm3000", "--dir", str(tmp_path))
    assert code == 0, out
    folder = tmp_path / "acme_pm3000"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "hooks.py", "manifest.yaml", "points.yaml",
                                                          "sample.yaml"]
    assert re.search(r"^id: acme_pm3000 ", (folder / "manifest.yaml").read_text(), re.M)
    assert "plugin: acme_pm3000" in (folder / "sample.yaml").read_text()
    assert "_template" not in "".join(p.read_text() for p in folder.iterdir())
    assert "edge plugin check acme_pm3000" in out
    code, check = await edge("plugin", "check", "acme_pm3000", "--dir", str(tmp_path))
    assert code == 0, check  # the fresh copy works as it is

    (folder / "points.yaml").write_text("# my edits\n")
    code, out = await edge("plugin", "new", "acme_pm3000", "--dir", str(tmp_path))
    assert code == 1 and "already exists: not overwriting" in out
    assert (folder / "points.yaml").read_text() == "# my edits\n"

    code, out = await edge("plugin", "new", "Bad-Name", "--dir", str(tmp_path))
    assert code == 2 and "lower-case letters" in out and not (tmp_path / "Bad-Name").exists()


async def test_list_shows_one_line_per_plugin_and_broken_ones_with_their_error(tmp_path: Path):
    copy_plugin("eastron_sdm630", tmp_path)
    copy_plugin("schneider_atv320", tmp_path)
    broken = copy_plugin("xymd02_th", tmp_path, "broken_th")
    (broken / "points.yaml").write_text("points:\n  - {name: t, address: 1, type: float33}\n")
    code, out = await edge("plugin", "list", "--dir", str(tmp_path))
    assert code == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 4 and lines[-1] == f"3 plugin(s) in {tmp_path}, 1 broken"
    assert re.match(r"^broken_th\s+BROKEN\s+plugin 'broken_th' is broken: .*points\.yaml:2: .*type", lines[0])
    assert re.match(r"^eastron_sdm630\s+1\.0\s+Eastron\s+SDM630-Modbus V2\s+34 points\s+0 derived\s+modbus$",
                    lines[1])
    assert re.match(r"^schneider_atv320\s+1\.0\s+Schneider Electric\s+ATV320\s+15 points\s+2 derived\s+modbus$",
                    lines[2])


async def test_list_of_the_shipped_plugins_is_clean():
    code, out = await edge("plugin", "list", "--dir", str(PLUGINS))
    assert code == 0, out
    assert "BROKEN" not in out and "lumasense_lumasmart" in out


@pytest.mark.parametrize(("file", "text", "expected"), [
    ("manifest.yaml", "id: bad_plugin\nname: x\nversion: '1.0'\nvendor: v\n", r"manifest\.yaml:1: .*model"),
    ("points.yaml", "points:\n  - {name: t, address: 1, type: int16\n", r"points\.yaml:\d+: .*"),
    ("hooks.py", "from edge.plugin_api import hook\n\n@hook\ndef cia402_state(w)\n    return 1\n",
     r"hooks\.py:4: syntax error"),
])
async def test_check_reports_a_broken_plugin_with_file_and_line(tmp_path: Path, file: str, text: str, expected: str):
    folder = copy_plugin("schneider_atv320", tmp_path, "bad_plugin")
    (folder / file).write_text(text)
    code, out = await edge("plugin", "check", "bad_plugin", "--dir", str(tmp_path))
    assert code == 1, out
    assert re.search(expected, out), out
    assert "polling" not in out


async def test_check_shows_a_hook_that_raises_as_bad_configuration_and_fails(tmp_path: Path):
    folder = copy_plugin("schneider_atv320", tmp_path, "raising_hook")
    hooks = folder / "hooks.py"
    hooks.write_text(hooks.read_text().replace('    """Motor current in percent of the motor\'s nominal current (NCR)."""',
                                               '    """Broken on purpose."""\n    raise ZeroDivisionError("boom")'))
    code, out = await edge("plugin", "check", "raising_hook", "--dir", str(tmp_path))
    assert code == 1, out
    rows = tag_lines(out)
    assert rows["motor_load"][1:] == ("Bad_ConfigurationError", "derived", "current_share(motor_current, nominal_current)")
    assert rows["drive_state"][1] == "Good" and rows["motor_current"][1] == "Good"
    assert "hook current_share of raising_hook.motor_load raised ZeroDivisionError: boom" in out
    assert "raising_hook: FAILED: 16 of 17 tags Good" in out


async def test_check_of_a_missing_plugin_names_the_available_ones(tmp_path: Path):
    copy_plugin("xymd02_th", tmp_path)
    code, out = await edge("plugin", "check", "nope", "--dir", str(tmp_path))
    assert code == 1 and "no plugin 'nope'" in out and "available: xymd02_th" in out


async def test_check_reports_a_bad_simulator_hint_with_file_and_line(tmp_path: Path):
    folder = copy_plugin("xymd02_th", tmp_path)
    points = folder / "points.yaml"
    points.write_text(points.read_text().replace("sim: {kind: constant, value: 0}}", "sim: {kind: wobble}}", 1))
    code, out = await edge("plugin", "check", "xymd02_th", "--dir", str(tmp_path))
    assert code == 1, out
    assert re.search(r"points\.yaml:8: error: points\[2\]\.sim: simulator hint of 'temperature_correction': "
                     r"kind: Input should be 'sine'", out), out


async def test_new_and_check_use_the_plugins_folder_of_the_current_directory(tmp_path: Path):
    (tmp_path / "plugins").mkdir()
    code, out = await edge("plugin", "new", "site_meter", cwd=tmp_path)
    assert code == 0, out
    assert (tmp_path / "plugins" / "site_meter" / "manifest.yaml").is_file()
    assert "  3. edge plugin check site_meter\n" in out
    code, out = await edge("plugin", "check", "site_meter", cwd=tmp_path)
    assert code == 0 and "site_meter: OK: 7 of 7 tags Good" in out, out
