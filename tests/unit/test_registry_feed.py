"""The registry over HTTP: a real local server answering JSON, CSV, garbage and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from meterguard.streams.policy.registry import Ownership, Registry
from meterguard.streams.runtime.registry_feed import fetch_registry, refreshed

CSV = "identity,team\nagent-a,payments\n"


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def json_body(_: web.Request) -> web.Response:
        return web.json_response({"identities": {"agent-a": {"team": "payments"}}})

    async def csv_body(_: web.Request) -> web.Response:
        return web.Response(text=CSV, content_type="text/csv")

    async def broken(_: web.Request) -> web.Response:
        return web.json_response({"identities": {"agent-a": {"tema": "x"}}})

    async def down(_: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/registry.json", json_body)
    app.router.add_get("/owners", csv_body)
    app.router.add_get("/broken", broken)
    app.router.add_get("/down", down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_json_and_csv_bodies(server: str) -> None:
    for path in ("/registry.json", "/owners"):
        registry = await fetch_registry(server + path)
        assert registry.identities["agent-a"].team == "payments"


async def test_a_bad_answer_says_what_is_wrong(server: str) -> None:
    with pytest.raises(ValueError, match="HTTP 503"):
        await fetch_registry(server + "/down")
    with pytest.raises(ValueError, match=r"identities\.agent-a\.tema"):
        await fetch_registry(server + "/broken")


async def test_a_failed_refresh_keeps_the_registry_the_worker_has(server: str) -> None:
    current = Registry(identities={"agent-z": Ownership(team="search")})
    assert await refreshed(server + "/down", current) is current
    assert await refreshed("http://127.0.0.1:9/nothing-listens", current) is current
    assert (await refreshed(server + "/owners", current)).identities["agent-a"].team == "payments"
