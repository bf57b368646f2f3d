"""The demo's spend panels: spend per team so far (the exact roll-ups) and the root agents
that drove the most cost downstream (root-caller attribution), read from the demo's Redis."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal

from rich.markup import escape
from rich.table import Table

from meterguard.detectors.features import MinuteWindow
from meterguard.streams.store import Store
from meterguard.streams.store.rollups import label, totals

NANO = Decimal("1e-9")


@dataclass
class SpendView:
    teams: list[tuple[str, MinuteWindow]] = field(default_factory=list)  # by cost, highest first
    # (root identity, cost it drove downstream, its own cost), by cost driven
    driven: list[tuple[str, int, int]] = field(default_factory=list)


async def read_spend(store: Store, top: int = 6) -> SpendView:
    """Every team's totals over all its hours, and the `top` roots by cost driven."""
    teams = await store.rollups.values("team")
    team_rows = await asyncio.gather(*(store.rollups.rows("team", t) for t in teams))
    roots = await store.traces.driven_identities()
    driven_rows, own_rows = await asyncio.gather(
        asyncio.gather(*(store.traces.driven(r) for r in roots)),
        asyncio.gather(*(store.rollups.rows("identity", r) for r in roots)),
    )
    view = SpendView()
    view.teams = sorted(
        ((t, totals(rows.hours)) for t, rows in zip(teams, team_rows, strict=True)),
        key=lambda item: (-item[1].cost_nano_usd, item[0]),
    )
    ranked = [
        (root, totals(d).cost_nano_usd, totals(own.hours).cost_nano_usd)
        for root, d, own in zip(roots, driven_rows, own_rows, strict=True)
    ]
    view.driven = sorted(ranked, key=lambda r: (-r[1], r[0]))[:top]
    return view


def usd(nano: int) -> str:
    return f"${(Decimal(nano) * NANO):,.2f}"


def spend_tables(view: SpendView) -> tuple[Table, Table]:
    teams = Table(title="spend per team so far (exact roll-ups)", expand=True)
    for col, justify in (("team", "left"), ("calls", "right"), ("tokens", "right"),
                         ("cost", "right"), ("errors", "right")):  # fmt: skip
        teams.add_column(col, justify=justify)  # type: ignore[arg-type]
    for team, row in view.teams:
        teams.add_row(
            escape(label(team)), f"{row.calls:,}", f"{row.tokens:,}", usd(row.cost_nano_usd),
            f"{row.errors:,}",
        )  # fmt: skip
    driven = Table(title="top root agents by cost driven downstream", expand=True)
    for col, justify in (("root identity", "left"), ("cost driven", "right"),
                         ("own cost", "right")):  # fmt: skip
        driven.add_column(col, justify=justify)  # type: ignore[arg-type]
    for root, caused, own in view.driven:
        driven.add_row(escape(root), usd(caused), usd(own))
    return teams, driven


def spend_summary(view: SpendView) -> str:
    """One line for the demo's last words (scripts read it)."""
    teams = ", ".join(f"{label(t)} {usd(r.cost_nano_usd)}" for t, r in view.teams[:5])
    roots = ", ".join(f"{root} {usd(caused)}" for root, caused, _ in view.driven[:3])
    return f"spend per team: {teams or 'none'}; top cost driven: {roots or 'none'}"
