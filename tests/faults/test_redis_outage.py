"""Issue 14, scenario 3: Redis restarted, Redis down for 30 s, Redis killed, while a worker is
mid-stream. The worker must ride it out (streams/store/retry.py: every Redis call of its
agents and tasks is retried until Redis answers), lose nothing, count nothing twice, resume.

Real processes: the session's Tansu broker, a `meterguard worker` child, and a private
redis-server of this module (tests/support/redis_process.py: the session's Redis is shared,
these tests stop theirs), with the append-only file on, the persistence README asks of a
production Redis ("Recovering windows after Redis loses its data"). The stream is the worker
kill's (tests/faults/test_worker_kill.py: 30 identities, bursts firing spike alerts, a retry
loop, out-of-order, late and repeated events), judged the same way: every identity's minute
windows, late totals and counters equal the pipeline's rules recomputed from the events sent,
`events_new + events_late` = unique events, and the alert ids on the topic are those of one
uncrashed replay. And the worker process never exited, and none of its agents crashed.
Across the restart and the kill a webhook receives every alert (the outbox lives in Redis:
pending deliveries must survive with it); the 30 s outage leaves delivery out, because the
delivery loop's own backoff (up to 30 s, streams/delivery/deliverer.py) would double the
test's time.

The fault lands once the first alerts are published and checkpointed (mid-stream, like the
worker kill). The 30 s outage is the injected fault's duration, not a wait for anything.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.exceptions

from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.integration.test_delivery import Receiver
from tests.support.fault_stream import EXTRA_ENV, alerting, drain, judge, reached, stream
from tests.support.faults import counted, unique_events
from tests.support.polling import eventually
from tests.support.redis_process import PersistentRedis
from tests.support.worker_process import Worker, produce, read_topics, start_worker

OUTAGE_S = 30.0  # the scenario: Redis unreachable for 30 s
# What a crashed Faust agent or service, or an error nobody handled, leaves in the worker's log.
CRASH_MARKS = ("Crashed reason=", "exception was never retrieved", "[CRITICAL]")
# A delivery whose outcome Redis did not record (it went away mid-cycle) is sent again once
# its outbox lease runs out: max(30 s, (3 x digest threshold + 2) x sink timeout), 85 s by
# default (streams/delivery/deliverer.py). These make it the 30 s floor, to bound the wait.
SHORT_LEASE = {"MG_SINK_TIMEOUT_S": "1", "MG_SLACK_DIGEST_THRESHOLD": "2"}
# The one error a Redis outage may log: the delivery loop's, handled (it sleeps and retries).
HANDLED_ERROR = re.compile(r"\[ERROR\] delivery to \S+ failed; retrying")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    server = PersistentRedis(tmp_path / "redis")
    with server:
        yield server


async def _ready_redis(worker: Worker) -> bool | None:
    """The worker's /readyz verdict on Redis (None while the web server does not answer)."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{worker.web}/readyz", timeout=aiohttp.ClientTimeout(total=10)) as r,
        ):
            return bool((await r.json())["redis"])
    except (aiohttp.ClientError, TimeoutError):
        return None


