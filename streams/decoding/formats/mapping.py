"""The mapping file (MG_MAPPING_FILE, YAML): where each input format keeps the identity & co.

Every key is optional; an absent section or field keeps the documented default below, so
the worker runs without a file. Unknown keys are errors (a typo must not silently fall back
to a default identity).

A path names where a value sits in a record of that format, tried in order, first non-empty
value wins:

- `header:NAME`   a Kafka header of the message (any format);
- cloudevents:    a context attribute (`subject`, `source`, `type`, an extension name) or
                  `data.a.b` inside the event's data;
- otlp:           an attribute name (`gen_ai.agent.name`): the span's own attributes, then
                  its ancestors' in the same export (nearest first), then the resource's;
                  `span:NAME` the span only, `resource:NAME` the resource only;
- openai, litellm: a dotted path into the JSON object (`metadata.user_api_key_alias`).

`defaults` fill a field that neither the record nor a path gave a value (e.g. a fixed
`environment: prod` for everything read on this deployment's topic).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from meterguard.yaml_config import load_yaml_model

PathList = tuple[str, ...]


class Defaults(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str | None = Field(default=None, min_length=1)
    environment: str | None = Field(default=None, min_length=1)
    team: str | None = Field(default=None, min_length=1)
    tenant: str | None = Field(default=None, min_length=1)
    provider: str | None = Field(default=None, min_length=1)
    workload: str | None = Field(default=None, min_length=1)


class FormatMapping(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    prefixes: ClassVar[tuple[str, ...]] = ("header:",)

    identity: PathList = Field(min_length=1)
    team: PathList = ()
    environment: PathList = ()
    source: PathList = ()
    cost_usd: PathList = ()
    defaults: Defaults = Defaults()

    @field_validator("identity", "team", "environment", "source", "cost_usd", mode="before")
    @classmethod
    def _one_path_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("identity", "team", "environment", "source", "cost_usd")
    @classmethod
    def _known_prefixes(cls, paths: PathList) -> PathList:
        for path in paths:
            if not path.strip():
                raise ValueError("a path must not be empty")
            prefix, colon, name = path.partition(":")
            if colon and (f"{prefix}:" not in cls.prefixes or not name):
                allowed = ", ".join(f"'{p}NAME'" for p in cls.prefixes)
                raise ValueError(f"path {path!r}: unknown prefix or missing name (use {allowed})")
        return paths


class CloudEventsMapping(FormatMapping):
    identity: PathList = Field(
        default=("data.identity", "subject", "header:mg-identity"), min_length=1
    )
    source: PathList = ("data.source", "source")


class OtlpMapping(FormatMapping):
    prefixes: ClassVar[tuple[str, ...]] = ("header:", "span:", "resource:")

    # The agent's name first: it is what users set per agent (`Agent(name=...)`), while
    # `gen_ai.agent.id` is often an instrumentation's constant (the OTel contrib openai-agents
    # instrumentation's `agent_id_default` is "agent", for every agent). Read on the nearest
    # agent span (otlp.py).
    identity: PathList = Field(
        default=("gen_ai.agent.name", "gen_ai.agent.id", "resource:service.name"), min_length=1
    )
    team: PathList = ("meterguard.team",)
    environment: PathList = (
        "meterguard.environment",
        "deployment.environment.name",
        "deployment.environment",
    )
    cost_usd: PathList = ("gen_ai.usage.cost",)
    # Agent, workflow and planning spans wrap the model calls they make and often repeat their
    # children's usage (invoke_workflow may carry the aggregate): counting them too would double
    # every token and call. Memory operations are vector-store calls, not model calls. The
    # GenAI semantic conventions' operation names (semantic-conventions-genai
    # model/gen-ai/registry.yaml). Exception, in otlp.py: an invoke_agent CLIENT span with
    # gen_ai.usage.* is a call to a *remote* agent, whose own spans we never see: counted.
    ignore_operations: frozenset[str] = frozenset(
        {
            "invoke_agent",
            "create_agent",
            "invoke_workflow",
            "plan",
            "search_memory",
            "create_memory",
            "update_memory",
            "upsert_memory",
            "delete_memory",
            "create_memory_store",
            "delete_memory_store",
        }
    )


class OpenAIMapping(FormatMapping):
    # A chat completion names no caller: the gateway that publishes it says who it was for.
    identity: PathList = Field(
        default=("header:mg-identity", "user", "safety_identifier", "metadata.identity"),
        min_length=1,
    )
    team: PathList = ("header:mg-team", "metadata.team")
    environment: PathList = ("header:mg-environment", "metadata.environment")


class LiteLLMMapping(FormatMapping):
    # The virtual key is the non-human identity; its alias is the readable, stable-enough name.
    identity: PathList = Field(
        default=(
            "metadata.user_api_key_alias",
            "api_key",
            "metadata.user_api_key_hash",
            "header:mg-identity",
        ),
        min_length=1,
    )
    team: PathList = (
        "metadata.user_api_key_team_alias",
        "team_id",
        "metadata.user_api_key_team_id",
    )
    environment: PathList = ("metadata.spend_logs_metadata.environment",)
    cost_usd: PathList = ("spend", "response_cost")


class MappingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cloudevents: CloudEventsMapping = CloudEventsMapping()
    otlp: OtlpMapping = OtlpMapping()
    openai: OpenAIMapping = OpenAIMapping()
    litellm: LiteLLMMapping = LiteLLMMapping()

    @classmethod
    def load(cls, path: str | Path | None) -> MappingConfig:
        return load_yaml_model(cls, path, "mapping file")


DEFAULT_MAPPING = MappingConfig()
