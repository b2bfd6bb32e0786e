"""Fleet rendering: one inventory of appliances, each appliance's site configuration rendered from a
shared template plus its own overrides, and every rendered configuration checked like ``edge check``.

The inventory (YAML)::

    template: template.yaml          # relative to the inventory
    appliances:
      - name: plant_north            # also the output folder: OUT/plant_north/edge.yaml
        overrides:                   # deep-merged into the template
          site: {name: plant_north}
          devices:                   # lists of named items merge by name
            - {name: meter_main, unit_id: 7}        # changes that device only
            - {name: vfd_fan1, remove: true}        # leaves it out
            - {name: boiler, bus: plc_net, ...}     # a new name is appended

Merge rules (:func:`deep_merge`): mappings merge key by key; a list whose items are all mappings
with a ``name`` merges item by item by name (``remove: true`` deletes one); any other value,
lists included, replaces the template's. ``${ENV}`` references are kept as written: they are
resolved where the appliance runs. A relative ``plugins_dir`` is rewritten relative to the
output folder, so it still points at the same plugins.

MQTT (``outputs.mqtt``): an appliance without ``sparkplug.edge_node_id`` gets its appliance name,
so every appliance is its own Sparkplug edge node in the template's group; two appliances with the
same group and edge node id, or the same MQTT client id, are an error on both (a broker lets only
one client per id connect, and a Sparkplug host could not tell them apart).
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.config.errors import ConfigError, ConfigIssue
from edge.config.loader import LoadedConfig, load_config
from edge.config.validation import validate
from edge.config.yamlsource import YamlSource, parse_yaml

REMOVE_KEY = "remove"
ApplianceName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$",
          description="letters, digits, '_' and '-', starting with a letter or '_' (it names the output folder)"),
]


class ApplianceEntry(BaseModel):
    """One appliance of the fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ApplianceName
    description: str = ""
    template: str | None = Field(None, description="this appliance's own template (default: the inventory's)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="deep-merged into the template")


class Inventory(BaseModel):
    """The fleet inventory file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = Field(description="the shared site template, relative to the inventory")
    output_file: str = Field("edge.yaml", pattern=r"^[A-Za-z0-9_.-]+\.ya?ml$",
                             description="file name of each rendered configuration inside OUT/<name>/")
    appliances: list[ApplianceEntry] = Field(min_length=1)

    @field_validator("appliances")
    @classmethod
    def _unique(cls, v: list[ApplianceEntry]) -> list[ApplianceEntry]:
        seen: set[str] = set()
        dupes = [a.name for a in v if a.name in seen or seen.add(a.name)]  # type: ignore[func-returns-value]
        if dupes:
            raise ValueError(f"appliance names must be unique: {', '.join(sorted(set(dupes)))} listed twice")
        return v


class MergeError(ValueError):
    """An override that cannot be merged (the message names the key path)."""


@dataclass
class Rendered:
    """One appliance's rendered configuration and the outcome of its check."""

    name: str
    path: Path
    loaded: LoadedConfig | None = None
    issues: list[str] = field(default_factory=list)  # errors, each prefixed with the appliance name

    @property
    def ok(self) -> bool:
        return self.loaded is not None and not self.issues


# ----------------------------------------------------------------------------- merge


def deep_merge(base: Any, override: Any, path: str = "") -> Any:
    """``base`` with ``override`` applied (neither is modified); see the module docstring for the rules."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            where = f"{path}.{key}" if path else str(key)
            out[key] = deep_merge(base[key], value, where) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(override, list) and _named(base) and _named(override):
        return _merge_named(base, override, path)
    return copy.deepcopy(override)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def _merge_named(base: list[dict], override: list[dict], path: str) -> list[dict]:
    out = [copy.deepcopy(i) for i in base]
    index = {item["name"]: n for n, item in enumerate(out)}
    removed: set[str] = set()
    for item in override:
        name = item["name"]
        where = f"{path}[{name}]"
        remove = item.get(REMOVE_KEY)
        if remove is not None and not isinstance(remove, bool):
            raise MergeError(f"{where}.{REMOVE_KEY}: must be true or false, got {remove!r}")
        if remove:
            if name not in index or name in removed:
                raise MergeError(f"{where}: cannot remove {name!r}: the template has no such item "
                                 f"(names: {', '.join(index) or 'none'})")
            removed.add(name)
            continue
        change = {k: v for k, v in item.items() if k != REMOVE_KEY}
        if name in index and name not in removed:
            out[index[name]] = deep_merge(out[index[name]], change, where)
        else:
            index[name] = len(out)
            out.append(copy.deepcopy(change))
    return [i for i in out if i["name"] not in removed]


# ----------------------------------------------------------------------------- files


class _KeepEnv(dict):
    """An environment in which every ``${NAME}`` is 'set': the template keeps its references."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return ""


def read_yaml(path: Path) -> tuple[Any, YamlSource]:
    """A YAML file's raw data (``${ENV}`` left as written) and its source (lines, syntax issues)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), None, (), f"cannot read file: {exc.strerror}")]) from None
    source = parse_yaml(text, str(path), _KeepEnv())
    if source.issues:
        raise ConfigError(source.issues)
    return yaml.safe_load(text), source


def load_inventory(path: Path) -> Inventory:
    """The inventory validated; a ConfigError with file:line for each problem."""
    data, source = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([source.issue((), "the inventory must be a mapping with 'template' and 'appliances'")])
    issues: list[ConfigIssue] = []
    inventory = validate(Inventory, data, source, (), issues)
    if inventory is None:
        raise ConfigError(issues)
    return inventory


def render_fleet(inventory_path: str | Path, out_dir: str | Path) -> list[Rendered]:
    """Render and check every appliance of an inventory into ``out_dir/<name>/<output_file>``.

    Every appliance is rendered even when another fails; the caller reports :attr:`Rendered.issues`.
    """
    inventory_path = Path(inventory_path).resolve()
    out_dir = Path(out_dir).resolve()
    inventory = load_inventory(inventory_path)
    templates: dict[Path, Any] = {}
    results: list[Rendered] = []
    for index, entry in enumerate(inventory.appliances):
        template_path = (inventory_path.parent / (entry.template or inventory.template)).resolve()
        target = out_dir / entry.name / inventory.output_file
        result = Rendered(entry.name, target)
        results.append(result)
        try:
            if template_path not in templates:
                templates[template_path] = _read_template(template_path)
            merged = deep_merge(templates[template_path], entry.overrides)
        except ConfigError as exc:
            result.issues = [f"{entry.name}: {issue}" for issue in exc.issues if issue.severity == "error"]
            continue
        except MergeError as exc:
            result.issues = [f"{entry.name}: {inventory_path}: appliances[{index}].overrides.{exc}"]
            continue
        if not isinstance(merged, dict):
            result.issues = [f"{entry.name}: the merged configuration is not a mapping"]
            continue
        _relocate_plugins_dir(merged, template_path.parent, target.parent)
        merged = copy.deepcopy(merged)  # deep_merge shares the template's untouched sub-mappings
        _fill_mqtt(merged, entry.name)
        _write(target, merged, inventory_path, template_path, entry.name)
        result.loaded, result.issues = check_rendered(target, entry.name)
    _unique_mqtt_ids(results)
    return results


def _fill_mqtt(config: dict, appliance: str) -> None:
    """The appliance name as the Sparkplug edge node id, unless the configuration names one."""
    outputs = config.get("outputs")
    mqtt = outputs.get("mqtt") if isinstance(outputs, dict) else None
    if not isinstance(mqtt, dict):
        return
    sparkplug = mqtt.setdefault("sparkplug", {})
    if isinstance(sparkplug, dict) and not sparkplug.get("edge_node_id"):
        sparkplug["edge_node_id"] = appliance


def _unique_mqtt_ids(results: list[Rendered]) -> None:
    """Sparkplug (group, edge node) and MQTT client ids must be unique across the fleet."""
    seen: dict[tuple[str, str], list[Rendered]] = {}
    for r in results:
        cfg = r.loaded.config.outputs.mqtt if r.loaded is not None else None
        if cfg is None or not cfg.enabled:
            continue
        site = r.loaded.site  # type: ignore[union-attr]
        if cfg.sparkplug.enabled:
            seen.setdefault(("Sparkplug edge node", f"{cfg.group_id(site)}/{cfg.edge_node_id()}"), []).append(r)
        seen.setdefault(("MQTT client id", cfg.resolved_client_id(site)), []).append(r)
    for (what, value), rs in seen.items():
        if len(rs) > 1:
            names = ", ".join(x.name for x in rs)
            for r in rs:
                r.issues.append(f"{r.name}: {r.path}: outputs.mqtt: {what} {value!r} is used by {len(rs)} appliances "
                                f"({names}); each appliance needs its own")


def _read_template(path: Path) -> dict:
    data, source = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([source.issue((), "a template must be a site configuration (a mapping)")])
    return data


def _relocate_plugins_dir(config: dict, template_dir: Path, target_dir: Path) -> None:
    value = config.get("plugins_dir", "plugins")
    if isinstance(value, str) and "${" not in value and not os.path.isabs(value):
        config["plugins_dir"] = os.path.relpath((template_dir / value).resolve(), target_dir)


def _write(target: Path, config: dict, inventory: Path, template: Path, name: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Rendered by `edge fleet render` for appliance {name}: edit the inventory or the template,\n"
              f"# not this file.\n# inventory: {inventory}\n# template:  {template}\n")
    body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(header + body, encoding="utf-8")
    os.replace(tmp, target)


def check_rendered(path: Path, name: str) -> tuple[LoadedConfig | None, list[str]]:
    """The checks of ``edge check`` (plugins strict); errors prefixed with the appliance name.

    ``${ENV}`` references are checked as set (to an empty value unless the variable is set
    here): the rendering machine is not where the secrets live.
    """
    env = {**_defaults_env(path), **os.environ}
    try:
        loaded = load_config(path, env=env)
    except ConfigError as exc:
        return None, [f"{name}: {issue}" for issue in exc.issues if issue.severity == "error"]
    return loaded, []


def _defaults_env(path: Path) -> dict[str, str]:
    """Every ``${NAME}`` without a default mapped to a placeholder, so that an unset secret is no error."""
    text = path.read_text(encoding="utf-8")
    return {m.group(1): "unset" for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)}
