"""Fault scenarios on real processes (issue 14): a Tansu broker, redis-server and `meterguard
worker` processes, killed, restarted and starved on purpose. Each test asserts exact outcomes
and records its figures (tests/faults/README.md). The servers are the integration tests'
fixtures (one broker and one Redis per session, for this directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import broker, redis_server, redis_url

__all__ = ["broker", "redis_server", "redis_url"]

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)
