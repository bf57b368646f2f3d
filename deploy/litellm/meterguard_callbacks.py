"""meterguard's LiteLLM proxy callbacks, configured from the environment.

Loaded by the proxy from `config.kafka.yaml` next to this file
(`litellm_settings: {callbacks: ["meterguard_callbacks.meterguard"]}`: LiteLLM imports
`<module>.py` from the config file's folder and takes `<instance>` from it). Needs
`pip install "meterguard[litellm]"` in the proxy's environment.

- `MG_KAFKA_BROKER` (e.g. `kafka://kafka-1:9092,kafka://kafka-2:9092`, as the worker reads
  it): every call's standard logging payload goes to `MG_TOPIC_RAW` (default
  `metering.raw`). Unset: nothing is metered from here.
- `MG_THROTTLE_URL` (a worker's web address, e.g. `http://meterguard:6066`): the pre-call
  hook follows its throttle feed and answers 429 for throttled and blocked keys. Unset: no
  enforcement.
"""

from __future__ import annotations

import os

from meterguard.gateway import ThrottleClient
from meterguard.gateway.litellm import MeterguardCallback
from meterguard.gateway.publisher import KafkaPublisher

_broker = os.environ.get("MG_KAFKA_BROKER")
_throttle_url = os.environ.get("MG_THROTTLE_URL")

meterguard = MeterguardCallback(
    # MG_KAFKA_BROKER, MG_TOPIC_RAW and the Kafka security settings (SASL/TLS), as a worker.
    publisher=KafkaPublisher.from_env() if _broker else None,
    throttle=ThrottleClient(_throttle_url) if _throttle_url else None,
)
