"""Safe expressions over tags for rules and interlocks, evaluated with simpleeval (no Python ``eval``).

A tag is written ``device.tag`` (or ``tag("device.tag")`` when a name holds a '-'). Allowed:
numbers, strings, True/False, comparisons, ``and``/``or``/``not``, arithmetic and the
functions ``abs``, ``min``, ``max``, ``round``. :func:`compile_expression` checks references
and types once (``edge check``) by evaluating the expression with a typed sample of every
tag it reads; :meth:`Expression.evaluate` runs it on the latest values.
"""
from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import simpleeval

FUNCTIONS = {"abs": abs, "min": min, "max": max, "round": round}
INTEGER_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64")


class ExpressionError(ValueError):
    """The expression cannot be used: syntax, unknown tag, or a type error (the message says which)."""


@dataclass(frozen=True, slots=True)
class TagType:
    """What an expression needs to know about a tag: its data type and whether it is enumerated."""

    dtype: str
    enum: bool = False

    def sample(self) -> Any:
        if self.dtype == "bool":
            return False
        if self.dtype == "string":
            return ""
        if self.dtype in INTEGER_TYPES or self.enum:
            return 0
        return 0.0


def convert(value: float | str, ttype: TagType) -> Any:
    """A stored value (float64, or text for strings) as the Python type the expression sees."""
    if ttype.dtype == "string":
        return value if isinstance(value, str) else ""
    if ttype.dtype == "bool":
        return bool(value)
    number = float(value)  # not a string tag: the store holds a float64
    if (ttype.dtype in INTEGER_TYPES or ttype.enum) and math.isfinite(number):
        return int(number)
    return number


def _references(tree: ast.AST, text: str) -> list[str]:
    """The tag keys an expression reads, in order of first use; raises on a bare or nested name."""
    keys: list[str] = []
    allowed_names = {"True", "False", "None", *FUNCTIONS, "tag"}
    attr_bases: set[int] = set()
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Attribute):
            if not isinstance(node.value, ast.Name):
                raise ExpressionError(f"{text!r}: only 'device.tag' may be written with a dot")
            attr_bases.add(id(node.value))
            key = f"{node.value.id}.{node.attr}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "tag":
            if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) or \
                    not isinstance(node.args[0].value, str):
                raise ExpressionError(f"{text!r}: tag() takes one quoted 'device.tag'")
            key = node.args[0].value
        elif isinstance(node, ast.Name) and id(node) not in attr_bases and node.id not in allowed_names:
            # ast.walk visits an Attribute before its base Name, so a base is already recorded
            raise ExpressionError(f"{text!r}: unknown name {node.id!r}; write a tag as 'device.tag'")
        if key is not None and key not in keys:
            keys.append(key)
    return keys


class _Evaluator:
    """One simpleeval evaluator per expression, fed new values on each call.

    A ``SimpleEval`` keeps bound methods of itself (a reference cycle), so building one per
    evaluation left cyclic garbage behind on every rule scan; reusing one does not.
    """

    def __init__(self, refs: list[str]) -> None:
        self.refs = refs
        self.by_key: dict[str, Any] = {}
        self.engine = simpleeval.SimpleEval(functions={**FUNCTIONS, "tag": self.by_key.__getitem__})

    def run(self, text: str, parsed: ast.AST, values: list[Any]) -> Any:
        devices: dict[str, dict[str, Any]] = {}
        by_key = self.by_key
        by_key.clear()
        for key, value in zip(self.refs, values, strict=True):
            dev, _, name = key.partition(".")
            devices.setdefault(dev, {})[name] = value
            by_key[key] = value
        self.engine.names = {dev: SimpleNamespace(**tags) for dev, tags in devices.items()}
        return self.engine.eval(text, previously_parsed=parsed)


@dataclass
class Expression:
    """A parsed, checked expression and the tags it reads."""

    text: str
    refs: list[str]  # tag keys
    types: list[TagType]
    _parsed: ast.AST

    def __post_init__(self) -> None:
        self._evaluator = _Evaluator(self.refs)

    def evaluate(self, values: list[float | str]) -> Any:
        """Evaluate with the current values of ``refs`` (same order)."""
        return self._evaluator.run(self.text, self._parsed,
                                   [convert(v, t) for v, t in zip(values, self.types, strict=True)])


def compile_expression(text: str, tags: Mapping[str, TagType], *, boolean: bool = True) -> Expression:
    """Parse and check ``text`` against the site's tags; raises :class:`ExpressionError` saying what is wrong."""
    try:
        parsed = simpleeval.SimpleEval().parse(text)
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{text!r}: syntax error: {exc.msg}") from None
    refs = _references(tree, text)
    unknown = [k for k in refs if k not in tags]
    if unknown:
        raise ExpressionError(f"{text!r}: unknown tag(s) {', '.join(unknown)}")
    if not refs:
        raise ExpressionError(f"{text!r}: reads no tag; a condition must depend on the plant")
    types = [tags[k] for k in refs]
    expr = Expression(text, refs, types, parsed)
    try:
        result = expr.evaluate([t.sample() for t in types])
    except ZeroDivisionError:
        return expr  # a sample value, not a type error
    except TypeError as exc:
        raise ExpressionError(f"{text!r}: type error: {exc}") from None
    except simpleeval.InvalidExpression as exc:
        raise ExpressionError(f"{text!r}: {exc}") from None
    if boolean and not isinstance(result, bool):
        raise ExpressionError(f"{text!r}: a condition must be true or false (a comparison), "
                              f"this gives a {type(result).__name__}")
    return expr
