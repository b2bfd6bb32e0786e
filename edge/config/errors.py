"""Configuration problems as data: every problem names file, line, key path, value and reason."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def format_path(path: tuple[Any, ...]) -> str:
    """``('devices', 2, 'points', 0, 'type')`` -> ``devices[2].points[0].type``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem found in a configuration file."""

    file: str
    line: int | None  # 1-based; None when the key is missing from the file entirely
    path: tuple[Any, ...]
    message: str
    value: Any = None
    severity: str = "error"  # "error" fails `edge check`; "warning" is printed only

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        value = "" if self.value is None else f" (value: {_short(self.value)})"
        return f"{where}: {self.severity}: {format_path(self.path)}: {self.message}{value}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigError(Exception):
    """Raised when a configuration has at least one error; carries every issue found."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        errors = [i for i in issues if i.severity == "error"]
        super().__init__(f"{len(errors)} configuration error(s)\n" + "\n".join(str(i) for i in errors))
