"""A `PolicyDiff` (policy_diff.py) as rich tables: the two runs' totals, the alerts and the
throttle commands that would appear (+) or disappear (−) per detector x environment, and the
episodes both policies raise with another outcome."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meterguard.streams.offline.policy_diff import ACTIONS, KINDS, Group, PolicyDiff


def render(
    diff: PolicyDiff, console: Console, current: str = "current", candidate: str = "candidate"
) -> None:
    """`current` and `candidate` name the two policies (their files) in the headings. The
    ~ column counts alerts in both runs at another minute, commands with other limits or
    expiry. Names and identities are printed as text, never as rich markup."""
    current, candidate = escape(current), escape(candidate)
    console.print(_totals(diff, current, candidate))
    episodes, matched = diff.episodes, diff.matched
    console.print(
        f"In both runs: {matched['alerts']:,} alerts "
        f"({diff.total('alerts', 'changed'):,} at another minute), {matched['commands']:,} "
        f"throttle commands, {matched['episodes'] + episodes['moved']:,} episodes "
        f"({episodes['moved']:,} moved to another start, {episodes['changed']:,} with another "
        f"severity or throttle action). Episodes only under {current}: "
        f"{episodes['only_current']:,}; only under {candidate}: {episodes['only_candidate']:,}."
    )
    _changes(console, diff.alerts, f"Alerts with {candidate} instead of {current}", "kind")
    _changes(console, diff.commands, f"Throttle commands with {candidate}", "action")
    if not diff.episode_changes:
        console.print("No episode both raise moved or changed severity or throttle action.")
        return
    table = Table(
        title=f"Episodes both raise, moved or with another outcome ({current} → {candidate})",
        title_justify="left",
    )
    for name in ("detector", "environment", "start", "severity", "action"):
        table.add_column(name)
    table.add_column("episodes", justify="right")
    table.add_column("examples", min_width=16, overflow="fold")
    for change in diff.episode_changes:
        table.add_row(
            escape(change.detector),
            escape(change.environment),
            "moved" if change.moved else "same",
            _arrow(change.severity),
            _arrow(change.action),
            f"{change.episodes:,}",
            escape(", ".join(change.examples)),
        )
    console.print(table)


def _arrow(pair: tuple[str, str]) -> str:
    return pair[0] if pair[0] == pair[1] else f"{pair[0]} → {pair[1]}"


def _totals(diff: PolicyDiff, current: str, candidate: str) -> Table:
    table = Table(title="Policy what-if (same events)", title_justify="left")
    table.add_column("")
    table.add_column(f"current: {current}", justify="right")
    table.add_column(f"candidate: {candidate}", justify="right")
    table.add_column("change", justify="right")

    def row(label: str, before: int, after: int) -> None:
        delta = after - before
        table.add_row(label, f"{before:,}", f"{after:,}", f"{delta:+,}" if delta else "0")

    old, new = diff.current, diff.candidate
    row("alerts", sum(old.alerts.values()), sum(new.alerts.values()))
    for kind in KINDS:
        row(f"  {kind}", old.alerts[kind], new.alerts[kind])
    row("throttle commands", sum(old.commands.values()), sum(new.commands.values()))
    for action in ACTIONS:
        row(f"  {action}", old.commands[action], new.commands[action])
    row("episodes", old.episodes, new.episodes)
    return table


def _changes(console: Console, groups: list[Group], title: str, kind: str) -> None:
    if not groups:
        console.print(f"{title}: no difference.")
        return
    changed = "~ minute" if kind == "kind" else "~ limits"
    table = Table(title=f"{title} (+ appear, − disappear)", title_justify="left")
    for name in ("detector", "environment", kind, "severity"):
        table.add_column(name)
    for name in ("+", "−", changed):
        table.add_column(name, justify="right")
    table.add_column("examples", min_width=16, overflow="fold")
    for g in groups:
        counts = (g.appeared, g.disappeared, g.changed)
        table.add_row(
            escape(g.detector),
            escape(g.environment),
            g.kind,
            g.severity,
            *(f"{n:,}" if n else "" for n in counts),
            _examples(g),
        )
    console.print(table)


def _examples(group: Group) -> str:
    parts = []
    for sign, change in (("+", "appeared"), ("−", "disappeared"), ("~", "changed")):
        names = group.examples[change]
        if names:
            parts.append(f"{sign} " + escape(", ".join(names)))
    return "\n".join(parts)
