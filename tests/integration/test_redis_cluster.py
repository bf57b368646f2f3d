"""meterguard on a real three-node Redis Cluster (issue 14, scenario 8).

Three `redis-server --cluster-enabled yes` primaries (tests/support/redis_cluster.py), a real
`meterguard worker` with MG_REDIS_URL = the first node and MG_REDIS_CLUSTER=true, the
session's Tansu broker. Phase 1 is the fault scenarios' stream (tests/support/fault_stream.py:
30 identities, five bursts, a retry loop, out-of-order, late and repeated events), judged as
they are: every identity's windows, late totals and counters reconcile with the ledger of the
events sent, the exactly-once counters equal the unique events, and the alert ids on the topic
are those of a reference `replay` (itself run on the cluster). Its throttles are all released
by the end, so phase 2 is one recent runaway whose throttle is live when the test looks.

Then: the gateway keys, the SSE feed (pub/sub on a cluster) and an operator release; alerts
delivered through the outbox to a webhook receiver; the dashboard and report answering with
the right data; `meterguard replay` and `meterguard reconcile` as commands on the cluster; and
every key of an identity in that identity's slot (CLUSTER KEYSLOT), keys on all three nodes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis
from aiohttp import web

from meterguard.streams.store import StoreConfig, build_store
from meterguard.streams.store.connection import RedisRefused, check_redis, redis_client
from meterguard.streams.tools.embedded import EmbeddedBroker, free_port
from tests.support.fault_stream import EXTRA_ENV, drain, judge, stream
from tests.support.faults import FaultFigures, unique_events
from tests.support.polling import DEADLINE_S, eventually
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.traffic import as_events, as_jsonl, series
from tests.support.worker_process import Worker, produce, read_topics, start_worker

API_TOKEN = uuid.uuid4().hex
# Phase 2: recent, so their throttles are live at the end; two, so the live keys are in two
# slots (one MGET of them failed with CROSSSLOT).
RUNAWAYS = ("cl-runaway", "cl-runaway-2")
RUNAWAY = RUNAWAYS[0]
# Identity keys every phase-1 identity has (windows.py, keys.py).
IDENTITY_PARTS = {"meta", "win", "dd", "state", "rollout"}


@dataclass
class Run:
    cluster: LocalRedisCluster
    worker: Worker
    sent: list[dict]  # phase 1, as sent (duplicates included), then the markers
    phase2: list[dict]
    figures: FaultFigures
    receiver: Receiver
    work: Path


class Receiver:
    """A webhook endpoint on a free port: every POST answered 200 and kept."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.url = f"http://127.0.0.1:{free_port()}/hook"
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def alert_ids(self) -> set[str]:
        return {orjson.loads(b)["data"]["alert_id"] for b in self.bodies}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as started:
        yield started


@pytest.fixture(scope="module")
async def run(
    cluster: LocalRedisCluster, broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    receiver = Receiver()
    await receiver.start()
    extra = {
        **EXTRA_ENV,
        "MG_REDIS_CLUSTER": "true",
        "MG_API_TOKEN": API_TOKEN,
        "MG_WEBHOOK_URL": receiver.url,
    }
    worker = await start_worker(broker, cluster.url, tmp_path_factory, extra)
    try:
        traffic = stream()
        sent = list(traffic.docs)
        await produce(broker.bootstrap, worker.settings.topic_raw, sent)
        await worker.wait_counted(unique_events(sent), ("events_new", "events_late"))
        await drain(broker, worker, sent)
        work = tmp_path_factory.mktemp("cluster-work")
        figures = await judge("redis cluster", worker, traffic, sent, 0, 0.0, work)
        # Phase 2: ends a minute ago, bursting for its last 11 minutes (after the warm-up).
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=76)
        phase2 = sorted(
            (
                {**d, "team": "team-runaway"}
                for name in RUNAWAYS
                for d in series(name, 75, 6, start=start, burst=(64, 74, 180))
            ),
            key=lambda d: (d["event_time"], d["event_id"]),
        )
        await produce(broker.bootstrap, worker.settings.topic_raw, phase2)
        await worker.wait_counted(unique_events(sent) + len(phase2), ("events_new", "events_late"))
        # A marker per runaway at its newest event time (on time, closes no minute), counted
        # in a later pipeline step: once counted, the step before it has published its
        # commands (one step at a time per worker), so the topic and the keys are final.
        markers = [{**phase2[-1 - n], "event_id": f"{phase2[-1 - n]['identity']}-marker"}
                   for n in range(len(RUNAWAYS))]  # fmt: skip
        assert {m["identity"] for m in markers} == set(RUNAWAYS)
        await produce(broker.bootstrap, worker.settings.topic_raw, markers)
        phase2 += markers
        await worker.wait_counted(unique_events(sent) + len(phase2), ("events_new", "events_late"))

        async def throttled() -> bool:
            return len(await worker.store.throttles.active()) == len(RUNAWAYS)

        await eventually(throttled, "the runaways' throttle keys", log=worker.log)
        yield Run(cluster, worker, sent, phase2, figures, receiver, work)
    finally:
        await worker.stop()
        await receiver.stop()


