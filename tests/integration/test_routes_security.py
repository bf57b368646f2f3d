"""Route security on a real worker (issue 14, security), every route read from its router.

1. Every state-changing route (POST/PUT/PATCH/DELETE) answers 401 without the API token and
   403 with a wrong one, and works with the right one; no route accepts a mutating method it
   does not implement (405). The read routes answer without a token: README "Security" says
   why (probes, Prometheus, the gateways' throttle feed, the dashboard page).
2. Hostile input through every route with hypothesis (derandomized, so the examples are the
   same on every run): arbitrary methods, path parameters, query strings, headers and bodies,
   with and without the token. Never a 5xx (bar 503 where the route means "not ready" or
   "broker down"), never an unhandled exception in the worker's log, and the worker still
   counts a clean event afterwards; bad ingest input is dead-lettered with a reason.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.routes import MUTATING, Route, served_routes
from tests.support.worker_process import Worker, read_topics, start_worker

TOKEN = uuid.uuid4().hex
ENDLESS = "/api/throttles/stream"  # an SSE stream: covered by test_worker.py, not fuzzed here
# 503 is an answer, not a crash, where the route says "not ready" / "broker unavailable".
MAY_503 = {"/readyz", "/api/events", "/v1/traces"}
# A wrong credential is 403; no bearer credential at all is 401 (with WWW-Authenticate).
WRONG = [
    (f"Bearer {TOKEN[:-1]}", 403),  # a prefix of the token
    (f"Bearer {TOKEN}x", 403),  # the token and more
    (f"Bearer {TOKEN.upper()}", 403),
    (f"Basic {TOKEN}", 401),  # the right secret in another scheme
    ("Bearer", 401),
    (TOKEN, 401),  # no scheme
]
# Modest and fixed: 300 requests a property take about a second on localhost, and
# derandomize makes every run send the very same examples (never flaky).
FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,  # the same examples on every run: no replay of saved ones
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
async def worker(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    w = await start_worker(broker, redis_server.url, tmp_path_factory, {"MG_API_TOKEN": TOKEN})
    await w.wait_ready()
    yield w
    await w.stop()


@pytest.fixture(scope="module")
def routes(worker: Worker) -> list[Route]:
    return served_routes(worker.settings)


@pytest.fixture(scope="module")
def http(worker: Worker):
    with httpx.Client(base_url=worker.web, timeout=30) as client:
        yield client


def test_every_state_changing_route_needs_the_token(routes: list[Route], http, worker) -> None:
    mutating = [r for r in routes if r.method in MUTATING]
    assert {r.path for r in mutating} == {
        "/api/events",
        "/v1/traces",
        "/api/throttles/{identity}/release",
    }, "a new state-changing route: add it to README's route table and check its token"
    for route in mutating:
        url = route.url(worker.web)
        body = {"content": b"{}", "headers": {"Content-Type": "application/json"}}
        missing = http.request(route.method, url, **body)
        assert missing.status_code == 401, route
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        for wrong, status in WRONG:
            refused = http.request(route.method, url, **_auth(body, wrong))
            assert refused.status_code == status, (route, wrong)
        done = http.request(route.method, url, **_auth(body, f"Bearer {TOKEN}"))
        # Accepted (ingest), or refused for what the body or path says (no such throttle):
        # anything but an auth refusal or a failure.
        assert done.status_code in (200, 202, 404), (route, done.status_code, done.text)


def test_no_route_takes_a_mutating_method_it_does_not_implement(routes, http, worker) -> None:
    implemented = {(r.method, r.path) for r in routes}
    for path in sorted({r.path for r in routes}):
        for method in sorted(MUTATING):
            if (method, path) not in implemented:
                url = Route(method, path).url(worker.web)
                status = http.request(method, url, content=b"{}").status_code
                assert status == 405, (method, path, status)


def test_read_routes_answer_without_a_token(routes, http, worker) -> None:
    reads = sorted({r.path for r in routes if r.method == "GET"} - {ENDLESS})
    assert {"/healthz", "/readyz", "/metrics", "/", "/api/dashboard"} <= set(reads)
    for path in reads:
        status = http.get(Route("GET", path).url(worker.web)).status_code
        assert status not in (401, 403), path
        assert status < 500, path


texts = st.text(max_size=60)
header_names = st.sampled_from(
    ["Authorization", "Content-Type", "Content-Length", "X-Meterguard-Actor", "ce_type",
     "ce-specversion", "mg-format", "mg-identity", "mg-event-id", "mg-event-time", "X-Junk"]
)  # fmt: skip
# Header values as the wire allows them (latin-1, no CR/LF): httpx refuses anything else.
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
bodies = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | texts,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
        max_leaves=12,
    ).map(lambda doc: json.dumps(doc).encode()),  # stdlib: big ints, Infinity, as sent
)


def test_hostile_requests_on_every_route_never_crash(routes, http, worker) -> None:
    targets = [r for r in routes if r.path != ENDLESS]
    statuses: dict[int, int] = {}

    @FUZZ
    @given(
        route=st.sampled_from(targets),
        method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
        same_method=st.booleans(),
        param=texts | st.binary(min_size=1, max_size=20),
        query=st.dictionaries(st.sampled_from(["limit", "team", "from", "to", "x"]), texts),
        headers=st.dictionaries(header_names, header_values, max_size=4),
        with_token=st.booleans(),
        body=bodies,
    )
    def hostile(route, method, same_method, param, query, headers, with_token, body) -> None:
        # As bytes: httpx would encode a str value as ASCII; the wire takes latin-1.
        raw = {
            k: v.strip(" \t").encode("latin-1") for k, v in headers.items() if k != "Content-Length"
        }  # stripped: h11 (httpx) refuses to send a value with outer whitespace
        if with_token:
            raw["Authorization"] = f"Bearer {TOKEN}".encode()
        verb = route.method if same_method else method
        url = route.url(worker.web, param or "x")
        response = http.request(verb, url, params=query, headers=raw, content=body)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        ok = response.status_code < 500 or (response.status_code == 503 and route.path in MAY_503)
        assert ok, (verb, url, query, headers, body[:80], response.status_code, response.text)

    hostile()
    assert _crashes(worker) == []
    print(f"hostile requests by status: {dict(sorted(statuses.items()))}")


# Bytes that are not UTF-8 where aiohttp hands the app text (it decodes headers, path and
# query with surrogateescape): each one of these answered 500 before its fix, or could have.
KNOWN = [
    ("POST", "/api/events", {"Content-Type": b"\x80\xff"}),
    ("POST", "/api/events", {"mg-event-time": b"\xff", "ce_type": b"\xc3("}),
    ("POST", "/v1/traces", {"Content-Type": b"application/json\xff"}),
    ("POST", "/api/events", {"Authorization": b"Bearer \xff\xfe"}),  # refused: 403
    ("POST", "/api/throttles/%FF/release", {"X-Meterguard-Actor": b"\xff"}),
    ("GET", "/api/identities/%FF%FE", {}),
    ("GET", "/api/throttles/%C3%28", {}),
    ("GET", "/api/alerts?limit=%FF", {}),
    ("GET", "/api/report?from=%FF&to=%FF", {}),
    ("GET", "/api/dashboard?team=%FF", {}),
    ("GET", "/static/%FF", {}),
]


@pytest.mark.parametrize(("method", "path", "headers"), KNOWN)
def test_known_hostile_requests(method: str, path: str, headers: dict, http, worker) -> None:
    sent = {"Authorization": f"Bearer {TOKEN}".encode(), **headers}
    response = http.request(method, worker.web + path, headers=sent, content=b"{}")
    assert response.status_code < 500, response.text
    if headers.get("Authorization"):
        assert response.status_code == 403
    assert _crashes(worker) == []


def test_hostile_ingest_is_accepted_or_dead_lettered_with_a_reason(http, worker) -> None:
    sent: list[bytes] = []

    @FUZZ
    @given(
        body=bodies,
        content_type=st.sampled_from(
            [
                "application/json",
                "application/x-ndjson",
                "application/cloudevents+json",
                "application/cloudevents-batch+json",
                "text/plain",
                "application/x-protobuf",
                "",
            ]
        ),
        path=st.sampled_from(["/api/events", "/v1/traces"]),
    )
    def ingest(body: bytes, content_type: str, path: str) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
        response = http.post(path, content=body, headers=headers)
        assert response.status_code in (200, 202, 400, 413, 415), (path, body, response.text)
        if response.status_code in (200, 202):
            sent.append(body)

    ingest()
    assert sent, "no hostile body was accepted for decoding: the property tested nothing"
    assert _crashes(worker) == []


async def test_the_worker_still_counts_clean_events_after_the_hostile_input(worker) -> None:
    at = (datetime.now(UTC) - timedelta(minutes=2)).isoformat().replace("+00:00", "Z")
    event = {"event_id": f"clean-{uuid.uuid4().hex}", "identity": "svc-after", "event_time": at}
    stats = await worker.store.stats.pipeline_counters()
    before = stats.get("events_new", 0) + stats.get("events_late", 0)
    async with httpx.AsyncClient(base_url=worker.web) as client:
        response = await client.post(
            "/api/events", content=orjson.dumps(event), headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 202
    await worker.wait_counted(before + 1, ("events_new", "events_late"))
    letters = (await read_topics(worker.settings, [worker.settings.topic_dlq]))[
        worker.settings.topic_dlq
    ]
    assert letters, "hostile ingest produced no dead letter"
    assert all(letter["reason"] and letter["error"] for letter in letters)
    assert _crashes(worker) == []


def _auth(body: dict[str, Any], authorization: str) -> dict[str, Any]:
    return {**body, "headers": {**body["headers"], "Authorization": authorization}}


def _crashes(worker: Worker) -> list[str]:
    """Log lines of an exception the worker did not handle (aiohttp logs a view's exception
    as 'Error handling request' with its traceback)."""
    lines = worker.log.read_text(errors="replace").splitlines()
    return [x for x in lines if "Error handling request" in x or x.startswith("Traceback")]
