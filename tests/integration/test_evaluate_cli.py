"""`meterguard evaluate` as a user runs it: simulate, replay, score, a JSON report out."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import orjson

from meterguard.streams.tools.embedded import EmbeddedRedis


def test_evaluate_detects_every_runaway_agent_and_writes_a_json_report(
    tmp_path: Path, redis_server: EmbeddedRedis
):
    out = tmp_path / "out.json"
    args = [
        sys.executable, "-m", "meterguard.streams.tools.cli", "evaluate",
        "--identities", "60", "--minutes", "120", "--seed", "3", "--incidents", "3",
        "--kinds", "runaway_agent", "--json", str(out), "--keep", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "MG_REDIS_URL": redis_server.url}
    env.pop("MG_POLICY_FILE", None)

    done = subprocess.run(args, env=env, capture_output=True, timeout=300, check=True)

    report = orjson.loads(out.read_bytes())
    [row] = [r for r in report["kinds"] if r["kind"] == "runaway_agent"]
    assert (row["incidents"], row["detected"], row["recall"]) == (3, 3, 1.0)
    assert math.isfinite(row["median_ttd_s"]) and row["median_ttd_s"] >= 0
    assert report["overall"]["identity_hours"] > 60  # 60 identities, most busy for ~2 h
    assert report["run"]["events"] > 0
    assert b"runaway_agent" in done.stdout  # the table
    labels = (tmp_path / "run" / "labels.jsonl").read_bytes().splitlines()
    assert len(labels) == 3
