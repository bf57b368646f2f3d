"""Explicit topic creation: partition counts and compaction must not be left to auto-creation.

Tansu auto-creates any unknown topic with 4 partitions (so does real Kafka with its default
`auto.create.topics.enable=true`, with `num.partitions`), and a plain Metadata request for an
unknown topic is enough to trigger that. So every metadata lookup here sets
`allow_auto_topic_creation=False`; otherwise verifying a topic would create it wrongly.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.metadata import MetadataRequest

if TYPE_CHECKING:
    from meterguard.streams.settings import Settings

__all__ = ["TopicSetupError", "TopicSpec", "ensure_topics", "topic_specs"]

_TOPIC_ERROR_ALREADY_EXISTS = 36
_LEGAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


log = logging.getLogger(__name__)


class TopicSetupError(RuntimeError):
    """A topic could not be created, or exists with the wrong shape."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None

    def __post_init__(self) -> None:
        # Validated here because Tansu accepts names and values real Kafka rejects
        # ("bad name!", replication factor 3 on one broker, cleanup.policy=bogus).
        if not _LEGAL_NAME.fullmatch(self.name) or self.name in (".", ".."):
            raise ValueError(f"illegal Kafka topic name {self.name!r}")
        if self.partitions < 1:
            raise ValueError(f"topic {self.name}: partitions must be >= 1")
        if self.retention_ms is not None and self.retention_ms < -1:
            raise ValueError(f"topic {self.name}: retention_ms must be >= -1 (-1 = forever)")

    def configs(self) -> dict[str, str]:
        configs = {}
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


