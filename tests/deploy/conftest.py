"""Tests of what `deploy/` and `docs/` ship (issue 15): files parsed and cross-checked against
the code, and the commands the docs show run for real. Tests that need a broker or Redis use
the integration tests' session fixtures (a Tansu broker, a redis-server), re-exported here."""

from __future__ import annotations

from tests.integration.conftest import broker, redis_server, redis_url

__all__ = ["broker", "redis_server", "redis_url"]
