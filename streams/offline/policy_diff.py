"""Policy what-if (pure): what a candidate policy changes against the current one, given two
replays of the same events (`meterguard replay --policy CANDIDATE --compare-policy CURRENT`).

`diff_runs(current, candidate)` takes each run's alerts and throttle commands and returns a
`PolicyDiff`: what would *appear* (only under the candidate) and *disappear* (only under the
current policy), counted per detector x environment x kind x severity with a few example
identities per row, and the episodes both raise with another outcome. `to_dict` is its JSON;
policy_diff_view.py prints it as tables.

Matching alerts: the key is (identity, detector, episode_id, status, severity).
- `episode_id` hashes (identity, detector, the episode's first minute): the same under any
  policy as long as the episode opens at the same minute. A policy moves that minute only
  through `fire_at` (or a detector parameter it carries); an episode that opens at another
  minute is another episode for every consumer too (alert ids, Slack threads, webhook
  dedupe), so its alerts disappear and appear, never match (the episodes below pair it up as
  *moved*).
- status + severity place the alert in its episode: firing/warning (the first alert),
  firing/critical (the first alert, or the escalation after a warning), resolved/info (the
  end). The policy sends each at most once per episode, so the key is unique in a run (a
  repeat would count once). It is what `alert_id` hashes, spelled out; an alert without
  `episode_id` (an older producer) gets it derived, as `Alert` does.
- Left out of the key, compared on a match: the alert's minute (`critical_at` moves an
  escalation, `resolve_after_minutes` a resolution): counted as *changed* (~). Score and text
  are not compared (the summary names the throttle; the commands say that better).
- Kind: resolved is a *resolution*; firing/critical after a firing/warning of the same
  episode in the same run is an *escalation*; any other firing alert is a *firing*.

Matching commands: a command belongs to the alert its `alert_id` names, so to an episode, a
detector, an environment and a severity (detector "?" if that alert is not in the run). The
key is (identity, detector, episode_id, action, version); `version` is event-time ms of the
command's issue (replay-stable), so throttles, blocks, renewals and releases match one by one;
a match with other limits or another expiry is *changed* (~).

Episodes: one run's episode *is* the other's when the episode_id is the same, or else it has
*moved* when it overlaps (first to last minute; an unresolved one lasts to the end) an
episode of the same identity and detector only the other run raises: the same incident,
opened at another minute (typically `fire_at`). Paired episodes are compared on their outcome:
the highest severity of their firing alerts and the strongest action of their commands (block >
throttle > none); moved ones and those with another outcome are listed. The rest, raised by one
run only, are counted.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from meterguard.models import Alert, ThrottleCommand

MAX_EXAMPLES = 5  # example identities per row and kind of change
KINDS = ("firing", "escalation", "resolution")
ACTIONS = ("throttle", "block", "release")
CHANGES = ("appeared", "disappeared", "changed")
_SEVERITY = {"-": -1, "info": 0, "warning": 1, "critical": 2}
_STRENGTH = {"none": 0, "release": 0, "throttle": 1, "block": 2}
_ORDER = {name: i for i, name in enumerate(KINDS + ACTIONS)}


@dataclass(frozen=True)
class RunOutput:
    """One replay's alerts and throttle commands, as published."""

    alerts: Sequence[Alert]
    commands: Sequence[ThrottleCommand]


@dataclass
class Group:
    """One row: the changes of one detector x environment x kind (alerts) or action
    (commands) x severity, with up to MAX_EXAMPLES identities per kind of change."""

    detector: str
    environment: str
    kind: str
    severity: str
    appeared: int = 0
    disappeared: int = 0
    changed: int = 0  # alerts: at another minute; commands: other limits or expiry
    examples: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHANGES})

    def add(self, change: str, identity: str, limit: int) -> None:
        setattr(self, change, getattr(self, change) + 1)
        shown = self.examples[change]
        if identity not in shown and len(shown) < limit:
            shown.append(identity)


