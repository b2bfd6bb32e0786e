"""Fixtures shared by the whole suite: a site built from YAML text, served by the real simulator
(pymodbus servers on loopback TCP ports and socat serial pairs) and polled by the real appliance."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.modbus.sim.plant import SimPlant
from drivers.modbus.simulation import plant_specs
from edge.config.loader import LoadedConfig, load_config
from edge.runtime.app import Appliance

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # fault tests provoke errors on purpose
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_log_handlers_left_behind():
    """A command run in-process (``edge.cli.main.main``) sets up logging to the sys.stderr of its test;
    pytest closes that stream afterwards, and later tests' log records would hit it."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


@dataclass
class Site:
    loaded: LoadedConfig
    sim: SimPlant
    app: Appliance

    def value(self, device: str, tag: str):
        tag_id = self.loaded.plant.tag_by_key()[f"{device}.{tag}"].id
        return self.app.store.get(tag_id)

    def diag(self, device: str):
        return self.app.devices[device].diag

    def tag_id(self, device: str, tag: str) -> int:
        return self.loaded.plant.tag_by_key()[f"{device}.{tag}"].id


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[Callable]:
    """``site = await make_site(yaml_text, start_app=True)``: simulator + appliance for a config.

    ``{tmp}`` in the text is replaced by a temporary folder (serial pty paths, data dir).
    """
    started: list[tuple[SimPlant, Appliance]] = []

    async def make(text: str, start_app: bool = True) -> Site:
        path = tmp_path / "edge.yaml"
        text = text.replace("{tmp}", str(tmp_path))
        if "runtime:" not in text:
            text += f"\nruntime: {{data_dir: {tmp_path}/data, status_interval_s: 0.2}}\n"
        path.write_text(text)
        loaded = load_config(path)
        sim = SimPlant(plant_specs(loaded))
        await sim.start()
        app = Appliance(loaded)
        started.append((sim, app))
        if start_app:
            await app.start()
        return Site(loaded, sim, app)

    yield make
    for sim, app in started:
        await app.stop()
        await sim.stop()
