"""Logging set-up: text or JSON lines, one level for everything plus a level per component.

Components are logger names (``drivers.modbus.poller``, ``edge.bus``, ``edge.hooks``, ``edge.outputs.manager``,
``edge.core.writes``, ``asyncua``, ``pymodbus`` ...). JSON lines carry time, level, component,
message and, for device events, nothing more: they are meant for journald/Loki pipelines.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Libraries that are chatty at INFO; quiet unless a component level says otherwise.
QUIET = {"asyncua": logging.WARNING, "pymodbus": logging.ERROR, "urllib3": logging.WARNING,
         "uvicorn.access": logging.WARNING}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "warning", json_lines: bool = False,
                  components: Mapping[str, str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name, lib_level in QUIET.items():
        logging.getLogger(name).setLevel(max(lib_level, root.level))
    for name, comp_level in (components or {}).items():
        logging.getLogger(name).setLevel(comp_level.upper())
