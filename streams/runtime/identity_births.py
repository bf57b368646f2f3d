"""The identity-flood check of one batch: which identities are new to the namespace
(store/births.py), and whether they push a minute over the flood bar
(detectors/identity_flood.py). Run by the pipeline after ingest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meterguard.detectors.identity_flood import FloodParams, flood_alert, flood_starts
from meterguard.models import Alert, MeteringEvent
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.store import Store
from meterguard.streams.store.windows import IngestResult
from meterguard.timeutil import minute_of


async def flood_alerts(
    store: Store,
    policy: PolicyConfig,
    batch: Mapping[str, Sequence[MeteringEvent]],
    results: Mapping[str, IngestResult],
) -> list[Alert]:
    """Alerts for floods this batch starts. Only identities with new events and no final
    minute before this batch can be new (any other has been seen within its keys' TTL), so
    the set is asked about first-hour identities only."""
    spec = policy.identity_flood
    if not spec.enabled:
        return []
    first_minute = {
        identity: minute_of(min(e.event_time_ms for e in events))
        for identity, events in batch.items()
        if results[identity].new and results[identity].final_before is None
    }
    born, counts, windows, since = await store.births.note(first_minute, spec.history_minutes + 1)
    # Armed once the namespace has a history: in its first `history_minutes` every identity
    # is new (a fresh deployment, a replay into an empty namespace), which is no flood.
    armed = {
        m: c for m, c in counts.items() if since is not None and m >= since + spec.history_minutes
    }
    if not armed:
        return []
    params = FloodParams(spec.min_new_per_minute, spec.ratio, spec.history_minutes)
    alerts = []
    for minute, births, bar in flood_starts(armed, windows, params):
        newcomers = [(i, batch[i][0].team) for i in born if first_minute[i] == minute]
        alerts.append(flood_alert(minute, births, bar, newcomers))
    return alerts
