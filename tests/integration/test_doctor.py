"""`meterguard doctor` against real servers: the session's Tansu broker and Redis, a private
redis-server with its AOF on, and local TCP listeners standing in for alert destinations.

A ready deployment gets OK lines only and exit 0; each broken setting (a closed broker port, a
wrong Redis port, a bad policy file, an unsigned http webhook, missing, unbalanced and
uncompacted topics, a cluster flag on a standalone Redis, a destination that refuses) gets its
own one-line FAIL or WARN and exit 1; no secret given in the settings appears in the output.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from meterguard.streams.runtime.topics import TopicSpec, ensure_topics, topic_specs
from meterguard.streams.settings import Settings
from meterguard.streams.tools.doctor_probes import probe_kafka
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from tests.support.polling import DEADLINE_S
from tests.support.redis_cluster import add_acl_user
from tests.support.redis_process import PersistentRedis

# Generous next to a probe on this host (milliseconds): the box is shared and loaded.
PROBE_TIMEOUT_S = 10.0
SECRETS = ("pw-broker-url", "tok-query", "sig-webhook", "env-siem-secret", "pw-redis-url")


@pytest.fixture
def listener() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel completes them from the backlog)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real HTTP server (a thread) serving a folder: the registry feed's catalogue."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield int(server.server_address[1]), folder
        finally:
            server.shutdown()
            thread.join()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    with PersistentRedis(tmp_path / "redis-aof") as server:
        yield server


def topic_names() -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    names = ("raw", "events", "dlq", "alerts", "throttle", "alerts_dlq", "audit")
    return {f"MG_TOPIC_{n.upper()}": f"doctor-{run}-{n}" for n in names}


def doctor(env: dict[str, str], *args: str) -> tuple[int, list[str], float]:
    """`meterguard doctor` with exactly these MG_ settings: exit code, stdout lines, seconds."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "meterguard.streams.tools.cli", "doctor",
         "--timeout", str(PROBE_TIMEOUT_S), *args],
        env={**base, **env}, capture_output=True, text=True, timeout=DEADLINE_S, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    print(output)  # pytest -s shows what an operator would see
    for secret in SECRETS:
        assert secret not in output, output
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout.splitlines(), took


def files(tmp_path: Path, policy: str) -> dict[str, str]:
    (tmp_path / "policy.yaml").write_text(policy)
    (tmp_path / "registry.yaml").write_text("identities:\n  agent-a: {team: search}\n")
    (tmp_path / "mapping.yaml").write_text("otlp:\n  identity: [gen_ai.agent.name]\n")
    return {
        "MG_POLICY_FILE": str(tmp_path / "policy.yaml"),
        "MG_REGISTRY_FILE": str(tmp_path / "registry.yaml"),
        "MG_MAPPING_FILE": str(tmp_path / "mapping.yaml"),
    }


