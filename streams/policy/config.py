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

    calls_per_minute: float = Field(default=30.0, ge=0)
    tokens_per_minute: float = Field(default=30_000.0, ge=0)
    cost_usd_per_minute: float = Field(default=0.5, ge=0)

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

    min_ratio: float = Field(default=3.0, gt=1.2, le=100)
    alert_evidence: float = Field(default=14.0, ge=2, le=100)


class RampParams(BaseModel):
    """detectors/slow_ramp.py RampConfig fields a policy may set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_ratio: float = Field(default=4.0, gt=1.2, le=100)
    alert_z: float = Field(default=6.0, ge=2, le=50)


class RetryParams(BaseModel):
    """detectors/retry_loop.py RetryConfig fields a policy may set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_evidence: float = Field(default=14.0, ge=2, le=100)
    min_error_share: float = Field(default=0.5, gt=0, le=1)


class DetectionParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    spike: SpikeParams = SpikeParams()
    slow_ramp: RampParams = RampParams()
    retry_loop: RetryParams = RetryParams()

    def for_detectors(self) -> dict[str, dict[str, float]]:
        return {
            "spike": self.spike.model_dump(),
            "slow_ramp": self.slow_ramp.model_dump(),
            "retry_loop": self.retry_loop.model_dump(),
        }


class EnvironmentPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fire_at: float = Field(default=0.8, gt=0, le=1)
    critical_at: float = Field(default=0.9, gt=0, le=1)
    throttle_on: Literal["critical", "warning", "never"] = "critical"
    materiality: Materiality = Materiality()
    detection: DetectionParams = DetectionParams()

    @model_validator(mode="after")
    def _ordered(self) -> EnvironmentPolicy:
        if self.critical_at < self.fire_at:
            raise ValueError(f"critical_at ({self.critical_at}) is below fire_at ({self.fire_at})")
        return self


class BudgetSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    daily_usd: float | None = Field(default=None, gt=0)
    monthly_usd: float | None = Field(default=None, gt=0)


GroupDimension = Literal["team", "business_unit", "environment"]
GROUP_DIMENSIONS: tuple[GroupDimension, ...] = ("team", "business_unit", "environment")
BudgetPeriod = Literal["hour", "day", "month"]  # UTC calendar, event time ("hour": for tests)
CapAction = Literal["alert", "throttle", "block"]


class CapThrottle(BaseModel):
    """The limits every identity of a group gets at its cap (`at_cap: throttle`), per
    identity; a limit left out is the policy's floor (`min_requests_per_minute`,
    `min_tokens_per_minute`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)


class GroupBudget(BaseModel):
    """One team's, business unit's or environment's budget (policy/group_budgets.py): a
    limit in USD and/or tokens per period, warnings at fractions of it (each once per
    period), and what happens to every identity of the group at the cap."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit_usd: float | None = Field(default=None, gt=0)
    limit_tokens: int | None = Field(default=None, gt=0)
    period: BudgetPeriod = "month"
    warn_at: tuple[float, ...] = Field(default=(0.5, 0.8, 0.95), max_length=10)
    at_cap: CapAction = "alert"
    throttle: CapThrottle | None = None

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

    team: dict[str, GroupBudget] = Field(default_factory=dict)
    business_unit: dict[str, GroupBudget] = Field(default_factory=dict)
    environment: dict[str, GroupBudget] = Field(default_factory=dict)

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

    enabled: bool = True
    # The floor of the bar. A deployment that brings up a few dozen agents or CI runners at
    # once is routine; a hundred never-seen identities in one minute costs ~10 KiB of Redis
    # each (README, Sizing) and is worth a look. A namespace that onboards more per minute
    # sets a higher floor here, and its own history lifts the bar anyway (`ratio`).
    min_new_per_minute: int = Field(default=100, ge=1)
    # How far above the usual minute's births (their 90th percentile over the history) a
    # minute must be: an order of magnitude, so a busy onboarding day does not fire.
    ratio: float = Field(default=10.0, ge=1)
    history_minutes: int = Field(default=60, ge=1, le=1440)


class PolicyConfig(BaseModel):
    """`meterguard.yaml` (MG_POLICY_FILE). Every field has a default; unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolve_below: float = Field(default=0.5, ge=0, le=1)
    resolve_after_minutes: int = Field(default=5, ge=1)
    throttle_minutes: int = Field(default=15, ge=1)
    # Throttle limits = the identity's own baseline x headroom, never below the floors.
    throttle_headroom: float = Field(default=2.0, ge=1)
    min_requests_per_minute: int = Field(default=10, ge=1)
    min_tokens_per_minute: int = Field(default=10_000, ge=1)
    default_environment: EnvironmentPolicy = EnvironmentPolicy()
    environments: dict[str, EnvironmentPolicy] = Field(default_factory=_default_environments)
    # Identities whose calls are blocked at once (offboarded service accounts, revoked keys).
    offboarded_identities: frozenset[str] = frozenset()
    # Per-identity budgets (event-time UTC day / month); `default_budget` for all others.
    budgets: dict[str, BudgetSpec] = Field(default_factory=dict)
    default_budget: BudgetSpec | None = None
    budget_warn_at: float = Field(default=0.8, gt=0, lt=1)
    # Budgets of teams, business units and environments (policy/group_budgets.py).
    group_budgets: GroupBudgets = GroupBudgets()
    routing: RoutingConfig = RoutingConfig()  # alert destinations' filters (sinks/routing.py)
    identity_flood: IdentityFlood = IdentityFlood()  # many new identities at once

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
