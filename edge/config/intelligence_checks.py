"""Cross-object checks of ``alarms:``, ``rules:`` and ``api:``: unknown tags and devices, writes to
read-only tags, values of the wrong type, and syntax or type errors in rule expressions.

Run by ``edge check`` and at every load (through :func:`edge.config.checks.run_checks`), before
the plant is built, so the tag table is made here from the resolved devices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.config.errors import ConfigIssue
from edge.intelligence.expressions import INTEGER_TYPES, ExpressionError, TagType, compile_expression

if TYPE_CHECKING:
    from edge.config.intelligence import WriteValue
    from edge.config.resolved import LoadedConfig


@dataclass(frozen=True, slots=True)
class TagSpec:
    dtype: str
    writable: bool
    enum: dict[int, str] | None
    low: float | None = None
    high: float | None = None


def site_tags(loaded: LoadedConfig) -> dict[str, TagSpec]:
    """``device.tag`` -> what the checks need, for every point and derived tag of the site."""
    out: dict[str, TagSpec] = {}
    for dev in loaded.devices:
        for rp in dev.points:
            p = rp.point
            dtype, _ = dev.driver.tag_type(p)
            out[f"{dev.name}.{p.name}"] = TagSpec(dtype, p.writable, p.enum, *(p.range or (None, None)))
        for h in dev.hooks:
            d = h.derived
            out[f"{dev.name}.{d.name}"] = TagSpec(d.type, False, d.enum)
    return out


def check_intelligence(loaded: LoadedConfig, issues: list[ConfigIssue]) -> None:
    cfg = loaded.config
    alarms = getattr(cfg, "alarms", None) or []
    rules = getattr(cfg, "rules", None) or []
    if getattr(cfg, "api", None) is not None:
        _check_api(loaded, cfg.api, issues)
    if not alarms and not rules:
        return
    tags = site_tags(loaded)
    _check_alarms(loaded, alarms, tags, issues)
    _check_rules(loaded, rules, tags, issues)


def _check_api(loaded: LoadedConfig, api, issues: list[ConfigIssue]) -> None:
    """The tokens file must be readable and well-formed; an API nobody can call is worth a warning."""
    from edge.api.tokens import TokensFileError, load_tokens

    if not api.enabled:
        return
    if api.tokens_file is None:
        if api.anonymous_role == "none":
            issues.append(loaded.source.issue(
                ("api",), "no tokens_file and anonymous_role none: every API request will be refused (401); "
                "set tokens_file and add tokens with 'edge provision token CONFIG NAME --role R'", None, "warning"))
        return
    path = api.tokens_file
    try:
        load_tokens(path)
    except FileNotFoundError:
        issues.append(loaded.source.issue(("api", "tokens_file"), f"{path} does not exist yet: no token is accepted; "
                                          "add tokens with 'edge provision token CONFIG NAME --role R'",
                                          api.tokens_file, "warning"))
    except OSError as exc:
        issues.append(loaded.source.issue(("api", "tokens_file"), f"cannot read {path}: {exc.strerror}",
                                          api.tokens_file))
    except TokensFileError as exc:
        issues.append(loaded.source.issue(("api", "tokens_file"), str(exc), api.tokens_file))


def _check_alarms(loaded: LoadedConfig, alarms, tags: dict[str, TagSpec], issues: list[ConfigIssue]) -> None:
    src = loaded.source
    devices = {d.name for d in loaded.devices}
    seen: dict[str, int] = {}
    for i, a in enumerate(alarms):
        if a.key in seen:
            issues.append(src.issue(("alarms", i, "name"), f"duplicate alarm name {a.key!r} (also alarms[{seen[a.key]}]); "
                                    "give one of them a 'name'", a.key))
        seen.setdefault(a.key, i)
        if a.kind == "backlog":
            continue
        if a.kind == "offline":
            if a.device not in devices:
                issues.append(src.issue(("alarms", i, "device"), f"unknown device; devices: {', '.join(sorted(devices))}",
                                        a.device))
            continue
        spec = tags.get(a.tag)
        if spec is None:
            issues.append(src.issue(("alarms", i, "tag"), "unknown tag: write 'device.tag' of a configured point",
                                    a.tag))
            continue
        if a.kind == "limit" and spec.dtype in ("bool", "string"):
            issues.append(src.issue(("alarms", i, "kind"), f"a limit alarm needs a numeric tag; {a.tag} is {spec.dtype} "
                                    "(use kind bit for a bool, state for an enum)", a.kind))
        if a.kind == "bit" and spec.dtype != "bool":
            issues.append(src.issue(("alarms", i, "kind"), f"a bit alarm needs a bool tag; {a.tag} is {spec.dtype}",
                                    a.kind))
        if a.kind == "state":
            if spec.dtype not in INTEGER_TYPES:
                issues.append(src.issue(("alarms", i, "kind"),
                                        f"a state alarm needs an integer (enumerated) tag; {a.tag} is {spec.dtype}",
                                        a.kind))
            names = set((spec.enum or {}).values())
            for j, s in enumerate(a.states or []):
                if isinstance(s, str) and s not in names:
                    issues.append(src.issue(("alarms", i, "states", j), "not a state of the tag's enum; allowed: "
                                            + (", ".join(sorted(names)) or "integers (the tag has no enum)"), s))


def _check_rules(loaded: LoadedConfig, rules, tags: dict[str, TagSpec], issues: list[ConfigIssue]) -> None:
    src = loaded.source
    types = {k: TagType(t.dtype, t.enum is not None) for k, t in tags.items()}
    seen: dict[str, int] = {}
    for i, r in enumerate(rules):
        if r.name in seen:
            issues.append(src.issue(("rules", i, "name"), f"duplicate rule name (also rules[{seen[r.name]}])", r.name))
        seen.setdefault(r.name, i)
        exprs: list[tuple[tuple[str | int, ...], str]] = [(("rules", i, "when"), r.when)]
        if r.release_when:
            exprs.append((("rules", i, "release_when"), r.release_when))
        exprs += [(("rules", i, "interlocks", j, "when"), lock.when) for j, lock in enumerate(r.interlocks)]
        for path, text in exprs:
            try:
                compile_expression(text, types)
            except ExpressionError as exc:
                issues.append(src.issue(path, str(exc), text))
        for section in ("then", "otherwise"):
            for key, value in getattr(r, section).items():
                problem = write_problem(tags.get(key), key, value)
                if problem:
                    issues.append(src.issue(("rules", i, section, key), problem, value))


def write_problem(spec: TagSpec | None, key: str, value: WriteValue) -> str | None:
    """Why a rule may not write ``value`` to ``key`` (None if it may)."""
    if spec is None:
        return f"unknown tag {key}: write 'device.tag' of a configured point"
    if not spec.writable:
        return f"{key} is not writable (set 'writable: true' on the point if the device accepts writes)"
    if spec.dtype == "string":
        return None if isinstance(value, str) else f"{key} is a string tag: the value must be text"
    if isinstance(value, str):
        return f"{key} is {spec.dtype}: the value must be a number" + (" or true/false" if spec.dtype == "bool" else "")
    if spec.dtype == "bool" and value not in (0, 1):
        return f"{key} is bool: the value must be true/false or 0/1"
    if spec.dtype in INTEGER_TYPES and float(value) != int(value):
        return f"{key} is {spec.dtype}: the value must be a whole number"
    if spec.low is not None and spec.high is not None and not spec.low <= float(value) <= spec.high:
        return f"{key}: {value} is outside the tag's range [{spec.low:g}, {spec.high:g}]"
    return None
