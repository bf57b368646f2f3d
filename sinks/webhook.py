"""Security webhooks: one signed POST per alert (Standard Webhooks, https://standardwebhooks.com).

The body is the Standard Webhooks envelope `{"type", "timestamp", "data": <Alert>}`, built only
from the alert, so a retry sends the very same bytes. `webhook-id` is derived from the
alert id: a retry, a Kafka redelivery or a second worker carries the same id, and receivers
dedupe on it (the spec's idempotency key). Only `webhook-timestamp` and the signature change.

A destination with `format: ocsf` (the policy's `routing:`) gets the alert as a bare OCSF
Detection Finding instead (sinks/ocsf.py), signed the same way: SIEM collectors ingest the
event itself, not an envelope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from meterguard.models import Alert, utc_now
from meterguard.sinks.base import Failed, Outcome, Retry, classify_response
from meterguard.sinks.ocsf import AlertFormat, finding_json
from meterguard.sinks.routing import public_url

log = logging.getLogger("meterguard.sinks")


def message_id(alert: Alert) -> str:
    return f"msg_{alert.alert_id}"


def webhook_body(alert: Alert) -> str:
    envelope = {
        "type": f"meterguard.alert.{alert.status}",
        "timestamp": alert.event_time.isoformat().replace("+00:00", "Z"),
        "data": alert.model_dump(mode="json"),
    }
    return orjson.dumps(envelope).decode()


def body_of(alert: Alert, format: AlertFormat = "meterguard") -> str:
    """The request body of `alert` in the destination's format."""
    return finding_json(alert).decode() if format == "ocsf" else webhook_body(alert)


def signed_headers(signer: Webhook | None, msg_id: str, now: datetime, body: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "user-agent": "meterguard"}
    if signer is not None:
        headers |= {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(msg_id, now, body),
        }
    return headers


class WebhookSink:
    kind = "webhook"

    def __init__(
        self,
        url: str,
        secret: str | None,
        client: httpx.AsyncClient,
        timeout_s: float = 5.0,
        clock: Callable[[], datetime] = utc_now,
        format: AlertFormat = "meterguard",
    ) -> None:
        self.url = url
        self.format = format
        self._signer = Webhook(secret) if secret else None  # a malformed secret fails here
        self._client = client
        self._timeout = httpx.Timeout(timeout_s)
        self._clock = clock
        if self._signer is None:
            log.warning("webhook %s has no secret: alerts are sent unsigned", public_url(url))

    async def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        # Concurrently: a destination that times out costs one timeout per batch, not one
        # per alert. Order per identity holds: the outbox hands a webhook destination at most
        # one alert per identity at a time (the identity's oldest pending one).
        return list(await asyncio.gather(*(self._post(a) for a in alerts)))

    async def _post(self, alert: Alert) -> Outcome:
        body = body_of(alert, self.format)
        now = self._clock()
        headers = signed_headers(self._signer, message_id(alert), now, body)
        try:
            response = await self._client.post(
                self.url, content=body.encode(), headers=headers, timeout=self._timeout
            )
        except httpx.TransportError as exc:  # connect, read, timeouts: the network's fault
            return Retry(f"network error: {type(exc).__name__}")
        except httpx.HTTPError as exc:  # e.g. an invalid URL: retrying cannot help
            return Failed(f"request error: {type(exc).__name__}")
        return classify_response(response.status_code, response.headers, now)

    async def close(self) -> None:
        """The client is injected, so its owner closes it."""
