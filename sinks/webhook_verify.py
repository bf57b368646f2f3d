"""Receiver side of meterguard's signed webhooks (sinks/webhook.py signs them).

A receiver (a SIEM's HTTP input, a small service) checks every delivery before trusting it:

    from meterguard.sinks.webhook_verify import WebhookVerifier, SeenIds, VerificationError

    verifier = WebhookVerifier(os.environ["MG_WEBHOOK_SECRET"])   # the `whsec_...` secret
    seen = SeenIds()
    try:
        delivery = verifier.verify(raw_body_bytes, request_headers)
    except VerificationError:
        return 401
    if not seen.first(delivery):
        return 200   # a repeat of a delivery already handled: acknowledge, do nothing
    handle(json.loads(delivery.body))

The scheme is Standard Webhooks v1 (https://www.standardwebhooks.com): `webhook-signature` is
`v1,<base64 HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")>` (several,
space-separated, during a secret rotation). The check is constant-time (hmac.compare_digest)
over the exact header text and body bytes, and refuses a timestamp further than `tolerance_s`
from the receiver's clock, in the past (a captured delivery replayed later) or in the future.

Inside the tolerance a captured delivery can still be replayed, and meterguard itself sends
the same `webhook-id` again on purpose (a retry, a Kafka redelivery, a second worker: it is
`msg_<alert_id>`). So receivers dedupe by `webhook-id`: remember the ids seen for at least
twice the tolerance (SeenIds does, in memory; use a shared store when several receivers
share the load). A repeat outside the window is refused by its timestamp anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Standard Webhooks' reference libraries refuse timestamps more than 5 minutes off: enough for
# ordinary clock skew between meterguard and a receiver plus a slow hop, short enough that a
# captured delivery cannot be replayed much later. A receiver may pass its own.
DEFAULT_TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"
# A webhook id is `msg_<alert_id>` (a few dozen characters); far longer is not ours.
MAX_ID_CHARS = 256


class VerificationError(Exception):
    """The delivery is not authentic, is malformed, or is outside the time tolerance."""


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    timestamp: int  # seconds since the epoch, as signed
    body: bytes


class WebhookVerifier:
    def __init__(
        self,
        secret: str | bytes,
        tolerance_s: int = DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = _secret_key(secret)
        self.tolerance_s = tolerance_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"WebhookVerifier(tolerance_s={self.tolerance_s})"  # never the secret

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Delivery:
        """The delivery if authentic and within the tolerance; else VerificationError."""
        lowered = {k.lower(): v for k, v in headers.items()}
        msg_id = lowered.get("webhook-id", "")
        stamp = lowered.get("webhook-timestamp", "")
        signatures = lowered.get("webhook-signature", "")
        if not (msg_id and stamp and signatures):
            raise VerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
        if len(msg_id) > MAX_ID_CHARS or "." in msg_id:
            raise VerificationError("malformed webhook-id")
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
            raise VerificationError("malformed webhook-timestamp")
        timestamp = int(stamp)
        skew = timestamp - self._clock()
        if skew < -self.tolerance_s:
            raise VerificationError("webhook-timestamp too old")
        if skew > self.tolerance_s:
            raise VerificationError("webhook-timestamp too new")
        signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
        expected = hmac.new(self._key, signed, hashlib.sha256).digest()
        if not any(_matches(s, expected) for s in signatures.split(" ")):
            raise VerificationError("no matching signature")
        return Delivery(msg_id, timestamp, body)


def _matches(versioned: str, expected: bytes) -> bool:
    version, _, encoded = versioned.partition(",")
    if version != "v1":
        return False
    try:
        given = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


def _secret_key(secret: str | bytes) -> bytes:
    """The HMAC key: `whsec_<base64>` (or bare base64) as meterguard's sender reads it."""
    if isinstance(secret, bytes):
        key = secret
    else:
        try:
            key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
        except (binascii.Error, ValueError) as exc:
            raise ValueError("the webhook secret is not base64 (whsec_...)") from exc
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


class SeenIds:
    """Webhook ids handled within the last `horizon_s`, at most `limit` of them.

    Replay protection needs twice the tolerance: a delivery stamped `tolerance_s` ahead of
    the receiver's clock is accepted until `2 * tolerance_s` after it first arrived. Keep ids
    longer (e.g. a day) to also drop meterguard's own late retries of a delivery whose answer
    was lost: a retry has the same id and a fresh timestamp. `limit` bounds memory against a
    flood: 100,000 ids (~20 MB) hold 10 minutes of 166 deliveries a second, far above the
    alert rates of a metering pipeline; past it the oldest ids go first.
    """

    def __init__(
        self,
        horizon_s: float = 2 * DEFAULT_TOLERANCE_S,
        limit: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.horizon_s = horizon_s
        self.limit = limit
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first(self, delivery: Delivery) -> bool:
        """True the first time this webhook id is seen (handle it); False for a repeat."""
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) < now - self.horizon_s:
            self._seen.popitem(last=False)  # aged out
        if delivery.webhook_id in self._seen:
            return False
        if len(self._seen) >= self.limit:
            self._seen.popitem(last=False)  # full: the oldest goes first
        self._seen[delivery.webhook_id] = now
        return True
