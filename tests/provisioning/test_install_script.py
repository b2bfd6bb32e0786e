"""provisioning/install.sh in a scratch root: a dedicated virtual environment under PREFIX, the appliance
installed from the checkout (then upgraded from a wheel), the systemd unit in ROOT/etc/systemd/system
passing `systemd-analyze verify`, the installed `edge` checking the demo and provisioning a site, and
a service user created inside the scratch root's own /etc; and the wheel pip builds from a fresh clone
(its compiled extensions). One module, so that one test worker builds that wheel (``fresh_clone_wheel``,
session-scoped per worker) and installs the checkout once (``installed``): pytest-xdist keeps a
module's tests together (``--dist loadscope``, provisioning/test.sh)."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "provisioning" / "install.sh"
DEMO = REPO / "provisioning" / "sites" / "demo" / "edge.yaml"
UNIT = "edge-appliance.service"

# slow: collected first (tests/conftest.py). The module fixture installs the checkout into a fresh venv
# (pip with build isolation compiles the extensions): 140 s alone, 250 s beside the parallel workers, and
# once more than the suite's 300 s per test on a loaded machine; its own commands are bounded (sh: 400 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def sh(*args: str | Path, timeout: float = 400, env: dict | None = None) -> subprocess.CompletedProcess:
    # cwd "/": never the checkout, whose edge/ and drivers/ would shadow the installed ones
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd="/")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("install")
    prefix, root = base / "opt" / "edge", base / "root"
    r = sh("bash", INSTALL, "--prefix", prefix, "--root", root, "--no-user", "--config", DEMO)
    assert r.returncode == 0, r.stdout + r.stderr
    return {"prefix": prefix, "root": root, "base": base, "stdout": r.stdout}


def unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """The unit as data: section -> key -> every value it is given (DeviceAllow repeats)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_installed_edge_runs_from_its_own_virtual_environment(installed):
    venv = installed["prefix"] / "venv"
    assert (venv / "bin" / "python").exists() and (venv / "pyvenv.cfg").exists()
    r = sh(venv / "bin" / "edge", "--help")
    assert r.returncode == 0 and "provision" in r.stdout and "fleet" in r.stdout
    where = sh(venv / "bin" / "python", "-c", "import edge, drivers; print(edge.__file__); print(drivers.__file__)")
    files = where.stdout.split()
    assert all(f.startswith(str(venv)) for f in files), files  # not the checkout
    check = sh(venv / "bin" / "edge", "check", DEMO)
    assert check.returncode == 0, check.stderr
    assert "configuration OK" in check.stdout and "6 devices" in check.stdout
    doctor = sh(venv / "bin" / "edge", "doctor")  # the service gets the compiled hot path, not the fallbacks
    for line in ("ok   aggregator implementation: cython", "ok   Modbus block decoder: compiled",
                 "ok   latest-value store: compiled", "ok   OPC UA change detection: compiled",
                 "ok   line protocol encoder: compiled"):
        assert line in doctor.stdout, doctor.stdout


def test_the_runtime_install_has_the_real_urllib3_and_the_pinned_libraries(installed):
    """`pip install CHECKOUT` (install.sh) into a fresh venv: no urllib3 replacement (urllib3-future, pulled by
    niquests, replaces urllib3's files: the InfluxDB forwarder would run on a fork); pymodbus at the tested
    minor version; the Grafana SDK only with the [grafana] extra, and `edge grafana` says so in one line."""
    venv = installed["prefix"] / "venv"
    listed = sh(venv / "bin" / "python", "-m", "pip", "list", "--format=json", "--disable-pip-version-check")
    assert listed.returncode == 0, listed.stderr
    versions = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    assert not {"urllib3-future", "niquests", "grafana-client"} & set(versions), sorted(versions)
    assert "urllib3" in versions and versions["pymodbus"].startswith("3.16."), versions
    assert versions["asyncua"].startswith("2.1."), versions
    # the forwarder posts through urllib3 and compresses with ISA-L: influxdb-client (12 MB of imports) is
    # only the benchmarks' baseline
    assert "isal" in versions and "influxdb-client" not in versions and "influxdb_client" not in versions, versions
    assert "grafana-foundation-sdk" not in versions and "grafana_foundation_sdk" not in versions
    where = sh(venv / "bin" / "python", "-c", "import urllib3, importlib.metadata as m; "
               "print(m.distribution('urllib3').read_text('RECORD').count('urllib3/__init__.py'), urllib3.__version__)")
    assert where.stdout.split() == ["1", versions["urllib3"]], where.stdout + where.stderr
    out = installed["base"] / "grafana-out"
    r = sh(venv / "bin" / "edge", "grafana", "build", DEMO, "--out", out)
    assert r.returncode == 1 and not out.exists(), r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "grafana-foundation-sdk" in r.stderr, r.stderr
    assert "pip install 'ot-edge-appliance[grafana]'" in r.stderr and "Traceback" not in r.stderr
    doctor = sh(venv / "bin" / "edge", "doctor")
    assert "ok   urllib3 is the real one" in doctor.stdout, doctor.stdout


