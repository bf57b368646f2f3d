"""Every shell command of docs/runbook.md, run for real: a `meterguard worker` child on the
session's broker and Redis has counted traffic with a runaway identity (alert and throttle),
then each command of the runbook's ```bash blocks runs in bash with the runbook's variables
set (WORKER, MG_API_TOKEN, IDENTITY, FROM, TO and the worker's MG_ settings) and must exit 0.
The runbook's topic name `metering.raw` is the test's own raw topic here (tests share the
broker, so each has its own topics)."""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.support.polling import eventually
from tests.support.traffic import mixed
from tests.support.worker_process import produce, start_worker

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
TOKEN = "runbook-token"
RUNAWAY = "agent-runaway"


def runbook_commands() -> list[str]:
    """The commands of every ```bash block, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", RUNBOOK.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", "", block)
        commands += [line.strip() for line in joined.splitlines() if line.strip()]
    return commands


def test_the_runbook_shows_the_commands_on_call_needs():
    commands = " ".join(runbook_commands())
    for needed in ("/readyz", "/release", "meterguard reconcile", "meterguard replay",
                   "meterguard report"):  # fmt: skip
        assert needed in commands, needed


async def test_every_runbook_command_runs_against_a_real_worker(
    broker: EmbeddedBroker, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tmp_path
):
    worker = await start_worker(
        broker, redis_url, tmp_path_factory, {"MG_API_TOKEN": TOKEN, "MG_ALLOWED_LATENESS_S": "30"}
    )
    try:
        # Recent event times: a throttle command expires `throttle_minutes` (15) after the
        # minute it was issued for, by the wall clock, so older traffic writes no key.
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=75)
        docs = mixed(quiet=2, minutes=72, runaway_from=66, start=start)
        first_hour = start.replace(minute=0)
        await produce(broker.bootstrap, worker.settings.topic_raw, docs)

        async def throttled() -> bool:
            return await worker.store.throttles.active_for(RUNAWAY) is not None

        await eventually(throttled, "the runaway's throttle", log=worker.log)
        await worker.wait_counted(len(docs))
        env = {
            **worker.env,
            "WORKER": worker.web.removeprefix("http://"),
            "MG_API_TOKEN": TOKEN,
            "IDENTITY": RUNAWAY,
            # Whole hours around the traffic and its records' (wall clock) timestamps.
            "FROM": first_hour.isoformat().replace("+00:00", "Z"),
            "TO": (first_hour + timedelta(hours=3)).isoformat().replace("+00:00", "Z"),
            "PATH": f"{Path(sys.executable).parent}:{worker.env.get('PATH', '')}",
        }
        outputs = {}
        for command in runbook_commands():
            command = command.replace("metering.raw", worker.settings.topic_raw)
            shell = await asyncio.create_subprocess_exec(
                "bash", "-c", command, env=env, cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(shell.communicate(), timeout=120)
            assert shell.returncode == 0, (command, out[-2000:], err[-2000:])
            outputs[command] = out
        released = next(out for cmd, out in outputs.items() if "/release" in cmd)
        assert orjson.loads(released)["identity"] == RUNAWAY
        assert await worker.store.throttles.active_for(RUNAWAY) is None
        assert (tmp_path / "alerts.jsonl").read_bytes()  # the replay found the runaway's alert
    finally:
        await worker.stop()
