"""Team, business-unit and environment budgets in the batch path (Pipeline.process calls it
after the roll-ups and scoring): the groups with a budget the batch touched, their periods'
hour rows, the pure decision (policy/group_budgets.py), the marks (store/budget_marks.py).

Round trips per batch with a touched budget: one to read the hour rows and the marks already
published; one for the members when a group is at its cap with an action; one to claim what
is new (none in the steady state). Claims ride in the batch's outcome and are confirmed by
Pipeline.commit, which runs only after the batch was published (process -> apply_throttles
-> publish -> commit). A worker that stops or fails to publish in between leaves them
claimed, and after the lease anyone's evaluation of the group publishes them again with the
same ids (store/budget_marks.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from meterguard.models import Alert, MeteringEvent, ThrottleCommand
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.policy.group_budgets import (
    GroupPeriod,
    Spend,
    alerts,
    assess,
    command_mark,
    commands,
    members_of,
    needs_members,
    touched,
    wanted,
)
from meterguard.streams.policy.registry import Registry
from meterguard.streams.store import Store
from meterguard.streams.store.budget_marks import BudgetMarks, Claim, MarkKey


class GroupBudgetCheck:
    """One pipeline's group-budget evaluation."""

    def __init__(self, store: Store, lateness_ms: int) -> None:
        self.rollups = store.rollups
        self.marks = BudgetMarks(store.redis, store.config, store.keys)
        self.lateness_ms = lateness_ms

    async def confirm(self, claims: Sequence[Claim]) -> None:
        """The claims of a batch that was published: done for their period."""
        if claims:
            await self.marks.confirm(list(claims))

    async def run(
        self,
        events: Sequence[MeteringEvent],
        policy: PolicyConfig,
        registry: Registry,
        now_ms: int,
    ) -> tuple[list[Alert], list[ThrottleCommand], list[Claim]]:
        """The alerts and commands to publish for this batch (after its roll-ups), and the
        claims to confirm once they are published."""
        groups = touched(events, registry, policy.group_budgets)
        if not groups:
            return [], [], []
        keys = [self._mark_key(g) for g in groups]
        spans = [(g.dimension, g.value, g.period.hours) for g in groups]
        read, published = await asyncio.gather(
            self.rollups.hour_totals(spans), self.marks.published(keys)
        )
        assessed = [
            assess(
                g,
                policy.group_budgets.of(g.dimension)[g.value],
                Spend(row.cost_nano_usd, row.tokens, newest),
            )
            for g, (row, newest) in zip(groups, read, strict=True)
        ]
        want = {
            key: [m for m in wanted(a) if m not in done]
            for key, a, done in zip(keys, assessed, published, strict=True)
        }
        at_cap = [i for i, a in enumerate(assessed) if needs_members(a)]
        found = await self.rollups.members([(groups[i].dimension, groups[i].value) for i in at_cap])
        for i, seen in zip(at_cap, found, strict=True):
            g = groups[i]
            members = members_of(seen, registry, g.dimension, g.value)
            want[keys[i]] += [
                command_mark(m) for m in members if command_mark(m) not in published[i]
            ]
        claims = await self.marks.claim(want, now_ms)
        by_key = {claim.key: claim.marks for claim in claims}
        out_alerts: list[Alert] = []
        out_commands: list[ThrottleCommand] = []
        for key, a in zip(keys, assessed, strict=True):
            marks = by_key.get(key, ())
            if not marks:
                continue
            members = [m[2:] for m in marks if m.startswith("c|")]
            made = commands(a, members, policy, self.lateness_ms)
            out_alerts += alerts(a, marks, len(made))
            out_commands += made
        return out_alerts, out_commands, claims

    def _mark_key(self, group: GroupPeriod) -> MarkKey:
        period = group.period
        ttl_s = self.marks.ttl_s(period.end_ms - period.start_ms)
        return MarkKey(group.dimension, group.value, period.start_ms, ttl_s)
