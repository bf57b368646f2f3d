"""The batch path shared by the Faust worker and `meterguard replay`.

    events -> Store.windows.ingest (dedupe + windows, atomic per identity)
           -> Store.peers.read (only if a new identity has minutes to score: its yardstick)
           -> score every newly final minute (detectors, pure) -> policy (pure)
           -> Pipeline.apply_throttles (gateway keys; drops commands the feed refuses)
           -> caller publishes alerts / commands -> Pipeline.commit (checkpoint, counters,
              warm identities' levels for their peer groups)

Publishing happens before the checkpoint: a crash in between re-scores the same minutes
on redelivery and re-publishes the same ids (at-least-once, never a lost alert). The gateway
keys are written before publishing so Kafka carries exactly the commands Redis accepted
(a redelivered command that is already held is accepted again, so a crash loses none).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime

from meterguard.detectors.features import IdentityContext, MinuteWindow
from meterguard.models import Alert, MeteringEvent, ThrottleCommand, utc_now
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.policy.episodes import Baseline, ScoredMinute, decide
from meterguard.streams.policy.registry import Registry, rollup_targets
from meterguard.streams.runtime.event_facts import (
    HOUR_MS,
    attribution,
    attribution_after,
    event_facts,
    linkable,
    observes_events,
    span_of,
)
from meterguard.streams.runtime.group_budget_check import GroupBudgetCheck
from meterguard.streams.runtime.identity_births import flood_alerts
from meterguard.streams.runtime.identity_state import IdentityState
from meterguard.streams.runtime.peer_rates import peer_group, peer_rates, report_due
from meterguard.streams.store import Store
from meterguard.streams.store.budget_marks import Claim
from meterguard.streams.store.dedupe import id_hash
from meterguard.streams.store.peers import PeerGroup, PeerLevels, PeerReport
from meterguard.streams.store.rollups import pack_groups
from meterguard.streams.store.traces import SpanPlace
from meterguard.streams.store.windows import IngestResult, StateCommit
from meterguard.timeutil import MINUTE_MS, to_ms


@dataclass(frozen=True)
class EventScores:
    """Detector scores for one identity as of just after one input event."""

    event: MeteringEvent
    status: str  # "new", "duplicate" or "late"
    scores: dict[str, float]


@dataclass
class BatchOutcome:
    alerts: list[Alert] = field(default_factory=list)
    commands: list[ThrottleCommand] = field(default_factory=list)
    scores: list[EventScores] = field(default_factory=list)  # in input order
    commits: list[StateCommit] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # (identity, epoch hour of event time) -> [tokens, cost in nano-USD] of counted events:
    # the dashboard's and demo's rankings of recent activity.
    usage_by_hour: dict[tuple[str, int], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )
    # Warm identities' levels for their peer groups, and peers a read found past the horizon:
    # both written with the checkpoint.
    peer_reports: list[PeerReport] = field(default_factory=list)
    stale_peers: dict[PeerGroup, list[str]] = field(default_factory=dict)
    # Group-budget marks claimed for this batch's alerts: confirmed by commit, after publishing.
    budget_claims: list[Claim] = field(default_factory=list)


_STATUS = {"n": "new", "d": "duplicate", "l": "late", "r": "duplicate"}


class Pipeline:
    def __init__(
        self,
        store: Store,
        policy: PolicyConfig,
        registry: Registry | None = None,
        keep_scores: bool = True,
    ) -> None:
        """`keep_scores`: one EventScores per input event in `BatchOutcome.scores` (replay's
        --scores-out, tests); a worker publishes none and skips building them."""
        self.store = store
        self.keep_scores = keep_scores
        self.policy = policy
        self.registry = registry if registry is not None else Registry()
        self.lateness_ms = store.config.allowed_lateness_s * 1000
        self._group_budgets = GroupBudgetCheck(store, self.lateness_ms)

    async def process(self, events: list[MeteringEvent]) -> BatchOutcome:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, event in enumerate(events):
            groups[event.identity].append(index)
        mine = {identity: [events[i] for i in idx] for identity, idx in groups.items()}
        traced = [i for i, e in enumerate(events) if linkable(e)]
        results, places = await asyncio.gather(
            self.store.windows.ingest(mine, self._rollup_groups(mine)),
            self.store.traces.link([span_of(events[i]) for i in traced]) if traced else _nothing(),
        )
        # Before the roll-ups: they add the batch's identities to the set births are told by.
        floods = await flood_alerts(self.store, self.policy, mine, results)
        # Team, business unit and environment roll-ups: what ingest.lua left for them
        # (this batch's, and any a crash left behind), exactly once.
        pending = [p for result in results.values() for p in result.pending_rollups]
        await self.store.rollups.apply(pending)
        if self.registry.configured:
            await self.store.rollups.note_unregistered(
                i for i in mine if not self.registry.registered(i)
            )
        place_of = dict(zip(traced, places, strict=True))
        outcome = BatchOutcome()
        states = {identity: IdentityState.from_bytes(results[identity].state) for identity in mine}
        contexts = {
            identity: self.policy.context_for(identity, state.who.environment)
            for identity, state in states.items()
        }
        yardsticks = await self._peer_rates(mine, results, states, contexts, outcome)
        per_event: list[EventScores | None] = [None] * len(events)
        for identity, indices in groups.items():
            spans = [place_of.get(i) for i in indices]
            context = contexts[identity]
            if identity in yardsticks:
                context = replace(context, peer_rates=yardsticks[identity])
            scored = self._score_identity(
                identity,
                mine[identity],
                spans,
                results[identity],
                states[identity],
                context,
                outcome,
            )
            if self.keep_scores:
                for i, item in zip(indices, scored, strict=True):
                    per_event[i] = item
        outcome.scores = [s for s in per_event if s is not None]
        await self._check_group_budgets(events, outcome)
        outcome.alerts.extend(floods)
        return outcome

    async def _check_group_budgets(self, events: list[MeteringEvent], out: BatchOutcome) -> None:
        """Team, business-unit and environment budgets (policy `group_budgets`): the touched
        groups' warnings, cap alerts and members' commands (runtime/group_budget_check.py).
        Last in `process`; its claims are confirmed by `commit`, after publishing."""
        if not self.policy.group_budgets.configured:
            return
        now_ms = to_ms(utc_now())
        found = await self._group_budgets.run(events, self.policy, self.registry, now_ms)
        out.alerts.extend(found[0])
        out.commands.extend(found[1])
        out.budget_claims.extend(found[2])

    def _rollup_groups(
        self, batch: dict[str, list[MeteringEvent]]
    ) -> dict[str, tuple[str, list[int]]]:
        out = {}
        for identity, events in batch.items():
            groups, of_event = rollup_targets(events, self.registry)
            out[identity] = (pack_groups(groups), of_event)
        return out

    async def apply_throttles(self, outcome: BatchOutcome, now: datetime) -> None:
        """Write the gateway keys; keep in `outcome.commands` only what the feed accepted
        (a block is not weakened by another alert's throttle, an operator release sticks)."""
        accepted = await self.store.throttles.apply(outcome.commands, now)
        refused = len(outcome.commands) - len(accepted)
        if refused:
            outcome.stats["commands_superseded"] += refused
        outcome.commands = accepted

    async def commit(self, outcome: BatchOutcome, now: datetime) -> list[str]:
        lost = await self.store.windows.commit(
            outcome.commits,
            outcome.stats,
            outcome.usage_by_hour,
            outcome.alerts,
            outcome.peer_reports,
            outcome.stale_peers,
        )
        await self._group_budgets.confirm(outcome.budget_claims)  # published: done
        return lost

    async def _peer_rates(
        self,
        batch: dict[str, list[MeteringEvent]],
        results: dict[str, IngestResult],
        states: dict[str, IdentityState],
        contexts: dict[str, IdentityContext],
        out: BatchOutcome,
    ) -> dict[str, dict[str, float]]:
        """The yardsticks of the batch's cold identities that have minutes to score: one
        read per peer group they belong to, all in one round trip (none if there is none)."""
        wanted: dict[str, PeerGroup] = {}
        for identity, events in batch.items():
            spike = states[identity].spike()
            if spike is None or not results[identity].rows:
                continue
            spike.configure(contexts[identity])  # the environment's warm-up length
            if spike.minutes_seen >= spike.config.warmup_minutes:
                continue
            group = peer_group(attribution_after(events, states[identity].who))
            if group is not None:
                wanted[identity] = group
        if not wanted:
            return {}
        snapshots = await self.store.peers.read(set(wanted.values()))
        out.stale_peers.update({g: s.stale for g, s in snapshots.items() if s.stale})
        found = {i: peer_rates(snapshots[g].levels, i) for i, g in wanted.items()}
        return {identity: rates for identity, rates in found.items() if rates}

    def _score_identity(
        self,
        identity: str,
        events: list[MeteringEvent],
        spans: list[SpanPlace | None],
        result: IngestResult,
        state: IdentityState,
        context: IdentityContext,
        out: BatchOutcome,
    ) -> list[EventScores]:
        for detector in state.filters.values():
            detector.detector.configure(context)
        rows = list(result.rows)
        if rows and result.scored_through is not None:
            state.skipped_minutes += rows[0].minute - result.scored_through - 1
        # Minutes final before this batch: their checkpoint never landed (a crash or a lost
        # race), so they are scored again now: as the redelivered events ('r') that closed
        # them come by (as they did the first time), the rest before the first other event.
        before: list[MinuteWindow] = []
        while rows and result.final_before is not None and rows[0].minute <= result.final_before:
            before.append(rows.pop(0))
        redelivered_ms = -1  # the newest redelivered event's time: the watermark they made
        closes = {c.event_index: c.minute for c in result.closes}
        # Only the detectors with an event hook (drift, retry loop, agent chain) see events.
        observers = [f.detector for f in state.filters.values() if observes_events(f.detector)]
        scored: list[EventScores] = []
        observed: list[bytes] = []  # ids this checkpoint observes (store/dedupe.py hashes)
        for i, event in enumerate(events):
            code = result.status[i]
            status = _STATUS[code]
            if before and code == "r":
                redelivered_ms = max(redelivered_ms, event.event_time_ms)
                through = (redelivered_ms - self.lateness_ms) // MINUTE_MS - 1
                while before and before[0].minute <= through:
                    self._score_minute(identity, state, before.pop(0), event, out)
            while before and code != "r":
                self._score_minute(identity, state, before.pop(0), None, out)
            # 'r': counted by an ingest whose checkpoint never landed (a worker died): not
            # counted again, but observed again, since its observations died with that worker.
            seen = code != "d"
            if seen:
                observed.append(id_hash(event.event_id))
                usage = out.usage_by_hour[identity, event.event_time_ms // HOUR_MS]
                usage[0] += event.input_tokens + event.output_tokens
                usage[1] += event.cost_nano_usd
                state.who = attribution(event, state.who)
            final_minute = closes.get(i)
            while final_minute is not None and rows and rows[0].minute <= final_minute:
                self._score_minute(identity, state, rows.pop(0), event, out)
            if seen and observers:  # after the minutes it closed
                facts = event_facts(event, spans[i])
                for observer in observers:
                    observer.observe_one(facts)
            if self.keep_scores:
                # No copy: _score_minute replaces the dict instead of changing it in place.
                scored.append(EventScores(event, status, state.last_scores))
        while before:
            self._score_minute(identity, state, before.pop(0), None, out)
        while rows:  # defensive: rows the closes did not account for
            self._score_minute(identity, state, rows.pop(0), None, out)
        out.stats["events_new"] += result.new
        out.stats["events_duplicate"] += result.duplicates
        out.stats["events_late"] += result.late
        # Checkpoint whenever something was learnt: a closed minute, or new events observed
        # by event-level detectors (they are duplicates on any later delivery).
        if (
            result.final_through is not None
            and result.scored_through is not None
            and (
                result.final_through > result.scored_through
                or result.new
                or result.late
                or observed
            )
        ):
            self._report_levels(identity, state, result.scored_through, result.final_through, out)
            out.commits.append(
                StateCommit(
                    identity,
                    result.scored_through,
                    # A new identity's final minute can still lie before its first (scored
                    # from) minute: never move the scored pointer backwards.
                    max(result.scored_through, result.final_through),
                    state.to_bytes(),
                    b"".join(observed),
                    hashlib.sha1(result.state, usedforsecurity=False).hexdigest()
                    if result.state
                    else "",
                )
            )
        return scored

    @staticmethod
    def _report_levels(
        identity: str, state: IdentityState, before: int, through: int, out: BatchOutcome
    ) -> None:
        """A warm identity tells its peer group its levels, at most once per
        REPORT_EVERY_MINUTES of event time (written with the checkpoint)."""
        spike, group = state.spike(), peer_group(state.who)
        if spike is None or group is None or not report_due(before, through):
            return
        if spike.minutes_seen >= spike.config.warmup_minutes:
            out.peer_reports.append(
                PeerReport(group, identity, PeerLevels(through, spike.levels()))
            )

    def _score_minute(
        self,
        identity: str,
        state: IdentityState,
        window: MinuteWindow,
        closer: MeteringEvent | None,
        out: BatchOutcome,
    ) -> None:
        # Ids and versions use the moment the minute became final in event time, which does
        # not depend on which event (or which batch, after a crash) happened to close it.
        final_ms = (window.minute + 1) * MINUTE_MS + self.lateness_ms
        closer_ms = closer.event_time_ms if closer is not None else final_ms
        baseline: Baseline | None = None
        fire_at = self.policy.for_environment(state.who.environment).fire_at
        scores = dict(state.last_scores)  # a new dict per minute: events keep their snapshot
        for name, detector in state.filters.items():
            verdict = detector.process(window)
            scores[name] = round(verdict.score, 6)
            if verdict.score < fire_at and state.episodes.get(name) is None:
                state.episodes[name] = None  # what `decide` returns for a quiet minute
                continue
            if baseline is None:
                baseline = state.baseline()
            minute = ScoredMinute(
                identity, name, window, verdict, state.who, baseline, final_ms, closer_ms
            )
            decision = decide(self.policy, minute, state.episodes.get(name))
            state.episodes[name] = decision.episode
            out.alerts.extend(decision.alerts)
            out.commands.extend(decision.commands)
        state.last_scores = scores
        out.stats["minutes_scored"] += 1


async def _nothing() -> list[SpanPlace]:
    return []
