"""The policy file (`meterguard.yaml`, MG_POLICY_FILE): thresholds, environments, budgets.

Validated once at start (unknown keys and inconsistent thresholds are errors); the episode
transition in `episodes.py` only reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meterguard.detectors.features import IdentityContext
from meterguard.sinks.routing import RoutingConfig
from meterguard.yaml_config import load_yaml_model


class Materiality(BaseModel):
    """How large a rise must be, per minute above the identity's own baseline, to be worth a
    critical alert and a throttle. Below all three an anomaly still alerts, as a warning:
    small identities are never blind (issue 10), they just do not page or get throttled.
    Defaults: what an on-call acts on at once ($0.50/min is $720/day); tune per environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    calls_per_minute: float = Field(
        default=30.0, ge=0, description="calls a minute above the identity's baseline"
    )
    tokens_per_minute: float = Field(
        default=30_000.0, ge=0, description="tokens a minute above the identity's baseline"
    )
    cost_usd_per_minute: float = Field(
        default=0.5, ge=0, description="USD a minute above the identity's baseline"
    )

    def reached_by(self, excess: Mapping[str, float]) -> bool:
        limits = {
            "calls": self.calls_per_minute,
            "tokens": self.tokens_per_minute,
            "cost_usd": self.cost_usd_per_minute,
        }
        return any(excess.get(metric, 0.0) >= limit for metric, limit in limits.items())


class SpikeParams(BaseModel):
    """detectors/spike.py SpikeConfig fields a policy may set (docstring there says why)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_ratio: float = Field(
        default=3.0,
        gt=1.2,
        le=100,
        description="rise over the identity's rate (x) that scores 0.8",
    )
    alert_evidence: float = Field(
        default=14.0,
        ge=2,
        le=100,
        description="evidence (nats) that scores 0.8 (higher: fewer, later alerts)",
    )


class RampParams(BaseModel):
    """detectors/slow_ramp.py RampConfig fields a policy may set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_ratio: float = Field(
        default=4.0,
        gt=1.2,
        le=100,
        description="rise over the anchor (the lowest ~4 h level of 3 h) that scores 0.8",
    )
    alert_z: float = Field(
        default=6.0,
        ge=2,
        le=50,
        description="z of the short average over the anchor that scores 0.8",
    )


class RetryParams(BaseModel):
    """detectors/retry_loop.py RetryConfig fields a policy may set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_evidence: float = Field(
        default=14.0,
        ge=2,
        le=100,
        description="evidence (nats) of one request's failures that scores 0.8",
    )
    min_error_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="share of the request's calls in the run that must fail",
    )


class DetectionParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    spike: SpikeParams = Field(default=SpikeParams(), description="the spike detector")
    slow_ramp: RampParams = Field(default=RampParams(), description="the slow-ramp detector")
    retry_loop: RetryParams = Field(default=RetryParams(), description="the retry-loop detector")

    def for_detectors(self) -> dict[str, dict[str, float]]:
        return {
            "spike": self.spike.model_dump(),
            "slow_ramp": self.slow_ramp.model_dump(),
            "retry_loop": self.retry_loop.model_dump(),
        }


class EnvironmentPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fire_at: float = Field(
        default=0.8, gt=0, le=1, description="score (0-1) at which an episode opens (an alert)"
    )
    critical_at: float = Field(
        default=0.9, gt=0, le=1, description="score at which an episode is critical"
    )
    throttle_on: Literal["critical", "warning", "never"] = Field(
        default="critical", description="lowest severity that issues a throttle command"
    )
    materiality: Materiality = Field(
        default=Materiality(),
        description="how large a rise must be to be critical and throttled (else a warning)",
    )
    detection: DetectionParams = Field(
        default=DetectionParams(), description="detector parameters in this environment"
    )

    @model_validator(mode="after")
    def _ordered(self) -> EnvironmentPolicy:
        if self.critical_at < self.fire_at:
            raise ValueError(f"critical_at ({self.critical_at}) is below fire_at ({self.fire_at})")
        return self


class BudgetSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    daily_usd: float | None = Field(
        default=None, gt=0, description="spend limit per event-time UTC day"
    )
    monthly_usd: float | None = Field(
        default=None, gt=0, description="spend limit per event-time UTC month"
    )


GroupDimension = Literal["team", "business_unit", "environment"]
GROUP_DIMENSIONS: tuple[GroupDimension, ...] = ("team", "business_unit", "environment")
BudgetPeriod = Literal["hour", "day", "month"]  # UTC calendar, event time ("hour": for tests)
CapAction = Literal["alert", "throttle", "block"]


class CapThrottle(BaseModel):
    """The limits every identity of a group gets at its cap (`at_cap: throttle`), per
    identity; a limit left out is the policy's floor (`min_requests_per_minute`,
    `min_tokens_per_minute`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: int | None = Field(
        default=None, ge=1, description="requests a minute per identity at the cap"
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="tokens a minute per identity at the cap"
    )


