"""A real Prometheus server (Debian's `prometheus` package) as a child process, scraping one
worker every second with deploy/prometheus/rules.yaml loaded, for the tests that evaluate the
dashboard's queries and the alert rules on live data."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from meterguard.streams.tools.embedded import free_port
from tests.deploy.deploy_files import RULES
from tests.support.polling import eventually

PROMETHEUS = shutil.which("prometheus")
# 1 s instead of the compose file's 15 s, so that rate() has its two samples within seconds.
SCRAPE_INTERVAL = "1s"


class Prometheus:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    async def api(self, path: str, **params: str) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.url}/api/v1/{path}", params=params) as response,
        ):
            body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result


@asynccontextmanager
async def prometheus_scraping(target: str, workdir: Path) -> AsyncIterator[Prometheus]:
    """Prometheus scraping `target` (host:port) as job "meterguard" with the deploy rules;
    yields once it has scraped the target at least twice."""
    assert PROMETHEUS is not None
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "meterguard", "static_configs": [{"targets": [target]}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    # Popen returns once Prometheus is forked; readiness is polled below.
    process = subprocess.Popen(  # noqa: ASYNC220
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", log)
    try:

        async def scraped_twice() -> bool:
            try:
                found = await server.query('count_over_time(up{job="meterguard"}[1m])')
            except (aiohttp.ClientError, AssertionError):
                return False  # not serving yet
            return bool(found) and float(found[0]["value"][1]) >= 2

        await eventually(scraped_twice, "Prometheus to scrape the worker twice", log=log)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=20)
