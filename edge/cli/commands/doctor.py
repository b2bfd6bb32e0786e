"""``edge doctor``: what is installed and active (libraries, the aggregator, system tools)."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import shutil
from pathlib import Path

LIBRARIES = ("asyncua", "pymodbus", "serial", "isal", "urllib3", "yaml", "pydantic", "numpy")
OPTIONAL = {"grafana_foundation_sdk": "edge grafana build|push (pip install 'ot-edge-appliance[grafana]')"}
#: The appliance's compiled extensions (setup.py) and what runs where one is not built: the
#: appliance works without them, only slower, so ``edge doctor`` must say which one is missing
#: (tests/test_cli.py checks that every extension of setup.py is listed here or by its driver).
COMPILED = {
    "edge.core._latest": ("latest-value store", "compiled scatter", "numpy indexing"),
    "edge.outputs.opcua._changes": ("OPC UA change detection", "compiled pass per batch",
                                    "numpy calls per batch, ~10 % more appliance CPU at 50,000 tags/s"),
    "edge.outputs._lineproto": ("line protocol encoder", "compiled", "Python formatting of every point"),
}
TOOLS = {"socat": "serial line pairs for the simulator", "mbpoll": "independent Modbus master (tests)",
         "victoria-metrics": "time-series server (tests)", "influxd": "InfluxDB 1.x (tests)"}


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="print only problems; exit 1 if there are any")


def checks() -> list[tuple[str, bool, str]]:
    """(what, ok, detail) for every check; only failed library/package checks are problems."""
    out: list[tuple[str, bool, str]] = []
    for name in LIBRARIES:
        try:
            mod = importlib.import_module(name)
            out.append((f"library {name}", True, getattr(mod, "__version__", "")))
        except ImportError as exc:
            out.append((f"library {name}", False, str(exc)))
    out.append(urllib3_check())
    import edge
    from edge.driver import registry

    for name, driver in registry.drivers().items():
        if type(driver).__module__.split(".")[0] != "drivers":
            continue  # a third-party driver lives in its own distribution
        where = Path(inspect.getfile(type(driver))).resolve()
        same = Path(edge.__file__).resolve().parents[1] in where.parents
        out.append((f"driver {name} comes from the appliance's install", same,
                    f"edge: {Path(edge.__file__).parent}, driver {name}: {where.parent}"))
    try:
        agg = importlib.import_module("edge.aggregate")
        impl = getattr(agg, "ACTIVE_IMPL", "unknown")
        out.append(("aggregator implementation", impl == "cython", agg.describe()))
    except ImportError as exc:
        out.append(("aggregator implementation", False, str(exc)))
    from edge.driver import registry

    found = registry.drivers()
    out.append(("field drivers", bool(found), ", ".join(f"{n} ({d.description})" for n, d in found.items())
                or "none registered: reinstall the package (entry points edge.drivers)"))
    for driver in found.values():
        out.extend(driver.doctor())
    out.extend(compiled_checks())
    return out


def compiled_checks() -> list[tuple[str, bool, str]]:
    """One check per compiled extension of the core (the aggregator's and the drivers' report themselves)."""
    out = []
    for module, (what, compiled, fallback) in COMPILED.items():
        try:
            importlib.import_module(module)
            out.append((what, True, f"{compiled} ({module})"))
        except ImportError:
            out.append((what, False, f"{module} is not built: {fallback} (slower; build with `pip install .`)"))
    return out


def urllib3_check() -> tuple[str, bool, str]:
    """urllib3 must be urllib3, not urllib3-future (a fork installed under the same import name)."""
    try:
        fork = importlib.metadata.version("urllib3-future")
    except importlib.metadata.PackageNotFoundError:
        return ("urllib3 is the real one", True, "no urllib3-future installed")
    return ("urllib3 is the real one", False,
            f"urllib3-future {fork} replaces urllib3 (remove it: provisioning/setup.sh does)")


def optional_libraries() -> list[tuple[str, bool, str]]:
    """(name, installed, what needs it): missing optional libraries are not problems."""
    out = []
    for name, why in OPTIONAL.items():
        try:
            importlib.import_module(name)
            out.append((name, True, why))
        except ImportError:
            out.append((name, False, why))
    return out


def run(args: argparse.Namespace) -> int:
    problems = 0
    for what, ok, detail in checks():
        problems += not ok
        if not (args.quiet and ok):
            print(f"{'ok ' if ok else 'BAD'}  {what}: {detail}")
    for name, present, why in optional_libraries():
        if not args.quiet:
            print(f"{'ok ' if present else '-- '}  optional library {name}: {why}{'' if present else ': not installed'}")
    for tool, why in TOOLS.items():
        path = shutil.which(tool)
        if not args.quiet:
            print(f"{'ok ' if path else '-- '}  tool {tool} ({why}): {path or 'not installed'}")
    return 1 if problems else 0
