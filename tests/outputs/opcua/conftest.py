"""Fixtures of the OPC UA tests: users, a PKI, a running server on a free port."""
from __future__ import annotations

from pathlib import Path

import opcua_helpers
import pytest
from opcua_helpers import PASSWORDS, config, make_plant

from edge.outputs.opcua.server import OpcUaServer
from edge.security.pki import create_server_certificate
from edge.security.users import add_user


@pytest.fixture(params=["fast", "plain"])
def opcua_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The value path of the servers a test builds with config() (``outputs.opcua.fast_path``).

    Modules whose outcome depends on the path (value delivery, notification encoding) run every
    test on both: ``pytestmark = pytest.mark.usefixtures("opcua_path")`` (requested before the
    other fixtures, so ``running`` is built on the chosen path)."""
    monkeypatch.setattr(opcua_helpers, "FAST_PATH", request.param == "fast")
    return str(request.param)


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    add_user(path, "olga", "operator", PASSWORDS["olga"])
    add_user(path, "victor", "viewer", PASSWORDS["victor"])
    return path


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    pki = tmp_path / "pki"
    create_server_certificate(pki, "urn:edge:opcua-server", "127.0.0.1")
    return pki


@pytest.fixture
async def running(users_file: Path):
    """A started server for make_plant() with SecurityPolicy None (user logins still required)."""
    plant = make_plant()
    srv = OpcUaServer(plant, config(users_file))
    await srv.start()
    assert srv.publisher.fast == opcua_helpers.FAST_PATH
    try:
        yield srv
    finally:
        await srv.stop()