def test_the_shipped_plugins_are_installed_and_a_site_using_them_checks(installed):
    plugins = installed["prefix"] / "plugins"
    shipped = sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "manifest.yaml").exists())
    assert shipped and all((plugins / name / "points.yaml").exists() for name in shipped)
    site = installed["base"] / "installed-plugins.yaml"
    site.write_text(DEMO.read_text().replace("plugins_dir: ../../../plugins", f"plugins_dir: {plugins}"))
    r = sh(installed["prefix"] / "venv" / "bin" / "edge", "check", site)
    assert r.returncode == 0 and "6 devices" in r.stdout, r.stderr
    # the demo copied to ROOT/etc/edge keeps its checkout-relative plugins_dir: the installer says so
    assert "does not pass edge check yet" in installed["stdout"] and "plugin" in installed["stdout"]


def test_system_files_land_in_the_scratch_root_only(installed):
    root = installed["root"]
    unit = root / "etc" / "systemd" / "system" / UNIT
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    config = root / "etc" / "edge" / "edge.yaml"
    assert config.read_text() == DEMO.read_text() and stat.S_IMODE(config.stat().st_mode) == 0o640
    data = root / "var" / "lib" / "edge"
    assert data.is_dir() and stat.S_IMODE(data.stat().st_mode) == 0o750
    assert not Path("/etc/systemd/system", UNIT).exists()


def test_the_unit_passes_systemd_analyze_verify(installed):
    unit = installed["root"] / "etc" / "systemd" / "system" / UNIT
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: provisioning/setup.sh --test installs the systemd package"
    r = sh(tool, "verify", unit, timeout=60)
    assert r.returncode == 0, r.stderr
    # unknown or misspelt keys are only warnings for systemd: any complaint about our unit fails here
    complaints = [ln for ln in r.stderr.splitlines() if UNIT in ln or str(unit) in ln]
    assert complaints == [], complaints


def test_the_unit_has_the_promised_directives(installed):
    unit = installed["root"] / "etc" / "systemd" / "system" / UNIT
    svc = {k: v[-1] for k, v in unit_sections(unit)["Service"].items()}
    prefix = installed["prefix"]
    expected = {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "WatchdogSec": "30s",
        "TimeoutStopSec": "30s", "ExecReload": "/bin/kill -HUP $MAINPID", "User": "edge",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/edge",
        "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "SupplementaryGroups": "dialout", "WorkingDirectory": "/var/lib/edge",
    }
    for key, value in expected.items():
        assert svc.get(key) == value, (key, svc.get(key))
    exec_start = svc["ExecStart"].split()
    assert exec_start[0] == f"{prefix}/venv/bin/edge" and os.access(exec_start[0], os.X_OK)
    assert exec_start[-1] == "/etc/edge/edge.yaml" and "run" in exec_start
    assert re.findall(r"@[A-Z_]+@", unit.read_text()) == []  # every placeholder filled in
    assert {"char-ttyS rw", "char-ttyUSB rw"} <= set(unit_sections(unit)["Service"]["DeviceAllow"])
    assert unit_sections(unit)["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_installed_edge_provisions_a_site_in_the_scratch_root(installed):
    root = installed["root"]
    data = root / "var" / "lib" / "edge"
    site = installed["base"] / "site.yaml"
    site.write_text(f"""
site: {{name: scratch}}
runtime: {{data_dir: {data}}}
buses: [{{name: net, type: modbus_tcp, host: 127.0.0.1, port: 1502, timeout_ms: 200}}]
devices: [{{name: plc, bus: net, points: [{{name: level, address: 0}}]}}]
outputs:
  opcua:
    endpoint: opc.tcp://127.0.0.1:4840/edge
    pki_dir: {data}/pki
    users_file: {data}/opcua-users
""")
    edge = installed["prefix"] / "venv" / "bin" / "edge"
    r = sh(edge, "provision", site)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((data / "pki" / "own" / "private" / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "pki" / "own" / "private").stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "opcua-users").stat().st_mode) == 0o600
    again = sh(edge, "provision", site)
    assert again.returncode == 0 and "created" not in again.stdout


