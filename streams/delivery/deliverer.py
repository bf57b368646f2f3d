"""Alert delivery: meterguard.alerts -> Redis outbox -> webhooks and Slack (issue 4).

Two halves, decoupled by the outbox so a slow destination can never stall consumption:

- an agent on the alerts topic that only enqueues (one Redis round trip per batch), and
- one delivery loop per destination (claim due items, deliver, ack / reschedule /
  dead-letter), all running concurrently so a dead destination only delays itself.

Webhook destinations are ordered: an identity's alerts reach each one in the order they were
published (the outbox claims only the oldest pending alert of an identity); Slack is not (it
groups a burst of an episode into one message showing the latest state).

Alerts a destination never accepted go to `topic_alerts_dlq` (flushed before they leave the
outbox, so a crash in between repeats a dead letter rather than losing it), and so do alerts
a full outbox refused (reason "outbox_full": `Settings.outbox_max_pending` per destination).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import faust
import httpx
import redis.asyncio as aioredis
from pydantic import ValidationError
from slack_sdk.web.async_client import AsyncWebClient

from meterguard.models import Alert, DeadLetteredAlert, utc_now
from meterguard.sinks.base import Delivered, Failed, GiveUp, Outcome, Retry, RetryPolicy, Sink
from meterguard.sinks.routing import Destination, SlackApi, destinations
from meterguard.sinks.slack import SlackSink
from meterguard.sinks.slack_api import SlackApiSink
from meterguard.sinks.webhook import WebhookSink
from meterguard.streams import metrics
from meterguard.streams.delivery.outbox import Claimed, Item, Outbox, SlackThreads
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.settings import Settings
from meterguard.streams.store.retry import retrying

log = logging.getLogger("meterguard.delivery")
DONE_HORIZON_S = 48 * 3600  # = the dedupe horizon of delivered alerts
IDLE_POLL_S = 1.0  # picks up items enqueued by other workers, and retries coming due
WEBHOOK_BATCH, SLACK_BATCH = 20, 200  # Slack batches are digested into one message
OUTBOX_FULL = "outbox_full"  # the dead-letter reason of an alert a full outbox refused


@dataclass
class Route:
    destination: Destination
    sink: Sink
    hold_s: float  # enqueued items wait this long first (Slack: lets a burst group)
    batch: int
    ordered: bool = True  # an identity's alerts one at a time, oldest first
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> str:
        return self.destination.key


DeadLetterSender = Callable[[Sequence[DeadLetteredAlert]], Awaitable[None]]


class Deliverer:
    """Per-destination delivery loops over the shared outbox."""

    def __init__(
        self,
        routes: Sequence[Route],
        outbox: Outbox,
        retry: RetryPolicy,
        send_dead: DeadLetterSender,
    ) -> None:
        self.routes = list(routes)
        self.outbox = outbox
        self.retry = retry
        self._send_dead = send_dead

    def plan(self, alert: Alert) -> list[Item]:
        return [
            Item(alert, r.key, r.hold_s, r.ordered)
            for r in self.routes
            if r.destination.filter.matches(alert)
        ]

    async def accept(self, items: Sequence[Item]) -> int:
        """Into the outbox; what a full outbox refuses goes to the alerts DLQ at once (then
        remembered as done, so a redelivery does not queue it again). Returns how many
        were new."""
        enqueued = await self.outbox.enqueue(items)
        by_key = {route.key: route for route in self.routes}
        refused: dict[str, list[Claimed]] = {}
        for alert, dest, _, _ in enqueued.refused:
            refused.setdefault(dest, []).append(Claimed(alert, 0, 0, ""))
        for dest, claimed in refused.items():
            route = by_key[dest]
            log.warning(
                "outbox of %s full (%d pending): %d alert(s) to the alerts DLQ",
                route.destination.public_name,
                self.outbox.max_pending,
                len(claimed),
                extra={"destination": route.destination.public_name, "reason": OUTBOX_FULL},
            )
            metrics.SINK_OUTBOX_FULL.labels(route.sink.kind, dest).inc(len(claimed))
            await self._dead_letter(route, [(c, GiveUp(OUTBOX_FULL, None)) for c in claimed])
        return enqueued.new

    def wake(self, keys: set[str]) -> None:
        for route in self.routes:
            if route.key in keys:
                route.wake.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(route) for route in self.routes))

    async def _loop(self, route: Route) -> None:
        failures = 0
        while True:
            route.wake.clear()  # before the claim: a wake during the cycle is kept
            try:
                handled = await self.run_once(route)
                failures = 0
            except Exception:  # Redis or Kafka trouble: this loop must outlive it
                failures += 1
                log.exception("delivery to %s failed; retrying", route.destination.public_name)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            if not handled:
                await self._idle(route)

    async def _idle(self, route: Route) -> None:
        due_in = await self.outbox.next_due_in(route.key)
        timeout = IDLE_POLL_S if due_in is None else min(due_in, IDLE_POLL_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(route.wake.wait(), timeout)

    async def run_once(self, route: Route) -> int:
        """One claim -> deliver -> settle cycle; returns how many items it handled."""
        claimed = await self.outbox.claim(route.key, route.batch)
        metrics.SINK_OUTBOX_DEPTH.labels(route.sink.kind, route.key).set(
            await self.outbox.depth(route.key)
        )
        if not claimed:
            return 0
        # Past the last attempt already: a worker died after delivering, before settling.
        fresh = [c for c in claimed if c.attempts <= self.retry.max_attempts]
        stale = [c for c in claimed if c.attempts > self.retry.max_attempts]
        outcomes = await _deliver(route.sink, [c.alert for c in fresh])
        settled = await self.outbox.settle(route.key, fresh, outcomes, self.retry)
        _count(route.sink.kind, outcomes, settled.delivered)
        dead = settled.dead + [
            (c, GiveUp("lease expired after the last attempt", None)) for c in stale
        ]
        await self._dead_letter(route, dead)
        return len(claimed)

    async def _dead_letter(self, route: Route, dead: list[tuple[Claimed, GiveUp]]) -> None:
        if not dead:
            return
        now = utc_now()
        letters = [
            DeadLetteredAlert(
                alert=c.alert,
                destination=route.destination.public_name,
                reason=step.reason,
                attempts=min(c.attempts, self.retry.max_attempts),  # 0: refused when full
                last_status=step.status,
                dead_lettered_at=now,
            )
            for c, step in dead
        ]
        await self._send_dead(letters)
        await self.outbox.finish(route.key, [c.alert.alert_id for c, _ in dead])
        metrics.SINK_DEAD_LETTERS.labels(route.sink.kind).inc(len(letters))
        for letter in letters:
            log.error(
                "alert %s dead-lettered for %s: %s",
                letter.alert.alert_id,
                letter.destination,
                letter.reason,
                extra={
                    "identity": letter.alert.identity,
                    "alert_id": letter.alert.alert_id,
                    "destination": letter.destination,
                    "reason": letter.reason,
                    "attempts": letter.attempts,
                },
            )


async def _deliver(sink: Sink, alerts: list[Alert]) -> list[Outcome]:
    if not alerts:
        return []
    try:
        return await sink.deliver(alerts)
    except Exception as exc:  # a sink bug must not lose alerts: they stay queued
        log.exception("sink %s raised", sink.kind)
        return [Retry(f"sink error: {type(exc).__name__}") for _ in alerts]


def _count(kind: str, outcomes: Sequence[Outcome], delivered: Sequence[Claimed]) -> None:
    for outcome in outcomes:
        label = {Delivered: "delivered", Retry: "retry", Failed: "failed"}[type(outcome)]
        metrics.SINK_DELIVERIES.labels(kind, label).inc()
    now = time.time()
    for item in delivered:
        metrics.SINK_DELIVERY_SECONDS.labels(kind).observe(max(0.0, now - item.enqueued_ms / 1000))


def build_routes(
    found: Sequence[Destination],
    settings: Settings,
    client: httpx.AsyncClient,
    redis_client: aioredis.Redis,
) -> list[Route]:
    routes = []
    for dest in found:
        sink: Sink
        if dest.kind == "slack" and dest.channel is not None:
            web = AsyncWebClient(
                token=dest.secret,
                base_url=dest.url,
                timeout=max(1, round(settings.sink_timeout_s)),
                retry_handlers=[],  # sinks never sleep: retries are the outbox's
            )
            threads = SlackThreads(redis_client, settings.key_prefix, dest.key)
            sink = SlackApiSink(
                web,
                dest.channel,
                threads,
                settings.dashboard_url,
                settings.slack_digest_threshold,
            )
            routes.append(
                Route(dest, sink, settings.slack_group_seconds, SLACK_BATCH, ordered=False)
            )
        elif dest.kind == "slack":
            sink = SlackSink(
                dest.url,
                client,
                settings.sink_timeout_s,
                settings.dashboard_url,
                settings.slack_digest_threshold,
            )
            routes.append(
                Route(dest, sink, settings.slack_group_seconds, SLACK_BATCH, ordered=False)
            )
        else:
            sink = WebhookSink(
                dest.url, dest.secret, client, settings.sink_timeout_s, format=dest.format
            )
            routes.append(Route(dest, sink, 0.0, WEBHOOK_BATCH))
        log.info("delivering alerts to %s (%s)", dest.public_name, dest.key)
    return routes


def decode_alert(raw: bytes | None) -> Alert | None:
    try:
        return Alert.model_validate_json(raw or b"")
    except ValidationError as exc:
        log.error("unreadable record on the alerts topic, not delivered: %s", exc)
        return None


def install_delivery(
    app: faust.App, settings: Settings, redis_client: aioredis.Redis, policy: PolicyConfig
) -> None:
    """Deliver alerts to the configured destinations; nothing at all when there are none."""
    if getattr(app, "meterguard_delivery", None) is not None:
        return  # installed already: a second agent would deliver everything twice
    slack_api = SlackApi.of(
        settings.slack_api_url, settings.slack_bot_token, settings.slack_channel
    )
    found = destinations(
        policy.routing,
        settings.webhook_url,
        settings.webhook_secret,
        settings.slack_webhook_url,
        os.environ,
        slack_api,
    )
    if slack_api is not None:
        ignored = "; MG_SLACK_WEBHOOK_URL ignored" if settings.slack_webhook_url else ""
        log.info("Slack via the Web API, channel %s%s", slack_api.channel, ignored)
    elif settings.slack_webhook_url:
        log.info("Slack via the incoming webhook")
    if not found:
        return
    client = httpx.AsyncClient(timeout=settings.sink_timeout_s, follow_redirects=False)
    routes = build_routes(found, settings, client, redis_client)
    # Longer than any one delivery cycle: a webhook batch is concurrent (one timeout), a
    # Slack batch is at most `slack_digest_threshold` messages one after another (Web API:
    # as many new threads and as many replies, each with a parent edit) plus a digest.
    lease_s = max(30.0, (3 * settings.slack_digest_threshold + 2) * settings.sink_timeout_s)
    outbox = Outbox(
        redis_client,
        settings.key_prefix,
        lease_s,
        DONE_HORIZON_S,
        max_pending=settings.outbox_max_pending,
    )
    retry = RetryPolicy(
        settings.sink_backoff_base_s, settings.sink_backoff_max_s, settings.sink_max_attempts
    )

    async def send_dead(letters: Sequence[DeadLetteredAlert]) -> None:
        for letter in letters:
            value = letter.model_dump_json().encode()
            key = letter.alert.identity.encode()
            await app.producer.send(settings.topic_alerts_dlq, key, value, None, None, None)
        await app.producer.flush()

    deliverer = Deliverer(routes, outbox, retry, send_dead)
    app.meterguard_delivery = deliverer  # type: ignore[attr-defined]
    alerts = app.topic(
        settings.topic_alerts,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(alerts)
    async def enqueue_alerts(stream: faust.StreamT[bytes]) -> None:
        # take_events keeps each record's timestamp (Stream, not in StreamT's stub).
        batches = stream.take_events(100, within=0.2)  # type: ignore[attr-defined]
        async for batch in batches:
            oldest = time.time() - DONE_HORIZON_S
            # Older than the done records (a reset consumer group re-reading the topic):
            # their delivery can no longer be checked, so they are not sent again.
            fresh = [e for e in batch if (e.message.timestamp or 0) >= oldest]
            items = [
                item
                for alert in filter(None, (decode_alert(e.value) for e in fresh))
                for item in deliverer.plan(alert)
            ]
            await retrying(lambda i=items: deliverer.accept(i), log=log, what="enqueue retry")  # type: ignore[misc]
            deliverer.wake({item.dest for item in items})

    # faust declares App.task @no_type_check (it is a decorator with and without arguments).
    @app.task  # type: ignore[untyped-decorator]
    async def deliver_alerts() -> None:
        try:
            await deliverer.run()
        finally:  # cancelled when the worker stops
            await client.aclose()
