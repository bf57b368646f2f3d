"""Attribution quality of an evaluation run: are showback and root-caller cost exact?

After the replay, `meterguard evaluate` reads the namespace's roll-ups (streams/store/
rollups.py) and the cost driven per root identity (streams/store/driven.py) and compares them
with what the generated events say (`recompute`, pure, here):

* team, business-unit and environment roll-ups, and each identity's: the events as the
  registry attributes them (streams/policy/registry.py `attribute`: the registry wins), deduped
  per identity with the first delivery of an event id winning, late events by the pipeline's
  own rules (streams/offline/reconcile.py `Ledger`) in the hour they belong to, per hour and
  per late hour, to the nano-dollar;
* each team's and business unit's roll-up against the sum of its member identities' own
  roll-ups (an identity the registry does not pin to one group is not summed: "split");
* the identities listed as unregistered;
* each root identity's cost driven against the known root costs of the generated chains
  (streams/simulation/chains.py): what the spans of other identities under its root spans
  cost, however the spans arrived.

Each check is a `Tally` (checked, exact, a few mismatches described); `AttributionCheck` holds
them with the run's facts and renders as a table and JSON (Report.attribution).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from rich import box
from rich.table import Table

from meterguard.models import MeteringEvent
from meterguard.streams.offline.reconcile import HOUR_MS, Ledger, Rules, Totals
from meterguard.streams.policy.registry import Registry, attribute
from meterguard.streams.simulation.chains import NO_USAGE, ChainLabel, Usage, add, root_costs

GROUP_DIMENSIONS = ("team", "business_unit", "environment")
SUMMED_DIMENSIONS = ("team", "business_unit")  # checked against their members' sum
EXAMPLES = 5  # mismatches described per check
# Each check (its key in JSON) and what the table calls it; what it counts: groups,
# identities or root identities.
LABELS = {
    "team": "team roll-ups",
    "business_unit": "business-unit roll-ups",
    "environment": "environment roll-ups",
    "identity": "identity roll-ups",
    "unregistered": "unregistered identities listed",
    "root_cost": "root identities' cost driven",
    "_sum": "{} = Σ its identities",
}


@dataclass
class Rows:
    """A roll-up's hour rows (late events included) and late hour rows, as usage tuples."""

    hours: dict[int, Usage] = field(default_factory=dict)
    late: dict[int, Usage] = field(default_factory=dict)

    def add(self, hour: int, usage: Usage, late: bool) -> None:
        self.hours[hour] = add(self.hours.get(hour, NO_USAGE), usage)
        if late:
            self.late[hour] = add(self.late.get(hour, NO_USAGE), usage)

    def merge(self, other: Rows) -> None:
        for hour, usage in other.hours.items():
            self.hours[hour] = add(self.hours.get(hour, NO_USAGE), usage)
        for hour, usage in other.late.items():
            self.late[hour] = add(self.late.get(hour, NO_USAGE), usage)

    def total(self) -> Usage:
        out = NO_USAGE
        for usage in self.hours.values():
            out = add(out, usage)
        return out

    def same(self, other: Rows) -> bool:
        return self.hours == other.hours and self.late == other.late


@dataclass
class Recomputed:
    """Roll-ups recomputed from the delivered events under the registry."""

    groups: dict[tuple[str, str], Rows] = field(default_factory=dict)
    identities: dict[str, Rows] = field(default_factory=dict)
    members: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    unregistered: set[str] = field(default_factory=set)
    moved: set[str] = field(default_factory=set)  # the registry names another team than events
    events: int = 0  # unique events counted
    duplicates: int = 0
    late: int = 0
    invalid: int = 0  # lines the pipeline would dead-letter


@dataclass
class Observed:
    """What the namespace holds after the replay."""

    groups: dict[tuple[str, str], Rows] = field(default_factory=dict)
    identities: dict[str, Rows] = field(default_factory=dict)
    unregistered: set[str] = field(default_factory=set)
    driven: dict[str, Usage] = field(default_factory=dict)  # root -> summed over its hours


