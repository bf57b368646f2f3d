"""The Kafka consumer's fetch wait, which Faust fixes at 1.5 s.

A fetch returns once a partition has data or after `fetch_max_wait_ms`; Faust's aiokafka
driver passes a literal 1,500 ms (`AIOKafkaConsumerThread._create_worker_consumer`), and no
Faust setting reaches it (`consumer_max_fetch_size` sets the bytes, `broker_max_poll_interval`
the poll interval). On a quiet topic every event then waited up to 1.5 s before a worker saw
it. aiokafka reads the value from `_fetch_max_wait_ms` once, in `start()`, when it builds its
Fetcher, so the consumer thread sets it on the consumer it creates, before it starts.
`install(app, ms)` swaps in a transport whose consumers do that (before any topic is made).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


def install(app: faust.App, fetch_max_wait_ms: int) -> None:
    """Make `app`'s Kafka consumers wait at most `fetch_max_wait_ms` per fetch."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class WaitingConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = WaitingConsumer

    app.transport = Transport(app.conf.broker_consumer, app)


def fetch_wait_ms(app: faust.App) -> int | None:
    """The fetch wait of `app`'s running consumer (None before it starts): for tests."""
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    value = getattr(consumer, "_fetch_max_wait_ms", None)
    return int(value) if value is not None else None
