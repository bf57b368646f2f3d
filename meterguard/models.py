"""Wire models shared by every package: the contracts of ../shared/DESIGN.md.

Pure pydantic v2, no I/O. `streams`, `detectors` and `sinks` may all import this module;
it imports none of them.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meterguard.timeutil import parse_event_time, to_ms

# Printable: no C0/C1 controls or DEL (Cc), no invisible format characters such as bidi
# overrides and zero-width joiners (Cf: an identity that renders like another is another
# identity), no line or paragraph separators, no surrogates. Spaces and letters of any script
# are fine.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
MAX_ATTRIBUTES_BYTES = 16_384
# Objects and arrays nested below `attributes`. orjson writes at most 254 levels and pydantic's
# JSON parser (decode_event_json, on the way back from `metering.events`) reads about 200: an
# accepted event must survive both, and no real attribute is nested this deep.
MAX_ATTRIBUTES_DEPTH = 32
# Per-event ceilings: far above any real call, low enough that a minute's sums stay exact in
# Redis (Lua numbers are doubles: integers exact to 2**53).
MAX_TOKENS = 100_000_000
MAX_COST_USD = Decimal(10_000)

EventKind = Literal["llm.call", "tool.call", "api.call"]
Severity = Literal["info", "warning", "critical"]
ThrottleAction = Literal["throttle", "block", "release"]


# Optional attribution and evidence strings: bounded, so one event cannot carry megabytes in
# a field that ends up in every alert, log line and dashboard row.
Label = Annotated[str | None, Field(max_length=256)]


class MeteringEvent(BaseModel):
    """One metered call by one non-human identity."""

    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=False)

    event_id: str = Field(min_length=1, max_length=128)
    identity: str = Field(min_length=1, max_length=256)
    event_time: datetime
    kind: EventKind = "llm.call"
    team: Label = None
    tenant: Label = None
    environment: Label = None
    workload: Label = None
    business_unit: Label = None  # attribution (streams/policy/registry.py fills it too)
    owner: Label = None
    credential_id: Label = None
    source: Label = None
    model: Label = None
    provider: Label = None
    operation: Label = None
    endpoint: str | None = Field(default=None, max_length=2048)
    tool_name: Label = None
    input_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    output_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    cached_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    cost_usd: Decimal = Field(default=Decimal(0), ge=0, le=MAX_COST_USD, allow_inf_nan=False)
    status: Literal["ok", "error"] = "ok"
    error_type: Label = None
    latency_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    request_fingerprint: Label = None
    trace_id: Label = None
    span_id: Label = None
    parent_span_id: Label = None
    caller_identity: Label = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    ingest_time: datetime | None = None

    @field_validator("identity", "event_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        # isprintable() is the fast path; it is also False for spaces other than " ".
        if not value.isprintable():
            for char in value:
                if unicodedata.category(char) in _UNPRINTABLE:
                    raise ValueError(
                        f"must not contain control characters (U+{ord(char):04X} found)"
                    )
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("event_time", "ingest_time", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        return None if value is None else parse_event_time(value)

    @field_validator("input_tokens", "output_tokens", "cached_tokens", mode="before")
    @classmethod
    def _whole_tokens(cls, value: Any) -> Any:
        # JSON producers send 12.0 for 12; accept that, refuse 12.5 and booleans.
        if isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("must be a whole number")
            return int(value)
        return value

    @field_validator("latency_ms", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("cost_usd", mode="before")
    @classmethod
    def _exact_cost(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        # str(float) is the shortest repr, so 0.1 stays 0.1 instead of 0.1000000000000000055…
        return Decimal(str(value)) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _fold_unknown_fields(self) -> MeteringEvent:
        """Unknown top-level fields are kept in `attributes`, never an error (DESIGN.md)."""
        extra = self.__pydantic_extra__
        if extra:
            merged = {**extra, **self.attributes}
            object.__setattr__(self, "attributes", merged)
            extra.clear()
        for key, value in self.attributes.items():
            if _nested_deeper_than(value, MAX_ATTRIBUTES_DEPTH):
                raise ValueError(
                    f"attributes: {key!r} is nested deeper than {MAX_ATTRIBUTES_DEPTH} levels"
                )
        return self

    @property
    def event_time_ms(self) -> int:
        return to_ms(self.event_time)

    @property
    def cost_nano_usd(self) -> int:
        """Cost in integer nano-dollars: exact sums in Redis, no float drift."""
        return int((self.cost_usd * 1_000_000_000).to_integral_value())

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest more than `limit` levels (level by level: no recursion)."""
    level = [value]
    for _ in range(limit + 1):
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            return False
        level = [
            child
            for container in containers
            for child in (container.values() if isinstance(container, dict) else container)
        ]
    return True