def _tolerant(check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    """A check through the test's own Redis client, False while that client reconnects."""

    async def held() -> bool:
        try:
            return await check()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False

    return held


async def _run(
    scenario: str,
    broker: EmbeddedBroker,
    server: PersistentRedis,
    tmp_path_factory: pytest.TempPathFactory,
    work: Path,
    fault: Callable[[Worker], Awaitable[float]],  # -> when Redis answered again
    webhook: Receiver | None = None,
    retried: bool = False,  # the worker must have logged its own retries
) -> None:
    """The stream, `fault` once the first alerts are out, then the worker kill's judgement
    (and the webhook's, if any)."""
    traffic = stream()
    sent = list(traffic.docs)
    total = unique_events(sent)
    env = dict(EXTRA_ENV)
    if webhook is not None:
        await webhook.start()
        env["MG_WEBHOOK_URL"] = webhook.url
        env.update(SHORT_LEASE)
    worker = await start_worker(broker, server.url, tmp_path_factory, env)
    try:
        await produce(broker.bootstrap, worker.settings.topic_raw, sent)
        await eventually(lambda: alerting(worker), "the first alerts", log=worker.log)
        at_fault = await counted(worker.store)
        back_at = await fault(worker)
        done = await eventually(
            _tolerant(lambda: reached(worker, total)), "the worker to count the rest",
            log=worker.log,
        )  # fmt: skip
        await drain(broker, worker, sent)
        figures = await judge(scenario, worker, traffic, sent, at_fault, done - back_at, work)
        assert figures.counted_at_kill < figures.unique  # the fault landed mid-stream
        assert worker.process.poll() is None, "the worker exited"
        log = worker.log.read_text(errors="replace")
        # A quick restart can be ridden out by redis-py's own retries (3, with backoff)
        # before streams/store/retry.py sees an error; 30 s cannot.
        assert not retried or "redis unavailable" in log
        assert not [mark for mark in CRASH_MARKS if mark in log], log[-4000:]
        errors = [line for line in log.splitlines() if "[ERROR]" in line]
        assert all(HANDLED_ERROR.search(line) for line in errors), errors
        if webhook is not None:
            await _judge_delivery(scenario, worker, webhook)
    finally:
        await worker.stop()
        if webhook is not None:
            await webhook.stop()


async def _judge_delivery(scenario: str, worker: Worker, webhook: Receiver) -> None:
    """Every alert on the topic reached the webhook (at least once: repeats are counted)."""
    topic = worker.settings.topic_alerts
    ids = {a["alert_id"] for a in (await read_topics(worker.settings, [topic]))[topic]}
    await eventually(
        lambda: set(webhook.alert_ids()) >= ids, "every alert at the webhook", log=worker.log
    )
    received = webhook.alert_ids()
    figures = {"scenario": scenario, "alerts": len(ids), "webhook_requests": len(received)}
    print("FAULT FIGURES delivery " + orjson.dumps(figures).decode())
    assert set(received) == ids


async def test_redis_restarted_with_its_data_mid_stream(
    broker: EmbeddedBroker,
    private_redis: PersistentRedis,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
):
    async def restart(worker: Worker) -> float:
        await asyncio.to_thread(private_redis.shut_down)  # SIGTERM: AOF flushed, exit
        await asyncio.to_thread(private_redis.start)  # same port, same folder
        return time.monotonic()

    await _run(
        "redis restart", broker, private_redis, tmp_path_factory, tmp_path, restart, _webhook()
    )


async def test_redis_down_for_30_seconds_then_back(
    broker: EmbeddedBroker,
    private_redis: PersistentRedis,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
):
    async def outage(worker: Worker) -> float:
        await asyncio.to_thread(private_redis.shut_down)
        stopped = time.monotonic()
        # While it is down the worker says so (/readyz 503, redis false) and stays up.
        await eventually(
            lambda: _is_false(worker), "the worker's /readyz to report Redis down",
            log=worker.log,
        )  # fmt: skip
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the fault
        assert worker.process.poll() is None, "the worker exited while Redis was down"
        await asyncio.to_thread(private_redis.start)
        back_at = time.monotonic()
        await eventually(lambda: _is_true(worker), "/readyz to see Redis back", log=worker.log)
        return back_at

    await _run(
        "redis down 30 s", broker, private_redis, tmp_path_factory, tmp_path, outage, retried=True
    )


async def test_redis_killed_mid_stream_comes_back_from_its_append_only_file(
    broker: EmbeddedBroker,
    private_redis: PersistentRedis,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
):
    async def crash(worker: Worker) -> float:
        await asyncio.to_thread(private_redis.crash)  # SIGKILL: no save, no flush
        await asyncio.to_thread(private_redis.start)  # loads the append-only file
        return time.monotonic()

    await _run(
        "redis SIGKILL", broker, private_redis, tmp_path_factory, tmp_path, crash, _webhook()
    )


def _webhook() -> Receiver:
    return Receiver("/hook", lambda n: (200, {}))


async def _is_false(worker: Worker) -> bool:
    return await _ready_redis(worker) is False


async def _is_true(worker: Worker) -> bool:
    return await _ready_redis(worker) is True