async def test_a_ready_deployment_gets_ok_lines_only(
    broker: EmbeddedBroker,
    persistent_redis: PersistentRedis,
    listener: int,
    file_server: tuple[int, Path],
    tmp_path: Path,
):
    http_port, served = file_server
    (served / "owners.yaml").write_text("identities:\n  agent-b: {team: payments}\n")
    topics = topic_names()
    settings = Settings(kafka_broker=broker.url, **{k[3:].lower(): v for k, v in topics.items()})
    await ensure_topics(broker.bootstrap, topic_specs(settings))
    policy = (
        "routing:\n  webhooks:\n"
        f"    - url: http://127.0.0.1:{listener}/siem\n"
        "      secret_env: DOCTOR_SIEM_SECRET\n      min_severity: critical\n"
    )
    env = {
        "MG_KAFKA_BROKER": broker.url,
        "MG_REDIS_URL": persistent_redis.url,
        "MG_WEBHOOK_URL": f"http://127.0.0.1:{listener}/hook",
        "MG_WEBHOOK_SECRET": "sig-webhook",
        "DOCTOR_SIEM_SECRET": "env-siem-secret",
        "MG_REGISTRY_URL": f"http://127.0.0.1:{http_port}/owners.yaml?key=tok-query",
        **topics,
        **files(tmp_path, policy),
    }
    code, lines, took = doctor(env)
    print(f"DOCTOR FIGURES ready: exit {code}, {len(lines)} lines, {took:.1f} s")
    assert code == 0, "\n".join(lines)
    assert all(line.startswith("OK   ") for line in lines[:-1]), "\n".join(lines)
    assert lines[-1] == f"doctor: {len(lines) - 1} OK"
    raw, throttle = topics["MG_TOPIC_RAW"], topics["MG_TOPIC_THROTTLE"]
    assert f"OK   broker: {broker.bootstrap} answered metadata over PLAINTEXT (1 broker" in lines[0]
    assert f"OK   topic {raw}: 4 partitions" in lines
    assert f"OK   topic {throttle}: 4 partitions; cleanup.policy=compact" in lines
    assert "OK   redis persistence: appendonly yes" in lines
    assert f"OK   policy: {env['MG_POLICY_FILE']} loads" in lines
    assert f"OK   registry: {env['MG_REGISTRY_FILE']} loads" in lines
    assert f"OK   mapping: {env['MG_MAPPING_FILE']} loads" in lines
    owners = f"http://127.0.0.1:{http_port}/owners.yaml"
    assert f"OK   registry url: {owners} answers a registry" in lines
    for path in ("siem", "hook"):
        line = f"OK   webhook http://127.0.0.1:{listener}/{path}: signed webhook, reachable"
        assert line in lines


def test_broken_settings_get_one_line_each_and_exit_1(tmp_path: Path):
    broker_port, redis_port = free_port(), free_port()  # closed: nothing listens there
    env = {
        "MG_KAFKA_BROKER": f"kafka://127.0.0.1:{broker_port}",
        "MG_REDIS_URL": f"redis://:pw-redis-url@127.0.0.1:{redis_port}/0",
        "MG_WEBHOOK_URL": "http://ops:pw-broker-url@hooks.example.net/alerts?token=tok-query",
        **files(tmp_path, "fire_at_typo: 0.8\n"),
    }
    code, lines, _ = doctor(env, "--no-probe")
    assert code == 1
    assert lines[0] == (
        f"FAIL broker: cannot reach 127.0.0.1:{broker_port} (KafkaConnectionError: no bootstrap "
        "server accepted a connection): check MG_KAFKA_BROKER (host:port of a listener this "
        "host can reach)"
    )
    assert lines[1] == "SKIP topics: not checked: the broker did not answer"
    assert lines[2].startswith(f"FAIL redis: cannot reach redis://127.0.0.1:{redis_port}/0 (")
    assert lines[2].endswith("): check MG_REDIS_URL; a TLS port needs rediss://")
    assert lines[3].startswith("FAIL policy: MG_POLICY_FILE: invalid policy file ")
    assert "fire_at_typo" in lines[3]
    hook = "webhook http://hooks.example.net/alerts"
    assert lines[6:] == [
        f"WARN {hook}: plain http to a remote host: alerts travel unencrypted; use https",
        f"FAIL {hook}: no signing secret: alerts are sent unsigned and receivers cannot verify "
        "them; set MG_WEBHOOK_SECRET",
        "doctor: 4 FAIL, 1 WARN, 2 OK, 1 SKIP",
    ]


