"""meterguard.gateway.litellm with the real litellm package, no broker.

Keys are LiteLLM's own `UserAPIKeyAuth`; payloads are what real `litellm.acompletion` calls
(`mock_response`: no network) hand to the callback, with the metadata the proxy sets for the
key (tests/support/litellm_calls.py). Kafka is replaced by a recording producer: what the
callback would publish is decoded by meterguard's own decoder.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import litellm
import orjson
import pytest
import yaml
from litellm.proxy.common_utils.callback_utils import _loaded_callback_or_raise
from litellm.proxy.types_utils.utils import get_instance_fn
from litellm.types.proxy.auth.user_api_key_auth import hash_token

from meterguard.gateway import ThrottleClient
from meterguard.gateway.asgi import identity_from_headers
from meterguard.gateway.litellm import (
    MeterguardCallback,
    MeterguardRefusal,
    identity_of_auth,
    identity_of_payload,
)
from meterguard.gateway.publisher import KafkaPublisher
from meterguard.models import ThrottleCommand, ThrottleLimits, utc_now
from meterguard.streams.decoding.decode import decode_message
from meterguard.streams.decoding.formats import LITELLM
from tests.support.litellm_calls import (
    MESSAGES,
    MODEL,
    REPLY,
    Capture,
    complete,
    fail,
    key,
    proxy_metadata,
    registered,
)
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "litellm" / "config.kafka.yaml"
RAW_KEY = "sk-meterguard-unit-0001"
KEY_HASH = hashlib.sha256(RAW_KEY.encode()).hexdigest()
POLL_S = 0.01


Record = tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]  # topic, value, key, headers


class RecordingProducer:
    """AIOKafkaProducer as KafkaPublisher drives it: start, send -> delivery future, stop."""

    def __init__(self, start_error: Exception | None = None, **options: Any) -> None:
        self.options = options
        self.records: list[Record] = []
        self.start_error = start_error
        self.delivery_error: Exception | None = None

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error

    async def send(self, topic, value=None, key=None, headers=None) -> asyncio.Future[None]:
        self.records.append((topic, value, key, headers))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.delivery_error is None:
            delivered.set_result(None)
        else:
            delivered.set_exception(self.delivery_error)
        return delivered

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class Factory:
    """KafkaPublisher's producer_factory: keeps the producers it made."""

    def __init__(self, start_error: Exception | None = None) -> None:
        self.start_error = start_error
        self.made: list[RecordingProducer] = []

    def __call__(self, **options: Any) -> RecordingProducer:
        self.made.append(RecordingProducer(self.start_error, **options))
        return self.made[-1]


def publisher(factory: Factory, **kwargs: Any) -> KafkaPublisher:
    return KafkaPublisher("127.0.0.1:9", "t.raw", producer_factory=factory, **kwargs)


class Harness:
    """The callback registered in litellm.callbacks (with a Capture of the raw payloads)."""

    def __init__(self, callback: MeterguardCallback, factory: Factory) -> None:
        self.callback = callback
        self.factory = factory
        self.capture = Capture()

    @property
    def records(self) -> list[Record]:
        return [r for producer in self.factory.made for r in producer.records]

    async def published(self, n: int) -> None:
        async def enough() -> bool:
            return len(self.records) >= n and len(self.capture.payloads) >= n

        await eventually(enough, f"{n} records published", interval=POLL_S, timeout=10)


@pytest.fixture
async def harness(request: pytest.FixtureRequest):
    """`@pytest.mark.parametrize("harness", [{...MeterguardCallback kwargs}], indirect=True)`."""
    factory = Factory()
    callback = MeterguardCallback(publisher=publisher(factory), **getattr(request, "param", {}))
    h = Harness(callback, factory)
    try:
        with registered(callback, h.capture):
            yield h
    finally:
        await callback.aclose()


def decoded(value: bytes, headers: list[tuple[str, bytes]]):
    result = decode_message(value, headers, utc_now())
    assert result.format == LITELLM and result.dead_letters == []
    (event,) = result.events
    return event


