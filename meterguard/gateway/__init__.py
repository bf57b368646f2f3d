"""Gateway side of meterguard: follow the throttle feed, enforce it per request.

Embeddable: depends on httpx and `meterguard.models` only (no Faust, Kafka or Redis).
Imported on demand only, never from here: `meterguard.gateway.publisher` (aiokafka: raw
metering records to Kafka) and `meterguard.gateway.litellm` (the LiteLLM proxy callback;
needs the `meterguard[litellm]` extra).
"""

from meterguard.gateway.asgi import ThrottleMiddleware, identity_from_headers
from meterguard.gateway.client import Decision, ThrottleClient
from meterguard.gateway.fail_mode import FailMode
from meterguard.gateway.sse import ServerSentEvent, SSEParser

__all__ = [
    "Decision",
    "FailMode",
    "SSEParser",
    "ServerSentEvent",
    "ThrottleClient",
    "ThrottleMiddleware",
    "identity_from_headers",
]
