"""What a simulated run is: `SimConfig`, the incident kinds it may inject, the `Incident` label.

The bottom of the simulator: plain data and the timing rules of each incident kind (how long
it lasts, how early it may start), with no random draw. Everything else in
streams/simulation/ reads its run from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal


@dataclass(frozen=True)
class IncidentEffect:
    """What an incident does to its identity's traffic while it lasts."""

    rate_factor: float  # calls per minute multiplied by this
    token_factor: float  # input and output tokens per call multiplied by this
    repeat_share: float  # share of calls repeating one request (same fingerprint)


ALL_INCIDENT_KINDS: tuple[str, ...] = (
    "runaway_agent",  # an agent calling 30x its usual rate, bigger prompts, repeating itself
    "retry_loop",  # one request fingerprint hammered steadily, mostly failing
    "slow_ramp",  # a leaked key used a little more every hour (1x -> 4-8x)
    "agent_chain",  # agents calling agents in a cycle: deep traces, fan-out, new edges
    "drift_model",  # same rate, a much pricier model tier
    "drift_workload",  # the credential used by a new workload from a new source
    "offboarded",  # an identity offboarded before the run calls again
    "budget_burn",  # sustained elevated spend that crosses the daily budget
)

# The uniform scaling of an identity's ordinary traffic while its incident lasts. Only the
# runaway agent is pure scaling; the other kinds are shaped in
# streams/simulation/load_incidents.py and streams/simulation/drift_incidents.py.
INCIDENT_EFFECTS: dict[str, IncidentEffect] = {
    "runaway_agent": IncidentEffect(rate_factor=30.0, token_factor=2.0, repeat_share=0.6),
    **{kind: IncidentEffect(1.0, 1.0, 0.0) for kind in ALL_INCIDENT_KINDS[1:]},
}
# Kinds that need more than SimConfig.incident_minutes to unfold: their own minimum duration.
MIN_INCIDENT_MINUTES = {"slow_ramp": 90, "budget_burn": 120}
OFFBOARDED_QUIET_MINUTES = 60  # an offboarded identity is silent at least this long before

# The wide world (streams/simulation/wide_world.py): the kinds it injects, their longest
# duration (runaway_agent and retry_loop up to 2 h, slow_ramp 1-2 h) and the smallest
# population that gives each of its five volume bands its traps and an incident host.
WIDE_INCIDENT_KINDS: tuple[str, ...] = ("runaway_agent", "retry_loop", "slow_ramp")
WIDE_MAX_INCIDENT_MINUTES = 120
WIDE_MIN_IDENTITIES = 35
World = Literal["classic", "wide"]


@dataclass(frozen=True)
class Incident:
    """Ground-truth label: `identity` misbehaves as `kind` during [start, end)."""

    kind: str
    identity: str
    start: datetime
    end: datetime


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    identities: int = 300
    start: datetime  # UTC aware; required so that nothing reads the wall clock
    minutes: int = 240
    seed: int = 7
    incidents: int = 3  # how many incidents to inject
    incident_after_minutes: int = 40  # no incident starts before this: baselines come first
    incident_minutes: int = 15  # duration of each incident
    incident_latest_start: int | None = None  # minute; default: any time that fits the run
    incident_kinds: tuple[str, ...] = ("runaway_agent",)  # assigned round-robin
    # Normal behaviour that must not alert (cold starts, backoff retries, deploy traffic
    # shifts, premium-model users, quiet offboarded identities); batch bursts, the daily
    # rhythm and the agent call graph are there anyway.
    traps: bool = False
    cold_start_share: float = 0.05  # with traps: identities that first appear mid-run
    # "classic": the demo's world and the evaluation world built on it (above); "wide": rates
    # over five decades, bursty noise, weekly rhythm (streams/simulation/wide_world.py).
    world: World = "classic"

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("SimConfig.start must be timezone-aware")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        if self.identities < 1 or self.minutes < 1 or self.seed < 0 or self.incidents < 0:
            raise ValueError("identities and minutes must be >= 1, seed and incidents >= 0")
        if not 0.0 <= self.cold_start_share < 1.0:
            raise ValueError("cold_start_share must be in [0, 1)")
        if self.world == "wide":
            self._check_wide()
            return
        if self.world != "classic":
            raise ValueError(f"unknown world {self.world!r}: classic or wide")
        kinds = self.incident_kinds
        for kind in dict.fromkeys(kinds[i % len(kinds)] for i in range(self.incidents)):
            if incident_earliest_start(self, kind) + incident_duration(self, kind) > self.minutes:
                detail = "" if kind == "runaway_agent" else f" ({kind} needs"
                if detail:
                    need = incident_earliest_start(self, kind) + incident_duration(self, kind)
                    detail += f" {need} minutes)"
                raise ValueError(
                    f"no room for an incident: raise minutes or lower incident_*{detail}"
                )
        unknown = set(kinds) - set(INCIDENT_EFFECTS)
        if unknown or not kinds:
            raise ValueError(f"unknown incident kinds {sorted(unknown)}")

    def _check_wide(self) -> None:
        unknown = sorted(set(self.incident_kinds) - set(WIDE_INCIDENT_KINDS))
        if unknown or not self.incident_kinds:
            raise ValueError(
                f"unknown incident kinds {unknown} for the wide world: it injects "
                f"{list(WIDE_INCIDENT_KINDS)}"
            )
        if self.identities < WIDE_MIN_IDENTITIES:
            raise ValueError(f"the wide world needs at least {WIDE_MIN_IDENTITIES} identities")
        need = self.incident_after_minutes + WIDE_MAX_INCIDENT_MINUTES
        if self.incidents and self.minutes < need:
            raise ValueError(
                f"no room for an incident: the wide world needs {need} minutes "
                f"(incident_after_minutes + {WIDE_MAX_INCIDENT_MINUTES})"
            )

    @property
    def enriched(self) -> bool:
        """Whether the run uses the evaluation world (streams/simulation/world_traffic.py).

        False for the classic configuration (runaway_agent only, no traps), whose events are
        kept exactly as they always were. Always False for the wide world, which is neither.
        """
        if self.world == "wide":
            return False
        return self.traps or any(kind != "runaway_agent" for kind in self.incident_kinds)


def incident_duration(cfg: SimConfig, kind: str) -> int:
    """Minutes an incident of this kind lasts."""
    return max(cfg.incident_minutes, MIN_INCIDENT_MINUTES.get(kind, 0))


def incident_earliest_start(cfg: SimConfig, kind: str) -> int:
    """First run minute an incident of this kind may start."""
    quiet = OFFBOARDED_QUIET_MINUTES if kind == "offboarded" else 0
    return max(cfg.incident_after_minutes, quiet)
