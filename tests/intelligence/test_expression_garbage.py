"""Evaluating a rule's expression leaves no cyclic garbage (the appliance's collector runs rarely)."""
from __future__ import annotations

import gc

from edge.intelligence.expressions import TagType, compile_expression


def test_repeated_evaluation_leaves_no_reference_cycles():
    expr = compile_expression("plc.temp > 30 and tag('plc.mode') == 2 and abs(plc.flow) < max(1, 2)",
                              {"plc.temp": TagType("float32"), "plc.mode": TagType("uint16", enum=True),
                               "plc.flow": TagType("int16")})
    results = [expr.evaluate([31.0, 2.0, -0.5])]
    gc.collect()
    gc.disable()  # what only the collector could free now stays tracked: count it
    try:
        before = len(gc.get_objects())
        results += [expr.evaluate([31.0 + i % 3, 2.0, -0.5]) for i in range(2000)]
        grown = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert results == [True] * 2001
    assert grown < 100, f"{grown} objects left for the collector after 2,000 evaluations"
    assert expr.evaluate([29.0, 2.0, 0.0]) is False
