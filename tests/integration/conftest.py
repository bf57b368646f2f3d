"""Real servers for the integration tests: one Tansu broker and one Redis per test session.

`redis_url` isolation: the session's Redis server belongs to this test process alone (its own
port, started here), so each test gets the whole server FLUSHALLed right before it runs and a
URL on DB 0. DB 0 only, because Redis Cluster has no other database. Tests must not rely on
Lua scripts being cached from an earlier test (FLUSHALL keeps them; redis code must handle
NOSCRIPT anyway). Topics are not reset between tests: use unique topic names.

Server logs go to pytest's temporary directory (kept for the last few runs) for post-mortems.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session, not only this directory's.
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(workdir=tmp_path_factory.mktemp("tansu")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(workdir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session Redis, emptied (FLUSHALL) for this test."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url