def recompute(events: Iterable[Mapping[str, Any]], registry: Registry, rules: Rules) -> Recomputed:
    """The roll-ups the pipeline must hold for these events, delivered in this order."""
    out = Recomputed()
    ledgers: dict[str, Ledger] = {}
    for raw in events:
        try:
            event = MeteringEvent.model_validate(raw)
        except ValidationError:
            out.invalid += 1
            continue
        usage: Usage = (
            1, event.input_tokens, event.output_tokens, event.cached_tokens,
            event.cost_nano_usd, int(event.status == "error"),
        )  # fmt: skip
        ledger = ledgers.get(event.identity)
        if ledger is None:
            ledger = ledgers[event.identity] = Ledger(rules)
        status = ledger.apply(event.event_id, event.event_time_ms, Totals(*usage))
        if status == "duplicate":
            out.duplicates += 1
            continue
        late = status == "late"
        out.events += 1
        out.late += late
        hour = event.event_time_ms // HOUR_MS
        owner = attribute(event, registry)
        for dimension in GROUP_DIMENSIONS:
            target = (dimension, owner.of(dimension))
            out.groups.setdefault(target, Rows()).add(hour, usage, late)
            out.members.setdefault(target, set()).add(event.identity)
        out.identities.setdefault(event.identity, Rows()).add(hour, usage, late)
        if not registry.registered(event.identity):
            out.unregistered.add(event.identity)
        elif event.team and owner.team != event.team:
            out.moved.add(event.identity)
    return out