@dataclass
class EpisodeChange:
    """Episodes both policies raise, moved (opened at another minute) or with another
    severity or throttle action; examples of moved ones say by how much: `id (+2 min)`."""

    detector: str
    environment: str
    moved: bool
    severity: tuple[str, str]  # (current, candidate): the highest of the firing alerts
    action: tuple[str, str]  # (current, candidate): block > throttle > none
    episodes: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunTotals:
    alerts: dict[str, int]  # by kind
    commands: dict[str, int]  # by action
    episodes: int


@dataclass
class PolicyDiff:
    current: RunTotals
    candidate: RunTotals
    alerts: list[Group]
    commands: list[Group]
    episode_changes: list[EpisodeChange]
    matched: dict[str, int]  # alerts, commands, episodes (same id) found in both runs
    episodes: dict[str, int]  # moved, changed (outcome), only_current, only_candidate

    def total(self, table: str, change: str) -> int:
        groups: list[Group] = getattr(self, table)
        return sum(getattr(g, change) for g in groups)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["changes"] = {
            table: {change: self.total(table, change) for change in CHANGES}
            for table in ("alerts", "commands")
        }
        return doc


@dataclass(frozen=True)
class _Item:
    identity: str
    detector: str
    environment: str
    kind: str  # alerts: firing, escalation, resolution; commands: the action
    severity: str
    detail: tuple[Hashable, ...]  # compared on a match


@dataclass
class _Episode:
    identity: str
    detector: str
    environment: str
    start: int  # first minute
    end: float = math.inf  # last minute, once resolved
    severity: str = "info"
    action: str = "none"

    def overlaps(self, other: _Episode) -> bool:
        return self.start <= other.end and other.start <= self.end


class _Run:
    """One run's alerts, commands and episodes, by their matching keys (first one wins)."""

    def __init__(self, out: RunOutput) -> None:
        self.alerts: dict[tuple[str, ...], _Item] = {}
        self.commands: dict[tuple[str | int, ...], _Item] = {}
        self.episodes: dict[str, _Episode] = {}
        warned = {
            a.episode_id for a in out.alerts if a.status == "firing" and a.severity == "warning"
        }
        by_id: dict[str, Alert] = {}
        for a in out.alerts:
            by_id.setdefault(a.alert_id, a)
            env = a.environment or "-"
            kind = "resolution" if a.status == "resolved" else "firing"
            if a.status == "firing" and a.severity == "critical" and a.episode_id in warned:
                kind = "escalation"
            key = (a.identity, a.detector, a.episode_id, a.status, a.severity)
            item = _Item(a.identity, a.detector, env, kind, a.severity, (a.window_start,))
            self.alerts.setdefault(key, item)
            episode = self.episodes.get(a.episode_id)
            if episode is None:
                start = a.evidence.get("episode_start_minute")
                if not isinstance(start, int):
                    start = int(a.window_start.timestamp()) // 60
                episode = _Episode(a.identity, a.detector, env, start)
                self.episodes[a.episode_id] = episode
            if a.status == "resolved":
                episode.end = int(a.window_end.timestamp()) // 60 - 1
            elif _SEVERITY[a.severity] > _SEVERITY[episode.severity]:
                episode.severity = a.severity
        for c in out.commands:
            alert = by_id.get(c.alert_id or "")
            detector, episode_id = (alert.detector, alert.episode_id) if alert else ("?", "")
            env = (alert.environment or "-") if alert else "-"
            severity = alert.severity if alert else "-"
            detail = (c.limits.requests_per_minute, c.limits.tokens_per_minute, c.expires_at)
            item = _Item(c.identity, detector, env, c.action, severity, detail)
            self.commands.setdefault((c.identity, detector, episode_id, c.action, c.version), item)
            held = self.episodes.get(episode_id)
            if held is not None and _STRENGTH[c.action] > _STRENGTH[held.action]:
                held.action = c.action

    def totals(self) -> RunTotals:
        alerts = dict.fromkeys(KINDS, 0)
        for item in self.alerts.values():
            alerts[item.kind] += 1
        commands = dict.fromkeys(ACTIONS, 0)
        for item in self.commands.values():
            commands[item.kind] += 1
        return RunTotals(alerts, commands, len(self.episodes))