class DeadLetter(BaseModel):
    """An input that could not become a MeteringEvent: original bytes and the reason."""

    model_config = ConfigDict(frozen=True)

    reason: str
    error: str
    raw: str
    raw_encoding: Literal["text", "base64"] = "text"
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    ingest_time: datetime
    # Added with the input formats (issue 5); absent in older records. `format` is the
    # detected input format; `headers` the message's Kafka headers as text (evidence, e.g.
    # a binary-mode CloudEvent's ce_* attributes), not a byte-exact copy.
    format: str | None = None
    headers: dict[str, str] | None = None
    # Added in issue 14. An original longer than the dead-letter topic can carry keeps its
    # first bytes in `raw` (raw_truncated), and its full size and SHA-256 here: the whole of
    # it stays on its own topic at (topic, partition, offset).
    raw_truncated: bool = False
    raw_size: int | None = None
    raw_sha256: str | None = None


class ThrottleLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class ThrottleCommand(BaseModel):
    model_config = ConfigDict(frozen=True)

    command_id: str
    identity: str
    action: ThrottleAction
    limits: ThrottleLimits = ThrottleLimits()
    reason: str
    alert_id: str | None = None
    issued_at: datetime
    expires_at: datetime
    version: int

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


class Alert(BaseModel):
    model_config = ConfigDict(frozen=True)

    alert_id: str
    identity: str
    detector: str
    severity: Severity
    score: float = Field(ge=0, le=1)
    status: Literal["firing", "resolved"]
    title: str
    summary: str
    evidence: dict[str, Any]
    window_start: datetime
    window_end: datetime
    event_time: datetime
    team: str | None = None
    environment: str | None = None
    throttle_command_id: str | None = None
    # The episode the alert belongs to (firing, escalation and resolution share it). Absent
    # in alerts from before it existed: then derived from the alert itself (see below), so
    # an old and a new alert of one episode agree.
    episode_id: str = ""

    @model_validator(mode="after")
    def _derive_episode_id(self) -> Alert:
        if not self.episode_id:
            derived = _derived_episode_id(
                self.identity, self.detector, self.evidence, self.alert_id
            )
            object.__setattr__(self, "episode_id", derived)
        return self


def stable_id(*parts: object) -> str:
    """A deterministic 32-hex-digit id: the same parts give the same id on every replay."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def episode_id_for(identity: str, detector: str, start_minute: object) -> str:
    """The id of the episode of `detector` on `identity` that opened at `start_minute`.

    Same key material as the Slack thread keys stored before `Alert.episode_id` existed
    (identity, detector, start joined by 0x1f, sha256, 32 hex digits), so those still match.
    """
    return stable_id(identity, detector, start_minute)


def episode_id_of(alert: Mapping[str, Any]) -> str:
    """The episode id of an alert as a JSON document: its `episode_id`, or for an alert
    written before that field existed, derived from identity, detector and evidence."""
    known = alert.get("episode_id")
    if isinstance(known, str) and known:
        return known
    evidence = alert.get("evidence")
    return _derived_episode_id(
        str(alert.get("identity")),
        str(alert.get("detector")),
        evidence if isinstance(evidence, Mapping) else {},
        str(alert.get("alert_id")),
    )


def _derived_episode_id(
    identity: str, detector: str, evidence: Mapping[str, Any], alert_id: str
) -> str:
    start = evidence.get("episode_start_minute")
    if start is None:  # not from the episode policy: the alert is an episode of its own
        return stable_id(identity, detector, "alert", alert_id)
    return episode_id_for(identity, detector, start)


def utc_now() -> datetime:
    """The one place that reads the wall clock for ingest times (never for windows)."""
    return datetime.now(UTC)


class AuditEvent(BaseModel):
    """An operator action, as published on the audit topic (e.g. a throttle release)."""

    model_config = ConfigDict(frozen=True)

    audit_id: str
    action: Literal["throttle.release"]
    identity: str
    actor: str  # as the operator named themselves (X-Meterguard-Actor); the token is shared
    reason: str
    command_id: str  # the command the action issued
    target_command_id: str  # the command it acted on
    alert_id: str | None = None
    remote: str | None = None
    at: datetime


class DeadLetteredAlert(BaseModel):
    """A record on the alerts dead-letter topic: an alert no retry got to a destination."""

    model_config = ConfigDict(frozen=True)

    alert: Alert
    destination: str  # without credentials, query or (for Slack) the secret path
    reason: str
    attempts: int
    last_status: int | None
    dead_lettered_at: datetime
