"""Every input format through a real worker gives the events and alerts of native input.

Two `meterguard worker` processes on the session's Tansu broker and Redis, each with its own
topics, key prefix and app id: one is fed the traffic as native events, the other the very
same traffic as the formats gateways emit (OTLP GenAI exports for the runaway agent,
CloudEvents binary / structured / batch, LiteLLM spend-log rows and OpenAI chat completions
for the quiet ones), with a few unusable GenAI spans mixed into the OTLP exports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from meterguard.streams.offline.replay import ReplayOutputs, replay_file
from meterguard.streams.settings import Settings
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.format_traffic import MAPPING_YAML, FormatTraffic, as_formats, recent_start
from tests.support.traffic import mixed
from tests.support.worker_process import Worker, read_topics, start_worker


@dataclass
class Runs:
    native: Worker
    formats: Worker
    traffic: FormatTraffic


@pytest.fixture(scope="module")
async def runs(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    mapping = tmp_path_factory.mktemp("mapping") / "mapping.yaml"
    mapping.write_text(MAPPING_YAML)
    traffic = as_formats(mixed(quiet=5, start=recent_start()), poison_every=9)
    extra = {"MG_MAPPING_FILE": str(mapping)}
    native = await start_worker(broker, redis_server.url, tmp_path_factory, extra)
    formats = await start_worker(broker, redis_server.url, tmp_path_factory, extra)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10)
    await producer.start()
    try:
        for doc in traffic.native:
            key = doc["identity"].encode()
            await producer.send(native.settings.topic_raw, key=key, value=orjson.dumps(doc))
        for value, headers, key in traffic.messages:
            await producer.send(formats.settings.topic_raw, key=key, value=value, headers=headers)
        await producer.flush()
        n = len(traffic.native)
        await asyncio.gather(native.wait_counted(n), formats.wait_counted(n))
        yield Runs(native, formats, traffic)
    finally:
        await producer.stop()
        await native.stop()
        await formats.stop()


async def topic(worker: Worker, name: str) -> list[dict]:
    return (await read_topics(worker.settings, [name]))[name]


def without_ingest_time(events: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in e.items() if k != "ingest_time"} for e in events), key=str)


async def test_decoded_events_are_identical_to_the_native_run(runs: Runs):
    native = await topic(runs.native, runs.native.settings.topic_events)
    formats = await topic(runs.formats, runs.formats.settings.topic_events)
    assert len(native) == len(runs.traffic.native)
    assert without_ingest_time(formats) == without_ingest_time(native)


async def test_per_identity_event_order_is_the_native_order(runs: Runs):
    formats = await topic(runs.formats, runs.formats.settings.topic_events)
    for identity in {d["identity"] for d in runs.traffic.native}:
        sent = [d["event_id"] for d in runs.traffic.native if d["identity"] == identity]
        assert [e["event_id"] for e in formats if e["identity"] == identity] == sent


async def test_alerts_ids_included_are_identical_to_the_native_run(runs: Runs):
    native = await topic(runs.native, runs.native.settings.topic_alerts)
    formats = await topic(runs.formats, runs.formats.settings.topic_alerts)
    firing = [a for a in native if a["status"] == "firing"]
    assert [a["identity"] for a in firing] == ["agent-runaway"]
    assert sorted(formats, key=str) == sorted(native, key=str)


async def test_unusable_spans_are_dead_lettered_alone_and_nothing_else_is(runs: Runs):
    assert await topic(runs.native, runs.native.settings.topic_dlq) == []
    letters = await topic(runs.formats, runs.formats.settings.topic_dlq)
    assert len(letters) == runs.traffic.poison_spans > 0
    for letter in letters:
        assert (letter["reason"], letter["format"]) == ("invalid_event", "otlp")
        assert "spanId" in letter["error"]
        assert orjson.loads(letter["raw"])["spanId"] == "not-hex"
        assert letter["topic"] == runs.formats.settings.topic_raw
    stats = await runs.formats.store.stats.pipeline_counters()
    assert stats["events_dead_lettered"] == runs.traffic.poison_spans


async def test_metrics_count_messages_by_format_and_ignored_spans(runs: Runs):
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{runs.formats.web}/metrics") as response,
    ):
        text = await response.text()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("meterguard_messages_by_format", "meterguard_ignored_records"))
    }
    sent: dict[str, int] = {}
    for value, headers, _ in runs.traffic.messages:
        fmt = _format_of(value, headers)
        sent[fmt] = sent.get(fmt, 0) + 1
    for fmt, count in sent.items():
        assert samples[f'meterguard_messages_by_format_total{{format="{fmt}"}}'] == count
    # One HTTP server span per OTLP export.
    assert samples['meterguard_ignored_records_total{format="otlp"}'] == sent["otlp"]


def _format_of(value: bytes, headers: list[tuple[str, bytes]]) -> str:
    names = dict(headers)
    if "ce_specversion" in names:
        return "cloudevents-binary"
    if "content-type" in names:
        return "cloudevents-batch"
    doc = orjson.loads(value)
    if "resourceSpans" in doc:
        return "otlp"
    if "specversion" in doc:
        return "cloudevents"
    return "litellm" if "request_id" in doc else "openai"


async def test_file_replay_reads_every_format_line_by_line(redis_server: EmbeddedRedis, tmp_path):
    """`meterguard replay` on a file whose lines are in mixed formats gives the alerts and the
    throttles of the native file. Formats that need Kafka headers (binary-mode CloudEvents, an
    OpenAI response naming its caller in a header) stay native lines: a file has no headers."""
    traffic = as_formats(mixed(quiet=5), poison_every=9)
    native_file, formats_file = tmp_path / "native.jsonl", tmp_path / "formats.jsonl"
    native_file.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in traffic.native))
    by_event = {d["event_id"]: d for d in traffic.native}
    lines = []
    for value, headers, _ in traffic.messages:
        if not headers or dict(headers).get("content-type", b"").startswith(b"application/cloud"):
            lines.append(value)
        elif "ce_id" in dict(headers):
            lines.append(orjson.dumps(by_event[dict(headers)["ce_id"].decode()]))
        else:  # an OpenAI response: its id is the event id
            lines.append(orjson.dumps(by_event[orjson.loads(value)["id"]]))
    formats_file.write_bytes(b"\n".join(lines) + b"\n")
    settings = Settings.model_validate({"key_prefix": "fmtreplay"})
    results = {}
    for name, source in (("native", native_file), ("formats", formats_file)):
        out = tmp_path / name
        out.mkdir()
        outputs = ReplayOutputs(out / "alerts.jsonl", out / "throttles.jsonl", None, out / "dlq")
        summary = await replay_file(
            source, outputs, settings, redis_server.url, batch_size=300, show_progress=False
        )
        results[name] = (summary, out)
    native, formats = results["native"], results["formats"]
    assert formats[0].events == native[0].events == len(traffic.native)
    assert formats[0].dead_letters == traffic.poison_spans
    for name in ("alerts.jsonl", "throttles.jsonl"):
        assert (formats[1] / name).read_bytes() == (native[1] / name).read_bytes()
    assert b"agent-runaway" in (native[1] / "alerts.jsonl").read_bytes()
