"""Reconciliation, the pure part: recompute per-identity totals from the raw events with the
pipeline's own rules, and compare them with what the live namespace holds.

The rules are streams/store/ingest.lua's, applied per identity in source order (they depend on the
order: the watermark decides which events are late):
  - dedupe by (identity, event_id), first occurrence wins, while the first occurrence is
    remembered: until its generation (store/dedupe.py: a quarter of the horizon of event time)
    lies wholly more than the dedupe horizon behind the identity's watermark;
  - a minute is final once the watermark (newest event ms seen) reaches
    (minute + 1) * 60 s + allowed lateness; a new event of a final minute is late: counted in
    the identity's late totals for its hour, never in the minute window;
  - windows keep the last `window_minutes` final minutes; older minutes are "not retained".
One approximation: the script prunes the dedupe set at the end of each batch, this at each
event, so an id repeated more than the horizon (48 h) apart may be judged differently.

What counts as explained, not a mismatch: duplicates (in the raw input, and redeliveries by the
consumer, which only ever add to the duplicate and dead-letter counters), late events (in the
late totals), dead letters (by reason), minutes past retention, identities whose keys expired.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from meterguard.streams.store.dedupe import remembered

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
FIELDS = ("calls", "input_tokens", "output_tokens", "cached_tokens", "cost_nano_usd", "errors")


@dataclass(frozen=True)
class Totals:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_nano_usd: int = 0
    errors: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, f) for f in FIELDS)

    @classmethod
    def parse(cls, packed: str) -> Totals:
        """A packed row of ingest.lua: "calls,in,out,cached,cost_nano,errors"."""
        return cls(*(int(v) for v in packed.split(",")))


@dataclass(frozen=True)
class Rules:
    allowed_lateness_ms: int
    dedupe_horizon_ms: int
    window_minutes: int
    key_ttl_ms: int  # idle keys expire after this (wall clock since the last ingest)


@dataclass(frozen=True)
class Period:
    """Event-time period [from_ms, to_ms); None: unbounded. Widened to whole minutes for the
    windows and whole hours for the late totals, the units Redis keeps them in."""

    from_ms: int | None = None
    to_ms: int | None = None

    def has_minute(self, minute: int) -> bool:
        return self._overlaps(minute * MINUTE_MS, (minute + 1) * MINUTE_MS)

    def has_hour(self, hour: int) -> bool:
        return self._overlaps(hour * HOUR_MS, (hour + 1) * HOUR_MS)

    def _overlaps(self, start: int, end: int) -> bool:
        return (self.from_ms is None or end > self.from_ms) and (
            self.to_ms is None or start < self.to_ms
        )


@dataclass
class Ledger:
    """One identity's events replayed through the script's rules, in source order."""

    rules: Rules
    minutes: dict[int, Totals] = field(default_factory=dict)  # on time, per minute
    late_hours: dict[int, Totals] = field(default_factory=dict)
    late_minutes: Counter[int] = field(default_factory=Counter)  # where late events belong
    new: int = 0
    duplicates: int = 0
    late: int = 0
    watermark: int = -1
    final: int | None = None  # last final minute
    last_seen_ms: int | None = None  # latest broker timestamp of its messages, if known
    seen: dict[str, int] = field(default_factory=dict)  # event_id -> first event ms

    def apply(self, event_id: str, event_ms: int, totals: Totals) -> str:
        """Count one event; returns "new", "duplicate" or "late" as the script would."""
        first = self.seen.get(event_id)
        if first is not None and remembered(first, self.watermark, self.rules.dedupe_horizon_ms):
            self.duplicates += 1
            return "duplicate"
        self.seen[event_id] = event_ms
        minute = event_ms // MINUTE_MS
        if self.final is not None and minute <= self.final:
            status = "late"
            self.late += 1
            hour = event_ms // HOUR_MS
            self.late_hours[hour] = self.late_hours.get(hour, Totals()) + totals
            self.late_minutes[minute] += 1
        else:
            status = "new"
            self.new += 1
            self.minutes[minute] = self.minutes.get(minute, Totals()) + totals
        if event_ms > self.watermark:
            self.watermark = event_ms
            closed = (event_ms - self.rules.allowed_lateness_ms) // MINUTE_MS - 1
            if self.final is None or closed > self.final:
                self.final = closed
        return status

    @property
    def keep_from(self) -> int | None:
        """First retained minute: the script drops minutes older than `window_minutes`."""
        return None if self.final is None else self.final - self.rules.window_minutes + 1


@dataclass(frozen=True)
class Stored:
    """What the live namespace holds for one identity."""

    minutes: dict[int, Totals]
    late_hours: dict[int, Totals]
    counters: dict[str, int]  # the meta hash: new, dup, late, wm, fin, ...
    unreadable: tuple[str, ...] = ()  # fields Redis holds that are not what the script writes


@dataclass(frozen=True)
class Mismatch:
    identity: str  # "*" for namespace-wide counters
    where: str  # "minute 2026-01-05T09:10Z", "late hour …", "counter dup", "stats …"
    field: str
    expected: int | float
    found: int | float
    note: str = ""


@dataclass
class IdentityReport:
    identity: str
    expected: Totals
    found: Totals
    on_time: int
    late: int
    duplicates: int
    redelivered: int = 0
    late_hours: dict[str, int] = field(default_factory=dict)  # hour -> late events counted
    not_retained_minutes: int = 0
    status: str = "ok"  # ok, mismatch, not retained (keys expired)


@dataclass
class Report:
    period: Period
    messages: int
    events: int
    dead_letters: dict[str, int]
    identities: list[IdentityReport]
    mismatches: list[Mismatch]
    explained: dict[str, object]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "period": asdict(self.period),
            "input": {
                "messages": self.messages,
                "events": self.events,
                "dead_letters": self.dead_letters,
            },
            "explained": self.explained,
            "identities": [
                {**asdict(r), "expected": asdict(r.expected), "found": asdict(r.found)}
                for r in self.identities
            ],
            "mismatches": [asdict(m) for m in self.mismatches],
        }


def minute_label(minute: int) -> str:
    from meterguard.timeutil import from_ms

    return from_ms(minute * MINUTE_MS).strftime("%Y-%m-%dT%H:%MZ")


def _diff(identity: str, where: str, want: Totals, got: Totals) -> list[Mismatch]:
    return [
        Mismatch(identity, where, name, a, b)
        for name, a, b in zip(FIELDS, want.astuple(), got.astuple(), strict=True)
        if a != b
    ]


def compare_identity(
    identity: str, ledger: Ledger, stored: Stored, period: Period
) -> tuple[IdentityReport, list[Mismatch]]:
    """Windows (retained minutes in the period), late totals (hours in the period), and the
    identity's counters (all of its input: counters are not kept per period)."""
    out = [Mismatch(identity, "unreadable", what, 0, 0, "damaged") for what in stored.unreadable]
    expected = found = Totals()
    keep_from = ledger.keep_from if ledger.keep_from is not None else -(2**62)
    not_retained = 0
    for minute in sorted(set(ledger.minutes) | set(stored.minutes)):
        if not period.has_minute(minute):
            continue
        if minute < keep_from:
            not_retained += minute in ledger.minutes
            continue
        want, got = ledger.minutes.get(minute, Totals()), stored.minutes.get(minute, Totals())
        expected, found = expected + want, found + got
        out += _diff(identity, f"minute {minute_label(minute)}", want, got)
    late_hours: dict[str, int] = {}
    for hour in sorted(set(ledger.late_hours) | set(stored.late_hours)):
        if not period.has_hour(hour):
            continue
        want, got = ledger.late_hours.get(hour, Totals()), stored.late_hours.get(hour, Totals())
        expected, found = expected + want, found + got
        label = minute_label(hour * 60)
        out += _diff(identity, f"late hour {label}", want, got)
        if want.calls:
            late_hours[label] = want.calls
    counters = stored.counters
    for name, want_n in (("new", ledger.new), ("late", ledger.late)):
        if counters.get(name, 0) != want_n:
            out.append(
                Mismatch(identity, f"counter {name}", "events", want_n, counters.get(name, 0))
            )
    dup = counters.get("dup", 0)
    if dup < ledger.duplicates:  # more is a consumer redelivery, fewer cannot be
        out.append(Mismatch(identity, "counter dup", "events", ledger.duplicates, dup))
    if counters.get("wm", -1) != ledger.watermark:
        out.append(
            Mismatch(identity, "watermark", "event ms", ledger.watermark, counters.get("wm", -1))
        )
    report = IdentityReport(
        identity,
        expected,
        found,
        on_time=ledger.new,
        late=ledger.late,
        duplicates=ledger.duplicates,
        redelivered=max(0, dup - ledger.duplicates),
        late_hours=late_hours,
        not_retained_minutes=not_retained,
        status="mismatch" if out else "ok",
    )
    return report, out


