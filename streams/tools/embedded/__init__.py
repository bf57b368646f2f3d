"""Real servers as child processes: a Tansu Kafka-protocol broker and a Redis-protocol server.

Used by `meterguard demo` and the integration tests when no broker / Redis is configured.
Each server runs in its own process group and is stopped by `stop()`, on context exit, by an
`atexit` hook, and (Linux, started from the main thread) by the kernel when this process dies,
so a crashed or killed caller leaves nothing running.

Readiness checks are synchronous on purpose: `start()` must work both from plain code and from
inside a running event loop (async fixtures, the demo's main), where `asyncio.run` is forbidden.
"""

from meterguard.streams.tools.embedded.child import (
    EmbeddedServiceError,
    die_with_parent,
    free_port,
    stop_group,
)
from meterguard.streams.tools.embedded.redis_server import EmbeddedRedis
from meterguard.streams.tools.embedded.tansu import EmbeddedBroker

__all__ = [
    "EmbeddedBroker",
    "EmbeddedRedis",
    "EmbeddedServiceError",
    "die_with_parent",
    "free_port",
    "stop_group",
]