def test_upgrade_from_a_wheel_with_a_service_user_in_the_scratch_root(installed, fresh_clone_wheel):
    """Second run on the same PREFIX and ROOT: idempotent, from a wheel, creating the user in ROOT/etc."""
    if os.geteuid() != 0:
        pytest.skip("useradd --prefix needs root")  # CI here runs as root
    root = installed["root"]
    for name in ("passwd", "group", "shadow", "gshadow"):
        keep = [ln for ln in Path("/etc", name).read_text().splitlines()
                if ln.split(":")[0] in ("root", "dialout", "nogroup", "nobody")]
        (root / "etc" / name).write_text("\n".join(keep) + "\n")
    shutil.copy("/etc/login.defs", root / "etc" / "login.defs")
    wheel = fresh_clone_wheel  # built once by pip from a fresh clone (tests/conftest.py)
    assert wheel.name.startswith("ot_edge_appliance-")
    real_passwd = Path("/etc/passwd").read_text()
    r = sh("bash", INSTALL, "--prefix", installed["prefix"], "--root", root, "--from", wheel, "--user", "edge")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "creating the virtual environment" not in r.stdout  # the existing one is reused
    passwd = {ln.split(":")[0]: ln.split(":") for ln in (root / "etc" / "passwd").read_text().splitlines()}
    assert passwd["edge"][6] == "/usr/sbin/nologin" and passwd["edge"][5] == "/var/lib/edge"
    dialout = next(ln for ln in (root / "etc" / "group").read_text().splitlines() if ln.startswith("dialout:"))
    assert "edge" in dialout.split(":")[3].split(",")
    data = root / "var" / "lib" / "edge"
    assert data.stat().st_uid == int(passwd["edge"][2])
    assert Path("/etc/passwd").read_text() == real_passwd  # the real /etc untouched
    r = sh(installed["prefix"] / "venv" / "bin" / "edge", "check", DEMO)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args, message", [
    (["--prefix", "relative/dir"], "--prefix must be an absolute path"),
    (["--data-dir", "var/lib"], "--data-dir must be an absolute path"),
    (["--bogus"], "unknown option --bogus"),
    (["--from", "/nonexistent/thing"], "--from must be a .whl file or a checkout"),
    (["--user", "Bad User"], "--user must be a lower-case system user name"),
    (["--config", "/nonexistent.yaml"], "--config: no such file"),
])
def test_bad_options_are_clear_errors(tmp_path, args, message):
    r = sh("bash", INSTALL, "--prefix", tmp_path / "p", "--root", tmp_path / "r", "--no-user", *args, timeout=120)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()


def test_pip_builds_the_extensions_from_a_fresh_clone(fresh_clone_wheel: Path):
    """The extensions build from a fresh clone with pip, and the built modules are the compiled ones."""
    wheel = fresh_clone_wheel  # `pip wheel --no-deps --no-build-isolation CLONE` (tests/conftest.py)
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("edge/aggregate/_ringbuf") and n.endswith(".so") for n in names), names
    assert any(n.startswith("drivers/modbus/_codec_kernel") and n.endswith(".so") for n in names), names
    assert any(n.startswith("edge/core/_latest") and n.endswith(".so") for n in names), names
    assert "edge/aggregate/pyring.py" in names