async def test_every_identity_reconciles_exactly_on_the_cluster(run: Run):
    # judge() asserted the windows, late totals, counters and alert ids; the figures it kept:
    assert run.figures.lost == 0 and run.figures.double_counted == 0
    assert run.figures.counted == unique_events(run.sent)
    assert run.figures.alert_ids == 15  # 6 spike episodes (firing, resolved), 3 retry_loop


async def test_the_live_throttle_key_feed_and_release_work_on_the_cluster(run: Run):
    settings, store = run.worker.settings, run.worker.store
    found = await read_topics(settings, [settings.topic_throttle])
    last = {c["identity"]: c for c in found[settings.topic_throttle]}
    assert [last[name]["action"] for name in RUNAWAYS] == ["throttle", "throttle"]
    live = await store.throttles.active()  # a SCAN of every primary, GETs across slots
    assert [c.model_dump(mode="json") for c in live] == [last[name] for name in RUNAWAYS]
    # Phase 1's throttles were all released: their keys are gone from every node.
    phase1 = set(last) - set(RUNAWAYS)
    assert len(phase1) == 6
    for identity in phase1:
        assert await store.throttles.active_for(identity) is None
    url = f"{run.worker.web}/api/throttles/stream"
    async with aiohttp.ClientSession() as http, http.get(url) as sse:
        assert sse.status == 200
        frames = sse_frames(sse)
        for name in RUNAWAYS:
            event, data = await anext(frames)
            assert event == "command" and orjson.loads(data)["identity"] == name
        assert (await anext(frames))[0] == "ready"
        # The release is PUBLISHed by a script on the identity's node; the feed listens on
        # the channel's node: Redis Cluster forwards it.
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        release_url = f"{run.worker.web}/api/throttles/{RUNAWAY}/release"
        async with http.post(release_url, json={"reason": "cluster test"}, headers=headers) as r:
            assert r.status == 200
            release = await r.json()
        event, data = await anext(frames)
        assert event == "command" and orjson.loads(data) == release
    assert release["action"] == "release"
    assert await store.throttles.active_for(RUNAWAY) is None
    assert [c.identity for c in await store.throttles.active()] == [RUNAWAYS[1]]


async def sse_frames(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    event, data = "message", []
    while True:
        line = await asyncio.wait_for(response.content.readline(), DEADLINE_S)
        assert line, "the stream ended"
        text = line.decode().rstrip("\r\n")
        if not text:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        field, _, value = text.partition(":")
        if field == "event":
            event = value.strip()
        elif field == "data":
            data.append(value.removeprefix(" "))


async def test_alerts_reach_the_webhook_through_the_outbox_on_the_cluster(run: Run):
    settings = run.worker.settings
    found = await read_topics(settings, [settings.topic_alerts])
    on_topic = {a["alert_id"] for a in found[settings.topic_alerts]}
    assert len(on_topic) > run.figures.alert_ids  # phase 2's alert too
    await eventually(
        lambda: run.receiver.alert_ids() == on_topic,
        "every alert delivered to the webhook",
        log=run.worker.log,
    )


async def test_dashboard_and_report_answer_from_the_cluster(run: Run):
    web_url = run.worker.web
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{web_url}/readyz") as r:
            assert r.status == 200 and (await r.json())["redis"] is True
        async with http.get(f"{web_url}/api/dashboard") as r:
            assert r.status == 200
            board = await r.json()
        async with http.get(f"{web_url}/api/identities/{RUNAWAY}") as r:
            assert r.status == 200
            detail = await r.json()
        first, last = "2026-01-05T09:00:00Z", "2026-01-05T12:00:00Z"
        async with http.get(f"{web_url}/api/report?by=team&from={first}&to={last}") as r:
            assert r.status == 200
            shown = await r.json()
        async with http.get(f"{web_url}/api/report?by=identity&last=24h") as r:
            assert r.status == 200
            recent = await r.json()
    # The rankings' newest hours are phase 2's: the runaways alone, alike.
    assert sorted(row["identity"] for row in board["top_tokens"]) == list(RUNAWAYS)
    assert len({row["total"] for row in board["top_tokens"]}) == 1
    assert RUNAWAY in orjson.dumps(detail).decode()
    calls = Counter(d["identity"] for d in run.phase2)
    assert {row["group"]: row["calls"] for row in recent["rows"]} == calls
    # Phase 1's roll-ups: one team per identity, calls = its unique events (late included).
    unique = {(d["identity"], d["event_id"]): d["team"] for d in run.sent}
    expected = Counter(unique.values())
    assert {row["group"]: row["calls"] for row in shown["rows"]} == dict(expected)


def meterguard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterguard.streams.tools.cli", *args],
        env=env, capture_output=True, text=True, timeout=DEADLINE_S, check=False,
    )  # fmt: skip