class GroupBudget(BaseModel):
    """One team's, business unit's or environment's budget (policy/group_budgets.py): a
    limit in USD and/or tokens per period, warnings at fractions of it (each once per
    period), and what happens to every identity of the group at the cap."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit_usd: float | None = Field(default=None, gt=0, description="limit in USD per period")
    limit_tokens: int | None = Field(default=None, gt=0, description="limit in tokens per period")
    period: BudgetPeriod = Field(
        default="month", description="UTC calendar period, event time (`hour`: for tests)"
    )
    warn_at: tuple[float, ...] = Field(
        default=(0.5, 0.8, 0.95),
        max_length=10,
        description="fractions of the limit that each alert once per period (increasing)",
    )
    at_cap: CapAction = Field(
        default="alert",
        description="at the cap: alert, throttle or block every identity of the group",
    )
    throttle: CapThrottle | None = Field(
        default=None, description="limits per identity with `at_cap: throttle`"
    )

    @field_validator("warn_at")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for fraction in value:
            if not 0 < fraction < 1:
                raise ValueError(f"{fraction} is not a fraction in (0, 1): the cap itself is 1")
        for before, after in pairwise(value):
            if after <= before:
                raise ValueError(f"fractions must increase: {after} follows {before}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GroupBudget:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("a budget needs limit_usd, limit_tokens or both")
        if self.throttle is not None and self.at_cap != "throttle":
            raise ValueError(
                f"throttle limits are only used with at_cap: throttle, not {self.at_cap}"
            )
        return self


class GroupBudgets(BaseModel):
    """`group_budgets:` budgets per team, business unit and environment, keyed by the
    registry's names (streams/policy/registry.py decides who belongs to which group)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    team: dict[str, GroupBudget] = Field(default_factory=dict, description="per team")
    business_unit: dict[str, GroupBudget] = Field(
        default_factory=dict, description="per business unit"
    )
    environment: dict[str, GroupBudget] = Field(default_factory=dict, description="per environment")

    @property
    def configured(self) -> bool:
        return bool(self.team or self.business_unit or self.environment)

    def of(self, dimension: str) -> dict[str, GroupBudget]:
        found: dict[str, GroupBudget] = getattr(self, dimension)
        return found


def _default_environments() -> dict[str, EnvironmentPolicy]:
    return {
        "prod": EnvironmentPolicy(),
        "staging": EnvironmentPolicy(throttle_on="never"),
        "test": EnvironmentPolicy(fire_at=0.9, critical_at=0.97, throttle_on="never"),
    }


