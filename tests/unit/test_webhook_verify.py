"""The receiver-side verifier (sinks/webhook_verify.py) against deliveries signed by the real
sender (WebhookSink through httpx.MockTransport): valid passes; a changed body, timestamp,
id or signature fails; a timestamp outside the tolerance (past and future) fails; a replay
inside the tolerance is caught by SeenIds; the verifier agrees with the reference library."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from meterguard.sinks.webhook import WebhookSink
from meterguard.sinks.webhook_verify import (
    DEFAULT_TOLERANCE_S,
    Delivery,
    SeenIds,
    VerificationError,
    WebhookVerifier,
)
from tests.support.alerts import make_alert

SECRET = "whsec_" + base64.b64encode(b"receiver-side-secret-0123456789ab").decode()
SENT_AT = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
T0 = SENT_AT.timestamp()


async def delivered() -> tuple[bytes, dict[str, str]]:
    """One alert as meterguard's webhook sink sends it: the body bytes and headers."""
    got: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        got.append(request)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as client:
        sink = WebhookSink("https://siem.example/hook", SECRET, client, clock=lambda: SENT_AT)
        await sink.deliver([make_alert()])
    (request,) = got
    return request.content, dict(request.headers)


def verifier_at(now: float, tolerance_s: int = DEFAULT_TOLERANCE_S) -> WebhookVerifier:
    return WebhookVerifier(SECRET, tolerance_s, clock=lambda: now)


async def test_a_delivery_from_the_sink_verifies() -> None:
    body, headers = await delivered()
    delivery = verifier_at(T0 + 2).verify(body, headers)
    assert delivery.webhook_id.startswith("msg_")
    assert (delivery.timestamp, delivery.body) == (int(T0), body)
    assert headers["webhook-signature"] == Webhook(SECRET).sign(delivery.webhook_id, SENT_AT, body)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b, h: (b.replace(b'"firing"', b'"resolved"'), h),  # body
        lambda b, h: (b + b" ", h),  # one byte more
        lambda b, h: (b, h | {"webhook-timestamp": str(int(T0) + 1)}),  # timestamp
        lambda b, h: (b, h | {"webhook-id": h["webhook-id"] + "x"}),  # id
        lambda b, h: (b, h | {"webhook-signature": _flip(h["webhook-signature"])}),
        lambda b, h: (b, h | {"webhook-signature": "v2," + h["webhook-signature"][3:]}),
        lambda b, h: (b, h | {"webhook-signature": "v1,not base64!"}),
        lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-signature"}),
        lambda b, h: (b, h | {"webhook-timestamp": f"{int(T0)}.0"}),  # not an integer
        lambda b, h: (b, h | {"webhook-timestamp": "+" + str(int(T0))}),
    ],
    ids=["body", "byte", "ts", "id", "sig", "version", "b64", "nosig", "ts-float", "ts-sign"],
)
async def test_tampering_fails(tamper) -> None:
    body, headers = tamper(*await delivered())
    with pytest.raises(VerificationError):
        verifier_at(T0).verify(body, headers)


async def test_another_secret_fails() -> None:
    body, headers = await delivered()
    other = "whsec_" + base64.b64encode(b"someone-elses-secret-0123456789a").decode()
    with pytest.raises(VerificationError, match="signature"):
        WebhookVerifier(other, clock=lambda: T0).verify(body, headers)


async def test_a_rotated_secret_list_passes_when_one_signature_matches() -> None:
    body, headers = await delivered()
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    assert verifier_at(T0).verify(body, headers).body == body


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (0, True),
        (DEFAULT_TOLERANCE_S, True),  # the receiver's clock at the edge, either side
        (-DEFAULT_TOLERANCE_S, True),
        (DEFAULT_TOLERANCE_S + 1, False),  # too old: a capture replayed later
        (-DEFAULT_TOLERANCE_S - 1, False),  # too new: a sender clock far ahead
        (86_400, False),
    ],
)
async def test_timestamp_tolerance_past_and_future(offset: int, ok: bool) -> None:
    body, headers = await delivered()
    verifier = verifier_at(T0 + offset)
    if ok:
        verifier.verify(body, headers)
    else:
        with pytest.raises(VerificationError, match=r"too (old|new)"):
            verifier.verify(body, headers)


async def test_the_tolerance_is_an_argument() -> None:
    body, headers = await delivered()
    verifier_at(T0 + 30, tolerance_s=60).verify(body, headers)
    with pytest.raises(VerificationError, match="too old"):
        verifier_at(T0 + 61, tolerance_s=60).verify(body, headers)


async def test_a_replay_inside_the_tolerance_is_detected_by_its_id() -> None:
    body, headers = await delivered()
    now = [T0]
    verifier = WebhookVerifier(SECRET, clock=lambda: now[0])
    seen = SeenIds(clock=lambda: now[0])
    assert seen.first(verifier.verify(body, headers))
    now[0] = T0 + 120
    replayed = verifier.verify(body, headers)  # still authentic and in time...
    assert not seen.first(replayed)  # ...but its id was handled already
    now[0] = T0 + DEFAULT_TOLERANCE_S + 1
    with pytest.raises(VerificationError, match="too old"):  # later: refused outright
        verifier.verify(body, headers)


def test_seen_ids_forget_by_age_and_stay_bounded() -> None:
    now = [0.0]
    seen = SeenIds(horizon_s=10, limit=3, clock=lambda: now[0])
    d = [Delivery(f"msg_{i}", 0, b"") for i in range(5)]
    assert [seen.first(x) for x in d[:3]] == [True, True, True]
    assert not seen.first(d[0])
    assert seen.first(d[3])  # over the limit: msg_0, the oldest, is forgotten
    assert seen.first(d[0])
    now[0] = 11.0
    assert seen.first(d[1])  # aged out


def test_the_secret_never_shows_in_a_repr() -> None:
    assert "whsec" not in repr(WebhookVerifier(SECRET))
    with pytest.raises(ValueError, match="empty"):
        WebhookVerifier("whsec_")


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    body=st.binary(max_size=256),
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]),
        st.text(max_size=80),
    ),
)
def test_hostile_headers_only_ever_raise_verification_error(
    body: bytes, headers: dict[str, str]
) -> None:
    try:
        verifier_at(T0).verify(body, headers)
    except VerificationError:
        return
    raise AssertionError("an unsigned delivery verified")


def _flip(signature: str) -> str:
    raw = bytearray(base64.b64decode(signature.removeprefix("v1,")))
    raw[0] ^= 1
    return "v1," + base64.b64encode(bytes(raw)).decode()