async def test_topic_shape_redis_topology_and_unreachable_destinations(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path: Path
):
    topics = topic_names()
    settings = Settings(kafka_broker=broker.url, **{k[3:].lower(): v for k, v in topics.items()})
    specs = {spec.name: spec for spec in topic_specs(settings)}
    raw, throttle, audit = (topics[f"MG_TOPIC_{n}"] for n in ("RAW", "THROTTLE", "AUDIT"))
    shaped = {raw: TopicSpec(raw, 6), throttle: TopicSpec(throttle, 4)}  # 6 vs 4; not compacted
    await ensure_topics(
        broker.bootstrap, [shaped.get(n, s) for n, s in specs.items() if n != audit]
    )
    closed = free_port()
    env = {
        "MG_KAFKA_BROKER": broker.url,
        "MG_REDIS_URL": redis_server.url,
        "MG_REDIS_CLUSTER": "true",
        "MG_WEBHOOK_URL": f"https://127.0.0.1:{closed}/hook",
        "MG_WEBHOOK_SECRET": "sig-webhook",
        "MG_REGISTRY_URL": f"http://127.0.0.1:{closed}/owners.yaml?key=tok-query",
        **topics,
    }
    code, lines, took = doctor(env)
    print(f"DOCTOR FIGURES broken topics: exit {code}, {len(lines)} lines, {took:.1f} s")
    assert code == 1
    text = "\n".join(lines)
    assert f"WARN topic {raw}: 6 partitions; MG_TOPIC_PARTITIONS is 4" in text
    assert f"FAIL topic {throttle}: cleanup.policy is delete: the throttle topic must be" in text
    assert f"FAIL topic {audit}: missing: create it with 4 partitions (`meterguard worker`" in text
    events = topics["MG_TOPIC_EVENTS"]
    assert f"WARN partitions: {raw} has 6 and {events} 4: decoding spreads" in text
    assert (
        f"FAIL redis: {redis_server.url} is not a Redis Cluster node (cluster mode is not "
        "enabled on it): unset MG_REDIS_CLUSTER"
    ) in lines
    assert any(
        line.startswith(f"FAIL webhook https://127.0.0.1:{closed}/hook: not reachable: ")
        for line in lines
    ), text
    assert any(
        line.startswith(f"WARN registry url: cannot fetch registry http://127.0.0.1:{closed}/")
        and line.endswith(
            "(the worker keeps MG_REGISTRY_FILE's registry, or none, until it answers)"
        )
        for line in lines
    ), text
    assert lines[-1] == "doctor: 4 FAIL, 3 WARN, 9 OK"
    # The doctor created nothing: the missing topic is still missing.
    _, found = await probe_kafka(settings, list(specs.values()), PROBE_TIMEOUT_S)
    assert found is not None
    assert found.topics[audit].error == "UnknownTopicOrPartitionError"


def redis_line(lines: list[str]) -> str:
    [line] = [line for line in lines if line.startswith(("OK   redis:", "FAIL redis:"))]
    return line


def test_redis_credentials_tls_and_files_are_explained(
    broker: EmbeddedBroker, persistent_redis: PersistentRedis, tmp_path: Path
):
    add_acl_user(persistent_redis.url, "doctor", "pw-redis-url")  # the default user is off
    where = f"redis://127.0.0.1:{persistent_redis.port}/0"
    env = {"MG_KAFKA_BROKER": broker.url, "MG_REDIS_URL": where, "MG_REDIS_USERNAME": "doctor"}
    code, lines, _ = doctor({**env, "MG_REDIS_PASSWORD": "pw-redis-url"}, "--no-probe")
    assert redis_line(lines).startswith(f"OK   redis: {where} answered PING (standalone")
    code, lines, _ = doctor({**env, "MG_REDIS_PASSWORD": "sig-webhook"}, "--no-probe")
    assert code == 1
    line = redis_line(lines)
    assert line.startswith(f"FAIL redis: Redis at {where} refused the credentials (")
    assert line.endswith("(MG_REDIS_URL, MG_REDIS_USERNAME, MG_REDIS_PASSWORD)")
    tls = f"rediss://127.0.0.1:{persistent_redis.port}/0"  # TLS spoken to a plain port
    code, lines, _ = doctor({**env, "MG_REDIS_URL": tls}, "--no-probe")
    line = redis_line(lines)  # redis-py times the handshake out, or the doctor does
    assert line.startswith(
        (f"FAIL redis: cannot reach {tls} (", f"FAIL redis: no answer from {tls}")
    )
    assert line.endswith(
        "a rediss:// URL needs a TLS port (a plain port never finishes the handshake)"
    )
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    code, lines, _ = doctor({**env, "MG_REDIS_TLS_CA_FILE": str(ca)}, "--no-probe")
    assert redis_line(lines) == (
        "FAIL redis: settings refused: MG_REDIS_TLS_* files are set but the Redis URL is not "
        f"rediss:// ({where})"
    )
