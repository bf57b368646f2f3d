"""A model endpoint behind meterguard's throttles: the gateway side, end to end.

    MG_THROTTLE_URL=http://127.0.0.1:6066 python deploy/examples/gateway_proxy.py --port 8080
    curl -s localhost:8080/v1/chat/completions -H 'x-meterguard-identity: agent-runaway' -d '{}'

`fake_model` stands in for the model call (a canned chat completion). `create_app` wraps it
in `ThrottleMiddleware` fed by a `ThrottleClient` following the worker's SSE feed, so a
throttled identity gets 429 + Retry-After and everyone else the completion.

The app is plain ASGI. This script serves it with aiohttp (installed with meterguard) through
the small bridge below; with an ASGI server at hand use that instead (the app handles the
lifespan protocol): `uvicorn --factory gateway_proxy:create_app --app-dir deploy/examples`.
For a LiteLLM proxy pre-call hook see deploy/README.md, "Enforcing throttles in a gateway".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any

from aiohttp import web

from meterguard.gateway import ThrottleClient, ThrottleMiddleware
from meterguard.gateway.asgi import ASGIApp, Message, Receive, Scope, Send

DEFAULT_THROTTLE_URL = "http://127.0.0.1:6066"


async def fake_model(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v1/chat/completions → a canned completion with OpenAI-shaped `usage`."""
    if scope["path"] != "/v1/chat/completions":
        await _json(send, 404, {"error": "not found"})
        return
    if scope["method"] != "POST":
        await _json(send, 405, {"error": "method not allowed"})
        return
    while (await receive()).get("more_body"):
        pass  # drain the request; a real gateway would forward it
    completion = {
        "id": "chatcmpl-meterguard-example",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the stand-in model."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }
    await _json(send, 200, completion)


async def _json(send: Send, status: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(client: ThrottleClient | None = None) -> ASGIApp:
    client = client or ThrottleClient(os.environ.get("MG_THROTTLE_URL", DEFAULT_THROTTLE_URL))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(client, receive, send)
        else:
            await fake_model(scope, receive, send)

    return ThrottleMiddleware(app, client)


async def _lifespan(client: ThrottleClient, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await client.start()  # not wait_ready: serve (fail open) while meterguard is away
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


def aiohttp_app(app: ASGIApp, client: ThrottleClient) -> web.Application:
    """Serve an ASGI app from aiohttp: one catch-all route, one request per ASGI call."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": f"{request.version.major}.{request.version.minor}",
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.raw_path.encode(),
            "query_string": request.query_string.encode(),
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.raw_headers],
            "client": request.transport.get_extra_info("peername") if request.transport else None,
        }
        sent_body = False
        response = web.StreamResponse()

        async def receive() -> Message:
            nonlocal sent_body
            if sent_body:  # the body was read whole above: nothing more will come
                return {"type": "http.disconnect"}
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.set_status(message["status"])
                for name, value in message.get("headers", []):
                    response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
                await response.prepare(request)
            elif message["type"] == "http.response.body":
                await response.write(message.get("body", b""))

        await app(scope, receive, send)
        await response.write_eof()
        return response

    async def start(_: web.Application) -> None:
        await client.start()

    async def stop(_: web.Application) -> None:
        await client.aclose()

    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", handle)
    web_app.on_startup.append(start)
    web_app.on_cleanup.append(stop)
    return web_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--throttle-url", default=os.environ.get("MG_THROTTLE_URL", DEFAULT_THROTTLE_URL)
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    client = ThrottleClient(args.throttle_url)
    web.run_app(aiohttp_app(create_app(client), client), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
