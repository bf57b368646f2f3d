"""Every deployment setting, read once from the environment (prefix MG_) and passed down."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from meterguard.kafka_security import KafkaSecurity, Mechanism, Protocol
from meterguard.streams.decoding.formats.mapping import MappingConfig
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.policy.registry import Registry
from meterguard.streams.store import StoreConfig
from meterguard.streams.store.connection import RedisOptions


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MG_", frozen=True, extra="ignore")

    kafka_broker: str | None = Field(
        default=None,
        description="Kafka bootstrap servers, `kafka://host:port[,host:port]` (the demo: an "
        "embedded broker)",
    )
    # Kafka authentication and TLS for every client (meterguard/kafka_security.py).
    kafka_security_protocol: Protocol = Field(
        default="PLAINTEXT", description="Kafka security protocol of every client"
    )
    kafka_sasl_mechanism: Mechanism = Field(default="PLAIN", description="Kafka SASL mechanism")
    kafka_sasl_username: str | None = Field(default=None, description="Kafka SASL user")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="Kafka SASL password")
    kafka_ssl_cafile: str | None = Field(
        default=None, description="CA bundle that signed the brokers (default: the system's)"
    )
    kafka_ssl_certfile: str | None = Field(
        default=None, description="client certificate for mutual TLS with the brokers"
    )
    kafka_ssl_keyfile: str | None = Field(default=None, description="key of MG_KAFKA_SSL_CERTFILE")
    # A password in the URL (redis://:pw@host) stays out of the settings' repr.
    redis_url: str | None = Field(
        default=None,
        repr=False,
        description="`redis://host:port/db` (`rediss://` for TLS; the demo and replay: an "
        "embedded server)",
    )
    # Redis Cluster, TLS and ACL (streams/store/connection.py). A rediss:// URL is TLS; the
    # URL's own user:password wins over MG_REDIS_USERNAME / MG_REDIS_PASSWORD.
    redis_cluster: bool = Field(
        default=False,
        description="MG_REDIS_URL names one node of a Redis Cluster (the others are discovered)",
    )
    redis_username: str | None = Field(
        default=None, description="Redis ACL user (a `user:password@` in the URL wins)"
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Redis password (a `user:password@` in the URL wins)"
    )
    redis_tls_ca_file: str | None = Field(
        default=None,
        description="with `rediss://`: the CA that signed the server (default: the system's)",
    )
    redis_tls_cert_file: str | None = Field(
        default=None, description="with `rediss://`: client certificate for mutual TLS"
    )
    redis_tls_key_file: str | None = Field(
        default=None, description="key of MG_REDIS_TLS_CERT_FILE"
    )
    web_port: int = Field(default=6066, description="the worker's HTTP port")
    # Bearer token of every state-changing route (streams/web/operator.py `check_bearer`).
    api_token: SecretStr | None = Field(
        default=None,
        description="bearer token of every state-changing route: ingest (`/api/events`, "
        "`/v1/traces`) and throttle release (unset: they answer 503)",
    )
    policy_file: str | None = Field(
        default=None,
        description="the policy YAML (`meterguard.yaml`, keys below; validated at start)",
    )
    registry_file: str | None = Field(
        default=None, description="identity registry (YAML or CSV): identity -> team, owner, ..."
    )
    registry_url: str | None = Field(
        default=None,
        description="identity registry over HTTP (JSON, YAML or CSV); wins over the file",
    )
    registry_refresh_s: float = Field(
        default=300.0, gt=0, description="how often to refetch MG_REGISTRY_URL (s)"
    )
    mapping_file: str | None = Field(
        default=None,
        description="YAML: which attribute of each input format is the identity (and more)",
    )

    topic_raw: str = Field(default="metering.raw", description="raw metering input")
    topic_events: str = Field(
        default="metering.events", description="decoded events, keyed by identity (the hop)"
    )
    topic_dlq: str = Field(
        default="metering.dlq", description="input that could not be decoded, with the reason"
    )
    topic_alerts: str = Field(default="meterguard.alerts", description="alerts (key = identity)")
    topic_throttle: str = Field(
        default="meterguard.throttle", description="throttle commands (compacted, key = identity)"
    )
    topic_alerts_dlq: str = Field(
        default="meterguard.alerts.dlq", description="alerts no destination accepted"
    )
    topic_audit: str = Field(
        default="meterguard.audit", description="operator actions (throttle releases)"
    )
    topic_alerts_ocsf: str | None = Field(
        default=None,
        description="alerts also as OCSF Detection Findings (key = identity; unset: off)",
    )
    topic_partitions: int = Field(
        default=4, ge=1, description="partitions of the topics the worker creates"
    )

    # Delivery of alerts (sinks/). Destinations: MG_WEBHOOK_URL (comma-separated, signed
    # with MG_WEBHOOK_SECRET), MG_SLACK_WEBHOOK_URL; per-destination filters in the policy
    # file's `routing:` section.
    webhook_url: str | None = Field(  # may hold user:pass@
        default=None,
        repr=False,
        description="security webhooks, comma-separated, signed with MG_WEBHOOK_SECRET",
    )
    # Secrets (a Slack incoming-webhook URL is one): out of the settings' repr.
    webhook_secret: str | None = Field(
        default=None,
        repr=False,
        description="Standard Webhooks signing secret (`whsec_...`) of MG_WEBHOOK_URL",
    )
    slack_webhook_url: str | None = Field(
        default=None, repr=False, description="Slack incoming webhook"
    )
    # Slack Web API (a bot token + a channel): one message per episode, later alerts of the
    # episode as thread replies and the parent updated; takes precedence over the webhook.
    slack_bot_token: str | None = Field(
        default=None,
        repr=False,
        description="Slack Web API bot token (with MG_SLACK_CHANNEL): one message per "
        "episode, later alerts in its thread; wins over MG_SLACK_WEBHOOK_URL",
    )
    slack_channel: str | None = Field(
        default=None, description="Slack channel id for MG_SLACK_BOT_TOKEN"
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack Web API base URL (tests: local)"
    )
    dashboard_url: str | None = Field(
        default=None, description="public URL of the dashboard, for links in Slack messages"
    )
    sink_timeout_s: float = Field(
        default=5.0, gt=0, description="per-request timeout of a delivery (s)"
    )
    # Attempts per alert and destination before the alerts DLQ. With full jitter under a 60 s
    # ceiling the waits average 0.25, 0.5, ... 16 s, then 30 s: 8 attempts gave up after ~32 s
    # (63.5 s at most), so a webhook down for minutes lost every alert to the DLQ. 128 retry
    # for ~1 h (mean 60.5 min, sd 3 min) and cover an outage of minutes, e.g. a SIEM's
    # maintenance restart; only an identity's oldest alert is retried (a POST a half-minute).
    sink_max_attempts: int = Field(
        default=128,
        ge=1,
        description="attempts per alert and destination before the alerts DLQ (128: about "
        "an hour of retrying)",
    )
    sink_backoff_base_s: float = Field(
        default=0.5, gt=0, description="first retry backoff (s; doubles, full jitter)"
    )
    sink_backoff_max_s: float = Field(default=60.0, gt=0, description="retry backoff ceiling (s)")
    slack_group_seconds: float = Field(
        default=5.0, ge=0, description="Slack: how long alerts wait to be grouped (s)"
    )
    slack_digest_threshold: int = Field(
        default=5, ge=2, description="Slack: alerts in one group above which one digest is sent"
    )
    # Alerts pending per destination (queued, in flight, or waiting behind an older alert of
    # their identity); past it a newcomer goes to the alerts DLQ (reason "outbox_full"). A
    # pending alert costs ~1.4 KB of Redis (MEMORY USAGE of the outbox keys holding 1,000
    # spike alerts from `replay`: ~830 B of JSON each): 10,000 bound a dead destination to
    # ~14 MB and hold 2.8 h of alerts at one a second, more than the ~1 h an alert is
    # retried (sink_max_attempts).
    outbox_max_pending: int = Field(
        default=10_000,
        ge=1,
        description="alerts pending per destination before newcomers go to the alerts DLQ "
        "(`outbox_full`; ~1.4 KB of Redis each)",
    )

    app_id: str = Field(
        default="meterguard", description="Faust app id: the Kafka consumer group of the workers"
    )
    data_dir: str = Field(default=".meterguard/faust", description="Faust's local data folder")
    key_prefix: str = Field(default="mg", min_length=1, description="Redis key namespace")
    batch_size: int = Field(
        default=2000, ge=1, description="records an agent takes at once (and events per step)"
    )
    batch_seconds: float = Field(
        default=0.5, gt=0, description="longest an agent waits to fill a batch (s)"
    )
    # Faust fixes the consumer's fetch wait at 1,500 ms: on a quiet topic an event waited that
    # long before a worker saw it (streams/runtime/fetch_wait.py). 100 ms keeps an idle
    # worker's fetches at ten a second per consumer, a negligible load on any broker.
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="longest a Kafka fetch waits for data before returning empty (ms)",
    )
    # Off (default): decode_agent re-keys by identity through MG_TOPIC_EVENTS, so one
    # partition, and so one worker at a time, sees an identity's events in order whatever the
    # producers' keys. On: the decode agent scores each batch itself, without the hop.
    raw_keyed_by_identity: bool = Field(
        default=False,
        description="the operator's promise that every record on MG_TOPIC_RAW has as its "
        "Kafka key the identity of all its events (so one partition holds an identity's "
        "events in order): the decode agent then scores directly, without the "
        "MG_TOPIC_EVENTS hop. A record keyed otherwise is still counted exactly once, but "
        "its identity's events may be read out of order (some counted late) and scored by "
        "two workers at once",
    )

    allowed_lateness_s: int = Field(
        default=30, ge=0, description="event-time lateness before a minute is final (s)"
    )
    dedupe_horizon_s: int = Field(
        default=48 * 3600,
        ge=60,
        description="how long an event_id is remembered per identity (event time, s)",
    )
    window_minutes: int = Field(
        default=24 * 60, ge=10, description="minute buckets kept per identity"
    )
    max_future_skew_s: int = Field(
        default=300,
        ge=0,
        description="an event stamped further ahead of its ingest is dead-lettered (s)",
    )
    # How long an OTLP span waits for the agent span exported after it (the SDK exports a
    # span when it ends, and an agent span ends after its calls; streams/decoding/
    # trace_attribution.py). Unset: MG_ALLOWED_LATENESS_S - 10 s (20 s by default), so a span
    # settled at the end of its hold still lands within its identity's lateness (10 s: the
    # SDK batch processor's 5 s export delay, OTEL_BSP_SCHEDULE_DELAY, and as much again for
    # the collector hop); waiting longer would make it late. 0: never wait.
    trace_hold_s: float | None = Field(
        default=None,
        ge=0,
        description="seconds an OTLP span waits for the agent span that names it "
        "(default: allowed lateness - 10 s)",
    )
    # Faust consumer-group timings: INFRA-NOTES measured ~3-5 s to join with these, ~30 s
    # with Faust's defaults.
    rebalance_timeout_s: float = Field(
        default=3.0, description="Kafka consumer group rebalance timeout (s)"
    )
    session_timeout_s: float = Field(
        default=6.0, description="Kafka consumer group session timeout (s)"
    )
    heartbeat_interval_s: float = Field(
        default=1.0, description="Kafka consumer group heartbeat interval (s)"
    )
    # Text (default): Faust's own lines. json: one JSON object per line, Faust's records and
    # meterguard's alike (streams/runtime/log_format.py).
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="the worker's log lines: `text`, or `json` (one object per line: "
        "timestamp, level, logger, message, and identity, event_id, alert_id... when the "
        "line is about one)",
    )

    @property
    def trace_hold(self) -> float:
        """MG_TRACE_HOLD_S, else what keeps a held span within the allowed lateness."""
        if self.trace_hold_s is not None:
            return self.trace_hold_s
        return float(max(0, self.allowed_lateness_s - 10))

    @property
    def bootstrap(self) -> str:
        if not self.kafka_broker:
            raise ValueError("MG_KAFKA_BROKER is not set (e.g. kafka://127.0.0.1:9092)")
        hosts = [h.strip().removeprefix("kafka://") for h in self.kafka_broker.split(",")]
        return ",".join(hosts)

    @property
    def kafka_security(self) -> KafkaSecurity:
        """MG_KAFKA_SECURITY_PROTOCOL and friends; KafkaSecurityError if they contradict."""
        password = self.kafka_sasl_password
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=password.get_secret_value() if password else None,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
        )

    @property
    def api_token_value(self) -> str | None:
        """MG_API_TOKEN in clear, for the one comparison that needs it (check_bearer)."""
        return self.api_token.get_secret_value() if self.api_token else None

    @cached_property
    def policy(self) -> PolicyConfig:
        return PolicyConfig.load(self.policy_file)

    @cached_property
    def registry(self) -> Registry:
        return Registry.load(self.registry_file)

    @cached_property
    def mapping(self) -> MappingConfig:
        return MappingConfig.load(self.mapping_file)

    @property
    def redis_options(self) -> RedisOptions:
        """How every Redis client is built (streams/store/connection.py `redis_client`)."""
        password = self.redis_password.get_secret_value() if self.redis_password else None
        return RedisOptions(
            cluster=self.redis_cluster,
            username=self.redis_username,
            password=password,
            tls_ca_file=self.redis_tls_ca_file,
            tls_cert_file=self.redis_tls_cert_file,
            tls_key_file=self.redis_tls_key_file,
        )

    def store_config(self, prefix: str | None = None) -> StoreConfig:
        return StoreConfig(
            prefix=prefix or self.key_prefix,
            allowed_lateness_s=self.allowed_lateness_s,
            dedupe_horizon_s=self.dedupe_horizon_s,
            window_minutes=self.window_minutes,
        )
