"""Issue 14, scenario 2: one worker, then two, then three, then back to one, on one consumer
group while the stream flows. Totals and alerts must be exactly those of one uninterrupted
run on the same events (tests/support/fault_stream.py's judge: the ledger of the events
sent, and the alert ids of a replay), whichever worker held an identity's partition when.

Each move of the group is a rebalance: a partition's identities change owner with their
detector state in Redis (the checkpoint); a step the old owner had not committed is
redelivered to the new one, and two workers may briefly step one identity at once, where a
checkpoint built on an older one is refused (commit_state.lua) and stepped again.

Synchronisation is by observed state: each phase's traffic is produced once the group has
settled into its new shape (every worker reports raw partitions of its own on /metrics, and
together they hold all of them); the scale-in stops two workers (SIGTERM) while the third
phase is still being counted; the end drains with marker rounds (fault_stream.drain).
"""

from __future__ import annotations

import time

import pytest

from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.support.fault_stream import EXTRA_ENV, drain, judge, reached, stream
from tests.support.faults import (
    assigned_partitions,
    counted,
    process_metrics,
    processed_here,
    spawn_worker,
    unique_events,
)
from tests.support.polling import eventually
from tests.support.worker_process import Worker, produce, start_worker

# Divisible by 1, 2 and 3 workers. Faust's sticky assignor caps a worker at ceil(partitions /
# workers): with 4 partitions the first two keep 2 each and a third worker is given none.
PARTITIONS = 6


async def settled(workers: list[Worker], raw: str) -> bool:
    """Every worker holds raw partitions of its own, and together all of them."""
    held = [assigned_partitions(await process_metrics(w), raw) for w in workers]
    union = set().union(*held)
    return all(held) and sum(map(len, held)) == len(union) == PARTITIONS


async def test_one_two_three_workers_and_back_to_one_count_and_alert_as_one(
    broker: EmbeddedBroker, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tmp_path
):
    traffic = stream()
    sent = list(traffic.docs)
    total = unique_events(sent)
    quarter = len(sent) // 4
    phases = [sent[i * quarter : (i + 1) * quarter if i < 3 else len(sent)] for i in range(4)]
    env = {**EXTRA_ENV, "MG_TOPIC_PARTITIONS": str(PARTITIONS)}
    first = await start_worker(broker, redis_url, tmp_path_factory, env)
    workers = [first]
    raw = first.settings.topic_raw
    try:
        produced: list[dict] = []
        for phase, part in enumerate(phases[:3]):
            if phase:
                workers.append(spawn_worker(first, tmp_path_factory, f"worker-{phase + 1}"))
            await eventually(
                lambda: settled(workers, raw), f"{len(workers)} workers settled", log=first.log
            )
            await produce(broker.bootstrap, raw, part)
            produced += part
            if phase < 2:  # the third phase is still being counted when two workers stop
                target = unique_events(produced)
                await eventually(
                    lambda t=target: reached(first, t), f"phase {phase + 1}", log=first.log
                )

        # Every worker takes part before the scale-in (the third from its first phase).
        async def all_took_part() -> bool:
            return all([processed_here(await process_metrics(w)) > 0 for w in workers])

        await eventually(all_took_part, "every worker to step events", log=workers[-1].log)
        stopped_at = time.monotonic()
        at_scale_in = await counted(first.store)
        for worker in workers[1:]:
            await worker.stop()
            assert worker.process.returncode == 0, worker.log.read_text()[-2000:]
        await produce(broker.bootstrap, raw, phases[3])
        done = await eventually(
            lambda: reached(first, total), "the last worker to count the rest", log=first.log
        )
        await eventually(lambda: settled([first], raw), "one worker holding all", log=first.log)
        await drain(broker, first, sent)
        figures = await judge(
            "scale 1-2-3-1", first, traffic, sent, at_scale_in, done - stopped_at, tmp_path
        )
        assert figures.counted_at_kill < figures.unique  # scaled in mid-stream
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                await worker.stop()
