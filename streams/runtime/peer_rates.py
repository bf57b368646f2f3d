"""A new identity's yardstick from its peers' levels (pure: no Redis, no clock).

A new identity has no history; the spike detector judges it during its warm-up against
`IdentityContext.peer_rates`. Its peers are the warm identities of its team and environment
(store/peers.py keeps their levels). The yardstick is a high quantile of their levels, metric by
metric, with the dispersion at the same quantile: a newcomer is suspicious above `min_ratio`
times the busiest of its peers, not above the typical one (peers differ widely: against the
median every big newcomer would look like a spike).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from meterguard.detectors.spike import METRICS
from meterguard.streams.policy.episodes import Attribution
from meterguard.streams.store.peers import PeerGroup, PeerLevels

# Of the peers' levels, per metric (numpy's linear interpolation between order statistics).
# Why 1.0, the busiest peer: a team's identities span orders of magnitude (CI keys at a call an
# hour beside services at hundreds a minute), so a new service is often the biggest of its
# team by far without anything being wrong. It was 0.9: on the wide world every benign cold
# start of a busy service alerted (3 of 10 false alerts in 4,087 identity-hours). A newcomer
# at min_ratio² x the busiest thing its team runs is still a spike.
QUANTILE = 1.0
# Fewer peers give no yardstick. Why 3: the busiest of one or two identities is just one
# quiet teammate, against which any busier newcomer would be a spike; three is the fewest that
# make a team.
MIN_PEERS = 3
# A warm identity reports its levels at most once per this many minutes of event time: a level
# that follows about an hour (the spike detector's span) moves little in ten minutes, and one
# HSET field per identity per ten minutes keeps the writes far below the events' own.
REPORT_EVERY_MINUTES = 10


def peer_group(who: Attribution) -> PeerGroup | None:
    """The identity's peer group: its team and environment (None with neither)."""
    if not who.team and not who.environment:
        return None
    return PeerGroup(who.team or "", who.environment or "")


def peer_rates(peers: Mapping[str, PeerLevels], identity: str) -> dict[str, float] | None:
    """The yardstick for `identity` (itself excluded: a restarted identity may still be
    listed), as `IdentityContext.peer_rates`; None with fewer than MIN_PEERS peers. A metric
    whose quantile is zero (the peers never use it) is left out: no yardstick for it."""
    others = [levels.rates for name, levels in peers.items() if name != identity]
    if len(others) < MIN_PEERS:
        return None
    rates: dict[str, float] = {}
    for metric in METRICS:
        level = _quantile([r.get(metric, 0.0) for r in others])
        if level > 0:
            rates[metric] = level
            rates[f"{metric}_phi"] = _quantile([r.get(f"{metric}_phi", 1.0) for r in others])
    return rates or None


def report_due(scored_before: int, scored_through: int) -> bool:
    """Whether scoring minutes scored_before+1 … scored_through passed a multiple of
    REPORT_EVERY_MINUTES: then the identity reports (at most once per that many minutes, with
    no state of its own, whatever the batch sizes)."""
    return scored_through // REPORT_EVERY_MINUTES > scored_before // REPORT_EVERY_MINUTES


def _quantile(values: list[float]) -> float:
    return float(np.quantile(np.asarray(values, dtype=float), QUANTILE))
