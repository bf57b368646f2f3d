"""streams/store/connection.py: how every Redis client is built (no server needed here; the
servers are in tests/integration/test_redis_cluster.py and test_redis_tls_acl.py)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from meterguard.streams.settings import Settings
from meterguard.streams.store import retry
from meterguard.streams.store.connection import RedisOptions, is_cluster, redacted, redis_client


def test_standalone_by_default_and_a_cluster_client_when_the_setting_says_so():
    assert not is_cluster(redis_client("redis://127.0.0.1:6379/0"))
    client = redis_client("redis://127.0.0.1:6379/0", RedisOptions(cluster=True))
    assert isinstance(client, RedisCluster) and is_cluster(client)


def test_tls_files_and_acl_credentials_reach_the_connection():
    options = RedisOptions(
        username="mg", password="s3cret", tls_ca_file="/ca.pem",
        tls_cert_file="/c.pem", tls_key_file="/k.pem",
    )  # fmt: skip
    client = redis_client("rediss://127.0.0.1:6380/0", options)
    assert isinstance(client, aioredis.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("mg", "s3cret")
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (
        "/ca.pem", "/c.pem", "/k.pem",
    )  # fmt: skip


def test_the_url_credentials_win_over_the_settings():
    client = redis_client(
        "redis://u:from-url@127.0.0.1/0", RedisOptions(username="x", password="y")
    )
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("u", "from-url")


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        ("redis://h/0", RedisOptions(tls_ca_file="/ca.pem"), "not rediss://"),
        ("rediss://h/0", RedisOptions(tls_cert_file="/c.pem"), "go together"),
        ("redis://:pw@h/0", RedisOptions(tls_ca_file="/ca.pem"), "redis://:***@h/0"),
    ],
)
def test_inconsistent_tls_settings_are_refused_without_the_password(url, options, says):
    with pytest.raises(ValueError, match="MG_REDIS_TLS") as refused:
        redis_client(url, options)
    assert says in str(refused.value) and "pw" not in str(refused.value).replace("***", "")


def test_redacted_drops_only_the_password():
    assert redacted("rediss://mg:s3cret@host:6380/0") == "rediss://mg:***@host:6380/0"
    assert redacted("redis://:s3cret@host/0") == "redis://:***@host/0"
    assert redacted("redis://host:6379/0") == "redis://host:6379/0"


def test_settings_keep_the_password_out_of_their_repr():
    settings = Settings.model_validate(
        {"redis_url": "rediss://mg:in-url@h/0", "redis_password": "in-setting",
         "redis_cluster": "true", "redis_username": "mg", "redis_tls_ca_file": "/ca.pem"}
    )  # fmt: skip
    assert "in-url" not in repr(settings) and "in-setting" not in repr(settings)
    options = settings.redis_options
    assert options == RedisOptions(True, "mg", "in-setting", "/ca.pem", None, None)
    assert "in-setting" not in repr(options)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.SlotNotCoveredError("slot 12 not covered"),
        redis.exceptions.RedisClusterUnreachableError("no node reachable"),
    ],
)
async def test_a_cluster_failover_is_ridden_out_like_an_outage(monkeypatch, error):
    async def no_sleep(delay: float) -> None:
        pass

    monkeypatch.setattr(retry.asyncio, "sleep", no_sleep)
    errors = [error, error]

    async def call() -> int:
        if errors:
            raise errors.pop()
        return 7

    assert await retry.retrying(call) == 7


async def test_a_cross_slot_mistake_is_not_retried():
    async def call() -> int:
        raise redis.exceptions.ClusterCrossSlotError("CROSSSLOT")

    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        await retry.retrying(call, attempts=3)