# -- identity: one scheme for the hook, the logger and the decoder ---------------------------


def test_the_hook_names_a_key_by_its_alias_else_by_litellms_hash_of_it():
    assert identity_of_auth(key(RAW_KEY, alias="billing-agent")) == "billing-agent"
    unaliased = key(RAW_KEY)
    # UserAPIKeyAuth.check_api_key hashes an sk- key into both token and api_key.
    assert unaliased.token == unaliased.api_key == hash_token(RAW_KEY) == KEY_HASH
    assert identity_of_auth(unaliased) == KEY_HASH
    assert identity_of_auth(key(f"Bearer {RAW_KEY}")) == KEY_HASH
    assert identity_of_auth(key(RAW_KEY, alias="")) == KEY_HASH  # "" is no alias
    # The ASGI middleware names the same bearer key the same way.
    scope = {"headers": [(b"authorization", f"Bearer {RAW_KEY}".encode())]}
    assert identity_from_headers(scope) == KEY_HASH
    assert identity_of_auth(None) is None


@pytest.mark.parametrize("alias", ["billing-agent", None])
async def test_logger_key_hook_and_decoder_agree_on_real_payloads(harness: Harness, alias):
    auth = key(RAW_KEY, alias=alias, team_alias="Billing", team_id="team-7")
    await complete(auth)
    failure = await fail(auth)
    await harness.published(2)
    expected = alias or KEY_HASH
    assert identity_of_auth(auth) == expected
    for payload in harness.capture.payloads:
        assert payload["metadata"]["user_api_key_hash"] == KEY_HASH
        assert payload["metadata"]["user_api_key_alias"] == alias
        assert identity_of_payload(payload) == expected
    assert [record[2] for record in harness.records] == [expected.encode()] * 2
    assert {topic for topic, *_ in harness.records} == {"t.raw"}
    events = {e.event_id: e for e in (decoded(v, h) for _, v, _, h in harness.records)}
    # Success and failure callbacks run concurrently: matched by id, not by order.
    assert set(events) == {p["id"] for p in harness.capture.payloads}
    for payload in harness.capture.payloads:
        event = events[payload["id"]]
        assert event.identity == expected
        assert event.credential_id == KEY_HASH
        assert event.team == "Billing"
        assert (event.input_tokens, event.output_tokens) == (
            payload["prompt_tokens"],
            payload["completion_tokens"],
        )
    ok, bad = sorted(events.values(), key=lambda e: e.status != "ok")
    assert ok.status == "ok" and ok.input_tokens > 0 and ok.output_tokens > 0
    assert bad.status == "error" and bad.error_type == type(failure).__name__
    assert bad.error_type == "InternalServerError"


async def test_messages_and_responses_are_redacted_by_litellm_before_publishing(harness):
    await complete(key(RAW_KEY, alias="billing-agent"))
    await fail(key(RAW_KEY, alias="billing-agent"))
    await harness.published(2)
    raw = {p["id"]: p for p in harness.capture.payloads}  # what other callbacks get
    success = next(p for p in raw.values() if p["status"] == "success")
    assert success["messages"] == MESSAGES
    assert REPLY in orjson.dumps(success["response"]).decode()
    for _, value, _, _ in harness.records:
        published = orjson.loads(value)
        assert published["id"] in raw
        assert published["messages"] == [{"role": "user", "content": "redacted-by-litellm"}]
        assert MESSAGES[0]["content"] not in value.decode()
        assert REPLY not in value.decode()


@pytest.mark.parametrize("harness", [{"include_content": True}], indirect=True)
async def test_content_is_published_when_asked_for(harness: Harness):
    await complete(key(RAW_KEY, alias="billing-agent"))
    await harness.published(1)
    published = orjson.loads(harness.records[0][1])
    assert published["messages"] == MESSAGES
    assert REPLY in harness.records[0][1].decode()


# -- the pre-call hook -----------------------------------------------------------------------


T0 = datetime(2026, 1, 5, 9, 0, 30, tzinfo=UTC)


