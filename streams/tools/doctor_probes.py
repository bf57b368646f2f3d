"""`meterguard doctor`'s probes (I/O): ask the broker, Redis and the destinations, each within
a deadline, and return plain facts for streams/tools/doctor_checks.py to judge.

Nothing here creates anything: the metadata request sets `allow_auto_topic_creation=False`
(a plain one would make Tansu, or Kafka with auto-creation on, create a missing topic), and
DescribeConfigs asks for all configs (Tansu 0.6 drops the connection when keys are named;
../shared/INFRA-NOTES.md), so a broker that cannot answer it is a warning, not a failure.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import redis.exceptions
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.metadata import MetadataRequest

from meterguard.kafka_security import KafkaSecurityError
from meterguard.streams.runtime.registry_feed import fetch_registry
from meterguard.streams.runtime.topics import TopicSpec
from meterguard.streams.settings import Settings
from meterguard.streams.store.connection import RedisRefused, check_redis, redacted, redis_client
from meterguard.streams.store.retry import REDIS_UNAVAILABLE
from meterguard.streams.tools.doctor_checks import (
    BrokerFailure,
    BrokerProbe,
    RedisProbe,
    TopicsProbe,
    TopicState,
    one_line,
    public_url,
    redis_place,
)

_UNREACHABLE: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, OSError)


def error_text(exc: BaseException) -> str:
    """The error's class and the first line of its message."""
    name = type(exc).__name__
    lines = str(exc).strip().splitlines()
    first = lines[0].removeprefix(f"{name}: ") if lines else ""
    if "Unable to bootstrap from" in first:  # aiokafka lists address tuples: say it plainly
        first = "no bootstrap server accepted a connection"
    return f"{name}: {first}" if first else name


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _broker_failure(exc: BaseException) -> BrokerFailure:
    chain = _chain(exc)
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in text:
        return "tls"
    if "sasl" in text or "authentication" in text:
        return "auth"
    return "unreachable"


async def probe_kafka(
    settings: Settings, specs: Sequence[TopicSpec], timeout_s: float
) -> tuple[BrokerProbe, TopicsProbe | None]:
    """Metadata (brokers, cluster id, the topics' partitions) and the compacted topics'
    cleanup.policy; topics None when the broker did not answer."""
    bootstrap = settings.bootstrap
    try:
        options = settings.kafka_security.aiokafka_options()  # reads the TLS files
    except (KafkaSecurityError, OSError, ssl.SSLError) as exc:
        return BrokerProbe(bootstrap, failure="config", error=error_text(exc)), None
    admin = AIOKafkaAdminClient(
        bootstrap_servers=[h for h in bootstrap.split(",") if h],
        client_id="meterguard-doctor",
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
        **options,
    )
    names = [spec.name for spec in specs]
    try:
        try:
            async with asyncio.timeout(timeout_s):
                await admin.start()
                request = MetadataRequest(names, allow_auto_topic_creation=False)
                response: Any = await admin._send_request(request)
        except TimeoutError:
            return BrokerProbe(bootstrap, failure="timeout"), None
        except (KafkaError, OSError) as exc:
            failure = _broker_failure(exc)
            return BrokerProbe(bootstrap, failure=failure, error=error_text(exc)), None
        metadata = response.to_object()
        broker = BrokerProbe(
            bootstrap, brokers=len(metadata["brokers"]), cluster_id=metadata.get("cluster_id")
        )
        topics: dict[str, TopicState] = {}
        for topic in metadata["topics"]:
            code = topic["error_code"]
            topics[topic["topic"]] = (
                TopicState(partitions=len(topic["partitions"]))
                if code == 0
                else TopicState(error=for_code(code).__name__)
            )
        compacted = [
            s.name for s in specs if s.compacted and topics.get(s.name, TopicState()).partitions
        ]
        configs_error = None
        if compacted:
            try:
                async with asyncio.timeout(timeout_s):
                    policies = await _cleanup_policies(admin, compacted)
                for name, policy in policies.items():
                    topics[name] = TopicState(topics[name].partitions, None, policy)
            except TimeoutError:
                configs_error = f"no DescribeConfigs answer within {timeout_s:g} s"
            except (KafkaError, OSError, ValueError) as exc:
                configs_error = error_text(exc)
        return broker, TopicsProbe(topics, configs_error)
    finally:
        await admin.close()


async def _cleanup_policies(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, str]:
    """cleanup.policy per topic ("delete", Kafka's default, when the broker omits it)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    policies = {name: "delete" for name in names}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                raise ValueError(for_code(resource["error_code"]).__name__)
            for entry in resource["config_entries"]:
                key = entry.get("config_names", entry.get("config_name"))
                if key == "cleanup.policy" and entry["config_value"] is not None:
                    policies[resource["resource_name"]] = entry["config_value"]
    return policies


async def probe_redis(settings: Settings, timeout_s: float) -> RedisProbe:
    """check_redis (credentials, TLS, topology), then INFO for version, AOF and eviction."""
    url = settings.redis_url or ""
    place = redis_place(url)
    cluster = settings.redis_cluster
    try:
        client = redis_client(url, settings.redis_options)
    except ValueError as exc:
        return RedisProbe(place, cluster, failure="config", error=str(exc))
    try:
        async with asyncio.timeout(timeout_s):
            await check_redis(client, url)
            info: dict[str, Any] = await client.info()
    except RedisRefused as exc:
        return RedisProbe(place, cluster, "refused", str(exc).replace(redacted(url), place))
    except redis.exceptions.RedisClusterException as exc:
        if "not enabled" in str(exc):
            return RedisProbe(place, cluster, "not_cluster")
        return RedisProbe(place, cluster, "unreachable", error_text(exc))
    except TimeoutError:
        return RedisProbe(place, cluster, "timeout")
    except _UNREACHABLE as exc:
        return RedisProbe(place, cluster, "unreachable", error_text(exc))
    except redis.exceptions.RedisError as exc:
        return RedisProbe(place, cluster, "unreachable", error_text(exc))
    finally:
        await client.aclose()
    nodes = [info] if "redis_version" in info else [v for v in info.values() if isinstance(v, dict)]
    first = nodes[0] if nodes else {}
    aof = [n.get("aof_enabled") for n in nodes]
    aof_enabled = None if not aof or None in aof else all(int(a or 0) for a in aof)
    return RedisProbe(
        place,
        cluster,
        version=str(first.get("redis_version")) if first.get("redis_version") else None,
        nodes=len(nodes) or 1,
        aof_enabled=aof_enabled,
        maxmemory=max(int(n.get("maxmemory", 0)) for n in nodes) if nodes else 0,
        maxmemory_policy=first.get("maxmemory_policy"),
    )


async def probe_endpoint(url: str, timeout_s: float) -> str | None:
    """None when a TCP connection (and for https a verified TLS handshake) succeeds within
    the deadline; else why not. Sends nothing: no request reaches the destination."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the URL's port is not a number"
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls else None
            )
    except TimeoutError:
        return f"no connection within {timeout_s:g} s"
    except (OSError, ssl.SSLError) as exc:
        return one_line(error_text(exc))
    writer.close()
    try:
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        pass
    return None


async def probe_registry(url: str, timeout_s: float) -> str | None:
    """None when MG_REGISTRY_URL answers a registry the worker can parse; else why not."""
    try:
        async with asyncio.timeout(timeout_s):
            await fetch_registry(url)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except ValueError as exc:
        return one_line(str(exc)).replace(url, public_url(url))
    return None
