"""`meterguard demo`: everything that is not configured, started for real, shown live.

Broker (Tansu) and Redis start embedded unless MG_KAFKA_BROKER / MG_REDIS_URL name real ones;
a worker runs as a child process (its log goes to a file); synthetic traffic starts an hour
in the past and fast-forwards, so baselines exist within seconds and the injected incidents
fire within the first minute; alerts and throttles are read back from their Kafka topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from meterguard.streams.runtime.topics import ensure_topics, topic_specs
from meterguard.streams.settings import Settings
from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.incident_plan import plan_incidents
from meterguard.streams.simulation.simulate import generate
from meterguard.streams.simulation.traffic import PacedClock, produce_paced
from meterguard.streams.store import build_store
from meterguard.streams.store.connection import redis_client
from meterguard.streams.tools.demo_spend import SpendView, read_spend, spend_summary, spend_tables
from meterguard.streams.tools.demo_text import delivery_counts, describe_destinations
from meterguard.streams.tools.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    die_with_parent,
    free_port,
    stop_group,
)

# One of each kind that fires within a minute: a spike, a retry loop and an agent loop.
DEMO_INCIDENTS = ("runaway_agent", "retry_loop", "agent_chain")
CATCH_UP_S = 45.0  # wall seconds until simulated time reaches now
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and a supervisor's stop


@dataclass(frozen=True)
class Schedule:
    """When the demo's simulated traffic starts, how fast it runs, when incidents begin.

    * It starts at hh:50 so the first top-of-hour (hourly batch jobs burst then) falls in the
      detectors' 60-minute warm-up: the profile learns the burst instead of paging on it.
    * It fast-forwards so simulated time reaches the wall clock after CATCH_UP_S seconds.
    * Incidents begin a few simulated minutes before that: they are detected within the
      first minute of the demo and their throttle commands (issued in event time, expiring
      15 minutes later) are still live for the gateways when they appear.
    """

    start: datetime
    speed: float
    incident_after_minutes: int
    incident_latest_start: int

    @classmethod
    def for_now(cls, now: datetime, speed: float | None = None) -> Schedule:
        now = now.replace(second=0, microsecond=0)
        backfill = (now.minute - 50) % 60
        while backfill < 70:
            backfill += 60  # 70..129 minutes, so incidents come after the 60-minute warm-up
        pace = speed if speed is not None else max(40.0, backfill * 60 / CATCH_UP_S)
        return cls(now - timedelta(minutes=backfill), pace, backfill - 6, backfill - 3)


@dataclass
class Screen:
    started: float = field(default_factory=time.monotonic)
    produced: int = 0
    alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=12))
    throttles: dict[str, dict[str, Any]] = field(default_factory=dict)
    alert_count: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    top: list[tuple[str, float]] = field(default_factory=list)
    rate: float = 0.0
    sim_time: datetime | None = None
    deliveries: dict[str, float] = field(default_factory=dict)  # outcome -> count (all sinks)
    spend: SpendView = field(default_factory=SpendView)


def run_demo(
    settings: Settings, duration: float | None, identities: int, speed: float | None, seed: int
) -> int:
    console = Console()
    # Ctrl-C and SIGTERM both end in the clean shutdown below, whenever they come (while the
    # servers start too); SIGINT explicitly, because a process started in the background by a
    # script inherits it ignored.
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    workdir = Path(".meterguard") / datetime.now(UTC).strftime("demo-%Y%m%dT%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            broker_url, redis_url = settings.kafka_broker, settings.redis_url
            if not broker_url:
                console.print("starting embedded Kafka-protocol broker (Tansu)…")
                broker_url = stack.enter_context(EmbeddedBroker(workdir=workdir / "broker")).url
            if not redis_url:
                console.print("starting embedded Redis…")
                redis_url = stack.enter_context(EmbeddedRedis(workdir=workdir / "redis")).url
            live = settings.model_copy(update={"kafka_broker": broker_url, "redis_url": redis_url})
            asyncio.run(ensure_topics(live.bootstrap, topic_specs(live)))
            web_port = settings.web_port if "MG_WEB_PORT" in os.environ else free_port()
            worker = _start_worker(live, workdir, web_port)
            stack.callback(_stop_process, worker)
            console.print(
                f"worker pid {worker.pid}, log {workdir / 'worker.log'}; Ctrl-C stops everything"
            )
            console.print(f"dashboard: [bold]http://127.0.0.1:{web_port}/[/bold]")
            console.print(describe_destinations(settings))
            web = f"http://127.0.0.1:{web_port}"
            asyncio.run(_run(live, console, duration, identities, speed, seed, worker, web))
            if _Stop.requested:
                console.print("stopping…")
        except KeyboardInterrupt:
            _ignore_signals()
            console.print("stopping…")
        finally:
            # The stack's exit stops the children; a second signal must not cut that short
            # (it is bounded: each child gets SIGKILL after a grace period).
            _ignore_signals()
    console.print(f"stopped; logs kept in {workdir}")
    return 0


class _Stop:
    """Whether SIGINT or SIGTERM came. While the servers start, the handler also raises
    KeyboardInterrupt, but Python drops an exception raised while it runs an at-fork hook or
    a finaliser (it prints it and goes on: starting a child forks), so `_run` checks this too.
    """

    requested = False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _Stop.requested = True
    raise KeyboardInterrupt


def _stop_requested() -> None:
    _Stop.requested = True


def _ignore_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _start_worker(settings: Settings, workdir: Path, web_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MG_KAFKA_BROKER": settings.kafka_broker or "",
        "MG_REDIS_URL": settings.redis_url or "",
        # Slack buttons link to this dashboard unless the environment names a public one.
        "MG_DASHBOARD_URL": settings.dashboard_url or f"http://127.0.0.1:{web_port}",
    }
    log = (workdir / "worker.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterguard.streams.tools.cli",
            "worker",
            "--web-port",
            str(web_port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    stop_group(proc, 10.0)


async def _run(
    settings: Settings,
    console: Console,
    duration: float | None,
    identities: int,
    speed: float | None,
    seed: int,
    worker: subprocess.Popen[bytes],
    web: str,
) -> None:
    screen = Screen()
    stop = asyncio.Event()
    plan = Schedule.for_now(datetime.now(UTC), speed)
    cfg = SimConfig(
        identities=identities,
        start=plan.start,
        minutes=24 * 60,
        seed=seed,
        incidents=len(DEMO_INCIDENTS),
        incident_kinds=DEMO_INCIDENTS,
        incident_after_minutes=plan.incident_after_minutes,
        incident_minutes=12,
        incident_latest_start=plan.incident_latest_start,
    )
    clock = PacedClock(plan.start, plan.speed)
    for incident in plan_incidents(cfg):
        console.print(
            f"injected: {incident.kind} on {escape(incident.identity)} from "
            f"{incident.start:%H:%M} to {incident.end:%H:%M} UTC (simulated)"
        )

    def produced(n: int) -> None:
        screen.produced = n

    tasks = [
        asyncio.create_task(
            produce_paced(
                generate(cfg), settings.bootstrap, settings.topic_raw, clock, produced, stop
            )
        ),
        asyncio.create_task(_follow_outputs(settings, screen, stop)),
        asyncio.create_task(_poll_stats(settings, screen, stop)),
        asyncio.create_task(_poll_deliveries(web, screen, stop)),
    ]
    deadline = None if duration is None else time.monotonic() + duration
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:  # from here a signal is a flag the loop below reads, no exception
        loop.add_signal_handler(sig, _stop_requested)
    try:
        with Live(_render(screen, clock), console=console, refresh_per_second=2) as view:
            while not _Stop.requested and (deadline is None or time.monotonic() < deadline):
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.returncode}; see its log")
                failed = [t for t in tasks if t.done() and t.exception()]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
                view.update(_render(screen, clock))
                await asyncio.sleep(0.5)  # screen refresh cadence, not synchronisation
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Back to the handler that raises (the loop's would die with it), with no moment
        # without one: a signal meanwhile waits, blocked, for the new handler.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, _interrupt)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    sent = ", ".join(f"{n:,.0f} {k}" for k, n in sorted(screen.deliveries.items()))
    console.print(
        f"{screen.alert_count} alerts, {len(screen.throttles)} identities throttled, "
        f"{screen.stats.get('events_new', 0):,} events counted"
        + (f"; alert deliveries: {sent}" if sent else ""),
        soft_wrap=True,  # one line, whatever the terminal's width: scripts read it
    )
    console.print(spend_summary(screen.spend), soft_wrap=True)


async def _follow_outputs(settings: Settings, screen: Screen, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic_alerts,
        settings.topic_throttle,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    doc = orjson.loads(record.value)
                    if tp.topic == settings.topic_alerts:
                        screen.alerts.appendleft(doc)
                        screen.alert_count += 1
                    elif doc["action"] == "release":
                        screen.throttles.pop(doc["identity"], None)
                    else:
                        screen.throttles[doc["identity"]] = doc
    finally:
        await consumer.stop()


async def _poll_stats(settings: Settings, screen: Screen, stop: asyncio.Event) -> None:
    client = redis_client(settings.redis_url or "", settings.redis_options)
    store = build_store(client, settings.store_config())
    last = (time.monotonic(), 0)
    try:
        while not stop.is_set():
            screen.stats = await store.stats.pipeline_counters()
            screen.top = await store.history.top_identities(8)
            screen.spend = await read_spend(store)
            now, counted = time.monotonic(), screen.stats.get("events_new", 0)
            screen.rate = (counted - last[1]) / max(now - last[0], 1e-6)
            last = (now, counted)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        await client.aclose()


async def _poll_deliveries(web: str, screen: Screen, stop: asyncio.Event) -> None:
    """Alert deliveries by outcome, from the worker's /metrics (absent until it serves)."""
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                text = (await client.get(f"{web}/metrics")).text
                screen.deliveries = delivery_counts(text)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


