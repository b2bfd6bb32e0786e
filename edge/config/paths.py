"""The one place where configured paths become absolute: when the configuration loads.

A model field typed :data:`ConfigPath` is relative to the configuration file's folder (and may
say ``{site}``); a field typed :data:`DataPath` is relative to ``runtime.data_dir``. The loader
calls :func:`resolve_paths` once on the validated configuration, so every path a component
receives is absolute and nothing downstream resolves a path again (a relative ``token_file``
used to work only when the appliance was started from the configuration's folder).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel


class _Relative:
    """Marker in a field's metadata: what a relative value of the field is relative to."""

    def __init__(self, anchor: str) -> None:
        self.anchor = anchor

    def __repr__(self) -> str:
        return f"relative to {self.anchor}"


CONFIG_FOLDER = _Relative("the configuration file's folder")
DATA_DIR = _Relative("runtime.data_dir")

#: A path relative to the configuration file's folder (``{site}`` is replaced by the site name).
ConfigPath = Annotated[Path, CONFIG_FOLDER]
#: A path relative to ``runtime.data_dir``.
DataPath = Annotated[Path, DATA_DIR]


def absolute(value: str | Path, base: Path, site: str) -> Path:
    """``value`` with ``{site}`` filled in, made absolute against ``base``."""
    p = Path(str(value).format(site=site)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def resolve_paths(model: BaseModel, config_dir: Path, data_dir: Path, site: str) -> BaseModel:
    """A copy of ``model`` whose :data:`ConfigPath` and :data:`DataPath` fields are absolute."""
    updates: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            continue
        anchor = next((m for m in info.metadata if isinstance(m, _Relative)), None) or _anchor(info.annotation)
        if anchor is not None:
            updates[name] = absolute(value, config_dir if anchor is CONFIG_FOLDER else data_dir, site)
        elif isinstance(value, BaseModel):
            new = resolve_paths(value, config_dir, data_dir, site)
            if new is not value:
                updates[name] = new
        elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            items = [resolve_paths(v, config_dir, data_dir, site) if isinstance(v, BaseModel) else v for v in value]
            if any(a is not b for a, b in zip(items, value, strict=True)):
                updates[name] = items
    return model.model_copy(update=updates) if updates else model


def _anchor(annotation: Any) -> _Relative | None:
    """The marker of a (possibly optional) ConfigPath or DataPath annotation, else None."""
    if get_origin(annotation) is Annotated:
        return next((m for m in get_args(annotation)[1:] if isinstance(m, _Relative)), None)
    if get_origin(annotation) in (list, dict, tuple):
        return None
    return next((a for a in map(_anchor, get_args(annotation)) if a is not None), None)