# `timeout` is more than a deadline a caller could impose: it also sizes the admin client's
# request timeout and the broker-side CreateTopics timeout, and expiry becomes TopicSetupError.
async def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    timeout: float = 15,  # noqa: ASYNC109
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Create the missing topics, then check every topic's partition count and compaction.

    `client_options`: the admin client's security (KafkaSecurity.aiokafka_options()).
    Idempotent: topics that already exist with the right shape are left alone (a concurrent
    creator is fine too). Raises TopicSetupError when a topic cannot be created, has another
    partition count, should be compacted but is not, or the whole thing exceeds `timeout`.
    """
    by_name = _dedupe(specs)
    if not by_name:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=_servers(bootstrap),
        client_id="meterguard-admin",
        request_timeout_ms=max(1000, int(timeout * 1000)),
        **(client_options or {}),
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            existing = await _partition_counts(admin, list(by_name))
            missing = [spec for name, spec in by_name.items() if name not in existing]
            if missing:
                await _create(admin, missing, timeout)
            await _verify(admin, by_name, created={spec.name for spec in missing})
    except TimeoutError as exc:
        raise TopicSetupError(
            f"topics {sorted(by_name)} not ready on {bootstrap} within {timeout}s"
        ) from exc
    except KafkaError as exc:
        raise TopicSetupError(f"topic setup on {bootstrap} failed: {exc!r}") from exc
    finally:
        await admin.close()


def _dedupe(specs: Iterable[TopicSpec]) -> dict[str, TopicSpec]:
    by_name: dict[str, TopicSpec] = {}
    for spec in specs:
        if by_name.setdefault(spec.name, spec) != spec:
            raise ValueError(
                f"conflicting specs for topic {spec.name}: {by_name[spec.name]}, {spec}"
            )
    return by_name


def _servers(bootstrap: str) -> list[str]:
    # Accept the MG_KAFKA_BROKER form ("kafka://h:p,h2:p2") as well as plain "h:p".
    return [s.strip().removeprefix("kafka://") for s in bootstrap.split(",") if s.strip()]


async def _create(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], broker_timeout_s: float
) -> None:
    new_topics = [
        NewTopic(s.name, s.partitions, replication_factor=1, topic_configs=s.configs())
        for s in specs
    ]
    # Replication factor 1: the embedded broker is a single node. A multi-broker production
    # cluster should have its topics provisioned by its operators, not by this helper.
    response = await admin.create_topics(new_topics, timeout_ms=int(broker_timeout_s * 1000))
    for entry in response.to_object()["topic_errors"]:
        code = entry["error_code"]
        # "already exists" is a concurrent creator (another worker, a test); _verify judges it.
        if code not in (0, _TOPIC_ERROR_ALREADY_EXISTS):
            raise TopicSetupError(
                f"cannot create topic {entry['topic']}: {for_code(code).__name__}"
                f" {entry.get('error_message') or ''}".rstrip()
            )


async def _verify(
    admin: AIOKafkaAdminClient, by_name: dict[str, TopicSpec], created: set[str]
) -> None:
    # Real Kafka propagates new topics to every broker's metadata asynchronously: poll until
    # all are visible (the caller's timeout bounds this). A wrong count is final at once for a
    # topic we just created; a topic that already existed is its operator's choice (keying by
    # identity works with any partition count), so that is only logged.
    while True:
        counts = await _partition_counts(admin, list(by_name))
        for name, count in counts.items():
            if count != by_name[name].partitions and name in created:
                raise TopicSetupError(
                    f"topic {name} exists with {count} partitions, "
                    f"expected {by_name[name].partitions} (partitions cannot be changed here; "
                    "delete the topic or use another name)"
                )
        if len(counts) == len(by_name):
            break
        await asyncio.sleep(0.1)
    for name, count in counts.items():
        if count != by_name[name].partitions:
            log.warning(
                "topic %s already has %d partitions (configured %d); used as it is",
                name,
                count,
                by_name[name].partitions,
            )
    compacted = [name for name, spec in by_name.items() if spec.compacted]
    if compacted:
        policies = await _cleanup_policies(admin, compacted)
        wrong = {n: p for n, p in policies.items() if "compact" not in p.split(",")}
        if wrong:
            raise TopicSetupError(f"topics should be compacted but have cleanup.policy {wrong}")


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each named topic that exists; never creates one (see module doc)."""
    # aiokafka's public describe_topics() cannot switch auto-creation off, hence the request.
    request = MetadataRequest(names, allow_auto_topic_creation=False)
    response: Any = await admin._send_request(request)
    counts: dict[str, int] = {}
    for topic in response.to_object()["topics"]:
        # UNKNOWN_TOPIC_OR_PARTITION: missing. Others (LEADER_NOT_AVAILABLE right after
        # creation on real Kafka): not usable yet. Both count as "not there".
        if topic["error_code"] != 0:
            continue
        counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def _cleanup_policies(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, str]:
    # All configs, not a filtered list: Tansu 0.6 cannot decode a DescribeConfigs request that
    # names keys (it logs KafkaProtocol(StringWithoutLength) and drops the connection).
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    policies = {name: "delete" for name in names}  # Kafka's default when the broker omits it
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                raise TopicSetupError(
                    f"cannot read configs of topic {resource['resource_name']}: "
                    f"{for_code(resource['error_code']).__name__}"
                )
            for entry in resource["config_entries"]:
                key = entry.get("config_names", entry.get("config_name"))
                if key == "cleanup.policy" and entry["config_value"] is not None:
                    policies[resource["resource_name"]] = entry["config_value"]
    return policies


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic a worker reads or writes, with the partitions the settings ask for."""
    p = settings.topic_partitions
    return [
        TopicSpec(settings.topic_raw, p),
        TopicSpec(settings.topic_events, p),
        TopicSpec(settings.topic_dlq, p),
        TopicSpec(settings.topic_alerts, p),
        TopicSpec(settings.topic_throttle, p, compacted=True),
        TopicSpec(settings.topic_alerts_dlq, p),
        TopicSpec(settings.topic_audit, p),
        # Optional (MG_TOPIC_ALERTS_OCSF): the alerts again, as OCSF findings.
        *([TopicSpec(settings.topic_alerts_ocsf, p)] if settings.topic_alerts_ocsf else []),
    ]