def _render(screen: Screen, clock: PacedClock) -> Group:
    sim = datetime.fromtimestamp(clock.simulated_s(), UTC).strftime("%H:%M")
    stats = screen.stats
    head = (
        f"[bold]meterguard demo[/bold]  sim time {sim} UTC  ·  produced {screen.produced:,}  ·  "
        f"counted {stats.get('events_new', 0):,} ({screen.rate:,.0f}/s)  ·  duplicates "
        f"{stats.get('events_duplicate', 0):,}  ·  late {stats.get('events_late', 0):,}  ·  "
        f"dead-lettered {stats.get('events_dead_lettered', 0):,}  ·  alerts {screen.alert_count}"
    )
    if screen.deliveries:
        head += "  ·  sent " + ", ".join(
            f"{n:,.0f} {outcome}" for outcome, n in sorted(screen.deliveries.items())
        )
    top = Table(title="top identities by tokens (this and the last event-time hour)", expand=True)
    top.add_column("identity")
    top.add_column("tokens", justify="right")
    for identity, tokens in screen.top:
        top.add_row(escape(identity), f"{tokens:,.0f}")
    alerts = Table(title="alerts (newest first)", expand=True)
    for col in ("status", "severity", "summary"):
        alerts.add_column(col)
    for a in screen.alerts:
        colour = {"critical": "red", "warning": "yellow"}.get(a["severity"], "green")
        alerts.add_row(a["status"], f"[{colour}]{a['severity']}[/{colour}]", escape(a["summary"]))
    throttles = Table(title="active throttles", expand=True)
    for col in ("identity", "req/min", "tokens/min", "expires"):
        throttles.add_column(col)
    for identity, c in screen.throttles.items():
        limits = c["limits"]
        throttles.add_row(
            escape(identity),
            str(limits["requests_per_minute"]),
            f"{limits['tokens_per_minute']:,}",
            c["expires_at"][11:19],
        )
    teams, driven = spend_tables(screen.spend)
    return Group(head, top, teams, driven, alerts, throttles)