class IdentityFlood(BaseModel):
    """`identity_flood:` an alert when far more identities appear for the first time in one
    event-time minute than usual (detectors/identity_flood.py): a leaked key minting
    identities, or garbage in the identity field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="raise identity_flood alerts")
    # The floor of the bar. A deployment that brings up a few dozen agents or CI runners at
    # once is routine; a hundred never-seen identities in one minute costs ~10 KiB of Redis
    # each (README, Sizing) and is worth a look. A namespace that onboards more per minute
    # sets a higher floor here, and its own history lifts the bar anyway (`ratio`).
    min_new_per_minute: int = Field(
        default=100, ge=1, description="the floor of the bar: new identities in one minute"
    )
    # How far above the usual minute's births (their 90th percentile over the history) a
    # minute must be: an order of magnitude, so a busy onboarding day does not fire.
    ratio: float = Field(
        default=10.0,
        ge=1,
        description="how far above the usual minute's births (their 90th percentile) a "
        "minute must be",
    )
    history_minutes: int = Field(
        default=60, ge=1, le=1440, description="minutes of births the percentile is taken over"
    )


class PolicyConfig(BaseModel):
    """`meterguard.yaml` (MG_POLICY_FILE). Every field has a default; unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolve_below: float = Field(
        default=0.5, ge=0, le=1, description="score under which an episode starts resolving"
    )
    resolve_after_minutes: int = Field(
        default=5, ge=1, description="minutes under `resolve_below` before it resolves"
    )
    throttle_minutes: int = Field(default=15, ge=1, description="life of a throttle command")
    # Throttle limits = the identity's own baseline x headroom, never below the floors.
    throttle_headroom: float = Field(
        default=2.0, ge=1, description="throttle limits = the identity's own baseline x this"
    )
    min_requests_per_minute: int = Field(
        default=10, ge=1, description="floor of a throttle's requests per minute"
    )
    min_tokens_per_minute: int = Field(
        default=10_000, ge=1, description="floor of a throttle's tokens per minute"
    )
    default_environment: EnvironmentPolicy = Field(
        default=EnvironmentPolicy(),
        description="rules of an environment `environments` does not name",
    )
    environments: dict[str, EnvironmentPolicy] = Field(
        default_factory=_default_environments,
        description="rules per environment; a file naming some keeps the built-in others",
    )
    # Identities whose calls are blocked at once (offboarded service accounts, revoked keys).
    offboarded_identities: frozenset[str] = Field(
        default=frozenset(),
        description="identities blocked at once (offboarded service accounts, revoked keys)",
    )
    # Per-identity budgets (event-time UTC day / month); `default_budget` for all others.
    budgets: dict[str, BudgetSpec] = Field(
        default_factory=dict, description="per-identity budgets (event-time UTC day / month)"
    )
    default_budget: BudgetSpec | None = Field(
        default=None, description="the budget of every identity `budgets` does not name"
    )
    budget_warn_at: float = Field(
        default=0.8, gt=0, lt=1, description="fraction of a budget that raises a warning"
    )
    # Budgets of teams, business units and environments (policy/group_budgets.py).
    group_budgets: GroupBudgets = Field(
        default=GroupBudgets(), description="budgets of teams, business units, environments"
    )
    routing: RoutingConfig = Field(
        default=RoutingConfig(), description="which alerts go to which destination"
    )
    identity_flood: IdentityFlood = Field(
        default=IdentityFlood(), description="an alert when many new identities appear at once"
    )

    @field_validator("environments", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        """A file that only tunes `prod` keeps the built-in staging and test rules."""
        if isinstance(value, dict):
            return {**_default_environments(), **value}
        return value

    @model_validator(mode="after")
    def _resolve_below_fire(self) -> PolicyConfig:
        lowest = min(
            [self.default_environment.fire_at] + [e.fire_at for e in self.environments.values()]
        )
        if self.resolve_below > lowest:
            raise ValueError(f"resolve_below ({self.resolve_below}) is above a fire_at ({lowest})")
        return self

    def context_for(self, identity: str, environment: str | None = None) -> IdentityContext:
        budget = self.budgets.get(identity, self.default_budget) or BudgetSpec()
        return IdentityContext(
            daily_budget_usd=budget.daily_usd,
            monthly_budget_usd=budget.monthly_usd,
            offboarded=identity in self.offboarded_identities,
            budget_warn_at=self.budget_warn_at,
            detector_params=self.for_environment(environment).detection.for_detectors(),
        )

    def for_environment(self, environment: str | None) -> EnvironmentPolicy:
        return self.environments.get(environment or "", self.default_environment)

    @classmethod
    def load(cls, path: str | None) -> PolicyConfig:
        return load_yaml_model(cls, path, "policy file")
