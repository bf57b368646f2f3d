"""Issue 14, scenario 1: a worker SIGKILLed mid-stream, then (a) a new worker on the same
consumer group, or (b) the other worker of the group taking its partitions over.

Real processes: the session's Tansu broker and Redis, `meterguard worker` children. The
stream and the exact judgement are tests/support/fault_stream.py's.

Synchronisation is by observed state only. The kill waits until the first alerts have been
published and checkpointed (the namespace's alert history holds two: 40 to 70 % of the stream
counted, the bursts under way, most alerts still to come); the end drains with marker rounds
(fault_stream.drain).
"""

from __future__ import annotations

import pytest

from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.support.fault_stream import EXTRA_ENV, alerting, drain, judge, reached, stream
from tests.support.faults import (
    assigned_partitions,
    counted,
    process_metrics,
    processed_here,
    sigkill,
    spawn_worker,
    unique_events,
)
from tests.support.polling import eventually
from tests.support.worker_process import Worker, produce, start_worker


async def test_killed_worker_is_replaced_by_a_new_one_and_nothing_is_lost_or_doubled(
    broker: EmbeddedBroker, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tmp_path
):
    traffic = stream()
    sent = list(traffic.docs)
    total = unique_events(sent)
    first = await start_worker(broker, redis_url, tmp_path_factory, EXTRA_ENV)
    workers = [first]
    try:
        await produce(broker.bootstrap, first.settings.topic_raw, sent)
        await eventually(lambda: alerting(first), "the first alerts", log=first.log)
        killed_at = sigkill(first)
        at_kill = await counted(first.store)
        second = spawn_worker(first, tmp_path_factory, "restarted")
        workers.append(second)
        done = await eventually(
            lambda: reached(second, total), "the restarted worker to count the rest",
            log=second.log,
        )  # fmt: skip
        await drain(broker, second, sent)
        figures = await judge("restart", second, traffic, sent, at_kill, done - killed_at, tmp_path)
        assert figures.counted_at_kill < figures.unique  # killed mid-stream
    finally:
        for worker in workers:
            await worker.stop()


async def test_survivor_takes_over_a_killed_workers_partitions_and_finishes_exactly(
    broker: EmbeddedBroker, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tmp_path
):
    traffic = stream()
    sent = list(traffic.docs)
    total = unique_events(sent)
    victim = await start_worker(broker, redis_url, tmp_path_factory, EXTRA_ENV)
    workers = [victim]
    try:
        raw, events = victim.settings.topic_raw, victim.settings.topic_events

        async def holds_raw(worker: Worker) -> bool:
            return bool(assigned_partitions(await process_metrics(worker), raw))

        await eventually(lambda: holds_raw(victim), "the first worker's assignment", log=victim.log)
        survivor = spawn_worker(victim, tmp_path_factory, "survivor")
        workers.append(survivor)
        # The survivor's first assignment comes from the rebalance that split the group.
        await eventually(lambda: holds_raw(survivor), "the group split", log=survivor.log)
        await produce(broker.bootstrap, raw, sent)

        async def both_counting_and_alerting() -> bool:
            seen = [processed_here(await process_metrics(w)) for w in (victim, survivor)]
            return min(seen) > 0 and await alerting(victim)

        await eventually(both_counting_and_alerting, "the first alerts", log=victim.log)
        before = await process_metrics(survivor)
        killed_at = sigkill(victim)
        at_kill = await counted(victim.store)
        done = await eventually(
            lambda: reached(survivor, total), "the survivor to count the rest", log=survivor.log
        )
        await drain(broker, survivor, sent)
        figures = await judge(
            "takeover", survivor, traffic, sent, at_kill, done - killed_at, tmp_path
        )
        after = await process_metrics(survivor)
        # It held part of each topic before the kill, and every partition after it.
        for topic in (raw, events):
            assert set() < assigned_partitions(before, topic) < {0, 1}, (topic, before)
            assert assigned_partitions(after, topic) == {0, 1}, (topic, after)
        assert figures.counted_at_kill < figures.unique  # killed mid-stream
    finally:
        for worker in workers:
            await worker.stop()
