"""Every metric the Grafana dashboard and the Prometheus alert rules query is one a live worker
exports. A real `meterguard worker` child (the compose file's worker environment, on the
session's Tansu broker and Redis) counts traffic with a runaway identity (an alert and a
throttle) and a malformed message (a dead letter), and delivers its alerts to two webhooks,
one up and one refusing connections (a delivery latency, and a sink dead letter after one
attempt); then its /metrics is scraped and every queried name must have a sample in it.
With Debian's `prometheus` on PATH, a real Prometheus then scrapes the worker with
deploy/prometheus/rules.yaml loaded: every dashboard query must answer with data, every rule
evaluate without error. The Dockerfile's HEALTHCHECK command runs against the same worker."""

from __future__ import annotations

import asyncio
import base64
import sys
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from tests.deploy.deploy_files import (
    PROMETHEUS_OWN,
    compose,
    dashboard_exprs,
    instructions,
    metric_names,
    queried_names,
    rules,
)
from tests.deploy.prometheus_process import PROMETHEUS, prometheus_scraping
from tests.support.polling import eventually
from tests.support.traffic import mixed
from tests.support.webhook_receiver import SwitchableReceiver
from tests.support.worker_process import produce, start_worker

SECRET = "whsec_" + base64.b64encode(b"meterguard-deploy-metrics-test15").decode()
MALFORMED = {"event_id": "broken", "identity": "svc-quiet-0", "event_time": "yesterday"}
# Set per test run (addresses, names): the rest of the compose workers' environment is used
# as it is.
PER_RUN = {"MG_KAFKA_BROKER", "MG_REDIS_URL", "MG_APP_ID", "MG_KEY_PREFIX", "MG_WEB_PORT"}
# Declared by the worker from its start, with a sample only once an outbox holds
# MG_OUTBOX_MAX_PENDING (10,000) alerts: its family must be exported, a sample is not awaited.
DECLARED_ONLY = {"meterguard_sink_outbox_full_total"}


def sample_names(text: str) -> tuple[set[str], set[str]]:
    """(names with a sample, names of every declared family's samples) of an exposition."""
    sampled: set[str] = set()
    declared: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in text_string_to_metric_families(text):
        sampled |= {s.name for s in family.samples}
        declared |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return sampled, declared


def compose_worker_env() -> dict[str, str]:
    env = compose()["services"]["worker-1"]["environment"]
    return {k: str(v) for k, v in env.items() if k not in PER_RUN and not str(v).startswith("$")}


@pytest.fixture(scope="module")
async def scrape(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    async with (
        SwitchableReceiver(SECRET, mode="up") as up,
        SwitchableReceiver(SECRET, path="/down", mode="refuse") as down,
    ):
        extra = compose_worker_env() | {
            "MG_WEBHOOK_URL": f"{up.url},{down.url}",
            "MG_WEBHOOK_SECRET": SECRET,
            "MG_SINK_MAX_ATTEMPTS": "1",  # the refused destination dead-letters at once
            "MG_SINK_TIMEOUT_S": "2",
        }
        worker = await start_worker(broker, redis_server.url, tmp_path_factory, extra)
        try:
            start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
            docs = mixed(quiet=2, prefix=f"{worker.settings.key_prefix}-", start=start)
            topic = worker.settings.topic_raw
            await produce(broker.bootstrap, topic, [MALFORMED, *docs])
            await worker.wait_counted(len(docs))
            expected = set(queried_names()) - PROMETHEUS_OWN - DECLARED_ONLY
            text = ""

            async def all_sampled() -> bool:
                nonlocal text
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{worker.web}/metrics") as response,
                ):
                    text = await response.text()
                return expected <= sample_names(text)[0]

            await eventually(all_sampled, "every queried metric sampled", log=worker.log)
            yield worker, text
        finally:
            await worker.stop()


async def test_every_metric_the_dashboard_and_rules_query_is_exported(scrape):
    _, text = scrape
    sampled, declared = sample_names(text)
    where = queried_names()
    missing = {
        name: sorted(places)
        for name, places in where.items()
        if name not in PROMETHEUS_OWN and name not in sampled | declared
    }
    assert missing == {}
    assert declared >= DECLARED_ONLY


async def test_the_worker_holds_every_partition_of_the_compose_partition_count(scrape):
    worker, text = scrape
    families = {f.name: f for f in text_string_to_metric_families(text)}
    held = [
        s.labels["partition"]
        for s in families["meterguard_partition_assigned"].samples
        if s.labels["topic"] == worker.settings.topic_raw
    ]
    assert len(held) == int(compose_worker_env()["MG_TOPIC_PARTITIONS"]) == 6


async def test_the_scrape_holds_the_runaways_alert_and_the_dead_letter(scrape):
    _, text = scrape
    families = {f.name: f for f in text_string_to_metric_families(text)}
    alerts = {s.labels["detector"] for s in families["meterguard_alerts"].samples if s.value}
    assert "spike" in alerts
    reasons = {s.labels["reason"] for s in families["meterguard_dead_letters"].samples}
    assert reasons
    sinks = {
        (s.labels["sink"], s.labels["outcome"])
        for s in families["meterguard_sink_deliveries"].samples
        if s.name.endswith("_total") and s.value
    }
    # The refused destination's attempt is a retry outcome; its one attempt spent, the alert
    # goes to the alerts dead-letter topic.
    assert {("webhook", "delivered"), ("webhook", "retry")} <= sinks
    lettered = families["meterguard_sink_dead_letters"].samples
    assert sum(s.value for s in lettered if s.name.endswith("_total")) >= 1


async def test_the_dockerfile_healthcheck_passes_on_a_live_worker_and_fails_without_one(scrape):
    worker, _ = scrape
    (check,) = [c for c in instructions() if c.cmd == "HEALTHCHECK"]
    assert check.value[:3] == ("CMD", "python", "-c")
    command = [sys.executable, "-c", check.value[3]]
    port = worker.web.rsplit(":", 1)[1]
    assert await exit_code(command, {"MG_WEB_PORT": port}) == 0
    assert await exit_code(command, {"MG_WEB_PORT": str(free_port())}) != 0


async def exit_code(command: list[str], env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait()  # the check's own urlopen timeout (4 s) bounds it


@pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not on PATH (apt-get install prometheus)"
)
async def test_a_real_prometheus_evaluates_every_panel_query_and_rule_on_the_worker(
    scrape, tmp_path
):
    worker, _ = scrape
    target = worker.web.removeprefix("http://")
    async with prometheus_scraping(target, tmp_path) as prometheus:
        empty = []
        for expr in dashboard_exprs():
            if not await prometheus.query(expr) and not metric_names(expr) <= DECLARED_ONLY:
                empty.append(expr)
        assert empty == []  # every query answers, and with data unless it needs a full outbox

        async def rules_evaluated() -> bool:
            groups = (await prometheus.api("rules"))["groups"]
            found = [r for g in groups for r in g["rules"]]
            return len(found) == len(rules()) and all(
                r.get("lastEvaluation", "0001").startswith("20") for r in found
            )

        await eventually(rules_evaluated, "every alert rule evaluated", log=prometheus.log)
        groups = (await prometheus.api("rules"))["groups"]
        health = {
            r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]
        }
        assert health == {r["alert"]: ("ok", "") for r in rules()}