def diff_runs(
    current: RunOutput, candidate: RunOutput, max_examples: int = MAX_EXAMPLES
) -> PolicyDiff:
    """What replacing the `current` policy by the `candidate` changes, on the same events."""
    old, new = _Run(current), _Run(candidate)
    alerts, matched_alerts = _compare(old.alerts, new.alerts, max_examples)
    commands, matched_commands = _compare(old.commands, new.commands, max_examples)
    pairs = _pair_episodes(old.episodes, new.episodes)
    changes: dict[tuple[object, ...], EpisodeChange] = {}
    for was, now in pairs:
        moved = was.start != now.start
        if not moved and _outcome(was) == _outcome(now):
            continue
        severity, action = (was.severity, now.severity), (was.action, now.action)
        key = (was.detector, was.environment, moved, severity, action)
        change = changes.get(key)
        if change is None:
            change = changes[key] = EpisodeChange(
                was.detector, was.environment, moved, severity, action
            )
        change.episodes += 1
        shift = f" ({now.start - was.start:+d} min)" if moved else ""
        if len(change.examples) < max_examples:
            change.examples.append(was.identity + shift)
    both = sum(1 for was, now in pairs if was.start == now.start)
    return PolicyDiff(
        current=old.totals(),
        candidate=new.totals(),
        alerts=alerts,
        commands=commands,
        episode_changes=sorted(changes.values(), key=lambda c: str(asdict(c))),
        matched={"alerts": matched_alerts, "commands": matched_commands, "episodes": both},
        episodes={
            "moved": len(pairs) - both,
            "changed": sum(1 for was, now in pairs if _outcome(was) != _outcome(now)),
            "only_current": len(old.episodes) - len(pairs),
            "only_candidate": len(new.episodes) - len(pairs),
        },
    )


def _outcome(episode: _Episode) -> tuple[str, str]:
    return episode.severity, episode.action


def _pair_episodes(
    old: dict[str, _Episode], new: dict[str, _Episode]
) -> list[tuple[_Episode, _Episode]]:
    """The same episode in both runs, then moved ones: an episode only one run raises, paired
    with the first overlapping one of the same identity and detector only the other raises."""
    pairs = [(was, new[key]) for key, was in old.items() if key in new]
    unpaired: dict[tuple[str, str], list[_Episode]] = {}
    for key, now in new.items():
        if key not in old:
            unpaired.setdefault((now.identity, now.detector), []).append(now)
    for key, was in old.items():
        others = [] if key in new else unpaired.get((was.identity, was.detector), [])
        match = next((now for now in others if was.overlaps(now)), None)
        if match is not None:
            others.remove(match)
            pairs.append((was, match))
    return pairs


K = TypeVar("K", bound=Hashable)


def _compare(old: Mapping[K, _Item], new: Mapping[K, _Item], limit: int) -> tuple[list[Group], int]:
    groups: dict[tuple[str, str, str, str], Group] = {}

    def note(item: _Item, change: str) -> None:
        at = (item.detector, item.environment, item.kind, item.severity)
        group = groups.get(at)
        if group is None:
            group = groups[at] = Group(*at)
        group.add(change, item.identity, limit)

    matched = 0
    for key, item in old.items():
        other = new.get(key)
        if other is None:
            note(item, "disappeared")
            continue
        matched += 1
        if other.detail != item.detail:
            note(other, "changed")
    for key, item in new.items():
        if key not in old:
            note(item, "appeared")
    ordered = sorted(
        groups.values(),
        key=lambda g: (g.detector, g.environment, _ORDER[g.kind], -_SEVERITY[g.severity]),
    )
    return ordered, matched
