"""Issue 14, scenario 4: the broker goes away mid-stream and comes back; the worker must
reconnect and continue, counting exactly and dropping no alert or throttle command.

Two faults, each for OUTAGE_S while the worker is mid-stream (its first alerts published):
- "cut": every connection to the broker reset and new ones refused, then accepted again (a
  broker restart or a network partition as the clients see it). The broker is a Tansu of this
  test's own, reached only through a TCP proxy it advertises (tests/support/tcp_proxy.py),
  because Tansu keeps topics in memory: restarting the process would lose them, which no
  real Kafka or Redpanda restart does.
- "hang": the broker process stopped with SIGSTOP, then SIGCONT (a broker that stops
  answering without closing anything: a long GC pause, a frozen VM).

Judged by tests/support/fault_stream.py (the ledger of the events sent, a replay's alert
ids and throttle command ids), and the worker process alive throughout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from meterguard.streams.tools.embedded import free_port
from tests.support.fault_stream import EXTRA_ENV, alerting, drain, judge, reached, stream
from tests.support.faults import counted, unique_events
from tests.support.polling import eventually
from tests.support.tcp_proxy import ProxiedBroker, TcpProxy
from tests.support.worker_process import produce, start_worker

# Twice the worker's session timeout (MG_SESSION_TIMEOUT_S, 6 s): the group's membership
# lapses and every fetch and send in flight fails or waits, not just slows down.
OUTAGE_S = 12


@pytest.fixture
def proxy_port() -> int:
    return free_port()


@pytest.fixture
def own_broker(
    proxy_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxiedBroker]:
    with ProxiedBroker(proxy_port, workdir=tmp_path_factory.mktemp("tansu-proxied")) as server:
        yield server


@pytest.fixture
async def proxy(own_broker: ProxiedBroker, proxy_port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(proxy_port, own_broker.port)
    await proxy.start()
    yield proxy
    await proxy.cut()


@pytest.mark.parametrize("fault", ["cut", "hang"])
async def test_worker_rides_out_a_broker_outage_and_drops_nothing(
    fault: str,
    own_broker: ProxiedBroker,
    proxy: TcpProxy,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path,
):
    traffic = stream()
    sent = list(traffic.docs)
    total = unique_events(sent)
    worker = await start_worker(own_broker, redis_url, tmp_path_factory, EXTRA_ENV)  # type: ignore[arg-type]
    try:
        await produce(own_broker.bootstrap, worker.settings.topic_raw, sent)
        await eventually(lambda: alerting(worker), "the first alerts", log=worker.log)
        at_fault = await counted(worker.store)
        if fault == "cut":
            await proxy.cut()
        else:
            os.kill(own_broker.pid or 0, signal.SIGSTOP)
        await asyncio.sleep(OUTAGE_S)  # the outage itself: a duration, not a synchronisation
        during = await counted(worker.store)
        back_at = time.monotonic()
        if fault == "cut":
            await proxy.restore()
        else:
            os.kill(own_broker.pid or 0, signal.SIGCONT)
        assert worker.process.poll() is None, worker.log.read_text()[-3000:]
        done = await eventually(
            lambda: reached(worker, total), "the worker to count the rest", log=worker.log
        )
        await drain(own_broker, worker, sent)  # type: ignore[arg-type]
        figures = await judge(
            f"broker {fault}", worker, traffic, sent, at_fault, done - back_at, tmp_path
        )
        assert figures.counted_at_kill < figures.unique  # the fault hit mid-stream
        assert during < total  # the outage stopped the stream (nothing finished without it)
        assert worker.process.poll() is None
    finally:
        if fault == "hang" and own_broker.running:
            os.kill(own_broker.pid or 0, signal.SIGCONT)
        await worker.stop()
