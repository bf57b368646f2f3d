"""`meterguard replay --policy B --compare-policy A` (policy what-if) as a user runs it: the
diff it reports is what two separate `replay --policy X` runs of the same input contain."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from meterguard.models import Alert, ThrottleCommand
from meterguard.streams.offline.policy_diff import RunOutput, diff_runs
from meterguard.streams.runtime.topics import TopicSpec, ensure_topics
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.traffic import as_jsonl, series

# What differs: budgets move from svc-quiet-2 to svc-quiet-0 (a daily cap they hit in about 20
# minutes: warn, then block), svc-quiet-1 is offboarded (blocked), and throttling moves from
# prod (agent-runaway) to staging (agent-stage). Both runaways burst 30x for 8 minutes.
CURRENT = """
budgets:
  svc-quiet-2: {daily_usd: 0.05}
"""
CANDIDATE = """
budgets:
  svc-quiet-0: {daily_usd: 0.05}
offboarded_identities: [svc-quiet-1]
environments:
  prod: {throttle_on: never}
  staging: {throttle_on: critical}
"""


def traffic() -> list[dict]:
    docs: list[dict] = []
    for i in range(3):
        docs += series(f"svc-quiet-{i}", 85, 6)
    docs += series("agent-runaway", 85, 6, burst=(65, 72, 180))
    docs += series("agent-stage", 85, 6, burst=(65, 72, 180), environment="staging")
    return sorted(docs, key=lambda e: (e["event_time"], e["event_id"]))


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "meterguard.streams.tools.cli", "replay", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=300)


def replay(env: dict[str, str], cwd: Path, out: str, *args: str) -> subprocess.CompletedProcess:
    """`replay ARGS` in `cwd`, writing alerts.jsonl and t.jsonl into `cwd / out`."""
    (cwd / out).mkdir()
    outputs = ["--alerts-out", f"{out}/alerts.jsonl", "--throttles-out", f"{out}/t.jsonl"]
    done = cli(env, cwd, *args, *outputs, "--batch-size", "300", "--no-progress")
    assert done.returncode == 0, done.stderr.decode()
    return done


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def run_output(out: Path) -> RunOutput:
    alerts = [Alert.model_validate_json(x) for x in lines(out / "alerts.jsonl")]
    commands = [ThrottleCommand.model_validate_json(x) for x in lines(out / "t.jsonl")]
    return RunOutput(alerts, commands)


def alert_keys(run: RunOutput) -> set[tuple[str, ...]]:
    return {(a.identity, a.detector, a.episode_id, a.status, a.severity) for a in run.alerts}


def command_keys(run: RunOutput) -> set[tuple[object, ...]]:
    episode = {a.alert_id: (a.detector, a.episode_id) for a in run.alerts}
    return {(c.identity, *episode[c.alert_id or ""], c.action, c.version) for c in run.commands}


@pytest.fixture
def env(tmp_path: Path, redis_server: EmbeddedRedis) -> dict[str, str]:
    """A work folder with events.jsonl and the policies; the environment to run in it."""
    (tmp_path / "events.jsonl").write_bytes(as_jsonl(traffic()))
    (tmp_path / "current.yaml").write_text(CURRENT)
    (tmp_path / "candidate.yaml").write_text(CANDIDATE)
    (tmp_path / "broken.yaml").write_text("no_such_key: 1\n")
    # --policy replaces MG_POLICY_FILE: a broken one is never read.
    return {**os.environ, "MG_REDIS_URL": redis_server.url, "MG_POLICY_FILE": "broken.yaml"}


WHAT_IF = ("--policy", "candidate.yaml", "--compare-policy", "current.yaml")


def test_the_diff_is_what_two_separate_replays_contain(tmp_path: Path, env: dict[str, str]):
    what_if = replay(env, tmp_path, "what-if", "events.jsonl", *WHAT_IF, "--diff-out", "d.json")
    replay(env, tmp_path, "current", "events.jsonl", "--policy", "current.yaml")
    replay(env, tmp_path, "candidate", "events.jsonl", "--policy", "candidate.yaml")
    current, candidate = run_output(tmp_path / "current"), run_output(tmp_path / "candidate")

    # The what-if's candidate run is the separate candidate replay, byte for byte.
    for name in ("alerts.jsonl", "t.jsonl"):
        expected = (tmp_path / "candidate" / name).read_bytes()
        assert (tmp_path / "what-if" / name).read_bytes() == expected
    doc = orjson.loads((tmp_path / "d.json").read_bytes())
    assert doc.pop("current_policy") == "current.yaml"
    assert doc.pop("candidate_policy") == "candidate.yaml"
    assert doc.pop("events") == len(traffic())
    assert doc == orjson.loads(orjson.dumps(diff_runs(current, candidate).to_dict()))

    # Appear / disappear = the set differences of the two replays' matching keys.
    old_alerts, new_alerts = alert_keys(current), alert_keys(candidate)
    old_commands, new_commands = command_keys(current), command_keys(candidate)
    assert doc["changes"]["alerts"] == {
        "appeared": len(new_alerts - old_alerts),
        "disappeared": len(old_alerts - new_alerts),
        "changed": 0,
    }
    assert doc["changes"]["commands"] == {
        "appeared": len(new_commands - old_commands),
        "disappeared": len(old_commands - new_commands),
        "changed": 0,
    }
    assert doc["matched"]["alerts"] == len(old_alerts & new_alerts) > 0

    # ... and it is what the policies change: budget alerts move from svc-quiet-2 to
    # svc-quiet-0, svc-quiet-1 is blocked, the runaways' alerts stay exactly the same.
    appeared = {(g["detector"], g["kind"], g["severity"]): g for g in doc["alerts"]}
    appeared = {k: g for k, g in appeared.items() if g["appeared"]}
    gone = {(g["detector"], g["kind"], g["severity"]) for g in doc["alerts"] if g["disappeared"]}
    assert {detector for detector, _kind, _severity in appeared} == {"budget", "drift"}
    assert gone == {k for k in appeared if k[0] == "budget"}
    assert appeared["budget", "firing", "warning"]["examples"]["appeared"] == ["svc-quiet-0"]
    assert appeared["drift", "firing", "critical"]["examples"]["appeared"] == ["svc-quiet-1"]
    assert all(g["examples"]["disappeared"] in ([], ["svc-quiet-2"]) for g in doc["alerts"])
    commands = {(g["detector"], g["environment"], g["kind"]): g for g in doc["commands"]}
    assert commands["spike", "prod", "throttle"]["disappeared"] >= 1
    assert commands["spike", "prod", "throttle"]["appeared"] == 0
    assert commands["spike", "staging", "throttle"]["examples"]["appeared"] == ["agent-stage"]
    assert commands["spike", "staging", "release"]["appeared"] == 1
    assert commands["budget", "prod", "block"]["examples"] == {
        "appeared": ["svc-quiet-0"],
        "disappeared": ["svc-quiet-2"],
        "changed": [],
    }
    assert commands["drift", "prod", "block"]["appeared"] >= 1
    assert [(c["environment"], c["action"], c["examples"]) for c in doc["episode_changes"]] == [
        ("prod", ["throttle", "none"], ["agent-runaway"]),
        ("staging", ["none", "throttle"], ["agent-stage"]),
    ]
    budget_episodes = {a.episode_id for a in current.alerts if a.identity == "svc-quiet-2"}
    assert doc["episodes"]["only_current"] == len(budget_episodes) > 0
    assert doc["episodes"]["moved"] == 0

    report = " ".join(what_if.stdout.decode().split())
    assert "Policy what-if" in report and "candidate: candidate.yaml" in report
    assert "+ agent-stage" in report and "− agent-runaway" in report
    assert "throttle → none" in report
    assert b"under current.yaml" in what_if.stderr


async def test_a_topic_range_gives_the_same_diff_as_its_file(
    tmp_path: Path, env: dict[str, str], broker: EmbeddedBroker
):
    env = {**env, "MG_KAFKA_BROKER": broker.url}
    topic = f"what-if-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, 1)])
    stamp0 = int(datetime(2026, 1, 6, tzinfo=UTC).timestamp() * 1000)  # after the events
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
    await producer.start()
    try:
        for i, line in enumerate(lines(tmp_path / "events.jsonl")):
            await producer.send(topic, value=line, timestamp_ms=stamp0 + i)
        await producer.flush()
    finally:
        await producer.stop()
    replay(env, tmp_path, "file", "events.jsonl", *WHAT_IF, "--diff-out", "file.json")
    from_topic = ["--topic", topic, "--idle-timeout", "1", *WHAT_IF, "--diff-out", "topic.json"]
    replay(env, tmp_path, "topic", *from_topic)
    file_diff = orjson.loads((tmp_path / "file.json").read_bytes())
    assert file_diff == orjson.loads((tmp_path / "topic.json").read_bytes())
    assert file_diff["changes"]["commands"]["appeared"] > 0
    for name in ("alerts.jsonl", "t.jsonl"):
        expected = (tmp_path / "file" / name).read_bytes()
        assert (tmp_path / "topic" / name).read_bytes() == expected


def test_errors_exit_2_with_a_clear_message(tmp_path: Path, env: dict[str, str]):
    (tmp_path / "bad.yaml").write_text("environments:\n  prod: {fire_at: 0.9, critical_at: 0.5}\n")
    outs = ("--alerts-out", "a.jsonl", "--throttles-out", "t.jsonl")
    cases = [
        (("--compare-policy", "current.yaml", *outs), "--compare-policy needs --policy"),
        (("--policy", "bad.yaml", *outs), "invalid policy file bad.yaml"),
        (("--policy", "bad.yaml", *outs), "critical_at (0.5) is below fire_at (0.9)"),
        ((*WHAT_IF[:3], "broken.yaml"), "no_such_key: Extra inputs are not permitted"),
        (("--policy", "missing.yaml", *WHAT_IF[2:]), "cannot read policy file missing.yaml"),
        (("--policy", "candidate.yaml", "--diff-out", "d.json", *outs), "--diff-out writes"),
        (("--policy", "candidate.yaml"), "give --alerts-out and --throttles-out"),
    ]
    for args, message in cases:
        done = cli(env, tmp_path, "events.jsonl", *args)
        text = " ".join(done.stderr.decode().split())  # rich wraps long lines
        assert done.returncode == 2 and message in text, (args, text)
    done = cli(env, tmp_path, "missing.jsonl", *WHAT_IF)
    assert done.returncode == 2 and "does not exist" in " ".join(done.stderr.decode().split())
    assert not (tmp_path / "a.jsonl").exists()
