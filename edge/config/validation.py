"""pydantic validation errors turned into ConfigIssues with file, line, key path and allowed values."""
from __future__ import annotations

import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from edge.config.errors import ConfigIssue
from edge.config.yamlsource import YamlSource


def validate(model: type[BaseModel], data: Any, source: YamlSource, prefix: tuple[Any, ...],
             issues: list[ConfigIssue]) -> Any:
    """Validate ``data`` into ``model``; on failure append one issue per pydantic error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = _data_path(data, tuple(err["loc"]))
            issues.append(_issue_from_error(model, source, prefix, loc, dict(err)))
        return None


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the parts pydantic adds that are not keys in the file (union tags, 'function-after')."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict | list):
            if isinstance(part, str) and (part.startswith(("function-", "tagged-union")) or
                                          (isinstance(node, dict) and node.get("type") == part)):
                continue
            out.append(part)  # a missing key: keep it so the message names it
            node = None
        else:
            # pydantic descends into a scalar (e.g. a tuple's items); keep what the file has
            continue
    return tuple(out)


def _issue_from_error(model: type[BaseModel], source: YamlSource, prefix: tuple[Any, ...],
                      loc: tuple[Any, ...], err: dict[str, Any]) -> ConfigIssue:
    kind = err["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, str(err.get("ctx", {}).get("discriminator", "type")).strip("'"))
        if kind == "union_tag_not_found":
            return ConfigIssue(source.file, source.line_of(prefix + loc), prefix + loc,
                               f"required key is missing; allowed values: {err.get('ctx', {}).get('expected_tags')}")
    path = prefix + loc
    msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
    value = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1], source, prefix)
        msg = f"unknown key {loc[-1]!r}" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        value = None
    elif kind == "missing":
        msg = "required key is missing"
        value = None
        return ConfigIssue(source.file, source.line_of(path[:-1]), path, msg)
    msg += source.hint(path, value)
    if isinstance(value, dict | list):
        value = None  # the whole mapping is noise; the line and key path say where
    return ConfigIssue(source.file, source.line_of(path), path, msg, value)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...], source: YamlSource,
                  prefix: tuple[Any, ...]) -> list[str]:
    """Field names of the model found at ``loc`` (follows lists, dicts and tagged unions)."""
    data = source.data
    for part in prefix:
        data = data[part] if isinstance(data, dict | list) else None
    target: Any = model
    for part in loc:
        target = _unwrap(target, data)
        if isinstance(target, type) and issubclass(target, BaseModel):
            info = target.model_fields.get(part)
            if info is None:
                return []
            target = info.annotation
        else:
            args = get_args(target)
            target = args[-1] if args else None
        data = data[part] if isinstance(data, dict | list) and _has(data, part) else None
    target = _unwrap(target, data)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return sorted(target.model_fields)
    return []


def _has(container: Any, part: Any) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(part, int) and 0 <= part < len(container)


def _unwrap(annotation: Any, data: Any) -> Any:
    """Peel Annotated/Optional/unions down to the model that ``data`` is meant to be."""
    for _ in range(10):
        origin = get_origin(annotation)
        args = get_args(annotation)
        if origin is None or origin in (list, dict, tuple):
            return annotation
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) > 1 and isinstance(data, dict):
            for m in models:
                tag = m.model_fields.get("type")
                if tag is not None and data.get("type") in get_args(tag.annotation):
                    return m
            return models[0]
        if len(models) == 1:
            return models[0]
        non_none = [a for a in args if a is not type(None)]
        annotation = non_none[0] if non_none else None
    return annotation
