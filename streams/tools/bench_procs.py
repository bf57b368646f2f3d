"""`meterguard bench` child processes: the real worker and the bare Faust baseline, each in
its own namespace (app id, key prefix, topics), their counters read from Redis, their RSS.

A worker gets a scrubbed environment: every MG_ variable of the caller is dropped (a
configured webhook must not receive bench alerts, a registry or mapping must not change the
work) except the tuning ones in TUNING_VARIABLES, then the bench's own are set.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from meterguard.streams.tools.bench_traffic import Observer, Progress, Throughput
from meterguard.streams.tools.embedded import die_with_parent, stop_group

# MG_ variables a worker keeps from the caller's environment: they tune, they do not redirect.
TUNING_VARIABLES = (
    "MG_BATCH_SIZE",
    "MG_BATCH_SECONDS",
    "MG_FETCH_MAX_WAIT_MS",
    "MG_RAW_KEYED_BY_IDENTITY",
    "MG_TOPIC_PARTITIONS",
    "MG_ALLOWED_LATENESS_S",
    "MG_DEDUPE_HORIZON_S",
    "MG_WINDOW_MINUTES",
    "MG_MAX_FUTURE_SKEW_S",
    "MG_REBALANCE_TIMEOUT_S",
    "MG_SESSION_TIMEOUT_S",
    "MG_HEARTBEAT_INTERVAL_S",
)
POLL_S = 0.05  # how often a counter is read while a run drains
REPORT_EVERY_S = 2.0  # progress lines while it drains
STOP_GRACE_S = 10.0


class BenchError(RuntimeError):
    """A measurement could not be made (a child died, a count never arrived)."""


@dataclass(frozen=True)
class WorkerNames:
    """One worker's namespace: consumer group, Redis key prefix and every topic it writes."""

    prefix: str  # key prefix and app id
    topic_raw: str

    def env(self) -> dict[str, str]:
        return {
            "MG_APP_ID": self.prefix,
            "MG_KEY_PREFIX": self.prefix,
            "MG_TOPIC_RAW": self.topic_raw,
            "MG_TOPIC_EVENTS": f"{self.prefix}.events",
            "MG_TOPIC_DLQ": f"{self.prefix}.dlq",
            "MG_TOPIC_ALERTS": f"{self.prefix}.alerts",
            "MG_TOPIC_THROTTLE": f"{self.prefix}.throttle",
            "MG_TOPIC_ALERTS_DLQ": f"{self.prefix}.alerts.dlq",
            "MG_TOPIC_AUDIT": f"{self.prefix}.audit",
        }


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    env.update({k: os.environ[k] for k in TUNING_VARIABLES if k in os.environ})
    env.update(extra)
    return env


def worker_env(
    names: WorkerNames, broker: str, redis_url: str, policy: Path, data_dir: Path
) -> dict[str, str]:
    return child_env(
        {
            **names.env(),
            "MG_KAFKA_BROKER": broker,
            "MG_REDIS_URL": redis_url,
            "MG_POLICY_FILE": str(policy),
            "MG_DATA_DIR": str(data_dir),
        }
    )


def start_child(
    module: str, args: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    args = ["worker", "--without-web", "--loglevel", "warn"]
    return start_child("meterguard.streams.tools.cli", args, env, log)


def start_faust_baseline(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start_child("meterguard.streams.tools.bench_faust_baseline", [], env, log)


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM its process group, SIGKILL after STOP_GRACE_S."""
    stop_group(proc, STOP_GRACE_S)


def rss_mb(pid: int) -> float:
    """Resident set size of a live process in MiB (Linux /proc; 0.0 where there is none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    return 0.0


def log_tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def drain(
    label: str,
    read_count: Callable[[], Awaitable[int]],
    expected: int,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float,
    progress: Progress,
) -> Throughput:
    """Poll a counter every POLL_S until it reaches `expected` -> its Throughput."""
    observer = Observer(expected)
    deadline = time.perf_counter() + timeout_s
    reported = 0.0
    count = 0
    while not observer.see(count):
        if proc.poll() is not None:
            raise BenchError(f"{label}: the process exited ({proc.returncode})\n{log_tail(log)}")
        now = time.perf_counter()
        if now > deadline:
            raise BenchError(f"{label}: {count:,} of {expected:,} after {timeout_s:.0f} s")
        if now - reported >= REPORT_EVERY_S:
            progress(f"  {label}: {count:,}/{expected:,}")
            reported = now
        await asyncio.sleep(POLL_S)
        count = await read_count()
    return observer.result()