@dataclass(frozen=True)
class Tally:
    check: str
    checked: int
    exact: int
    examples: tuple[str, ...] = ()  # the first mismatches, described

    @property
    def mismatch(self) -> int:
        return self.checked - self.exact

    @property
    def label(self) -> str:
        return LABELS.get(self.check) or LABELS["_sum"].format(
            self.check.removesuffix("_sum").replace("_", " ")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "label": self.label,
            "checked": self.checked,
            "exact": self.exact,
            "mismatch": self.mismatch,
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class AttributionCheck:
    tallies: tuple[Tally, ...]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(t.mismatch == 0 for t in self.tallies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [t.to_dict() for t in self.tallies],
            "facts": self.facts,
        }

    def table(self) -> Table:
        f = self.facts
        caption = (
            f"{f.get('events', 0):,} events counted, {f.get('duplicates', 0):,} duplicates, "
            f"{f.get('late', 0):,} late; registry: {f.get('registered', 0):,} identities, "
            f"{f.get('unregistered', 0)} left out, {f.get('moved', 0)} under another team; "
            f"{f.get('traces', 0):,} traces ({f.get('rooted_traces', 0):,} with a root, "
            f"{f.get('cycle_traces', 0):,} with a cycle), ${f.get('driven_usd', '0')} driven"
        )
        table = Table(
            title="Attribution: roll-ups under the registry and root-caller cost (exact)",
            caption=caption,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("check", no_wrap=True)
        for name in ("checked", "exact", "mismatch"):
            table.add_column(name, justify="right", no_wrap=True)
        for t in self.tallies:
            mark = "[green]✓[/green]" if t.mismatch == 0 else "[red]✗[/red]"
            table.add_row(t.label, f"{t.checked:,}", f"{t.exact:,}", f"{t.mismatch:,} {mark}")
        return table

    def mismatch_lines(self) -> list[str]:
        return [f"{t.label}: {line}" for t in self.tallies for line in t.examples]


def compare(
    want: Recomputed,
    got: Observed,
    labels: Sequence[ChainLabel],
    facts: Mapping[str, Any] | None = None,
) -> AttributionCheck:
    tallies = [_groups(want, got, d) for d in GROUP_DIMENSIONS]
    tallies.append(_keyed("identity", want.identities, got.identities, _rows_text))
    tallies += [_summed(want, got, d) for d in SUMMED_DIMENSIONS]
    tallies.append(
        _keyed("unregistered", _flags(want.unregistered), _flags(got.unregistered), _flag_text)
    )
    costs = root_costs(labels)
    tallies.append(_keyed("root_cost", costs, got.driven, _usage_text))
    driven = sum(u[4] for u in costs.values())
    all_facts = {
        "events": want.events,
        "duplicates": want.duplicates,
        "late": want.late,
        "invalid": want.invalid,
        "unregistered": len(want.unregistered),
        "moved": len(want.moved),
        "traces": len(labels),
        "rooted_traces": sum(1 for c in labels if c.root is not None),
        "cycle_traces": sum(1 for c in labels if c.cycle),
        "roots": len(costs),
        "driven_usd": f"{Decimal(driven).scaleb(-9):.9f}",
        **(facts or {}),
    }
    return AttributionCheck(tuple(tallies), all_facts)


def pool(checks: Sequence[AttributionCheck]) -> AttributionCheck | None:
    """Several runs' checks as one: tallies and counted facts summed."""
    if not checks:
        return None
    tallies = []
    for parts in zip(*(c.tallies for c in checks), strict=True):
        examples = tuple(e for p in parts for e in p.examples)[:EXAMPLES]
        tallies.append(
            Tally(
                parts[0].check, sum(p.checked for p in parts), sum(p.exact for p in parts), examples
            )
        )
    facts: dict[str, Any] = {}
    for c in checks:
        for key, value in c.facts.items():
            if isinstance(value, int) and not isinstance(value, bool):
                facts[key] = facts.get(key, 0) + value
    driven = sum(Decimal(str(c.facts.get("driven_usd", "0"))) for c in checks)
    facts["driven_usd"] = f"{driven:.9f}"
    return AttributionCheck(tuple(tallies), facts)


def _groups(want: Recomputed, got: Observed, dimension: str) -> Tally:
    mine = {v: r for (d, v), r in want.groups.items() if d == dimension}
    theirs = {v: r for (d, v), r in got.groups.items() if d == dimension}
    return _keyed(dimension, mine, theirs, _rows_text)


def _summed(want: Recomputed, got: Observed, dimension: str) -> Tally:
    """Each group's roll-up against the sum of its members' identity roll-ups."""
    groups_of: dict[str, int] = {}
    for (d, _), members in want.members.items():
        if d == dimension:
            for identity in members:
                groups_of[identity] = groups_of.get(identity, 0) + 1
    summed: dict[str, Rows] = {}
    found: dict[str, Rows] = {}
    for (d, value), members in want.members.items():
        if d != dimension or any(groups_of[i] > 1 for i in members):
            continue  # a member split over several groups: no sum to compare with
        total = Rows()
        for identity in sorted(members):
            total.merge(got.identities.get(identity, Rows()))
        summed[value] = total
        found[value] = got.groups.get((dimension, value), Rows())
    return _keyed(f"{dimension}_sum", summed, found, _rows_text)


def _keyed(check: str, want: Mapping[str, Any], got: Mapping[str, Any], text: Any) -> Tally:
    keys = sorted(set(want) | set(got))
    exact = 0
    examples: list[str] = []
    for key in keys:
        a, b = want.get(key), got.get(key)
        if a is not None and b is not None and (a.same(b) if isinstance(a, Rows) else a == b):
            exact += 1
        elif len(examples) < EXAMPLES:
            examples.append(f"{key or '(unassigned)'}: expected {text(a)}, found {text(b)}")
    return Tally(check, len(keys), exact, tuple(examples))


def _flags(values: Iterable[str]) -> dict[str, bool]:
    return dict.fromkeys(values, True)


def _usage_text(usage: Usage | None) -> str:
    if usage is None:
        return "nothing"
    return f"{usage[0]:,} calls ${Decimal(usage[4]).scaleb(-9):.9f}"


def _rows_text(rows: Rows | None) -> str:
    if rows is None:
        return "nothing"
    late = NO_USAGE
    for usage in rows.late.values():
        late = add(late, usage)
    return f"{_usage_text(rows.total())} ({late[0]:,} late) over {len(rows.hours)} h"


def _flag_text(flag: bool | None) -> str:
    return "listed" if flag else "not listed"
