"""Identity flood: far more identities seen for the first time in one event-time minute than
the namespace usually meets (a leaked key minting identities, or garbage in the identity
field). Pure: the births per minute come from the store (streams/store/births.py).

One alert per flood episode: the first minute over the bar whose previous minute was not.
The bar is the larger of the policy's floor and `ratio` times the 90th percentile of the
births per minute in the last `history_minutes` (a namespace that routinely onboards many
identities a minute sets its own bar). The alert is not an identity's: it names the
pseudo-identity FLOOD_IDENTITY and carries a sample of the new identities and their teams,
to find the source.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from meterguard.models import Alert

FLOOD_IDENTITY = "(new identities)"
DETECTOR = "identity_flood"
SAMPLE = 10  # new identities named in the evidence (enough to spot a pattern, short to read)


@dataclass(frozen=True)
class FloodParams:
    min_new_per_minute: int  # policy `identity_flood.min_new_per_minute`
    ratio: float  # policy `identity_flood.ratio`
    history_minutes: int  # policy `identity_flood.history_minutes`


def flood_bar(history: Sequence[int], params: FloodParams) -> float:
    """Births a minute must reach to be a flood, given the births of the minutes before it:
    `ratio` times their 90th percentile (a few flood minutes in the hour do not lift it, so a
    second wave is still seen), never below the policy's floor."""
    usual = float(np.percentile(history, 90)) if len(history) else 0.0
    return max(float(params.min_new_per_minute), params.ratio * usual)


def flood_starts(
    births: Mapping[int, tuple[int, int]],
    windows: Mapping[int, Sequence[int]],
    params: FloodParams,
) -> list[tuple[int, int, float]]:
    """(minute, births, bar) of each minute this batch pushed over its bar while the minute
    before it was under its own: a flood's first minute, once. `births`: minute -> (births
    before this batch, after it); `windows`: minute -> births of the `history_minutes` + 1
    minutes before it, oldest first."""
    found = []
    for minute, (before, after) in sorted(births.items()):
        window = list(windows.get(minute, ()))
        bar = flood_bar(window[1:], params)
        previous_over = bool(window) and window[-1] >= flood_bar(window[:-1], params)
        if before < bar <= after and not previous_over:
            found.append((minute, after, bar))
    return found


def flood_alert(
    minute: int, births: int, bar: float, newcomers: Sequence[tuple[str, str | None]]
) -> Alert:
    """The alert of a flood that starts at epoch minute `minute`. `newcomers`: (identity,
    team) of new identities of that minute seen in this batch (the evidence's sample)."""
    start = datetime.fromtimestamp(minute * 60, UTC)
    digest = hashlib.sha256(f"{DETECTOR}|{minute}".encode()).hexdigest()[:24]
    teams = Counter(team or "(unassigned)" for _, team in newcomers).most_common(3)
    return Alert(
        alert_id=f"{DETECTOR}-{digest}",
        identity=FLOOD_IDENTITY,
        detector=DETECTOR,
        severity="critical" if births >= 10 * bar else "warning",
        score=min(1.0, 0.5 + 0.5 * (1 - bar / births)),
        status="firing",
        title=f"Identity flood: {births} new identities in one minute",
        summary=(
            f"{births} identities never seen before appeared in the minute from "
            f"{start:%Y-%m-%d %H:%M} UTC (the bar: {bar:.0f}); a leaked key minting "
            "identities, or garbage in the identity field. Their events are counted."
        ),
        evidence={
            "new_identities": births,
            "bar": bar,
            "sample": sorted(identity for identity, _ in newcomers)[:SAMPLE],
            "top_teams": [{"team": t, "new_identities": n} for t, n in teams],
        },
        window_start=start,
        window_end=start + timedelta(minutes=1),
        event_time=start,
    )