def compare_namespace(
    expected: Mapping[str, int], found: Mapping[str, float], source: str, at_least: set[str]
) -> list[Mismatch]:
    """Namespace-wide counters (the stats hash, or /metrics): equal, or for the names in
    `at_least` (duplicates, dead letters: redeliveries add to them) no fewer."""
    out = []
    for name, want in sorted(expected.items()):
        got = found.get(name, 0)
        if got != want and not (name in at_least and got > want):
            note = "per process since start" if source == "metrics" else ""
            out.append(Mismatch("*", source, name, want, got, note))
    return out


def reconcile(
    ledgers: Mapping[str, Ledger],
    stored: Mapping[str, Stored | None],
    dead_letters: Mapping[str, int],
    period: Period,
    messages: int,
    now_ms: int,
    stats: Mapping[str, int] | None = None,
    metrics: Mapping[str, float] | None = None,
    ignored: Mapping[str, int] | None = None,
) -> Report:
    """`stored` maps every identity of the input, and every identity the namespace holds,
    to what it holds (None: no keys)."""
    identities: list[IdentityReport] = []
    mismatches: list[Mismatch] = []
    for identity in sorted(set(ledgers) | set(stored)):
        ledger, held = ledgers.get(identity), stored.get(identity)
        if ledger is None:
            assert held is not None
            counted = held.counters.get("new", 0) + held.counters.get("late", 0)
            mismatches.append(Mismatch(identity, "identity", "events", 0, counted, "not in input"))
            continue
        if held is None:
            report = IdentityReport(
                identity, Totals(), Totals(), ledger.new, ledger.late, ledger.duplicates
            )
            expired = ledger.last_seen_ms is not None and (
                ledger.last_seen_ms + ledger.rules.key_ttl_ms < now_ms
            )
            report.status = "not retained" if expired else "mismatch"
            if not expired:
                mismatches.append(
                    Mismatch(identity, "identity", "events", ledger.new + ledger.late, 0, "no keys")
                )
            identities.append(report)
            continue
        report, found = compare_identity(identity, ledger, held, period)
        identities.append(report)
        mismatches += found
    totals = {
        "events_new": sum(x.new for x in ledgers.values()),
        "events_duplicate": sum(x.duplicates for x in ledgers.values()),
        "events_late": sum(x.late for x in ledgers.values()),
        "events_dead_lettered": sum(dead_letters.values()),
    }
    at_least = {"events_duplicate", "events_dead_lettered"}
    if stats is not None:
        mismatches += compare_namespace(totals, stats, "stats", at_least)
    if metrics is not None:
        mismatches += compare_namespace(
            _as_metrics(totals, dead_letters), metrics, "metrics", _metric_at_least(dead_letters)
        )
    explained = _explain(identities, totals, dead_letters, stats)
    explained["ignored"] = {
        "count": sum((ignored or {}).values()),
        "by_format": dict(sorted((ignored or {}).items())),
    }
    return Report(
        period, messages, sum(x.new + x.late + x.duplicates for x in ledgers.values()),
        dict(sorted(dead_letters.items())), identities, mismatches, explained,
    )  # fmt: skip


