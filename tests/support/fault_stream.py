"""The fault scenarios' shared stream and judge (tests/faults: worker kill, scale out and in,
broker outage): what is sent, how a run is drained, and how it is judged exactly.

The stream: 30 identities for 100 minutes at 4 calls/min, five of them bursting after the
detectors' warm-up (spike alerts firing, then resolving) and one in a retry loop (an
event-level detector: events a killed step ingested must be observed again on redelivery),
with events out of order within the allowed lateness, new events past it (late) and repeated
ids. Each identity has a team of its own: a peer group of one, so no identity's scores depend
on how far another identity's partition had got (that order is the consumers', and differs
from the replay's).

Judged exactly against what the events say (tests/support/faults.py): every identity's
minute windows, late totals and counters equal the pipeline's rules recomputed from the
events sent (`meterguard reconcile`'s comparison), the exactly-once pipeline counters equal
the unique events, and the alert ids on the topic are those of one uninterrupted replay of
the same events: none lost; alerts published twice across a crash are allowed
(at-least-once) and counted.

Draining: the end waits for the counters to reach the stream's unique events, then for two
rounds of one marker event per identity (new ids at the identity's newest event time: on
time, closing no minute). Once the second round is counted, every partition has been read
past all earlier records, and the step that counted the first round (with any re-scored
minutes before it) has published its alerts: a worker runs one pipeline step at a time.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.support.faults import (
    FaultFigures,
    counted,
    reconciled,
    reference_outputs,
    report,
    unique_events,
)
from tests.support.polling import eventually
from tests.support.traffic import T0, series
from tests.support.worker_process import Worker, produce, read_topics

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
    reference, reference_commands = await reference_outputs(sent, settings, work)
    assert len(reference) == len(set(reference)) >= 9  # the uncrashed run repeats none
    assert set(ids) == set(reference)  # none lost, none that should not exist
    assert {a["detector"] for a in alerts} == {"spike", "retry_loop"}
    # Throttle commands: none dropped, none extra (their ids derive from the alert's).
    throttle = settings.topic_throttle
    commands = (await read_topics(settings, [throttle]))[throttle]
    assert {c["command_id"] for c in commands} == set(reference_commands)
    assert reference_commands
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
