"""Shared pieces of the fault scenarios (tests/faults, issue 14): more worker processes on one
consumer group, SIGKILL, what a worker counted, the reference a crash is judged against, and
the figures each scenario records (tests/faults/README.md).

Judged against what: the pipeline's own rules recomputed from the events sent
(streams/offline/reconcile.py's `Ledger`, compared with the namespace by `read_and_compare`,
as `meterguard reconcile` does), and the alerts of one uncrashed `replay` of the same events.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from meterguard.models import MeteringEvent
from meterguard.streams.offline.reconcile import Ledger, Period, Report, Totals, parse_metrics
from meterguard.streams.offline.reconcile_run import Recomputed, read_and_compare, rules_of
from meterguard.streams.offline.replay import ReplayOutputs, replay_file
from meterguard.streams.settings import Settings
from meterguard.streams.store import Store, build_store
from meterguard.streams.store.connection import redis_client
from meterguard.streams.tools.embedded import free_port
from tests.support.traffic import as_jsonl
from tests.support.worker_process import Worker, settings_of

COUNTED = ("events_new", "events_late")  # every unique event is exactly one of these


@dataclass
class FaultFigures:
    """One fault run's figures, as tests/faults/README.md's table lists them."""

    scenario: str
    sent: int  # messages produced (duplicates included)
    unique: int  # distinct (identity, event_id)
    counted: int  # events_new + events_late once the run settled
    counted_at_kill: int  # what the pipeline counters held right after the SIGKILL
    redelivered: int  # events the consumers delivered again (duplicates beyond the input's)
    alert_records: int  # records on the alerts topic
    alert_ids: int  # distinct alert_id among them
    recovery_s: float  # from the SIGKILL until the counters reached the stream's total

    @property
    def lost(self) -> int:
        return max(0, self.unique - self.counted)

    @property
    def double_counted(self) -> int:
        return max(0, self.counted - self.unique)

    @property
    def duplicate_alert_records(self) -> int:
        """Alert records published again after the crash (same alert_id)."""
        return self.alert_records - self.alert_ids

    def line(self) -> str:
        figures = {
            **asdict(self),
            "lost": self.lost,
            "double_counted": self.double_counted,
            "duplicate_alert_records": self.duplicate_alert_records,
            "recovery_s": round(self.recovery_s, 1),
        }
        return "FAULT FIGURES " + orjson.dumps(figures).decode()


def report(figures: FaultFigures) -> None:
    """Printed (shown by `pytest -s`) and left in the test report's captured output."""
    print(figures.line())


def spawn_worker(
    like: Worker, tmp_path_factory: pytest.TempPathFactory, name: str = "worker"
) -> Worker:
    """Another `meterguard worker` process with `like`'s settings: the same topics, key
    prefix and consumer group (MG_APP_ID); its own web port, log and Faust data folder."""
    env = {**like.env, "MG_DATA_DIR": str(tmp_path_factory.mktemp("faust"))}
    log = tmp_path_factory.mktemp(name) / "worker.log"
    port = free_port()
    # Popen returns once the long-running worker is forked; nothing here waits on it.
    process = subprocess.Popen(
        [sys.executable, "-m", "meterguard.streams.tools.cli", "worker", "--web-port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    settings = settings_of(env)
    client = redis_client(settings.redis_url or "", settings.redis_options)
    store = build_store(client, like.store.config)
    return Worker(settings, env, f"http://127.0.0.1:{port}", log, process, store)


def sigkill(worker: Worker) -> float:
    """SIGKILL the worker process (no shutdown of any kind: no flush, no commit, no leave
    group) and reap it; returns the monotonic time of the kill."""
    killed_at = time.monotonic()
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    assert worker.process.returncode == -signal.SIGKILL
    return killed_at


async def counted(store: Store) -> int:
    """Unique events the pipeline counted, all workers together (exactly-once counters)."""
    stats = await store.stats.pipeline_counters()
    return sum(stats.get(name, 0) for name in COUNTED)


async def process_metrics(worker: Worker) -> dict[str, float]:
    """This worker process's own /metrics samples ({} while it does not answer)."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{worker.web}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            return parse_metrics(await r.text()) if r.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError):
        return {}


def processed_here(samples: dict[str, float]) -> float:
    """Events this process ran through the pipeline (new, duplicate, late)."""
    return sum(
        samples.get(f'meterguard_events_total{{status="{s}"}}', 0)
        for s in ("new", "duplicate", "late")
    )


def assigned_partitions(samples: dict[str, float], topic: str) -> set[int]:
    """Partitions of `topic` this process holds at the scrape (meterguard_partition_assigned:
    one series per partition held; a revoked partition's series is removed)."""
    found = set()
    for name in samples:
        if name.startswith("meterguard_partition_assigned{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', name))
            if labels.get("topic") == topic:
                found.add(int(labels["partition"]))
    return found


def unique_events(docs: Iterable[dict]) -> int:
    return len({(d["identity"], d["event_id"]) for d in docs})


def ledgers_of(docs: Sequence[dict], settings: Settings) -> dict[str, Ledger]:
    """Every identity's events through ingest.lua's rules, in the order they were sent
    (one identity's events share a partition: the order every worker read them in)."""
    rules = rules_of(settings)
    ledgers: dict[str, Ledger] = {}
    for doc in docs:
        event = MeteringEvent.model_validate(doc)
        ledger = ledgers.setdefault(event.identity, Ledger(rules))
        totals = Totals(
            1, event.input_tokens, event.output_tokens, event.cached_tokens,
            event.cost_nano_usd, int(event.status == "error"),
        )  # fmt: skip
        ledger.apply(event.event_id, event.event_time_ms, totals)
    return ledgers


async def reconciled(docs: Sequence[dict], settings: Settings) -> Report:
    """The namespace's minute windows, late totals, per-identity counters and pipeline
    counters against the ledgers of `docs` (`meterguard reconcile`'s comparison)."""
    recomputed = Recomputed(ledgers_of(docs, settings), Counter(), messages=len(docs))
    return await read_and_compare(recomputed, settings, settings.redis_url or "", Period())


async def reference_alert_ids(docs: Sequence[dict], settings: Settings, work: Path) -> list[str]:
    """The alert ids of one uncrashed `meterguard replay` of `docs`, in order: the same
    settings (lateness, policy), in a namespace of its own (dropped afterwards)."""
    return (await reference_outputs(docs, settings, work))[0]


async def reference_outputs(
    docs: Sequence[dict], settings: Settings, work: Path
) -> tuple[list[str], list[str]]:
    """The alert ids and throttle command ids of one uncrashed replay of `docs`, in order."""
    events = work / "events.jsonl"
    events.write_bytes(as_jsonl(list(docs)))
    outputs = ReplayOutputs(work / "alerts.jsonl", work / "throttles.jsonl")
    reference = settings.model_copy(update={"key_prefix": f"{settings.key_prefix}-reference"})
    await replay_file(events, outputs, reference, settings.redis_url or "", show_progress=False)
    return (
        [orjson.loads(line)["alert_id"] for line in outputs.alerts.read_bytes().splitlines()],
        [orjson.loads(line)["command_id"] for line in outputs.throttles.read_bytes().splitlines()],
    )