def command(
    identity: str, action: str = "block", tpm: int | None = None, reason: str = "offboarded"
) -> ThrottleCommand:
    return ThrottleCommand(
        command_id=f"c-{identity}",
        identity=identity,
        action=action,
        limits=ThrottleLimits(tokens_per_minute=tpm),
        reason=reason,
        issued_at=T0,
        expires_at=T0 + timedelta(minutes=15),
        version=1,
    )


class FedClient(ThrottleClient):
    """Fed by hand (`apply`) at a fixed clock; follows no feed."""

    def __init__(self, *commands: ThrottleCommand) -> None:
        super().__init__("http://unused.invalid", clock=lambda: T0)
        for c in commands:
            assert self.apply(c)

    async def start(self) -> None:
        return None


async def hook(callback: MeterguardCallback, auth) -> Any:
    return await callback.async_pre_call_hook(
        user_api_key_dict=auth, cache=None, data={"model": MODEL}, call_type="acompletion"
    )


async def test_the_hook_answers_429_for_a_blocked_key_and_lets_others_through():
    callback = MeterguardCallback(throttle=FedClient(command("billing-agent"), command(KEY_HASH)))
    with pytest.raises(MeterguardRefusal) as refused:
        await hook(callback, key(RAW_KEY, alias="billing-agent"))
    error = refused.value
    assert error.status_code == 429
    assert error.headers == {"Retry-After": "300"}  # a block: try again within 5 minutes
    assert error.detail == {
        "error": "throttled",
        "identity": "billing-agent",
        "reason": "offboarded",
        "command_id": "c-billing-agent",
    }
    with pytest.raises(MeterguardRefusal):
        await hook(callback, key(RAW_KEY))  # the unaliased key, by its hash
    assert await hook(callback, key("sk-another-key", alias="support-agent")) is None
    assert await hook(callback, key("sk-another-key")) is None
    assert await hook(MeterguardCallback(), key(RAW_KEY, alias="billing-agent")) is None


async def test_successes_charge_their_real_tokens_to_a_throttled_key(harness: Harness):
    auth = key(RAW_KEY, alias="billing-agent")
    await complete(auth)
    await harness.published(1)
    tokens = harness.capture.payloads[0]["total_tokens"]
    assert tokens > 0
    reason = "tokens 9000/min vs baseline 300"
    harness.callback.throttle = FedClient(
        command("billing-agent", "throttle", tpm=2 * tokens, reason=reason)
    )
    for _ in range(2):
        assert await hook(harness.callback, auth) is None
        await complete(auth)
    # Tokens are charged before the record is published: three records, two calls charged.
    await harness.published(3)
    with pytest.raises(MeterguardRefusal) as refused:
        await hook(harness.callback, auth)
    assert refused.value.detail["reason"] == reason
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60  # the minute's end


async def test_a_refused_request_is_not_published_as_a_failed_call(harness: Harness):
    """The proxy logs a pre-call hook's exception as a failure of the request
    (litellm/proxy/utils.py ProxyLogging._handle_logging_proxy_only_error): function_setup,
    update_environment_variables, pre_call, async_failure_handler. The same steps here."""
    refusal = MeterguardRefusal(
        "billing-agent", FedClient(command("billing-agent")).decide("billing-agent")
    )
    metadata = proxy_metadata(key(RAW_KEY, alias="billing-agent"))
    logging_obj, _ = litellm.utils.function_setup(
        original_function="acompletion",
        rules_obj=litellm.utils.Rules(),
        start_time=datetime.now(),  # LiteLLM's own clock: naive local time
        model=MODEL,
        messages=MESSAGES,
        metadata=metadata,
        litellm_call_id="refused-1",
    )
    logging_obj.update_environment_variables(
        model=MODEL, user="", optional_params={}, litellm_params={"metadata": metadata}
    )
    logging_obj.pre_call(input=MESSAGES, api_key="")
    await logging_obj.async_failure_handler(exception=refusal, traceback_exception="")

    async def seen() -> bool:
        return harness.callback.refusals_not_published == 1

    await eventually(seen, "the refusal to reach the callback", interval=POLL_S, timeout=10)
    assert [p["status"] for p in harness.capture.payloads] == ["failure"]  # LiteLLM logged it
    assert harness.records == []  # meterguard did not publish it


