"""What an evaluation runs with: the simulator config, and the policy the simulated world needs.

`evaluation_config()` turns the `meterguard evaluate` options into a SimConfig (incidents after
the detectors' warm-up by default; for the wide world its own defaults: size, incidents in
every kind x volume band, traps on); `policy_overrides()` lists the policy keys the simulated
world relies on (offboarded identities, budgets) that the pipeline's policy supports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from meterguard.streams.simulation import config as sim_config
from meterguard.streams.simulation import simulate
from meterguard.streams.simulation.config import WIDE_INCIDENT_KINDS, SimConfig, World
from meterguard.streams.simulation.volume_bands import BAND_LABELS
from meterguard.streams.simulation.wide_world import (
    WIDE_DEFAULT_IDENTITIES,
    WIDE_DEFAULT_MINUTES,
    WIDE_INCIDENTS_PER_CELL,
)

CLASSIC_DEFAULT_IDENTITIES, CLASSIC_DEFAULT_MINUTES = 300, 480


def available_kinds(world: World = "classic") -> tuple[str, ...]:
    """Incident kinds the simulator can inject (it may grow while this module stays put)."""
    if world == "wide":
        return WIDE_INCIDENT_KINDS
    kinds = getattr(sim_config, "INCIDENT_KINDS", None)
    kinds = kinds or getattr(sim_config, "INCIDENT_EFFECTS", {})
    return tuple(kinds) or ("runaway_agent",)


# The detectors that exist to catch each incident kind: its incidents start once they have
# warmed up (another detector's longer warm-up says nothing about this kind).
CATCHERS: dict[str, tuple[str, ...]] = {
    "runaway_agent": ("spike",),
    "retry_loop": ("retry_loop", "spike"),
    "slow_ramp": ("slow_ramp",),
    "agent_chain": ("agent_chain",),
    "drift_model": ("drift",),
    "drift_workload": ("drift",),
    "offboarded": ("drift",),
    "budget_burn": ("budget",),
}


def detector_warmup_minutes(kinds: Sequence[str] | None = None) -> int:
    """The longest warm-up (minutes before they judge) among the detectors that catch
    `kinds` (every registered detector when None or for a kind not listed)."""
    from meterguard.detectors.registry import REGISTRY

    names: set[str] = set()
    for kind in kinds if kinds is not None else ():
        names.update(CATCHERS.get(kind, tuple(REGISTRY)))
    longest = 0
    for name, (make, _) in REGISTRY.items():
        if names and name not in names:
            continue
        config = getattr(make(), "config", None)
        for field in ("warmup_minutes", "learn_minutes"):
            longest = max(longest, int(getattr(config, field, 0) or 0))
    return longest


def evaluation_config(
    *,
    start: datetime,
    identities: int | None,
    minutes: int | None,
    seed: int,
    kinds: str,
    incidents: int | None,
    traps: bool | None,
    incident_after: int | None = None,
    world: World = "classic",
) -> tuple[SimConfig, list[str]]:
    """SimConfig for an evaluation, and notes on what could not be honoured. ValueError if bad.

    Incidents start after the detectors' warm-up by default: every simulated identity is
    born at minute 0, which real identities with a history are not. `identities`, `minutes`,
    `incidents` and `traps` left None take the world's defaults: classic 300 x 480 minutes,
    3 incidents per kind; wide WIDE_DEFAULT_IDENTITIES x WIDE_DEFAULT_MINUTES, 2 incidents
    per kind and volume band, traps on.
    """
    wide = world == "wide"
    if identities is None:
        identities = WIDE_DEFAULT_IDENTITIES if wide else CLASSIC_DEFAULT_IDENTITIES
    if minutes is None:
        minutes = WIDE_DEFAULT_MINUTES if wide else CLASSIC_DEFAULT_MINUTES
    if wide and traps is None:
        traps = True
    known = available_kinds(world)
    chosen = known if kinds.strip() == "all" else tuple(k.strip() for k in kinds.split(",") if k)
    unknown = [k for k in chosen if k not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown incident kinds {unknown}; the simulator knows {list(known)}")
    extra: dict[str, Any] = {}
    notes = []
    if traps is not None:
        if "traps" in SimConfig.__dataclass_fields__:
            extra["traps"] = traps
        else:
            notes.append("the simulator has no traps option yet: --traps/--no-traps ignored")
    if incident_after is None:
        incident_after = detector_warmup_minutes(chosen)
        notes.append(f"incidents start after minute {incident_after}, the detectors' warm-up")
    if incidents is None:
        per_kind = WIDE_INCIDENTS_PER_CELL * len(BAND_LABELS) if wide else 3
        incidents = per_kind * len(chosen)
    if wide:
        extra["world"] = "wide"
    cfg = SimConfig(
        identities=identities,
        start=start,
        minutes=minutes,
        seed=seed,
        incidents=incidents,
        incident_after_minutes=incident_after,
        incident_kinds=chosen,
        **extra,
    )
    if wide:
        simulate.incidents(cfg)  # ValueError now if the incidents find no room
    return cfg, notes


def policy_overrides(cfg: SimConfig) -> tuple[dict[str, Any], list[str]]:
    """Policy keys the simulated world needs (offboarded identities, budgets), if supported."""
    from meterguard.streams.policy.config import PolicyConfig

    wanted: dict[str, Any] = {}
    offboarded = getattr(simulate, "offboarded_identities", None)
    if offboarded is not None:
        wanted["offboarded_identities"] = sorted(offboarded(cfg))
    budgets = getattr(simulate, "budgets", None)
    if budgets is not None:
        wanted["budgets"] = {
            identity: (dict(b) if isinstance(b, Mapping) else {"daily_usd": float(b)})
            for identity, b in budgets(cfg).items()
        }
    accepted = {k: v for k, v in wanted.items() if k in PolicyConfig.model_fields}
    notes = [
        f"policy has no `{key}` setting yet: the simulator's {key} were not applied"
        for key in wanted
        if key not in accepted
    ]
    return accepted, notes
