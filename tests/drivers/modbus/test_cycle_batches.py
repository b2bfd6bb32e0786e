"""A device read in several blocks publishes one batch per poll cycle when the answers come close
together (issue 21: one pass through every output per cycle instead of one per block), stamped
with the last answer's time; blocks whose answers are further apart keep their own batches.
The values are checked against the simulator's constants, not against the decoder."""
from __future__ import annotations

import time

import numpy as np
from harness import wait_until

from drivers.modbus.cycle import JOIN_SPAN_NS
from edge.core.model import Quality, SampleBatch

TAGS = 100  # 200 registers: two reads of at most 125


def site_yaml(interval_ms: int, timeout_ms: int) -> str:
    points = "\n".join(f"      - {{name: t{k}, address: {2 * k}, type: float32, sim: {{kind: constant, value: {k}.25}}}}"
                       for k in range(TAGS))
    return f"""
site: {{name: t}}
buses:
  - {{name: b, type: modbus_tcp, host: 127.0.0.1, timeout_ms: {timeout_ms}}}
devices:
  - name: d
    bus: b
    port: {{port:d}}
    interval_ms: {interval_ms}
    points:
{points}
"""


class Recorder:
    """A pipeline sink that keeps what it was given (copies: batches are not to be kept by sinks)."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []

    def consume(self, batch: SampleBatch) -> None:
        self.batches.append((time.time_ns(), batch.ts_ns, batch.tag_ids.copy(), batch.values.copy(),
                             batch.quality.copy()))


def expected_by_id(site) -> dict[int, float]:
    tags = site.app.plant.tag_by_key()
    return {tags[f"d.t{k}"].id: k + 0.25 for k in range(TAGS)}


async def test_the_blocks_of_one_cycle_arrive_as_one_batch_with_the_last_answers_time(make_site):
    site = await make_site(site_yaml(interval_ms=100, timeout_ms=80))
    assert len(site.app.devices["d"].runtime.plan.blocks("default")) == 2
    rec = Recorder()
    site.app.pipeline.add("recorder", rec)
    assert await wait_until(lambda: len(rec.batches) >= 8, 10)
    truth = expected_by_id(site)
    for received_ns, ts_ns, ids, values, quality in rec.batches:
        assert sorted(ids.tolist()) == sorted(truth)  # every tag of the device, once
        assert np.all(quality == Quality.GOOD)
        assert values.tolist() == [truth[i] for i in ids.tolist()]
        assert ts_ns <= received_ns  # stamped when the last answer arrived, before it was published
    poller = site.app.devices["d"].runtime.poller
    assert poller.diag.requests >= 2 * len(rec.batches)


async def test_blocks_answered_further_apart_than_the_span_keep_their_own_batches_and_times(make_site):
    site = await make_site(site_yaml(interval_ms=500, timeout_ms=400))
    delay_ms = 3 * JOIN_SPAN_NS / 1e6
    site.sim.set_fault("d", "slow", delay_ms=delay_ms)
    rec = Recorder()
    site.app.pipeline.add("recorder", rec)
    assert await wait_until(lambda: len(rec.batches) >= 6, 10)
    truth = expected_by_id(site)
    rows = rec.batches[2:]  # after the cycle that may have started before the fault
    assert all(0 < len(ids) < TAGS for _, _, ids, _, _ in rows)
    pairs = 0
    for (_, ts_a, ids_a, vals_a, _), (_, ts_b, ids_b, _, _) in zip(rows, rows[1:], strict=False):
        assert vals_a.tolist() == [truth[i] for i in ids_a.tolist()]
        if ids_a[0] < ids_b[0]:  # the first and the second block of one cycle
            assert len(ids_a) + len(ids_b) == TAGS
            assert ts_b - ts_a >= 0.8 * delay_ms * 1e6  # each keeps the time of its own answer
            pairs += 1
    assert pairs >= 2
    site.sim.clear_fault("d")
    n = len(rec.batches)
    assert await wait_until(lambda: len(rec.batches) >= n + 4 and len(rec.batches[-1][2]) == TAGS, 10)


async def test_a_cycle_hands_out_its_held_run_in_parts_when_the_span_is_exceeded(make_site):
    """CycleBatch alone, on the device's real plan and the registers a plain pymodbus client read
    from the simulator: a run held, taken early (a later block beyond the span), the rest after."""
    from pymodbus.client import AsyncModbusTcpClient

    from drivers.modbus.cycle import CycleBatch, CycleLayout

    site = await make_site(site_yaml(interval_ms=1000, timeout_ms=500))
    blocks = list(site.app.devices["d"].runtime.plan.blocks("default"))
    host, port = site.sim.address("d")
    client = AsyncModbusTcpClient(host, port=port, timeout=1)
    assert await client.connect()
    try:
        answers = []
        for block in blocks:
            rr = await client.read_holding_registers(block.start, count=block.count, device_id=1)
            answers.append(np.array(rr.registers, dtype=np.uint16))
    finally:
        client.close()
    truth = expected_by_id(site)
    cycle = CycleBatch("d", CycleLayout(blocks))
    assert cycle.take() is None
    cycle.hold(0, 1_000, answers[0])
    assert not cycle.due_before(1_000 + JOIN_SPAN_NS) and cycle.due_before(1_001 + JOIN_SPAN_NS)
    first = cycle.take()
    cycle.hold(1, 2_000 + JOIN_SPAN_NS, answers[1])
    second = cycle.take()
    assert cycle.take() is None
    assert first is not None and second is not None
    assert (first.ts_ns, second.ts_ns) == (1_000, 2_000 + JOIN_SPAN_NS)
    assert len(first) + len(second) == TAGS and not set(first.tag_ids.tolist()) & set(second.tag_ids.tolist())
    for batch in (first, second):
        assert batch.values.tolist() == [truth[i] for i in batch.tag_ids.tolist()]
        assert np.all(batch.quality == Quality.GOOD)
    whole = CycleBatch("d", CycleLayout(blocks))
    for slot, regs in enumerate(answers):
        whole.hold(slot, 5_000 + slot, regs)
    batch = whole.take()
    assert batch is not None and batch.ts_ns == 5_000 + len(blocks) - 1 and len(batch) == TAGS
    assert batch.values.tolist() == [truth[i] for i in batch.tag_ids.tolist()]


async def test_a_renumbering_reaches_the_cycles_of_a_running_device(make_site):
    """A reload renumbers a kept device's ids in place; the cycle's cached layout must follow
    (here the device's own ids reversed: t0 gets t99's id and so on)."""
    site = await make_site(site_yaml(interval_ms=100, timeout_ms=80))
    rec = Recorder()
    site.app.pipeline.add("recorder", rec)
    assert await wait_until(lambda: len(rec.batches) >= 2, 10)
    truth = expected_by_id(site)
    ids = sorted(truth)
    id_map = np.arange(max(len(site.app.plant.tags), max(ids) + 1), dtype=np.int64)
    id_map[ids] = ids[::-1]
    site.app.devices["d"].runtime.renumber(id_map)
    n = len(rec.batches)
    assert await wait_until(lambda: len(rec.batches) >= n + 3, 10)
    swapped = {int(id_map[i]): v for i, v in truth.items()}
    for _, _, got_ids, values, _ in rec.batches[n + 1:]:
        assert len(got_ids) == TAGS
        assert values.tolist() == [swapped[i] for i in got_ids.tolist()]
