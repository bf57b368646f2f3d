"""`meterguard replay` as a user runs it: a file in, alerts / throttles / scores out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from meterguard.streams.tools.embedded import EmbeddedRedis
from tests.support.traffic import as_jsonl, mixed

MALFORMED = (
    b'{"event_id": "x", "identity": "svc-quiet-0", '
    b'"event_time": "2026-01-05T09:10:00Z", "input_tokens": -5}'
)


def replay(events: Path, out: Path, redis_url: str | None) -> subprocess.CompletedProcess:
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MG_REDIS_URL"}
    if redis_url:
        env["MG_REDIS_URL"] = redis_url
    args = [
        sys.executable,
        "-m",
        "meterguard.streams.tools.cli",
        "replay",
        str(events),
        "--alerts-out",
        str(out / "alerts.jsonl"),
        "--throttles-out",
        str(out / "throttles.jsonl"),
        "--scores-out",
        str(out / "scores.jsonl"),
        "--dlq-out",
        str(out / "dlq.jsonl"),
        "--batch-size",
        "300",
    ]
    return subprocess.run(args, env=env, capture_output=True, timeout=300, check=True)


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_replay_twice_gives_identical_alerts_throttles_and_scores(
    tmp_path: Path, redis_server: EmbeddedRedis
):
    docs = mixed(quiet=3)
    half = len(docs) // 2
    events = tmp_path / "events.jsonl"
    events.write_bytes(as_jsonl(docs[:half]) + MALFORMED + b"\n\n" + as_jsonl(docs[half:]))
    first = replay(events, tmp_path / "one", redis_server.url)
    replay(events, tmp_path / "two", redis_server.url)

    for name in ("alerts.jsonl", "throttles.jsonl", "scores.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    alerts = lines(tmp_path / "one" / "alerts.jsonl")
    assert [a["identity"] for a in alerts if a["status"] == "firing"] == ["agent-runaway"]
    assert lines(tmp_path / "one" / "throttles.jsonl")[0]["alert_id"] == alerts[0]["alert_id"]
    scores = lines(tmp_path / "one" / "scores.jsonl")
    assert len(scores) == len(docs)  # one line per decoded event, in input order
    assert [s["event_id"] for s in scores] == [d["event_id"] for d in docs]
    assert max(s["scores"]["spike"] for s in scores if s["identity"] == "agent-runaway") >= 0.9
    letters = lines(tmp_path / "one" / "dlq.jsonl")
    assert [(d["reason"], d["raw"].encode()) for d in letters] == [("invalid_event", MALFORMED)]
    assert b"1 dead letters" in first.stderr


def test_replay_leaves_no_keys_behind_and_starts_its_own_redis_when_none_is_set(
    tmp_path: Path, redis_server: EmbeddedRedis
):
    import redis

    events = tmp_path / "events.jsonl"
    events.write_bytes(as_jsonl(mixed(quiet=1, minutes=25)))
    client = redis.Redis.from_url(redis_server.url)
    before = set(client.scan_iter(match="mg:replay:*"))
    replay(events, tmp_path / "shared", redis_server.url)
    assert set(client.scan_iter(match="mg:replay:*")) == before
    replay(events, tmp_path / "embedded", None)  # no MG_REDIS_URL: an embedded server
    assert (tmp_path / "embedded" / "scores.jsonl").read_bytes() == (
        tmp_path / "shared" / "scores.jsonl"
    ).read_bytes()
