"""What an evaluation runs with: the simulator config, and the policy the simulated world needs.

`evaluation_config()` turns the `meterguard evaluate` options into a SimConfig (incidents after
the detectors' warm-up by default); `policy_overrides()` lists the policy keys the simulated
world relies on (offboarded identities, budgets) that the pipeline's policy supports.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meterguard.streams.simulation import config as sim_config
from meterguard.streams.simulation import simulate
from meterguard.streams.simulation.config import SimConfig


def available_kinds() -> tuple[str, ...]:
    """Incident kinds the simulator can inject (it may grow while this module stays put)."""
    kinds = getattr(sim_config, "INCIDENT_KINDS", None)
    kinds = kinds or getattr(sim_config, "INCIDENT_EFFECTS", {})
    return tuple(kinds) or ("runaway_agent",)


def detector_warmup_minutes() -> int:
    """The longest warm-up among the registered detectors (minutes before they judge)."""
    from meterguard.detectors.registry import REGISTRY

    longest = 0
    for make, _ in REGISTRY.values():
        config = getattr(make(), "config", None)
        for name in ("warmup_minutes", "learn_minutes"):
            longest = max(longest, int(getattr(config, name, 0) or 0))
    return longest


def evaluation_config(
    *,
    start: datetime,
    identities: int,
    minutes: int,
    seed: int,
    kinds: str,
    incidents: int | None,
    traps: bool | None,
    incident_after: int | None = None,
) -> tuple[SimConfig, list[str]]:
    """SimConfig for an evaluation, and notes on what could not be honoured. ValueError if bad.

    Incidents start after the detectors' warm-up by default: every simulated identity is
    born at minute 0, which real identities with a history are not.
    """
    known = available_kinds()
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
        incident_after = detector_warmup_minutes()
        notes.append(f"incidents start after minute {incident_after}, the detectors' warm-up")
    cfg = SimConfig(
        identities=identities,
        start=start,
        minutes=minutes,
        seed=seed,
        incidents=3 * len(chosen) if incidents is None else incidents,
        incident_after_minutes=incident_after,
        incident_kinds=chosen,
        **extra,
    )
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
