"""Building the appliance for a large site: the tag table is walked a fixed number of times.

Every device's build (its tag ids, and each writable point's write registration) scanned the
whole tag table: devices x (1 + writable points) x tags steps at start and again on every reload.
500 devices x 100 tags with 5 writable points each took 4.6 s to build instead of 1.9 s, and it
grew with the square of the site. The walks are counted (not timed): they must not depend on how
many devices or writable points there are.
"""
from __future__ import annotations

from pathlib import Path

from edge.config.loader import load_config
from edge.core.model import TagInfo
from edge.runtime.app import Appliance


class CountingTags(list[TagInfo]):
    """The plant's tag table, counting how often it is walked from the start."""

    walks = 0

    def __iter__(self):
        CountingTags.walks += 1
        return super().__iter__()


def site(folder: Path, devices: int, tags: int, writable: int) -> Path:
    lines = ["site: {name: build}", "buses: [{name: net, type: modbus_tcp, host: 127.0.0.1, timeout_ms: 500}]",
             f"runtime: {{data_dir: {folder}, log_level: warning}}", "devices:"]
    for d in range(devices):
        lines.append(f"  - name: dev{d}\n    bus: net\n    port: {20000 + d}\n    interval_ms: 1000\n    points:")
        lines += [f"      - {{name: t{k}, address: {2 * k}, type: float32{', writable: true' if k < writable else ''}}}"
                  for k in range(tags)]
    path = folder / "site.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def walks_to_build(folder: Path, devices: int, writable: int) -> tuple[int, Appliance]:
    loaded = load_config(site(folder, devices, 10, writable))
    loaded.plant.tags = CountingTags(loaded.plant.tags)
    CountingTags.walks = 0
    app = Appliance(loaded, audit=False, outputs=False)
    return CountingTags.walks, app


def test_the_tag_table_is_walked_the_same_number_of_times_for_any_number_of_devices(tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small, _ = walks_to_build(tmp_path / "small", devices=2, writable=0)
    large, app = walks_to_build(tmp_path / "large", devices=30, writable=4)
    assert large == small, f"30 devices with writable points walked the tag table {large} times, 2 devices {small}"
    # and the build is still right: every writable point of every device takes writes, the others do not
    for d in (0, 29):
        ids = app.plant.device(f"dev{d}").tag_ids
        assert [app.writes.targets.get(i) is not None for i in ids] == [k < 4 for k in range(10)]
