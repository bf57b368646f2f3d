"""KafkaPublisher: a gateway's producer of raw metering records (`metering.raw`).

Built to sit in someone else's request path (a LiteLLM callback, a gateway's middleware):

- the producer is started lazily, on the event loop of the first `publish`, so it can be
  made at import time (LiteLLM builds its callbacks before its loop runs);
- `publish` never raises: a broker that is down, slow or refuses a record costs the record
  (logged once per outage, counted in `stats`), never the caller's request; a failed start
  is retried at most every `retry_after_s`, so an outage is not a connection attempt per
  call;
- `publish` waits for the record to be handed to the producer (bounded by `send_timeout_s`),
  not for the broker's acknowledgement: delivery is counted when it lands; `flush` and
  `aclose` wait for what is in flight.

Depends on aiokafka only (no Faust, Redis or meterguard.streams); `from_env` also
reads the Kafka security settings (SASL/TLS) the worker reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from meterguard.kafka_security import KafkaSecurity

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "metering.raw"
Headers = Sequence[tuple[str, bytes]]


def bootstrap_servers(broker_url: str) -> str:
    """`MG_KAFKA_BROKER` as the worker reads it (`kafka://host:port`, comma-separated, the
    scheme optional) -> aiokafka's `host:port,host:port`."""
    hosts = [h.strip().removeprefix("kafka://") for h in broker_url.split(",") if h.strip()]
    if not hosts:
        raise ValueError(f"no Kafka broker in {broker_url!r}")
    return ",".join(hosts)


@dataclass
class PublisherStats:
    sent: int = 0  # handed to the producer
    delivered: int = 0  # acknowledged by the broker
    failed: int = 0  # lost: broker unreachable, timed out, refused, or the producer not started


class KafkaPublisher:
    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        *,
        send_timeout_s: float = 10.0,
        retry_after_s: float = 5.0,
        producer_factory: Callable[..., Any] = AIOKafkaProducer,
        **producer_options: Any,
    ) -> None:
        """`producer_options` go to `AIOKafkaProducer` (security_protocol, sasl_*, ...);
        `producer_factory` is for tests."""
        self.bootstrap = bootstrap
        self.topic = topic
        self.send_timeout_s = send_timeout_s
        self.retry_after_s = retry_after_s
        self.stats = PublisherStats()
        self._factory = producer_factory
        self._options = {"acks": "all", "linger_ms": 5, **producer_options}
        self._producer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._retry_at = 0.0  # loop time before which a failed start is not retried
        self._down = False  # in an outage: logged once, until a record is delivered again

    @classmethod
    def from_url(cls, broker_url: str, topic: str = DEFAULT_TOPIC, **kwargs: Any) -> KafkaPublisher:
        return cls(bootstrap_servers(broker_url), topic, **kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> KafkaPublisher:
        """As the worker reads its environment: `MG_KAFKA_BROKER`, `MG_TOPIC_RAW` and the
        Kafka security settings (`MG_KAFKA_SECURITY_PROTOCOL`, `MG_KAFKA_SASL_*`,
        `MG_KAFKA_SSL_*`: meterguard/kafka_security.py)."""
        env = os.environ if environ is None else environ
        broker = env.get("MG_KAFKA_BROKER")
        if not broker:
            raise ValueError("MG_KAFKA_BROKER is not set (e.g. kafka://127.0.0.1:9092)")
        security = KafkaSecurity.from_env(env).aiokafka_options()
        topic = env.get("MG_TOPIC_RAW") or DEFAULT_TOPIC
        return cls(bootstrap_servers(broker), topic, **(security | kwargs))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> bool:
        """Start the producer on the running loop if it is not; False if the broker is not
        reachable now (`publish` tries again later by itself)."""
        loop = asyncio.get_running_loop()
        if self._producer is not None and self._loop is loop:
            return True
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())  # an asyncio.Lock belongs to one loop
        async with self._lock[1]:
            if self._producer is not None and self._loop is loop:
                return True
            if self._producer is not None:
                # A producer belongs to the loop that started it; this one cannot stop it.
                log.warning("metering producer started on another event loop; starting anew")
                self._producer = None
            if loop.time() < self._retry_at:
                return False
            producer = self._factory(bootstrap_servers=self.bootstrap, **self._options)
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    await producer.start()
            except Exception as exc:
                self._retry_at = loop.time() + self.retry_after_s
                self._outage(f"cannot start a Kafka producer for {self.bootstrap}: {exc!r}")
                with contextlib.suppress(Exception):
                    await producer.stop()
                return False
            self._producer, self._loop = producer, loop
            return True

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every record handed over so far is delivered or failed."""
        producer = self._producer
        if producer is None or self._loop is not asyncio.get_running_loop():
            return
        try:
            async with asyncio.timeout(timeout):
                await producer.flush()
        except Exception as exc:
            log.warning("flushing metering records to %s failed: %r", self.topic, exc)

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None or self._loop is not asyncio.get_running_loop():
            return
        try:
            await producer.stop()  # flushes what is in flight first
        except Exception as exc:
            log.warning("stopping the metering producer failed: %r", exc)

    # -- the request path ------------------------------------------------------------------

    async def publish(self, value: bytes, key: str | None = None, headers: Headers = ()) -> bool:
        """Hand one record to the producer; False (and counted as failed) if that was not
        possible. Never raises."""
        try:
            if not await self.start():
                self.stats.failed += 1
                return False
            async with asyncio.timeout(self.send_timeout_s):
                delivery = await self._producer.send(
                    self.topic,
                    value=value,
                    key=key.encode() if key is not None else None,
                    headers=list(headers),
                )
        except Exception as exc:  # a full buffer past the timeout, too large, producer closed
            self.stats.failed += 1
            self._outage(f"cannot send a metering record to {self.topic}: {exc!r}")
            return False
        self.stats.sent += 1
        delivery.add_done_callback(self._settled)
        return True

    def _settled(self, delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            self.stats.failed += 1
            error = "cancelled" if delivery.cancelled() else repr(delivery.exception())
            self._outage(f"a metering record to {self.topic} was not delivered: {error}")
            return
        self.stats.delivered += 1
        if self._down:
            self._down = False
            log.info("metering records reach %s again", self.topic)

    def _outage(self, message: str) -> None:
        if self._down:
            log.debug("%s", message)
        else:
            self._down = True
            log.warning("%s (records are dropped and counted until it recovers)", message)
