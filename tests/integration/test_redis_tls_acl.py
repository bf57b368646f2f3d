"""Redis over TLS as an ACL user (issue 14, scenario 9, the Redis half).

One private redis-server (tests/support/redis_cluster.py `TlsRedis`): TLS with client
certificates required, signed by a CA made for the run (openssl), and an ACL user with a
password; the default user is off, so nothing gets in without both. A real `meterguard worker`
configured with MG_REDIS_URL=rediss://…, MG_REDIS_USERNAME / MG_REDIS_PASSWORD and the
MG_REDIS_TLS_* files counts a stream exactly and raises its alert; with a wrong password, a
CA that did not sign the server, or TLS files on a redis:// URL it exits 2 at once with one
line naming the settings, and never prints the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import redis

from meterguard.streams.store.connection import (
    RedisOptions,
    RedisRefused,
    check_redis,
    redacted,
    redis_client,
)
from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.support.faults import reconciled
from tests.support.polling import DEADLINE_S
from tests.support.redis_cluster import TlsFiles, TlsRedis, add_acl_user, make_tls_files
from tests.support.traffic import mixed
from tests.support.worker_process import produce, read_topics, start_worker

USER = "mg-worker"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # unique: found in no output unless leaked


@dataclass(frozen=True)
class Secured:
    server: TlsRedis
    tls: TlsFiles

    @property
    def env(self) -> dict[str, str]:
        """The worker's Redis settings: TLS with a client certificate, as the ACL user."""
        return {
            "MG_REDIS_USERNAME": USER,
            "MG_REDIS_PASSWORD": PASSWORD,
            "MG_REDIS_TLS_CA_FILE": str(self.tls.ca),
            "MG_REDIS_TLS_CERT_FILE": str(self.tls.client_cert),
            "MG_REDIS_TLS_KEY_FILE": str(self.tls.client_key),
        }

    def options(self, **changes: str) -> RedisOptions:
        fields = {
            "username": USER, "password": PASSWORD, "tls_ca_file": str(self.tls.ca),
            "tls_cert_file": str(self.tls.client_cert),
            "tls_key_file": str(self.tls.client_key),
        }  # fmt: skip
        return RedisOptions(**{**fields, **changes})


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tls = make_tls_files(tmp_path_factory.mktemp("tls"))
    with TlsRedis(tmp_path_factory.mktemp("redis-tls"), tls) as server:
        add_acl_user(server.url, USER, PASSWORD)
        yield Secured(server, tls)


def worker_command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`meterguard worker` with exactly these MG_ settings (it must stop before the broker)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    return subprocess.run(
        [sys.executable, "-m", "meterguard.streams.tools.cli", "worker", "--without-web"],
        env={**base, "MG_KAFKA_BROKER": "kafka://127.0.0.1:1", **env},
        capture_output=True, text=True, timeout=DEADLINE_S, check=False,
    )  # fmt: skip


def one_line_refusal(done: subprocess.CompletedProcess[str], says: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    return lines[0]


async def test_a_worker_counts_exactly_over_tls_as_the_acl_user(
    secured: Secured, broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
):
    # Nothing gets in without the password: the default user is off, plain port included.
    with (
        redis.Redis.from_url(secured.server.url) as anonymous,
        pytest.raises(redis.exceptions.AuthenticationError),
    ):
        anonymous.ping()
    url = secured.server.tls_url
    worker = await start_worker(broker, url, tmp_path_factory, secured.env)
    try:
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
        docs = mixed(quiet=2, prefix=f"{worker.settings.key_prefix}-", start=start)
        await produce(broker.bootstrap, worker.settings.topic_raw, docs)
        await worker.wait_counted(len(docs))
        # One marker per identity at its newest event time (on time, closes no minute),
        # counted in a later step: the steps before it have published their alerts.
        newest = {d["identity"]: d for d in docs}  # docs are in event-time order
        markers = [{**d, "event_id": f"{d['event_id']}-marker"} for d in newest.values()]
        await produce(broker.bootstrap, worker.settings.topic_raw, markers)
        docs += markers
        await worker.wait_counted(len(docs))
        await worker.wait_ready()
        result = await reconciled(docs, worker.settings)
        assert result.mismatches == []
        stats = await worker.store.stats.pipeline_counters()
        assert stats["events_new"] == len(docs)
        found = await read_topics(worker.settings, [worker.settings.topic_alerts])
        firing = [a for a in found[worker.settings.topic_alerts] if a["status"] == "firing"]
        assert [a["identity"] for a in firing] == ["agent-runaway"]
        assert await worker.store.throttles.active_for("agent-runaway") is not None
    finally:
        await worker.stop()
    assert PASSWORD not in worker.log.read_text(errors="replace")


def test_a_wrong_password_stops_the_worker_with_one_line_and_no_secret(secured: Secured):
    env = {**secured.env, "MG_REDIS_URL": secured.server.tls_url, "MG_REDIS_PASSWORD": "nope"}
    line = one_line_refusal(worker_command(env), "refused the credentials")
    assert "MG_REDIS_PASSWORD" in line and "nope" not in line


def test_a_ca_that_did_not_sign_the_server_stops_the_worker_with_one_line(secured: Secured):
    env = {
        **secured.env,
        "MG_REDIS_URL": secured.server.tls_url,
        "MG_REDIS_TLS_CA_FILE": str(secured.tls.other_ca),
    }
    line = one_line_refusal(worker_command(env), "TLS to Redis")
    assert "CERTIFICATE_VERIFY_FAILED" in line and "MG_REDIS_TLS_CA_FILE" in line


def test_tls_files_on_a_plain_url_are_a_configuration_error(secured: Secured):
    env = {**secured.env, "MG_REDIS_URL": secured.server.url}
    one_line_refusal(worker_command(env), "not rediss://")


async def test_credentials_in_the_url_work_and_never_reach_a_message(secured: Secured):
    port = secured.server.tls_port
    good = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/0"
    client = redis_client(good, secured.options(username="", password=""))
    try:
        await check_redis(client, good)
        assert await client.set("probe", "1") and await client.get("probe") == b"1"
    finally:
        await client.aclose()
    bad = f"rediss://{USER}:wrong-{PASSWORD}@127.0.0.1:{port}/0"
    client = redis_client(bad, secured.options(username="", password=""))
    try:
        with pytest.raises(RedisRefused) as refused:
            await check_redis(client, bad)
    finally:
        await client.aclose()
    message = str(refused.value)
    assert PASSWORD not in message and f"rediss://{USER}:***@127.0.0.1:{port}/0" in message
    assert redacted(bad) == f"rediss://{USER}:***@127.0.0.1:{port}/0"
