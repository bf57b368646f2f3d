"""Issue 14, scenario 1: a worker SIGKILLed mid-stream, then (a) a new worker on the same
consumer group, or (b) the other worker of the group taking its partitions over.

Real processes: the session's Tansu broker and Redis, `meterguard worker` children. The
stream: 30 identities for 100 minutes at 4 calls/min, five of them bursting after the
detectors' warm-up (spike alerts firing, then resolving) and one in a retry loop (an
event-level detector: events a killed step ingested must be observed again on redelivery),
with events out of order within the allowed lateness, new events past it (late) and repeated
ids. Each identity has a team of its own: a peer group of one, so no identity's scores depend
on how far another identity's partition had got (that order is the consumers', and differs
from the replay's).

Judged exactly against what the events say (tests/support/faults.py): every identity's
minute windows, late totals and counters equal the pipeline's rules recomputed from the
events sent (`meterguard reconcile`'s comparison), the exactly-once pipeline counters equal
the unique events, and the alert ids on the topic are those of one uncrashed replay of the
same events: none lost; alerts published twice across the crash are allowed (at-least-once)
and counted. Each run prints its figures (`pytest -s`: tests/faults/README.md's table).

Synchronisation is by observed state only. The kill waits until the first alerts have been
published and checkpointed (the namespace's alert history holds two: 40 to 70 % of the stream
counted, the bursts under way, most alerts still to come); the end waits for the
counters to reach the stream's unique events, then for two rounds of one marker event per
identity (new ids at the identity's newest event time: on time, closing no minute). Once the
second round is counted, every partition has been read past all earlier records, and the
step that counted the first round (with any re-scored minutes before it) has published its
alerts: a worker runs one pipeline step at a time.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.support.faults import (
    FaultFigures,
    assigned_partitions,
    counted,
    process_metrics,
    processed_here,
    reconciled,
    reference_alert_ids,
    report,
    sigkill,
    spawn_worker,
    unique_events,
)
from tests.support.polling import eventually
from tests.support.traffic import T0, series
from tests.support.worker_process import Worker, produce, read_topics, start_worker

IDENTITIES = 30
MINUTES = 100
PER_MINUTE = 4
# identity index -> (first burst minute, last, calls/min): after the 60-minute warm-up.
RUNAWAYS = {0: (61, 65, 120), 5: (62, 66, 100), 11: (63, 68, 150), 17: (64, 67, 80),
            23: (66, 70, 90)}  # fmt: skip
# A retry loop (event-level detector): this identity's one request failing 54 times a minute.
LOOPING, LOOP_MINUTES, LOOP_CALLS = 29, range(62, 66), 60
LATE_MINUTES = (20, 45)  # new ids for these minutes, sent 10 minutes of event time later
EXTRA_ENV = {"MG_ALLOWED_LATENESS_S": "30", "MG_BATCH_SIZE": "500", "MG_BATCH_SECONDS": "0.2"}
KILL_AFTER_ALERTS = 2  # alerts in the namespace's history before the SIGKILL


@dataclass(frozen=True)
class Stream:
    docs: list[dict]  # in the order sent
    out_of_order: int
    late: int
    repeated: int


def stream(seed: int = 14) -> Stream:
    rng = random.Random(seed)
    docs = [
        {**doc, "team": f"team-{i:02d}"}
        for i in range(IDENTITIES)
        for doc in series(f"svc-{i:02d}", MINUTES, PER_MINUTE, burst=RUNAWAYS.get(i))
    ]
    docs += retry_loop(f"svc-{LOOPING:02d}", f"team-{LOOPING:02d}")
    docs.sort(key=lambda d: (d["event_time"], d["event_id"]))
    # Out of order within the allowed lateness: every 37th event of an identity is sent after
    # the identity's next one (15 s later at 4 calls/min, under a second in a burst).
    positions: dict[str, list[int]] = defaultdict(list)
    for n, doc in enumerate(docs):
        positions[doc["identity"]].append(n)
    swapped = 0
    for places in positions.values():
        for j in range(5, len(places) - 1, 37):
            a, b = places[j], places[j + 1]
            docs[a], docs[b] = docs[b], docs[a]
            swapped += 1
    # Late: new ids for minutes 20 and 45 of every third identity, sent right after its first
    # event of 10 minutes later (those minutes are final by then).
    late_after: dict[str, list[dict]] = defaultdict(list)
    for i in range(0, IDENTITIES, 3):
        identity = f"svc-{i:02d}"
        for minute in LATE_MINUTES:
            model = next(d for d in docs if d["event_id"] == f"{identity}-{minute}-0")
            late = {**model, "event_id": f"{identity}-late-{minute}", "output_tokens": 7}
            late_after[f"{identity}-{minute + 10}-0"].append(late)
    docs = [d for doc in docs for d in (doc, *late_after.get(doc["event_id"], ()))]
    # Repeated ids (a retrying gateway): every 31st message again 50 to 800 messages later.
    slots = [(n, 0, doc) for n, doc in enumerate(docs)]
    slots += [(n + rng.randint(50, 800), 1, docs[n]) for n in range(0, len(docs), 31)]
    sent = [doc for _, _, doc in sorted(slots, key=lambda s: (s[0], s[1]))]
    return Stream(sent, swapped, sum(len(v) for v in late_after.values()), len(sent) - len(docs))


def retry_loop(identity: str, team: str) -> list[dict]:
    """The same request, nine failures in ten, LOOP_CALLS times a minute (on top of the
    identity's ordinary calls, which carry no fingerprint)."""
    model = series(identity, 1, 1)[0]
    return [
        {
            **model,
            "event_id": f"{identity}-loop-{minute}-{k}",
            "event_time": (T0 + timedelta(minutes=minute, seconds=k * 60 / LOOP_CALLS))
            .isoformat()
            .replace("+00:00", "Z"),
            "team": team,
            "request_fingerprint": "same-request",
            "status": "error" if k % 10 else "ok",
            "input_tokens": 40,
            "output_tokens": 0,
        }
        for minute in LOOP_MINUTES
        for k in range(LOOP_CALLS)
    ]


def markers(sent: list[dict], round_: int) -> list[dict]:
    """One new event per identity at its newest event time so far (on time, closes nothing)."""
    newest: dict[str, dict] = {}
    for doc in sent:
        held = newest.get(doc["identity"])
        if held is None or doc["event_time"] > held["event_time"]:
            newest[doc["identity"]] = doc
    return [{**doc, "event_id": f"{i}-marker-{round_}"} for i, doc in sorted(newest.items())]


async def reached(worker: Worker, target: int) -> bool:
    return await counted(worker.store) >= target


async def alerting(worker: Worker) -> bool:
    """The first alerts published and checkpointed (the alert history is written with it)."""
    return len(await worker.store.history.recent_alerts(100)) >= KILL_AFTER_ALERTS


async def drain(broker: EmbeddedBroker, worker: Worker, sent: list[dict]) -> None:
    """Two marker rounds, each awaited until counted (the module docstring says why)."""
    for round_ in (1, 2):
        extra = markers(sent, round_)
        await produce(broker.bootstrap, worker.settings.topic_raw, extra)
        sent += extra
        target = unique_events(sent)
        await eventually(
            lambda t=target: reached(worker, t), f"marker round {round_} counted", log=worker.log
        )


async def judge(
    scenario: str,
    survivor: Worker,
    traffic: Stream,
    sent: list[dict],
    counted_at_kill: int,
    recovery_s: float,
    work: Path,
) -> FaultFigures:
    """Figures first (printed even if an assertion below fails), then exact outcomes."""
    settings = survivor.settings
    alerts = (await read_topics(settings, [settings.topic_alerts]))[settings.topic_alerts]
    ids = [a["alert_id"] for a in alerts]
    result = await reconciled(sent, settings)
    duplicates = result.explained["duplicates"]
    assert isinstance(duplicates, dict)
    unique = unique_events(sent)
    figures = FaultFigures(
        scenario,
        sent=len(sent),
        unique=unique,
        counted=await counted(survivor.store),
        counted_at_kill=counted_at_kill,
        redelivered=duplicates["redelivered_by_consumer"],
        alert_records=len(ids),
        alert_ids=len(set(ids)),
        recovery_s=recovery_s,
    )
    report(figures)
    reference = await reference_alert_ids(sent, settings, work)
    assert len(reference) == len(set(reference)) >= 9  # the uncrashed run repeats none
    assert set(ids) == set(reference)  # none lost, none that should not exist
    assert {a["detector"] for a in alerts} == {"spike", "retry_loop"}
    assert figures.lost == 0 and figures.double_counted == 0
    # Every identity's minute windows, late totals and counters, and the pipeline counters.
    assert result.mismatches == []
    # The stream is what it says: its repeats are duplicates, the moved events on time.
    assert duplicates["in_input"] == traffic.repeated > 0 and traffic.out_of_order > 0
    late_events = result.explained["late"]
    assert isinstance(late_events, dict) and late_events["count"] == traffic.late == 20
    stats = await survivor.store.stats.pipeline_counters()
    expected = {r.identity: (r.on_time, r.late) for r in result.identities}
    assert len(expected) == IDENTITIES
    assert sum(new for new, _ in expected.values()) == stats["events_new"]
    assert sum(late for _, late in expected.values()) == stats["events_late"] > 0
    assert stats["events_new"] + stats["events_late"] == unique
    return figures


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