# -- never in LiteLLM's way ------------------------------------------------------------------


async def test_a_broker_that_is_down_costs_records_never_calls():
    factory = Factory(start_error=ConnectionError("broker down"))
    down = publisher(factory, retry_after_s=3600)
    callback = MeterguardCallback(publisher=down)

    async def counted() -> bool:
        return down.stats.failed == 3

    try:
        with registered(callback):
            for _ in range(3):
                response = await complete(key(RAW_KEY, alias="billing-agent"))
                assert response.choices[0].message.content == REPLY
            await eventually(counted, "three lost records", interval=POLL_S, timeout=10)
    finally:
        await callback.aclose()
    assert (down.stats.sent, down.stats.delivered) == (0, 0)
    assert len(factory.made) == 1  # one start tried; the others waited for retry_after_s


async def test_undelivered_records_are_counted_and_delivery_resumes():
    factory = Factory()
    kafka = publisher(factory)
    try:
        assert await kafka.publish(b"{}", "k")
        factory.made[0].delivery_error = TimeoutError("no acknowledgement")
        assert await kafka.publish(b"{}", "k")  # handed over; its delivery fails later
        factory.made[0].delivery_error = None
        assert await kafka.publish(b"{}", None)
        await kafka.flush()
        await eventually(lambda: kafka.stats.delivered == 2, "two deliveries", timeout=5)
        assert (kafka.stats.sent, kafka.stats.failed) == (3, 1)
        assert [key for _, _, key, _ in factory.made[0].records] == [b"k", b"k", None]
        assert factory.made[0].options["bootstrap_servers"] == "127.0.0.1:9"
    finally:
        await kafka.aclose()


# -- how the proxy loads it ------------------------------------------------------------------


def load_example(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> MeterguardCallback:
    for name in ("MG_KAFKA_BROKER", "MG_TOPIC_RAW", "MG_THROTTLE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (entry,) = yaml.safe_load(CONFIG.read_text())["litellm_settings"]["callbacks"]
    # What the proxy does with a callbacks entry (litellm/proxy/common_utils/callback_utils.py
    # initialize_callbacks_on_proxy): import it from the config file's folder, check it.
    loaded = _loaded_callback_or_raise(entry, get_instance_fn(entry, config_file_path=str(CONFIG)))
    assert isinstance(loaded, MeterguardCallback)
    return loaded


def test_the_example_config_loads_the_callback_as_the_proxy_does(monkeypatch):
    env = {
        "MG_KAFKA_BROKER": "kafka://10.0.0.1:9092,kafka://10.0.0.2:9092",
        "MG_TOPIC_RAW": "prod.metering.raw",
        "MG_THROTTLE_URL": "http://meterguard:6066/",
    }
    callback = load_example(monkeypatch, env)
    assert callback.publisher is not None and callback.throttle is not None
    assert callback.publisher.bootstrap == "10.0.0.1:9092,10.0.0.2:9092"
    assert callback.publisher.topic == "prod.metering.raw"
    assert callback.throttle.base_url == "http://meterguard:6066"
    # ProxyLogging.pre_call_hook (litellm/proxy/utils.py) calls the hook only when the
    # callback's own class defines it.
    assert "async_pre_call_hook" in vars(type(callback))
    bare = load_example(monkeypatch, {})
    assert bare.publisher is None and bare.throttle is None


def test_nothing_else_of_meterguard_imports_litellm_or_fastapi():
    own = ROOT / "meterguard" / "gateway" / "litellm.py"
    offenders = []
    for path in sorted((ROOT / "meterguard").rglob("*.py")):  # rglob follows the symlinks
        if path == own:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("litellm", "fastapi") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    probe = (
        "import sys, meterguard.gateway, meterguard.gateway.publisher, "
        "meterguard.streams.tools.cli; "
        "print(sorted(m for m in ('litellm', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
