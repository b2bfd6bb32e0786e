"""Reload that applies or refuses: one validation path for ``edge reload``, SIGHUP (and the API).

:func:`check_config` is the only validation of a configuration to reload: every check of
``edge check``, plugins strict (a misspelt plugin refuses the reload instead of quarantining a
working device). ``edge reload`` runs it before signalling; the running appliance runs it again
on SIGHUP, off the event loop (parsing 50,000 points took ~11 s). A configuration with any error
is refused whole and the running one stays; a valid one is applied whole
(:meth:`edge.runtime.app.Appliance.reload`: devices, outputs, spool, OPC UA, alarms, rules, the
API server (restarted on a new address, polling goes on) and the runtime settings (log levels and
format, status and health intervals, statistics window, audit rotation)), restarting only what
changed. The one key that needs a restart of the appliance, ``runtime.data_dir`` (the spool, audit
log and pid file live there), refuses the reload by name (:func:`needs_restart`); so does an API
address the appliance cannot listen on, before anything else changed. The outcome (applied and
what restarted, or refused and why) is logged, kept in ``Appliance.last_reload`` for
``/api/status`` and the status table.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge.config.errors import ConfigError
from edge.config.loader import LoadedConfig, load_config

if TYPE_CHECKING:
    from edge.runtime.app import Appliance

log = logging.getLogger("edge.reload")


class ReloadRefused(Exception):
    """Raised by ``Appliance.reload`` before it changed anything: the reload is refused with this reason."""


def needs_restart(running: LoadedConfig, new: LoadedConfig) -> list[str]:
    """The keys whose change a running appliance cannot apply, each with why (empty: all can be applied)."""
    out = []
    old_dir, new_dir = running.config.runtime.data_dir, new.config.runtime.data_dir
    if old_dir != new_dir:
        out.append(f"runtime.data_dir changed ({old_dir} -> {new_dir}): the spool, the audit log and the pid file "
                   "live there; restart the appliance to move them")
    return out


@dataclass
class ReloadOutcome:
    """What one reload did."""

    ts_ns: int
    source: str  # sighup, api, test
    result: str  # applied, refused, failed
    reason: str = ""  # why it was refused or failed
    devices_kept: list[str] = field(default_factory=list)
    devices_restarted: list[str] = field(default_factory=list)
    devices_removed: list[str] = field(default_factory=list)
    outputs_restarted: list[str] = field(default_factory=list)
    api: str = ""  # the API server's new URL when it was restarted ("stopped" when disabled)
    runtime_changed: list[str] = field(default_factory=list)  # runtime.* keys applied

    def summary(self) -> str:
        if self.result != "applied":
            return f"reload {self.result}, the running configuration stays: {self.reason}"
        text = (f"reload applied: {len(self.devices_kept)} devices kept running, restarted or added: "
                f"{', '.join(self.devices_restarted) or 'none'}; removed: {', '.join(self.devices_removed) or 'none'}; "
                f"outputs restarted: {', '.join(self.outputs_restarted) or 'none'}")
        if self.api:
            text += f"; API restarted: {self.api}"
        if self.runtime_changed:
            text += f"; runtime applied: {', '.join(self.runtime_changed)}"
        return text

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"summary": self.summary()}


def check_config(config: str | Path) -> LoadedConfig:
    """The one validation of a configuration to reload (raises ConfigError listing every problem)."""
    return load_config(config, strict_plugins=True)


async def reload_appliance(app: Appliance, config: str | Path, source: str = "sighup") -> ReloadOutcome:
    """Validate (off the loop) and apply a configuration, or refuse it whole; the outcome is kept."""
    now = time.time_ns()
    try:
        loaded = await asyncio.to_thread(check_config, config)
    except ConfigError as exc:
        outcome = ReloadOutcome(now, source, "refused", "; ".join(str(exc).strip().splitlines()))
    except Exception as exc:  # noqa: BLE001 - a reload must never stop the running appliance
        outcome = ReloadOutcome(now, source, "refused", f"{type(exc).__name__}: {exc}")
    else:
        blocked = needs_restart(app.loaded, loaded)
        try:
            if blocked:
                raise ReloadRefused("; ".join(blocked))
            changes = await app.reload(loaded)
        except ReloadRefused as exc:
            outcome = ReloadOutcome(now, source, "refused", str(exc))
        except Exception as exc:  # noqa: BLE001 - contained: logged with a traceback, reported
            log.exception("reload failed while applying")
            outcome = ReloadOutcome(now, source, "failed", f"{type(exc).__name__}: {exc}")
        else:
            outcome = ReloadOutcome(now, source, "applied", "", changes["kept"], changes["started"],
                                    changes["removed"], changes.get("outputs", []), ", ".join(changes.get("api", [])),
                                    list(changes.get("runtime", [])))
    app.last_reload = outcome
    app.reloads[outcome.result] = app.reloads.get(outcome.result, 0) + 1
    (log.warning if outcome.result == "applied" else log.error)("%s (via %s)", outcome.summary(), source)
    return outcome
