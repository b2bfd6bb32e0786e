"""Reads a YAML file into plain data while remembering the line of every key and item.

pyyaml's composed node tree gives the lines; the data itself comes from the safe
constructor. ``${NAME}`` references in string values are replaced from the environment
(secrets never live in YAML); ``${NAME:-default}`` gives a default. Duplicate keys, which pyyaml would silently collapse, are
reported as errors.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge.config.errors import ConfigIssue

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class YamlSource:
    """A parsed YAML file: its data and a map from key path to 1-based line."""

    file: str
    data: Any
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    #: unquoted YAML 1.1 words read as booleans (yes/no/on/off...), by key path: the word as written
    bool_words: dict[tuple[Any, ...], str] = field(default_factory=dict)
    #: keys without a value inside {flow mappings}: probably text cut by a comma; key path -> the text before
    comma_keys: dict[tuple[Any, ...], str] = field(default_factory=dict)

    def hint(self, path: tuple[Any, ...], value: Any) -> str:
        """A "quote it" hint for a YAML 1.1 trap at ``path``, or ''."""
        word = self.bool_words.get(tuple(path))
        if word is not None and isinstance(value, bool):
            return f"; YAML reads the unquoted word {word} as {str(value).lower()}: quote it (\"{word}\")"
        before = self.comma_keys.get(tuple(path))
        if before is not None:
            return (f"; a comma inside {{...}} ends a value: quote the text "
                    f"(\"{before}, {path[-1]}\")")
        return ""

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """Line of the deepest existing prefix of ``path`` (pydantic locs may go deeper)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def issue(self, path: tuple[Any, ...], message: str, value: Any = None, severity: str = "error") -> ConfigIssue:
        return ConfigIssue(self.file, self.line_of(path), path, message, value, severity)


def load_yaml(path: str | Path, env: dict[str, str] | None = None) -> YamlSource:
    """Parse ``path``; syntax errors and unset ``${ENV}`` references become issues, not exceptions."""
    path = Path(path)
    env = dict(os.environ) if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return YamlSource(str(path), None, issues=[ConfigIssue(str(path), None, (), f"cannot read file: {exc.strerror}")])
    return parse_yaml(text, str(path), env)


def parse_yaml(text: str, file: str, env: dict[str, str]) -> YamlSource:
    source = YamlSource(file, None)
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        problem_mark = getattr(exc, "problem_mark", None)
        context_mark = getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        mark = context_mark or problem_mark  # where the broken construct starts
        message = f"YAML syntax error: {problem}"
        if context and problem_mark:
            message += f" at line {problem_mark.line + 1} ({context} that starts here)"
        source.issues.append(ConfigIssue(file, mark.line + 1 if mark else None, (), message))
        return source
    if node is None:
        source.data = {}
        return source
    try:
        source.data = _convert(node, (), source, env)
    except yaml.YAMLError as exc:  # e.g. an unknown tag such as !x
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        source.issues.append(ConfigIssue(file, mark.line + 1 if mark else None, (), f"YAML error: {problem}"))
    finally:
        _CONSTRUCTOR.constructed_objects.clear()
    return source


def _convert(node: yaml.Node, path: tuple[Any, ...], source: YamlSource, env: dict[str, str]) -> Any:
    source.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        previous: yaml.Node | None = None
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if isinstance(key, bool) and _plain_bool(key_node):
                source.bool_words[(*path, key)] = key_node.value
            if node.flow_style and previous is not None and isinstance(value_node, yaml.ScalarNode) \
                    and value_node.value == "" and isinstance(previous, yaml.ScalarNode) and not previous.style:
                source.comma_keys[(*path, key)] = previous.value
            previous = value_node
            if key == "<<":  # YAML merge keys: let pyyaml resolve them
                merged = yaml.SafeLoader(yaml.serialize(value_node)).get_single_data()
                for k, v in (merged or {}).items():
                    out.setdefault(k, v)
                continue
            child = (*path, key)
            if key in out:
                source.issues.append(
                    ConfigIssue(source.file, key_node.start_mark.line + 1, child,
                                "duplicate key: it is already set above, remove one of them")
                )
            out[key] = _convert(value_node, child, source, env)
            source.lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), source, env) for i, item in enumerate(node.value)]
    value = _scalar(node)
    if isinstance(value, bool) and _plain_bool(node):
        source.bool_words[path] = node.value
    if isinstance(value, str) and "${" in value:
        value = _substitute(value, path, source, env)
    return value


_CONSTRUCTOR = yaml.SafeLoader("")
#: libyaml's parser when PyYAML was built with it (the wheels are): ~10x faster on large sites.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _scalar(node: yaml.Node) -> Any:
    """Typed value of a scalar node (int, float, bool, null, str) as the safe loader builds it."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    return _CONSTRUCTOR.construct_object(node, deep=True)


def _plain_bool(node: yaml.Node) -> bool:
    """An unquoted YAML 1.1 boolean word other than true/false (yes, no, on, off and their cases)."""
    return isinstance(node, yaml.ScalarNode) and not node.style and node.value.lower() not in ("true", "false")


def _substitute(value: str, path: tuple[Any, ...], source: YamlSource, env: dict[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name not in env and default is not None:
            return default
        if name not in env:
            source.issues.append(
                source.issue(path, f"environment variable {name} is not set (secrets come from the environment)",
                             match.group(0))
            )
            return ""
        return env[name]

    return _ENV_REF.sub(repl, value)
