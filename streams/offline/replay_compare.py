"""Policy what-if: the same file or topic range replayed under two policies, then compared
(`meterguard replay --policy CANDIDATE --compare-policy CURRENT`; the diff: policy_diff.py).

Two full replays in lockstep: the input is read and decoded once, and every batch goes to two
`ReplayRun`s (replay.py), each with its own fresh namespace and its own pipeline under its own
policy. Each run's alerts, commands and scores are byte-identical to `replay --policy X` of the
same input (the candidate's are written to the usual --*-out files when given).

Why not one scoring pass with both policies applied to its scores: the policy reaches the
scores, not only the decisions. The pipeline configures detectors from it (budgets, budget
warn level and offboarded identities for `budget` and `drift`; per-environment detector
parameters are arriving through the same `context_for`), and the learning filter keeps the
minutes those scores call anomalous out of the baselines. Throttle arbitration
(apply_throttle.lua) and the episode checkpoints are state of a namespace too. One pass would
need a second policy path inside the pipeline; two namespaces reuse it as it is and stay
correct when the policy grows.

Why lockstep rather than one replay after the other: both runs see exactly the same messages
(a topic range without an end may still be growing), in the same batches, decoded with the
same ingest times. The cost is the Redis work and scoring of two replays; their round trips
overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from meterguard.models import utc_now
from meterguard.streams.offline.messages import RawMessage
from meterguard.streams.offline.policy_diff import PolicyDiff, RunOutput, diff_runs
from meterguard.streams.offline.replay import (
    ReplayOutputs,
    ReplayRun,
    ReplaySummary,
    feed_file,
    feed_topic,
)
from meterguard.streams.offline.topic_source import TopicSelection
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.settings import Settings


@dataclass(frozen=True)
class Policies:
    current: PolicyConfig  # --compare-policy: what runs today
    candidate: PolicyConfig  # --policy: what would run instead


@dataclass(frozen=True)
class Comparison:
    current: ReplaySummary
    candidate: ReplaySummary
    diff: PolicyDiff


async def compare_file(
    source: Path,
    policies: Policies,
    settings: Settings,
    redis_url: str,
    batch_size: int = 5000,
    show_progress: bool = True,
    kcat: bool = False,
    outputs: ReplayOutputs | None = None,
) -> Comparison:
    """Replay a file under both policies; `outputs` (optional) get the candidate's run."""
    async with _runs(policies, settings, redis_url, outputs) as runs:
        label = f"{source.name} x2"
        await feed_file(source, batch_size, kcat, show_progress, label, partial(_feed, runs))
        await _finish(runs)
    return _compared(runs)


async def compare_topic(
    bootstrap: str,
    selection: TopicSelection,
    policies: Policies,
    settings: Settings,
    redis_url: str,
    batch_size: int = 5000,
    show_progress: bool = True,
    warn: Callable[[str], None] = print,
    outputs: ReplayOutputs | None = None,
) -> Comparison:
    """Replay a topic range under both policies, reading it once."""
    async with _runs(policies, settings, redis_url, outputs) as runs:
        label = f"{selection.topic} x2"
        feed = partial(_feed, runs)
        security = settings.kafka_security.aiokafka_options()
        await feed_topic(
            bootstrap, selection, batch_size, show_progress, label, feed, warn, security
        )
        await _finish(runs)
    return _compared(runs)


@contextlib.asynccontextmanager
async def _runs(
    policies: Policies, settings: Settings, redis_url: str, outputs: ReplayOutputs | None
) -> AsyncIterator[tuple[ReplayRun, ReplayRun]]:
    async with contextlib.AsyncExitStack() as stack:
        current = await stack.enter_async_context(
            ReplayRun(None, settings, redis_url, policy=policies.current, collect=True)
        )
        candidate = await stack.enter_async_context(
            ReplayRun(outputs, settings, redis_url, policy=policies.candidate, collect=True)
        )
        yield current, candidate


async def _feed(runs: tuple[ReplayRun, ReplayRun], messages: list[RawMessage]) -> None:
    now = utc_now()
    batch = runs[0].decoder.batch(messages, now)  # decoded once, by the first run's decoder
    await asyncio.gather(*(run.feed(batch, now) for run in runs))


async def _finish(runs: tuple[ReplayRun, ReplayRun]) -> None:
    """The spans still held for an ancestor at the end of the input, to both runs."""
    batch = runs[0].decoder.finish()
    await asyncio.gather(*(run.feed(batch, utc_now()) for run in runs))


def _compared(runs: tuple[ReplayRun, ReplayRun]) -> Comparison:
    current, candidate = runs
    diff = diff_runs(
        RunOutput(current.alerts, current.commands),
        RunOutput(candidate.alerts, candidate.commands),
    )
    return Comparison(current.summary, candidate.summary, diff)