async def test_replay_and_reconcile_commands_run_on_the_cluster(run: Run):
    settings = run.worker.settings
    env = {**os.environ, **{k: v for k, v in run.worker.env.items() if k.startswith("MG_")}}
    events = run.work / "all.jsonl"
    events.write_bytes(as_jsonl(run.sent + run.phase2))
    checked = await asyncio.to_thread(meterguard, env, "reconcile", str(events))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    phase1 = run.work / "phase1.jsonl"
    phase1.write_bytes(as_jsonl(run.sent))
    alerts, throttles = run.work / "replay-alerts.jsonl", run.work / "replay-throttles.jsonl"
    replayed = await asyncio.to_thread(
        meterguard, env, "replay", str(phase1),
        "--alerts-out", str(alerts), "--throttles-out", str(throttles),
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    found = await read_topics(settings, [settings.topic_alerts])
    alerts_found = found[settings.topic_alerts]
    phase1_ids = {a["alert_id"] for a in alerts_found if a["identity"] not in RUNAWAYS}
    assert {orjson.loads(line)["alert_id"] for line in alerts.read_bytes().splitlines()} == (
        phase1_ids
    )
    # Its namespace (prefix:replay:…) was dropped on every node, the reference replay's too.
    left = [k async for k in run.worker.store.redis.scan_iter(match=f"{settings.key_prefix}-*")]
    left += [k async for k in run.worker.store.redis.scan_iter(match="*:replay:*")]
    assert left == []


async def test_every_key_of_an_identity_is_in_its_slot_and_keys_span_every_node(run: Run):
    prefix = run.worker.settings.key_prefix
    keys = [k.decode() async for k in run.worker.store.redis.scan_iter(match=f"{prefix}:*")]
    identities = {d["identity"] for d in run.sent} | set(RUNAWAYS)
    with redis.Redis.from_url(run.cluster.url) as node:
        for identity in sorted(identities):
            mine = [k for k in keys if f"{{{identity}}}" in k]
            parts = {k.rsplit(":", 1)[1] for k in mine if k.startswith(f"{prefix}:{{")}
            assert IDENTITY_PARTS - {"rollout"} <= parts, (identity, mine)
            slot = node.cluster("keyslot", identity)
            assert {node.cluster("keyslot", k) for k in mine} == {slot}, identity
    per_node = []
    for port in run.cluster.ports:
        with redis.Redis(host="127.0.0.1", port=port) as node:
            per_node.append(len(node.keys(f"{prefix}:*")))
    assert all(n > 0 for n in per_node) and sum(per_node) == len(keys), per_node
    # Keys without a hash tag are single keys, each touched alone (keys.py).
    untagged = {k.removeprefix(f"{prefix}:") for k in keys if "{" not in k}
    indexes = {k for k in untagged if k.startswith("rollup-index:")}
    single = {"stats", "alerts:recent", "audit", "births", "births-since"}
    assert untagged - indexes == single, untagged


async def test_pipelined_scripts_load_again_after_the_cluster_lost_them(run: Run):
    """A primary without the scripts (restarted, failed over, SCRIPT FLUSH): the pipeline's
    EVALSHA commands that got NOSCRIPT are sent again once loaded; none counted twice."""
    client = redis_client(run.cluster.url, run.worker.settings.redis_options)
    store = build_store(client, StoreConfig(prefix=f"noscript-{uuid.uuid4().hex[:6]}"))
    try:
        events = as_events(series("ns-a", 3, 4) + series("ns-b", 3, 4) + series("ns-c", 3, 4))
        groups: dict[str, list] = {}
        for event in events:
            groups.setdefault(event.identity, []).append(event)
        first = await store.windows.ingest({k: v[:6] for k, v in groups.items()})
        await client.script_flush()  # every primary
        again = await store.windows.ingest(groups)  # the first six of each are duplicates
    finally:
        await client.aclose()
    assert {k: r.new for k, r in first.items()} == {"ns-a": 6, "ns-b": 6, "ns-c": 6}
    assert {k: (r.new, r.duplicates) for k, r in again.items()} == {
        k: (6, 6) for k in ("ns-a", "ns-b", "ns-c")
    }


async def test_a_standalone_client_on_a_cluster_node_is_refused_naming_the_setting(
    cluster: LocalRedisCluster,
):
    client = redis_client(cluster.url)  # MG_REDIS_CLUSTER left false
    try:
        with pytest.raises(
            RedisRefused, match="is a Redis Cluster node: set MG_REDIS_CLUSTER=true"
        ):
            await check_redis(client, cluster.url)
    finally:
        await client.aclose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    env |= {"MG_KAFKA_BROKER": "kafka://127.0.0.1:1", "MG_REDIS_URL": cluster.url}
    done = await asyncio.to_thread(meterguard, env, "worker", "--without-web")
    assert done.returncode == 2 and "set MG_REDIS_CLUSTER=true" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