def _as_metrics(totals: Mapping[str, int], dead_letters: Mapping[str, int]) -> dict[str, int]:
    out = {
        f'meterguard_events_total{{status="{s}"}}': totals[f"events_{n}"]
        for s, n in (("new", "new"), ("duplicate", "duplicate"), ("late", "late"))
    }
    for reason, n in dead_letters.items():
        out[f'meterguard_dead_letters_total{{reason="{reason}"}}'] = n
    return out


def _metric_at_least(dead_letters: Mapping[str, int]) -> set[str]:
    return {'meterguard_events_total{status="duplicate"}'} | {
        f'meterguard_dead_letters_total{{reason="{r}"}}' for r in dead_letters
    }


def _explain(
    identities: list[IdentityReport],
    totals: Mapping[str, int],
    dead_letters: Mapping[str, int],
    stats: Mapping[str, int] | None,
) -> dict[str, object]:
    redelivered = (stats or {}).get("events_duplicate", 0) - totals["events_duplicate"]
    return {
        "duplicates": {
            "in_input": totals["events_duplicate"],
            "redelivered_by_consumer": max(0, redelivered) if stats is not None else None,
            "by_identity": {r.identity: r.duplicates for r in identities if r.duplicates},
        },
        "late": {
            "count": totals["events_late"],
            "counted_in": "late totals per hour (the :late hash), not in the minute windows",
            "by_identity_hour": {r.identity: r.late_hours for r in identities if r.late_hours},
        },
        "dead_letters": {"count": sum(dead_letters.values()), "by_reason": dict(dead_letters)},
        "not_retained": {
            "minutes_by_identity": {
                r.identity: r.not_retained_minutes for r in identities if r.not_retained_minutes
            },
            "identities_expired": [r.identity for r in identities if r.status == "not retained"],
        },
    }


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value} (comments and blank lines skipped)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples
